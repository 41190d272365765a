/**
 * @file gw_uplink.c
 * @brief The store-and-forward loop. Two tasks share the spool under one mutex:
 *        - writer: queue -> wire_record_pack -> spool_append (committed before it counts as stored);
 *        - uplink: spool_read -> wire_batch_add (canonical JSON) -> esp_mqtt_client_publish(QoS 1) -> wait for
 *          MQTT_EVENT_PUBLISHED with that msg_id -> spool_ack. Without the PUBACK (timeout, disconnect, reboot) the
 *          records stay and go out again in a later batch; cloud-ingest deduplicates by (mac, time_ns).
 *        The retained status is "online" on connect and every CONFIG_EDGE_GW_STATUS_INTERVAL_S, and the last will
 *        is "offline", both built by components/wire.
 */
#include "gw_uplink.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "esp_crt_bundle.h"
#include "esp_log.h"
#include "freertos/event_groups.h"
#include "freertos/semphr.h"
#include "freertos/task.h"
#include "gw_ble.h"
#include "mqtt_client.h"
#include "sdkconfig.h"
#include "wire.h"

#define BIT_CONNECTED ((EventBits_t)1U << 0)
#define BIT_PUBACK ((EventBits_t)1U << 1)
#define BIT_DISCONNECTED ((EventBits_t)1U << 2)
#define BIT_PENDING ((EventBits_t)1U << 3)
#define STATS_INTERVAL_MS (60000U)

static const char *TAG = "gw_uplink";
static spool_t *spool;
static SemaphoreHandle_t spool_lock;
static EventGroupHandle_t events;
static esp_mqtt_client_handle_t client;
static QueueHandle_t in_queue;
static char gateway_id[WIRE_GATEWAY_ID_MAX + 1];
static char batch_topic[160];
static char status_topic[160];
static char online_msg[128];
static char offline_msg[128];
static char batch_buf[CONFIG_EDGE_GW_BATCH_BYTES];
static volatile int acked_msg_id = -1;
static uint32_t store_errors;
static uint32_t batches_published;
static uint32_t publish_failures;

static void lock(void)
{
    (void)xSemaphoreTake(spool_lock, portMAX_DELAY);
}

static void unlock(void)
{
    (void)xSemaphoreGive(spool_lock);
}

/* A committed record that fails its check (worn flash) stops reads at that point; mounting again re-scans the
 * ring, closes the damaged sector and recomputes the counts, so the uplink can go on. */
static void recover_if_corrupt(spool_status_t st)
{
    if (st == SPOOL_ERR_CORRUPT) {
        const spool_bdev_t *dev = spool->dev;
        ESP_LOGE(TAG, "spool record failed its check; re-scanning the spool");
        (void)spool_mount(spool, dev);
    }
}

static void writer_task(void *arg)
{
    (void)arg;
    for (;;) {
        wire_reading_t r;
        uint8_t rec[WIRE_RECORD_MAX];
        size_t n;
        spool_status_t st;
        if (xQueueReceive(in_queue, &r, portMAX_DELAY) != pdTRUE) {
            continue;
        }
        n = wire_record_pack(&r, rec, sizeof(rec));
        lock();
        st = (n > 0U) ? spool_append(spool, rec, n) : SPOOL_ERR_ARG;
        unlock();
        if (st != SPOOL_OK) {
            store_errors++;
            ESP_LOGW(TAG, "spool append failed: %s", spool_status_str(st));
        }
        xEventGroupSetBits(events, BIT_PENDING);
    }
}

static void on_mqtt_event(void *arg, esp_event_base_t base, int32_t id, void *data)
{
    esp_mqtt_event_handle_t e = data;
    (void)arg;
    (void)base;
    switch ((esp_mqtt_event_id_t)id) {
    case MQTT_EVENT_CONNECTED:
        ESP_LOGI(TAG, "connected to the broker");
        xEventGroupClearBits(events, BIT_DISCONNECTED);
        xEventGroupSetBits(events, BIT_CONNECTED);
        (void)esp_mqtt_client_publish(client, status_topic, online_msg, 0, 1, 1);
        break;
    case MQTT_EVENT_DISCONNECTED:
        ESP_LOGW(TAG, "disconnected from the broker (esp-mqtt reconnects)");
        xEventGroupClearBits(events, BIT_CONNECTED);
        xEventGroupSetBits(events, BIT_DISCONNECTED);
        break;
    case MQTT_EVENT_PUBLISHED:
        acked_msg_id = e->msg_id;
        xEventGroupSetBits(events, BIT_PUBACK);
        break;
    case MQTT_EVENT_ERROR:
        ESP_LOGW(TAG, "MQTT error (type %d)", e->error_handle != NULL ? (int)e->error_handle->error_type : -1);
        break;
    default:
        break;
    }
}

