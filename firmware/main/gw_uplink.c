/**
 * @file gw_uplink.c
 * @brief The store-and-forward loop. Two tasks and the MQTT event handler share the spool and the uplink core
 *        (components/uplink) under one mutex:
 *        - writer: queue -> wire_record_pack -> spool_append (committed before it counts as stored);
 *        - uplink: uplink_next (a batch due again, or new readings, as canonical JSON) ->
 *          esp_mqtt_client_publish(QoS 1) -> wait for MQTT_EVENT_PUBLISHED with that msg_id -> uplink_published;
 *        - MQTT events: on connect, subscribe to <prefix>/<id>/confirm (QoS 1) before publishing and mark every
 *          unconfirmed batch for a re-send; each confirm message goes to uplink_confirm, which acknowledges the
 *          confirmed prefix in the spool.
 *        In confirm mode "cloud" a reading leaves the spool only on the cloud's confirmation; in "broker" mode on
 *        the PUBACK. What is not confirmed (timeout, disconnect, reboot) goes out again under a new seq, and
 *        cloud-ingest drops the copies by (mac, time_ns).
 *        The retained status is "online" on connect and every CONFIG_EDGE_GW_STATUS_INTERVAL_S, and the last will
 *        is "offline", both built by components/wire.
 */
#include "gw_uplink.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "esp_crt_bundle.h"
#include "esp_log.h"
#include "esp_timer.h"
#include "freertos/event_groups.h"
#include "freertos/semphr.h"
#include "freertos/task.h"
#include "gw_ble.h"
#include "mqtt_client.h"
#include "sdkconfig.h"
#include "uplink.h"
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
static char confirm_topic[160];
static char confirm_buf[WIRE_CONFIRM_BYTES_MAX];
static bool confirm_skip;
static uplink_t up;
static bool cloud_mode;
static char online_msg[128];
static char offline_msg[128];
static char batch_buf[CONFIG_EDGE_GW_BATCH_BYTES];
static volatile int acked_msg_id = -1;
static uint32_t store_errors;
static uint32_t batches_published;
static uint32_t publish_failures;
static uint32_t last_timeouts;

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
        uplink_remounted(&up); /* its cursors pointed into the old scan */
    }
}

static uint64_t now_ms(void)
{
    return (uint64_t)esp_timer_get_time() / 1000U;
}

/* A confirm message, possibly in several MQTT_EVENT_DATA fragments (the topic comes with the first only). One
 * longer than the longest canonical confirmation is refused without being read. */
