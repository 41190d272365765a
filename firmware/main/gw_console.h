/**
 * @file gw_console.h
 * @brief Serial console (UART0, 115200 baud) for configuration: `config`, `set KEY VALUE`, `unset KEY`, `restart`.
 */
#pragma once

#include "esp_err.h"
#include "gw_config.h"

/** Starts the REPL; `cfg` is what the console's `config` command shows (passwords hidden). */
esp_err_t gw_console_start(const gw_config_t *cfg);
