/**
 * @file app_main.c
 * @brief edge-gw ESP32 gateway: configuration, spool recovery, console, network, uplink, BLE scanning.
 */
#include "esp_log.h"
#include "freertos/FreeRTOS.h"
#include "freertos/queue.h"
#include "gw_ble.h"
#include "gw_config.h"
#include "gw_console.h"
#include "gw_flash.h"
#include "gw_net.h"
#include "gw_uplink.h"
#include "sdkconfig.h"
#include "spool.h"
#include "wire.h"

static const char *TAG = "edge_gw";
static gw_config_t cfg;
static spool_bdev_t flash;
static spool_t spool;

void app_main(void)
{
    QueueHandle_t readings;
    spool_status_t st;

    ESP_ERROR_CHECK(gw_config_load(&cfg));
    if (gw_console_start(&cfg) != ESP_OK) {
        ESP_LOGW(TAG, "serial console not available; configure with menuconfig instead");
    }

    ESP_ERROR_CHECK(gw_flash_bdev(&flash));
    st = spool_mount(&spool, &flash);
    if (st != SPOOL_OK) {
        ESP_LOGE(TAG, "spool mount failed: %s", spool_status_str(st));
        return;
    }
    ESP_LOGI(TAG, "spool: %u sectors, %u readings waiting, %u torn sectors closed", (unsigned)flash.sector_count,
             (unsigned)spool.pending, (unsigned)spool.counters.torn);

    if (cfg.wifi_ssid[0] == '\0') {
        ESP_LOGW(TAG, "no Wi-Fi configured: on the console, `set wifi_ssid ...`, `set wifi_pass ...`, `restart`");
        return;
    }
    readings = xQueueCreate(CONFIG_EDGE_GW_QUEUE_LEN, sizeof(wire_reading_t));
    if (readings == NULL) {
        ESP_LOGE(TAG, "out of memory");
        return;
    }
    ESP_ERROR_CHECK(gw_net_start(&cfg));
    if (gw_uplink_start(&cfg, &spool, readings) != ESP_OK) {
        return; /* logged; the console stays up to fix the configuration */
    }
    ESP_ERROR_CHECK(gw_ble_start(readings));
    ESP_LOGI(TAG, "gateway %s scanning", cfg.gateway_id);
}