static void on_data(const esp_mqtt_event_handle_t e)
{
    int n;
    if (e->current_data_offset == 0) {
        confirm_skip = !cloud_mode || e->topic_len != (int)strlen(confirm_topic) ||
                       memcmp(e->topic, confirm_topic, (size_t)e->topic_len) != 0;
        if (!confirm_skip && (e->total_data_len < 0 || e->total_data_len > (int)sizeof(confirm_buf))) {
            ESP_LOGW(TAG, "confirmation of %d bytes refused", e->total_data_len);
            lock();
            up.counters.confirms_bad++;
            unlock();
            confirm_skip = true;
        }
    }
    if (confirm_skip || e->current_data_offset < 0 || e->data_len < 0 ||
        e->current_data_offset + e->data_len > (int)sizeof(confirm_buf)) {
        return;
    }
    memcpy(confirm_buf + e->current_data_offset, e->data, (size_t)e->data_len);
    if (e->current_data_offset + e->data_len < e->total_data_len) {
        return; /* more fragments follow */
    }
    lock();
    n = uplink_confirm(&up, confirm_buf, (size_t)e->total_data_len);
    unlock();
    if (n < 0) {
        ESP_LOGW(TAG, "acknowledging confirmed readings in the spool failed; retried on the next confirmation");
    }
    xEventGroupSetBits(events, BIT_PENDING); /* room for new batches */
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
        /* Subscribe before publishing: confirmations of this session's batches must not be missed. A clean
         * session forgets what the broker held for us, so every unconfirmed batch goes out again. */
        if (cloud_mode && esp_mqtt_client_subscribe(client, confirm_topic, 1) < 0) {
            ESP_LOGW(TAG, "subscribing to %s failed", confirm_topic);
        }
        lock();
        uplink_reconnected(&up);
        unlock();
        xEventGroupClearBits(events, BIT_DISCONNECTED);
        xEventGroupSetBits(events, BIT_CONNECTED);
        (void)esp_mqtt_client_publish(client, status_topic, online_msg, 0, 1, 1);
        break;
    case MQTT_EVENT_DATA:
        on_data(e);
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
    uint32_t unconfirmed;
    spool_counters_t c;
    spool_confirm_counters_t k;
    uplink_counters_t u;
    gw_ble_counters(&b);
    lock();
    pending = spool->pending;
    c = spool->counters;
    k = up.table.counters;
    u = up.counters;
    unconfirmed = uplink_unconfirmed(&up);
    unlock();
    ESP_LOGI(TAG,
             "adverts %" PRIu32 " ruuvi %" PRIu32 " decode_errors %" PRIu32 " duplicates %" PRIu32
             " thinned %" PRIu32 " unsynced %" PRIu32 " queue_full %" PRIu32 " | spool pending %" PRIu32 " appended %" PRIu32
             " acked %" PRIu32 " dropped %" PRIu32 " recovered %" PRIu32 " torn %" PRIu32 " | batches %" PRIu32
             " publish_failures %" PRIu32 " store_errors %" PRIu32,
             b.adverts, b.ruuvi, b.decode_errors, b.duplicates, b.thinned, b.unsynced, b.queue_full, pending, c.appended,
             c.acked, c.dropped, c.recovered, c.torn, batches_published, publish_failures, store_errors);
    ESP_LOGI(TAG,
             "confirm %s | unconfirmed %" PRIu32 " confirmed_batches %" PRIu32 " confirms %" PRIu32
             " confirms_bad %" PRIu32 " unknown_seqs %" PRIu32 " timeouts %" PRIu32 " resent %" PRIu32
             " dropped_batches %" PRIu32 " seq_store_errors %" PRIu32 " skipped_records %" PRIu32,
             cloud_mode ? "cloud" : "broker", unconfirmed, k.confirmed_batches, u.confirms, u.confirms_bad,
             k.unknown_seqs, k.timeouts, k.resent, k.dropped_batches, k.seq_store_errors, u.skipped_records);
    if (cloud_mode && k.timeouts != last_timeouts) {
        /* Once per interval, not per batch: a receiver that never confirms keeps every reading here. */
        ESP_LOGW(TAG,
                 "%" PRIu32 " readings wait for the cloud's confirmation (%" PRIu32 " timeouts so far); a receiver "
                 "that never confirms needs `set confirm broker`",
                 unconfirmed, k.timeouts);
    }
    last_timeouts = k.timeouts;
}

