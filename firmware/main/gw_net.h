/**
 * @file gw_net.h
 * @brief Wi-Fi station with reconnect, and SNTP.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "esp_err.h"
#include "gw_config.h"

/** Starts Wi-Fi (reconnecting with capped exponential backoff) and SNTP. */
esp_err_t gw_net_start(const gw_config_t *cfg);

/** True while the station has an IP address. */
bool gw_net_connected(void);

/** True once SNTP has set the clock. */
bool gw_net_time_synced(void);

/** Wall-clock time in Unix nanoseconds. */
int64_t gw_net_time_ns(void);
