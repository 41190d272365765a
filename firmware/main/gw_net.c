/**
 * @file gw_net.c
 * @brief Wi-Fi station and SNTP. The station reconnects on every disconnect, backing off 1, 2, 4 ... 60 s, so a
 *        router reboot or a long outage never needs a power cycle; the spool holds the readings meanwhile.
 */
#include "gw_net.h"

#include <string.h>
#include <sys/time.h>

#include "esp_event.h"
#include "esp_log.h"
#include "esp_netif.h"
#include "esp_netif_sntp.h"
#include "esp_timer.h"
#include "esp_wifi.h"

#define BACKOFF_MIN_MS (1000U)
#define BACKOFF_MAX_MS (60000U)

static const char *TAG = "gw_net";
static volatile bool connected;
static volatile bool synced;
static uint32_t backoff_ms = BACKOFF_MIN_MS;
static esp_timer_handle_t reconnect_timer;

static void reconnect(void *arg)
{
    (void)arg;
    (void)esp_wifi_connect();
}

static void on_event(void *arg, esp_event_base_t base, int32_t id, void *data)
{
    (void)arg;
    (void)data;
    if (base == WIFI_EVENT && id == WIFI_EVENT_STA_START) {
        (void)esp_wifi_connect();
    } else if (base == WIFI_EVENT && id == WIFI_EVENT_STA_DISCONNECTED) {
        connected = false;
        ESP_LOGW(TAG, "Wi-Fi disconnected, retrying in %u ms", (unsigned)backoff_ms);
        (void)esp_timer_start_once(reconnect_timer, (uint64_t)backoff_ms * 1000U);
        backoff_ms = (backoff_ms * 2U > BACKOFF_MAX_MS) ? BACKOFF_MAX_MS : backoff_ms * 2U;
    } else if (base == IP_EVENT && id == IP_EVENT_STA_GOT_IP) {
        connected = true;
        backoff_ms = BACKOFF_MIN_MS;
        ESP_LOGI(TAG, "Wi-Fi connected");
    }
}

static void on_time_sync(struct timeval *tv)
{
    (void)tv;
    if (!synced) {
        ESP_LOGI(TAG, "clock synchronised by SNTP");
    }
    synced = true;
}

esp_err_t gw_net_start(const gw_config_t *cfg)
{
    wifi_init_config_t init = WIFI_INIT_CONFIG_DEFAULT();
    wifi_config_t wc;
    esp_timer_create_args_t timer = {.callback = reconnect, .name = "wifi_reconnect"};
    esp_sntp_config_t sntp = ESP_NETIF_SNTP_DEFAULT_CONFIG(cfg->ntp_server);

    ESP_ERROR_CHECK(esp_netif_init());
    ESP_ERROR_CHECK(esp_event_loop_create_default());
    (void)esp_netif_create_default_wifi_sta();
    ESP_ERROR_CHECK(esp_timer_create(&timer, &reconnect_timer));
    ESP_ERROR_CHECK(esp_wifi_init(&init));
    ESP_ERROR_CHECK(esp_event_handler_instance_register(WIFI_EVENT, ESP_EVENT_ANY_ID, on_event, NULL, NULL));
    ESP_ERROR_CHECK(esp_event_handler_instance_register(IP_EVENT, IP_EVENT_STA_GOT_IP, on_event, NULL, NULL));
    memset(&wc, 0, sizeof(wc));
    strlcpy((char *)wc.sta.ssid, cfg->wifi_ssid, sizeof(wc.sta.ssid));
    strlcpy((char *)wc.sta.password, cfg->wifi_pass, sizeof(wc.sta.password));
    ESP_ERROR_CHECK(esp_wifi_set_mode(WIFI_MODE_STA));
    ESP_ERROR_CHECK(esp_wifi_set_config(WIFI_IF_STA, &wc));
    ESP_ERROR_CHECK(esp_wifi_start());
    /* With BLE scanning on the same radio, Wi-Fi must keep modem sleep (the default) for coexistence. */

    sntp.sync_cb = on_time_sync;
    return esp_netif_sntp_init(&sntp);
}

bool gw_net_connected(void)
{
    return connected;
}

bool gw_net_time_synced(void)
{
    return synced;
}

int64_t gw_net_time_ns(void)
{
    struct timeval tv;
    (void)gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000000000LL + (int64_t)tv.tv_usec * 1000LL;
}
