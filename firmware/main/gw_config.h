/**
 * @file gw_config.h
 * @brief Gateway configuration: NVS namespace "edge_gw", with the menuconfig (Kconfig) values as defaults.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "esp_err.h"
#include "spool_confirm.h"

typedef struct {
    char wifi_ssid[33];
    char wifi_pass[65];
    char gateway_id[65];
    char mqtt_uri[128];
    char mqtt_pass[129];
    char prefix[64];
    char ntp_server[64];
    char confirm[8]; /**< "cloud" (delete on the cloud's confirmation) or "broker" (on the PUBACK) */
    char *ca_pem; /**< heap copy of NVS key ca_pem, or NULL: verify with the certificate bundle */
} gw_config_t;

/** Opens NVS (initialising or, after a layout change, erasing the nvs partition) and loads the configuration. */
esp_err_t gw_config_load(gw_config_t *cfg);

/** Stores one key (wifi_ssid, wifi_pass, gateway_id, mqtt_uri, mqtt_pass, prefix, ntp_server, ca_pem, confirm). */
esp_err_t gw_config_set(const char *key, const char *value);

/** Removes one key, so its menuconfig default applies again. */
esp_err_t gw_config_unset(const char *key);

/** True if key is one of the keys above. */
bool gw_config_key_known(const char *key);

/**
 * The seq reservation's store for the uplink core (spool_confirm.h): NVS key "seq" holds the first batch seq not
 * yet reserved; the core persists a new block there before it uses any seq of it, so no seq is used twice.
 */
void gw_config_seq_store(spool_seq_store_t *store);
