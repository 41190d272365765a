/**
 * @file gw_config.c
 * @brief NVS-backed configuration and the store of the batch seq reservation.
 */
#include "gw_config.h"

#include <stdlib.h>
#include <string.h>

#include "esp_log.h"
#include "nvs.h"
#include "nvs_flash.h"
#include "sdkconfig.h"

#define NS "edge_gw"
#define SEQ_KEY "seq"

static const char *TAG = "gw_config";
static const char *const known_keys[] = {"wifi_ssid", "wifi_pass", "gateway_id", "mqtt_uri", "mqtt_pass",
                                         "prefix",    "ntp_server", "ca_pem", "confirm"};

bool gw_config_key_known(const char *key)
{
    for (size_t i = 0; i < sizeof(known_keys) / sizeof(known_keys[0]); i++) {
        if (strcmp(key, known_keys[i]) == 0) {
            return true;
        }
    }
    return false;
}

static void load_str(nvs_handle_t h, const char *key, char *dst, size_t cap, const char *fallback)
{
    size_t len = cap;
    if (nvs_get_str(h, key, dst, &len) != ESP_OK) {
        strlcpy(dst, fallback, cap);
    }
}

esp_err_t gw_config_load(gw_config_t *cfg)
{
    nvs_handle_t h;
    size_t len = 0;
    esp_err_t err = nvs_flash_init();
    if (err == ESP_ERR_NVS_NO_FREE_PAGES || err == ESP_ERR_NVS_NEW_VERSION_FOUND) {
        ESP_LOGW(TAG, "nvs partition unusable (%s), erasing it", esp_err_to_name(err));
        ESP_ERROR_CHECK(nvs_flash_erase());
        err = nvs_flash_init();
    }
    if (err != ESP_OK) {
        return err;
    }
    memset(cfg, 0, sizeof(*cfg));
    err = nvs_open(NS, NVS_READWRITE, &h);
    if (err != ESP_OK) {
        return err;
    }
    load_str(h, "wifi_ssid", cfg->wifi_ssid, sizeof(cfg->wifi_ssid), CONFIG_EDGE_GW_WIFI_SSID);
    load_str(h, "wifi_pass", cfg->wifi_pass, sizeof(cfg->wifi_pass), CONFIG_EDGE_GW_WIFI_PASSWORD);
    load_str(h, "gateway_id", cfg->gateway_id, sizeof(cfg->gateway_id), CONFIG_EDGE_GW_GATEWAY_ID);
    load_str(h, "mqtt_uri", cfg->mqtt_uri, sizeof(cfg->mqtt_uri), CONFIG_EDGE_GW_MQTT_URI);
    load_str(h, "mqtt_pass", cfg->mqtt_pass, sizeof(cfg->mqtt_pass), CONFIG_EDGE_GW_MQTT_PASSWORD);
    load_str(h, "prefix", cfg->prefix, sizeof(cfg->prefix), CONFIG_EDGE_GW_TOPIC_PREFIX);
    load_str(h, "ntp_server", cfg->ntp_server, sizeof(cfg->ntp_server), CONFIG_EDGE_GW_NTP_SERVER);
    load_str(h, "confirm", cfg->confirm, sizeof(cfg->confirm), CONFIG_EDGE_GW_CONFIRM);
    if (nvs_get_str(h, "ca_pem", NULL, &len) == ESP_OK && len > 1U) {
        cfg->ca_pem = malloc(len);
        if (cfg->ca_pem != NULL && nvs_get_str(h, "ca_pem", cfg->ca_pem, &len) != ESP_OK) {
            free(cfg->ca_pem);
            cfg->ca_pem = NULL;
        }
    }
    nvs_close(h);
    return ESP_OK;
}

esp_err_t gw_config_set(const char *key, const char *value)
{
    nvs_handle_t h;
    esp_err_t err;
    if (!gw_config_key_known(key)) {
        return ESP_ERR_INVALID_ARG;
    }
    err = nvs_open(NS, NVS_READWRITE, &h);
    if (err != ESP_OK) {
        return err;
    }
    err = nvs_set_str(h, key, value);
    if (err == ESP_OK) {
        err = nvs_commit(h);
    }
    nvs_close(h);
    return err;
}

esp_err_t gw_config_unset(const char *key)
{
    nvs_handle_t h;
    esp_err_t err;
    if (!gw_config_key_known(key)) {
        return ESP_ERR_INVALID_ARG;
    }
    err = nvs_open(NS, NVS_READWRITE, &h);
    if (err != ESP_OK) {
        return err;
    }
    err = nvs_erase_key(h, key);
    if (err == ESP_OK || err == ESP_ERR_NVS_NOT_FOUND) {
        err = nvs_commit(h);
    }
    nvs_close(h);
    return err;
}

/* NVS writes an entry with its CRC before it retires the old one, so a power cut leaves either value: the old
 * one only if the new block was never reported stored, i.e. never used. */
static int seq_load(void *ctx, uint64_t *next)
{
    nvs_handle_t h;
    esp_err_t err;
    (void)ctx;
    *next = 0;
    if (nvs_open(NS, NVS_READWRITE, &h) != ESP_OK) {
        return -1;
    }
    err = nvs_get_u64(h, SEQ_KEY, next);
    nvs_close(h);
    return (err == ESP_OK || err == ESP_ERR_NVS_NOT_FOUND) ? 0 : -1;
}

static int seq_store(void *ctx, uint64_t next)
{
    nvs_handle_t h;
    esp_err_t err;
    (void)ctx;
    if (nvs_open(NS, NVS_READWRITE, &h) != ESP_OK) {
        return -1;
    }
    err = nvs_set_u64(h, SEQ_KEY, next);
    if (err == ESP_OK) {
        err = nvs_commit(h);
    }
    nvs_close(h);
    if (err != ESP_OK) {
        ESP_LOGW(TAG, "could not persist the batch seq reservation: %s", esp_err_to_name(err));
        return -1;
    }
    return 0;
}

void gw_config_seq_store(spool_seq_store_t *store)
{
    store->load = seq_load;
    store->store = seq_store;
    store->ctx = NULL;
}