/* Fills batch_buf from the oldest records; *upto is the cursor after the last record included. Returns the
 * number of readings (0: nothing to send). Records that do not decode any more are skipped and acked with the
 * batch, so one bad record cannot block the queue. */
static size_t build_batch(uint64_t seq, spool_pos_t *upto, size_t *len)
{
    wire_batch_t w;
    spool_pos_t pos;
    size_t count = 0;
    lock();
    spool_begin(spool, &pos);
    *upto = pos;
    if (wire_batch_begin(&w, batch_buf, sizeof(batch_buf), gateway_id, seq) != WIRE_OK) {
        unlock();
        return 0;
    }
    while (count < CONFIG_EDGE_GW_BATCH_MAX_READINGS) {
        uint8_t rec[WIRE_RECORD_MAX];
        size_t n = 0;
        wire_reading_t r;
        spool_pos_t before = pos;
        spool_status_t st = spool_read(spool, &pos, rec, sizeof(rec), &n);
        wire_status_t ws;
        if (st != SPOOL_OK) {
            if (st != SPOOL_END) {
                ESP_LOGW(TAG, "spool read: %s", spool_status_str(st));
                recover_if_corrupt(st);
            }
            break;
        }
        ws = wire_record_unpack(rec, n, &r);
        if (ws == WIRE_OK) {
            ws = wire_batch_add(&w, &r);
        }
        if (ws == WIRE_ERR_FULL) {
            pos = before; /* not in this batch */
            break;
        }
        if (ws == WIRE_OK) {
            count++;
        } else {
            ESP_LOGW(TAG, "skipping a spool record: %s", wire_status_str(ws));
        }
        *upto = pos;
    }
    unlock();
    if (count == 0U || wire_batch_end(&w, len) != WIRE_OK) {
        return 0;
    }
    return count;
}

static void ack(const spool_pos_t *upto)
{
    spool_status_t st;
    lock();
    st = spool_ack(spool, upto);
    unlock();
    if (st != SPOOL_OK) {
        ESP_LOGW(TAG, "spool ack: %s", spool_status_str(st));
        recover_if_corrupt(st);
    }
}

static bool publish_and_wait(size_t len)
{
    EventBits_t bits;
    int msg_id;
    xEventGroupClearBits(events, BIT_PUBACK);
    msg_id = esp_mqtt_client_publish(client, batch_topic, batch_buf, (int)len, 1, 0);
    if (msg_id < 0) {
        return false;
    }
    for (;;) {
        bits = xEventGroupWaitBits(events, BIT_PUBACK | BIT_DISCONNECTED, pdTRUE, pdFALSE,
                                   pdMS_TO_TICKS(CONFIG_EDGE_GW_PUBACK_TIMEOUT_S * 1000U));
        if ((bits & BIT_PUBACK) != 0U && acked_msg_id == msg_id) {
            return true;
        }
        if ((bits & BIT_PUBACK) == 0U) {
            return false; /* timeout or disconnect */
        }
        /* A PUBACK for an older message (the status, or a retransmission): keep waiting. */
    }
}

static void log_stats(void)
{
    gw_ble_counters_t b;
    uint32_t pending;
    spool_counters_t c;
    gw_ble_counters(&b);
    lock();
    pending = spool->pending;
    c = spool->counters;
    unlock();
    ESP_LOGI(TAG,
             "adverts %" PRIu32 " ruuvi %" PRIu32 " decode_errors %" PRIu32 " duplicates %" PRIu32
             " thinned %" PRIu32 " unsynced %" PRIu32 " queue_full %" PRIu32 " | spool pending %" PRIu32 " appended %" PRIu32
             " acked %" PRIu32 " dropped %" PRIu32 " recovered %" PRIu32 " torn %" PRIu32 " | batches %" PRIu32
             " publish_failures %" PRIu32 " store_errors %" PRIu32,
             b.adverts, b.ruuvi, b.decode_errors, b.duplicates, b.thinned, b.unsynced, b.queue_full, pending, c.appended,
             c.acked, c.dropped, c.recovered, c.torn, batches_published, publish_failures, store_errors);
}

