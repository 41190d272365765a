/**
 * @file gw_ble.c
 * @brief NimBLE observer. The GAP callback runs in the NimBLE host task: it only finds the Ruuvi payload, decodes
 *        and deduplicates it through components/ruuvi, stamps the time and queues the reading (never blocks).
 *
 * Passive scanning: Ruuvi tags put everything in the advertisement itself, so no scan requests are sent (saves the
 * tags' batteries). Duplicate filtering in the controller is off, since each advert carries a new measurement. The
 * controller has no company-id filter, so the 0x0499 filter is ruuvi_find_in_adv() in the callback. E1 (Ruuvi Air)
 * is a Bluetooth 5 extended advertisement: it is received only with CONFIG_BT_NIMBLE_EXT_ADV on a BT5 chip
 * (ESP32-C3/S3/C6); the original ESP32 hears the legacy formats (3, 5, C5, 6, 8).
 */
#include "gw_ble.h"

#include <string.h>

#include "esp_log.h"
#include "esp_timer.h"
#include "gw_net.h"
#include "host/ble_hs.h"
#include "host/util/util.h"
#include "nimble/nimble_port.h"
#include "nimble/nimble_port_freertos.h"
#include "ruuvi.h"
#include "ruuvi_dedup.h"
#include "sdkconfig.h"
#include "wire.h"

/* Scan interval = window: listen all the time (units of 0.625 ms); the coexistence scheduler shares the radio. */
#define SCAN_ITVL (0x50U)
#define SCAN_WINDOW (0x50U)

static const char *TAG = "gw_ble";
static QueueHandle_t out_queue;
static uint8_t own_addr_type;
static ruuvi_dedup_entry_t dedup_entries[CONFIG_EDGE_GW_DEDUP_TAGS];
static ruuvi_dedup_t dedup;
static gw_ble_counters_t counters;

static void start_scan(void);

static void on_advert(const ble_addr_t *addr, int8_t rssi, const uint8_t *data, size_t len)
{
    const uint8_t *payload = NULL;
    size_t payload_len = 0;
    ruuvi_data_t d;
    wire_reading_t r;
    counters.adverts++;
    if (ruuvi_find_in_adv(data, len, &payload, &payload_len) != RUUVI_OK) {
        return;
    }
    counters.ruuvi++;
    if (ruuvi_decode(payload, payload_len, &d) != RUUVI_OK) {
        counters.decode_errors++;
        return;
    }
    memset(&r, 0, sizeof(r));
    for (size_t i = 0; i < 6U; i++) {
        r.mac[i] = addr->val[5U - i]; /* NimBLE keeps addresses little-endian; the wire format is MSB first */
    }
    if (ruuvi_dedup_check(&dedup, r.mac, &d, payload, payload_len, (uint32_t)(esp_timer_get_time() / 1000))) {
        counters.duplicates = dedup.duplicates;
        counters.thinned = dedup.thinned;
        return;
    }
    if (!gw_net_time_synced()) {
        /* Gateways hold back readings without a synchronised clock (docs/wire-format.md: clock_synced). */
        counters.unsynced++;
        return;
    }
    r.time_ns = gw_net_time_ns();
    r.clock_synced = true;
    r.rssi_valid = (rssi != 127); /* 127: "RSSI not available" in HCI */
    r.rssi = rssi;
    r.raw_len = (uint8_t)payload_len; /* decoded, so at most RUUVI_PAYLOAD_MAX */
    memcpy(r.raw, payload, payload_len);
    if (xQueueSend(out_queue, &r, 0) != pdTRUE) {
        counters.queue_full++;
    }
}

static int on_gap_event(struct ble_gap_event *event, void *arg)
{
    (void)arg;
    switch (event->type) {
    case BLE_GAP_EVENT_DISC:
        on_advert(&event->disc.addr, event->disc.rssi, event->disc.data, event->disc.length_data);
        return 0;
#if CONFIG_BT_NIMBLE_EXT_ADV
    case BLE_GAP_EVENT_EXT_DISC:
        if (event->ext_disc.data_status == BLE_GAP_EXT_ADV_DATA_STATUS_COMPLETE) {
            on_advert(&event->ext_disc.addr, event->ext_disc.rssi, event->ext_disc.data,
                      event->ext_disc.length_data);
        }
        return 0;
#endif
    case BLE_GAP_EVENT_DISC_COMPLETE:
        ESP_LOGW(TAG, "scan ended (reason %d), restarting", event->disc_complete.reason);
        start_scan();
        return 0;
    default:
        return 0;
    }
}

static void start_scan(void)
{
    int rc;
#if CONFIG_BT_NIMBLE_EXT_ADV
    struct ble_gap_ext_disc_params uncoded = {.itvl = SCAN_ITVL, .window = SCAN_WINDOW, .passive = 1};
    rc = ble_gap_ext_disc(own_addr_type, 0, 0, 0, 0, 0, &uncoded, NULL, on_gap_event, NULL);
#else
    struct ble_gap_disc_params params;
    memset(&params, 0, sizeof(params));
    params.itvl = SCAN_ITVL;
    params.window = SCAN_WINDOW;
    params.passive = 1;
    params.filter_duplicates = 0;
    rc = ble_gap_disc(own_addr_type, BLE_HS_FOREVER, &params, on_gap_event, NULL);
#endif
    if (rc != 0) {
        ESP_LOGE(TAG, "starting the scan failed: %d", rc);
    }
}

static void on_sync(void)
{
    if (ble_hs_util_ensure_addr(0) != 0 || ble_hs_id_infer_auto(0, &own_addr_type) != 0) {
        ESP_LOGE(TAG, "no usable BLE address");
        return;
    }
    start_scan();
}

static void on_reset(int reason)
{
    ESP_LOGW(TAG, "NimBLE host reset (reason %d); the scan restarts on the next sync", reason);
}

static void host_task(void *param)
{
    (void)param;
    nimble_port_run(); /* returns only after nimble_port_stop() */
    nimble_port_freertos_deinit();
}

esp_err_t gw_ble_start(QueueHandle_t queue)
{
    esp_err_t err;
    out_queue = queue;
    ruuvi_dedup_init(&dedup, dedup_entries, CONFIG_EDGE_GW_DEDUP_TAGS, CONFIG_EDGE_GW_DEDUP_WINDOW_S * 1000U);
    ruuvi_dedup_set_min_interval(&dedup, CONFIG_EDGE_GW_MIN_INTERVAL_S * 1000U);
    err = nimble_port_init();
    if (err != ESP_OK) {
        return err;
    }
    ble_hs_cfg.sync_cb = on_sync;
    ble_hs_cfg.reset_cb = on_reset;
    nimble_port_freertos_init(host_task);
    return ESP_OK;
}

void gw_ble_counters(gw_ble_counters_t *out)
{
    /* 32-bit counters written by one task: a torn read cannot happen on the ESP32's 32-bit loads. */
    *out = counters;
}
