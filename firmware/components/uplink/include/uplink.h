/**
 * @file uplink.h
 * @brief The uplink's decisions, without MQTT or a clock of its own: which batch to publish next (a batch due
 *        again first, then new readings), what a PUBACK or a confirmation frees, and when to re-send. The ESP-IDF
 *        glue (main/gw_uplink.c) publishes, waits for the PUBACK and passes the confirm topic's messages in; the
 *        host tests drive the same calls with a fake clock and a fake publisher.
 *
 * Modes (docs/wire-format.md, "Confirmation"):
 * - UPLINK_CONFIRM_CLOUD (default): a batch's records leave the spool only once cloud-ingest confirms its seq.
 *   Several batches may wait for their confirmation (at most SPOOL_INFLIGHT_MAX, and at most max_unconfirmed
 *   readings); a batch not confirmed confirm_timeout_ms after its PUBACK (doubling with each timeout in a row, up
 *   to 16 times) goes out again with the same readings and a new seq, as do all unconfirmed batches after a
 *   reconnect; after a reboot everything unacknowledged is sent again.
 * - UPLINK_CONFIRM_BROKER: the records leave the spool on the broker's PUBACK, as before wire format 1.1 (for a
 *   receiver that never confirms, such as Telegraf). Confirmations are ignored.
 *
 * Not thread-safe: the caller serialises every call (and the spool's other users) with one lock.
 */
#ifndef UPLINK_H
#define UPLINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spool.h"
#include "spool_confirm.h"
#include "wire.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    UPLINK_CONFIRM_CLOUD = 0,
    UPLINK_CONFIRM_BROKER,
} uplink_confirm_t;

typedef struct {
    uplink_confirm_t confirm;
    uint32_t confirm_timeout_ms; /**< re-send a batch not confirmed this long after its PUBACK */
    uint32_t batch_max_readings;
    uint32_t max_unconfirmed;    /**< readings sent and not confirmed, at most; past it nothing new is sent */
    uint32_t seq_block;          /**< seqs reserved per write of the seq store */
} uplink_config_t;

typedef struct {
    uint32_t batches;         /**< batches handed to the publisher (new and re-sent) */
    uint32_t confirms;        /**< confirmation messages accepted */
    uint32_t confirms_bad;    /**< confirmation messages refused (not canonical, other gateway, version): ignored */
    uint32_t skipped_records; /**< spool records that no longer decode, acknowledged without being sent */
} uplink_counters_t;

typedef struct {
    spool_confirm_t table;
    uplink_config_t cfg;
    char gateway_id[WIRE_GATEWAY_ID_MAX + 1];
    uplink_counters_t counters;
    wire_seq_range_t ranges[WIRE_CONFIRM_RANGES_MAX]; /**< a parsed confirmation (kept off the MQTT task's stack) */
} uplink_t;

typedef enum {
    UPLINK_IDLE = 0,  /**< nothing to publish now */
    UPLINK_BATCH,     /**< a batch is in the buffer: publish it, then call uplink_published */
    UPLINK_ERR_ARG,   /**< bad argument or configuration */
    UPLINK_ERR_SEQ,   /**< no seq: the reservation could not be persisted; nothing was sent */
    UPLINK_ERR_SPOOL, /**< the spool reported an error (see last_spool_status); SPOOL_ERR_CORRUPT: re-mount it and
                           call uplink_remounted */
} uplink_status_t;

/** Loads the seq reservation from `store` and starts at the spool's oldest unacknowledged record. */
uplink_status_t uplink_init(uplink_t *u, spool_t *spool, const char *gateway_id, const uplink_config_t *cfg,
                            const spool_seq_store_t *store);

/**
 * The next batch to publish, written into buf (canonical JSON, wire_batch_*): a batch due again (timeout, failed
 * publish, reconnect) first, then new readings from the spool if there is room. *seq and *len describe it.
 * @param spool_st receives the spool status on UPLINK_ERR_SPOOL (may be NULL)
 */
uplink_status_t uplink_next(uplink_t *u, uint64_t now_ms, char *buf, size_t cap, size_t *len, uint64_t *seq,
                            spool_status_t *spool_st);

/** The publisher's outcome for `seq`: PUBACK received or not (timeout, disconnect). */
spool_status_t uplink_published(uplink_t *u, uint64_t seq, bool puback, uint64_t now_ms);

/**
 * A message from `<prefix>/<gateway_id>/confirm`: parsed with wire_confirm_parse; a refused message changes
 * nothing. Returns the number of batches confirmed (0 for a refused, unknown or broker-mode message), or -1 if
 * acknowledging them in the spool failed (they are acknowledged on a later call).
 */
int uplink_confirm(uplink_t *u, const char *payload, size_t len);

/** After a (re)connect: every batch not confirmed is sent again. */
void uplink_reconnected(uplink_t *u);

/** After the caller re-mounted the spool: forget the table, start again at the oldest unacknowledged record. */
void uplink_remounted(uplink_t *u);

/** Readings sent (or being sent) and not yet confirmed. */
uint32_t uplink_unconfirmed(const uplink_t *u);

const char *uplink_confirm_name(uplink_confirm_t mode);

#ifdef __cplusplus
}
#endif

#endif /* UPLINK_H */
