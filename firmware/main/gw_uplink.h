/**
 * @file gw_uplink.h
 * @brief Spool writer and MQTT uplink: readings from the BLE queue are committed to the spool; batches are read
 *        from the spool, published with QoS 1, and acknowledged in the spool only after the broker's PUBACK.
 */
#pragma once

#include "esp_err.h"
#include "freertos/FreeRTOS.h"
#include "freertos/queue.h"
#include "gw_config.h"
#include "spool.h"

/** Starts the MQTT client (TLS, username/password, last will) and the writer and uplink tasks. */
esp_err_t gw_uplink_start(const gw_config_t *cfg, spool_t *spool, QueueHandle_t readings);
