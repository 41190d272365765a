/**
 * @file gw_ble.h
 * @brief NimBLE passive scanning for Ruuvi adverts (company id 0x0499), decoded and deduplicated, queued as
 *        wire_reading_t for the spool writer.
 */
#pragma once

#include <stdint.h>

#include "esp_err.h"
#include "freertos/FreeRTOS.h"
#include "freertos/queue.h"

typedef struct {
    uint32_t adverts;       /**< advertising reports seen (any device) */
    uint32_t ruuvi;         /**< with manufacturer data of company 0x0499 */
    uint32_t decode_errors; /**< Ruuvi data that did not decode (unknown format, wrong length) */
    uint32_t duplicates;    /**< re-advertised measurements dropped by the dedup table */
    uint32_t thinned;       /**< new measurements dropped by CONFIG_EDGE_GW_MIN_INTERVAL_S */
    uint32_t unsynced;      /**< dropped because the clock was not synchronised yet */
    uint32_t queue_full;    /**< dropped because the spool writer fell behind */
} gw_ble_counters_t;

/** Starts the NimBLE host and a continuous passive scan; readings go to `queue` (items: wire_reading_t). */
esp_err_t gw_ble_start(QueueHandle_t queue);

/** A snapshot of the counters. */
void gw_ble_counters(gw_ble_counters_t *out);