static void uplink_task(void *arg)
{
    TickType_t last_status = xTaskGetTickCount();
    TickType_t last_stats = last_status;
    (void)arg;
    for (;;) {
        uint32_t pending;
        spool_pos_t upto;
        size_t len = 0;
        TickType_t now = xTaskGetTickCount();
        if ((now - last_stats) >= pdMS_TO_TICKS(STATS_INTERVAL_MS)) {
            log_stats();
            last_stats = now;
        }
        if ((xEventGroupGetBits(events) & BIT_CONNECTED) == 0U) {
            (void)xEventGroupWaitBits(events, BIT_CONNECTED, pdFALSE, pdFALSE, pdMS_TO_TICKS(5000));
            continue;
        }
        if ((now - last_status) >= pdMS_TO_TICKS(CONFIG_EDGE_GW_STATUS_INTERVAL_S * 1000U)) {
            (void)esp_mqtt_client_publish(client, status_topic, online_msg, 0, 1, 1);
            last_status = now;
        }
        lock();
        pending = spool->pending;
        unlock();
        if (pending == 0U) {
            (void)xEventGroupWaitBits(events, BIT_PENDING, pdTRUE, pdFALSE, pdMS_TO_TICKS(5000));
            continue;
        }
        if (pending < CONFIG_EDGE_GW_BATCH_MAX_READINGS) {
            /* Let a few more readings arrive so that batches are not one reading each. */
            vTaskDelay(pdMS_TO_TICKS(CONFIG_EDGE_GW_BATCH_INTERVAL_MS));
        }
        if (build_batch(gw_config_next_seq(), &upto, &len) == 0U) {
            ack(&upto); /* only undecodable records were there */
            continue;
        }
        if (publish_and_wait(len)) {
            ack(&upto);
            batches_published++;
        } else {
            publish_failures++;
            vTaskDelay(pdMS_TO_TICKS(2000));
        }
    }
}

static bool prefix_ok(const char *prefix)
{
    /* Never under Ruuvi Gateway's default ruuvi/ tree (docs/wire-format.md). */
    return prefix[0] != '\0' && strcmp(prefix, "ruuvi") != 0 && strncmp(prefix, "ruuvi/", 6) != 0 &&
           strpbrk(prefix, "#+") == NULL;
}

esp_err_t gw_uplink_start(const gw_config_t *cfg, spool_t *sp, QueueHandle_t readings)
{
    esp_mqtt_client_config_t mc;
    wire_buf_t b;
    if (!wire_gateway_id_valid(cfg->gateway_id) || !prefix_ok(cfg->prefix)) {
        ESP_LOGE(TAG, "invalid gateway id or topic prefix; fix them on the console (`set gateway_id ...`)");
        return ESP_ERR_INVALID_ARG;
    }
    spool = sp;
    in_queue = readings;
    strlcpy(gateway_id, cfg->gateway_id, sizeof(gateway_id));
    (void)snprintf(batch_topic, sizeof(batch_topic), "%s/%s/batch", cfg->prefix, cfg->gateway_id);
    (void)snprintf(status_topic, sizeof(status_topic), "%s/%s/status", cfg->prefix, cfg->gateway_id);
    wire_buf_init(&b, online_msg, sizeof(online_msg));
    (void)wire_status_json(&b, gateway_id, true);
    wire_buf_init(&b, offline_msg, sizeof(offline_msg));
    (void)wire_status_json(&b, gateway_id, false);

    spool_lock = xSemaphoreCreateMutex();
    events = xEventGroupCreate();
    if (spool_lock == NULL || events == NULL) {
        return ESP_ERR_NO_MEM;
    }

    memset(&mc, 0, sizeof(mc));
    mc.broker.address.uri = cfg->mqtt_uri;
    if (cfg->ca_pem != NULL) {
        mc.broker.verification.certificate = cfg->ca_pem; /* PEM, NUL-terminated */
    } else {
        mc.broker.verification.crt_bundle_attach = esp_crt_bundle_attach;
    }
    /* The broker ACL (pattern write <prefix>/%u/#) ties the username to the gateway id. */
    mc.credentials.username = gateway_id;
    mc.credentials.client_id = gateway_id;
    mc.credentials.authentication.password = cfg->mqtt_pass;
    mc.session.last_will.topic = status_topic;
    mc.session.last_will.msg = offline_msg;
    mc.session.last_will.msg_len = 0; /* NUL-terminated */
    mc.session.last_will.qos = 1;
    mc.session.last_will.retain = 1;
    mc.session.keepalive = 30;
    mc.network.reconnect_timeout_ms = 5000;
    client = esp_mqtt_client_init(&mc);
    if (client == NULL) {
        return ESP_FAIL;
    }
    ESP_ERROR_CHECK(esp_mqtt_client_register_event(client, (esp_mqtt_event_id_t)ESP_EVENT_ANY_ID, on_mqtt_event, NULL));
    ESP_ERROR_CHECK(esp_mqtt_client_start(client));
    if (xTaskCreate(writer_task, "spool_writer", 4096, NULL, 5, NULL) != pdPASS ||
        xTaskCreate(uplink_task, "uplink", 6144, NULL, 4, NULL) != pdPASS) {
        return ESP_ERR_NO_MEM;
    }
    return ESP_OK;
}