static void uplink_task(void *arg)
{
    TickType_t last_status = xTaskGetTickCount();
    TickType_t last_stats = last_status;
    (void)arg;
    for (;;) {
        uint32_t pending;
        size_t len = 0;
        uint64_t seq = 0;
        spool_status_t sst = SPOOL_OK;
        uplink_status_t st;
        bool ok;
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
        /* Readings not yet in a batch (the unconfirmed count can include readings drop-oldest erased). */
        pending = spool->pending > uplink_unconfirmed(&up) ? spool->pending - uplink_unconfirmed(&up) : 0U;
        unlock();
        if (pending > 0U && pending < CONFIG_EDGE_GW_BATCH_MAX_READINGS) {
            /* Let a few more readings arrive so that batches are not one reading each. */
            vTaskDelay(pdMS_TO_TICKS(CONFIG_EDGE_GW_BATCH_INTERVAL_MS));
        }
        lock();
        st = uplink_next(&up, now_ms(), batch_buf, sizeof(batch_buf), &len, &seq, &sst);
        if (st == UPLINK_ERR_SPOOL) {
            ESP_LOGW(TAG, "spool: %s", spool_status_str(sst));
            recover_if_corrupt(sst);
        }
        unlock();
        if (st == UPLINK_IDLE) {
            /* Woken by a new reading or a confirmation; the timeout lets confirm timeouts be noticed. */
            (void)xEventGroupWaitBits(events, BIT_PENDING, pdTRUE, pdFALSE, pdMS_TO_TICKS(1000));
            continue;
        }
        if (st != UPLINK_BATCH) {
            if (st == UPLINK_ERR_SEQ) {
                ESP_LOGW(TAG, "no batch seq: the reservation could not be stored in NVS; nothing sent");
            }
            vTaskDelay(pdMS_TO_TICKS(2000));
            continue;
        }
        ok = publish_and_wait(len);
        lock();
        (void)uplink_published(&up, seq, ok, now_ms());
        unlock();
        if (ok) {
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
    uplink_config_t uc;
    spool_seq_store_t seq_store;
    if (!wire_gateway_id_valid(cfg->gateway_id) || !prefix_ok(cfg->prefix)) {
        ESP_LOGE(TAG, "invalid gateway id or topic prefix; fix them on the console (`set gateway_id ...`)");
        return ESP_ERR_INVALID_ARG;
    }
    if (strcmp(cfg->confirm, "cloud") != 0 && strcmp(cfg->confirm, "broker") != 0) {
        ESP_LOGE(TAG, "confirm must be cloud or broker, not %s (`set confirm cloud`)", cfg->confirm);
        return ESP_ERR_INVALID_ARG;
    }
    spool = sp;
    in_queue = readings;
    strlcpy(gateway_id, cfg->gateway_id, sizeof(gateway_id));
    (void)snprintf(batch_topic, sizeof(batch_topic), "%s/%s/batch", cfg->prefix, cfg->gateway_id);
    (void)snprintf(status_topic, sizeof(status_topic), "%s/%s/status", cfg->prefix, cfg->gateway_id);
    (void)snprintf(confirm_topic, sizeof(confirm_topic), "%s/%s/confirm", cfg->prefix, cfg->gateway_id);
    wire_buf_init(&b, online_msg, sizeof(online_msg));
    (void)wire_status_json(&b, gateway_id, true);
    wire_buf_init(&b, offline_msg, sizeof(offline_msg));
    (void)wire_status_json(&b, gateway_id, false);

    spool_lock = xSemaphoreCreateMutex();
    events = xEventGroupCreate();
    if (spool_lock == NULL || events == NULL) {
        return ESP_ERR_NO_MEM;
    }
    cloud_mode = strcmp(cfg->confirm, "cloud") == 0;
    uc.confirm = cloud_mode ? UPLINK_CONFIRM_CLOUD : UPLINK_CONFIRM_BROKER;
    uc.confirm_timeout_ms = CONFIG_EDGE_GW_CONFIRM_TIMEOUT_S * 1000U;
    uc.batch_max_readings = CONFIG_EDGE_GW_BATCH_MAX_READINGS;
    uc.max_unconfirmed = CONFIG_EDGE_GW_MAX_UNCONFIRMED;
    uc.seq_block = 64; /* one NVS write per 64 batches; a restart skips at most 63 seqs */
    gw_config_seq_store(&seq_store);
    if (uplink_init(&up, sp, gateway_id, &uc, &seq_store) != UPLINK_IDLE) {
        ESP_LOGE(TAG, "cannot read the batch seq reservation from NVS");
        return ESP_FAIL;
    }
    ESP_LOGI(TAG, "readings leave the spool on the %s's confirmation", cloud_mode ? "cloud" : "broker");

    memset(&mc, 0, sizeof(mc));
    mc.broker.address.uri = cfg->mqtt_uri;
    if (cfg->ca_pem != NULL) {
        mc.broker.verification.certificate = cfg->ca_pem; /* PEM, NUL-terminated */
    } else {
        mc.broker.verification.crt_bundle_attach = esp_crt_bundle_attach;
    }
    /* The broker ACL (pattern write <prefix>/%u/batch and .../status, pattern read <prefix>/%u/confirm) ties the
     * username to the gateway id. */
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
