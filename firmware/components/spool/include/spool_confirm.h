/**
 * @file spool_confirm.h
 * @brief Keeping spool records until the cloud confirms them (docs/wire-format.md, "Confirmation").
 *
 * The spool's tail (spool_ack) moves only over records whose batch is confirmed. In between, a bounded table in
 * RAM maps each sent batch's seq to the records it carried, a range of spool positions [start, end). The table is
 * in spool order and the ranges follow each other, so the confirmed prefix is acknowledged with one spool_ack(end);
 * a batch confirmed out of order waits until every batch before it is confirmed too. spool_ack clears ack words
 * in place, so the tail persists with the same power-cut safety as the rest of the spool (a torn clear reads as
 * acknowledged, and is only ever written for a confirmed batch).
 *
 * The table is RAM only: after a reboot every unacknowledged record is simply sent again, under new seqs. A seq
 * is never reused, also across a reboot: seqs are handed out from a block whose end is persisted (seq store)
 * before the first of them is used, so a late confirmation of a seq from before the reboot cannot delete readings
 * sent after it.
 *
 * Re-sending: a batch whose confirmation has not come `timeout_ms` after its PUBACK (times the backoff, which
 * doubles with each timeout in a row, up to SPOOL_BACKOFF_MAX, and resets on a confirmation) is due again, as is
 * every unconfirmed batch after a reconnect or a failed publish. It goes out with the same records and a new seq;
 * the old seq is forgotten. Time is passed in by the caller (milliseconds, any monotonic origin).
 */
#ifndef SPOOL_CONFIRM_H
#define SPOOL_CONFIRM_H

#include <stdbool.h>
#include <stdint.h>

#include "spool.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Batches sent and not yet confirmed, at most (each entry is 40 bytes of RAM). */
#define SPOOL_INFLIGHT_MAX (8U)
/** The confirm timeout doubles on each timeout in a row, up to this many times the setting. */
#define SPOOL_BACKOFF_MAX (16U)
/** Largest batch seq (2**53 - 1, docs/wire-format.md). */
#define SPOOL_SEQ_MAX (9007199254740991ULL)
/** Seq of a table entry that was never published (its records did not decode): it is confirmed at once. */
#define SPOOL_SEQ_NONE (UINT64_MAX)

typedef enum {
    SPOOL_BATCH_PUBLISHING = 1, /**< handed to the publisher, no PUBACK yet */
    SPOOL_BATCH_SENT,           /**< PUBACK received, waiting for the cloud's confirmation */
    SPOOL_BATCH_CONFIRMED,      /**< confirmed, waiting for the batches before it */
    SPOOL_BATCH_RESEND,         /**< to be sent again under a new seq */
} spool_batch_state_t;

typedef struct {
    uint64_t seq;
    uint64_t deadline_ms; /**< SENT: re-send when now reaches this */
    spool_pos_t start;    /**< cursor before its first record */
    spool_pos_t end;      /**< cursor after its last record */
    uint32_t readings;    /**< readings in the batch */
    uint8_t state;        /**< spool_batch_state_t */
} spool_batch_t;

/** Where the seq reservation lives (NVS on the ESP32). Both return 0 on success. */
typedef struct {
    int (*load)(void *ctx, uint64_t *next); /**< the stored "first seq not reserved yet"; 0 if never stored */
    int (*store)(void *ctx, uint64_t next); /**< returns 0 only once `next` is durable */
    void *ctx;
} spool_seq_store_t;

typedef struct {
    uint32_t timeouts;           /**< times one or more batches were due again for lack of a confirmation */
    uint32_t resent;             /**< batches sent again (timeout, failed publish, reconnect) */
    uint32_t confirmed_batches;  /**< batches confirmed */
    uint32_t confirmed_readings; /**< their readings */
    uint32_t unknown_seqs;       /**< confirmation ranges that matched none of our batches */
    uint32_t dropped_batches;    /**< batches forgotten because drop-oldest erased all their records */
    uint32_t seq_store_errors;   /**< reservations that could not be persisted (nothing was sent then) */
} spool_confirm_counters_t;

typedef struct {
    spool_t *spool;
    spool_seq_store_t store;
    uint64_t next_seq;       /**< next seq to hand out */
    uint64_t reserved_until; /**< seqs below this are persisted as used */
    uint32_t seq_block;      /**< seqs reserved per store write */
    uint32_t timeout_ms;
    uint32_t backoff;        /**< 1, 2, 4, 8 or 16 */
    spool_batch_t batch[SPOOL_INFLIGHT_MAX]; /**< a ring in spool order */
    uint32_t first;
    uint32_t count;
    spool_pos_t send_pos;    /**< where the next new batch starts */
    uint32_t unconfirmed;    /**< readings in the table that are not confirmed */
    spool_confirm_counters_t counters;
} spool_confirm_t;

/**
 * Starts with an empty table at the spool's oldest unacknowledged record, and loads the seq reservation.
 * SPOOL_ERR_IO if the store cannot be read (no seq is handed out without it).
 */
spool_status_t spool_confirm_init(spool_confirm_t *c, spool_t *s, const spool_seq_store_t *store, uint32_t seq_block,
                                  uint32_t timeout_ms);

/** Forgets every batch and starts again at the oldest unacknowledged record (after a re-mount of the spool). */
void spool_confirm_reset(spool_confirm_t *c);

/** A new seq, persisting a new reservation first when needed; SPOOL_ERR_IO (no seq) if that fails. */
spool_status_t spool_confirm_take_seq(spool_confirm_t *c, uint64_t *seq);

/** Returns the seq just taken if it was never published (an empty batch), so idle polling uses no seqs. */
void spool_confirm_untake_seq(spool_confirm_t *c, uint64_t seq);

/**
 * Forgets batches whose records drop-oldest erased, and marks SENT batches whose deadline passed as due (one
 * timeout: the backoff doubles). Returns the oldest batch due for a re-send, or NULL.
 */
spool_batch_t *spool_confirm_due(spool_confirm_t *c, uint64_t now_ms);

/** True if a new batch may be added: the table has room and fewer than max_unconfirmed readings wait. */
bool spool_confirm_room(const spool_confirm_t *c, uint32_t max_unconfirmed);

/**
 * Records a new batch [start, end) handed to the publisher (state PUBLISHING), or with seq SPOOL_SEQ_NONE a range
 * of records that carry no reading (confirmed at once). The range must start at send_pos.
 */
spool_status_t spool_confirm_add(spool_confirm_t *c, uint64_t seq, const spool_pos_t *start, const spool_pos_t *end,
                                 uint32_t readings);

/** A due batch goes out again under `seq` with `readings` readings (SPOOL_SEQ_NONE: none left, confirmed). */
spool_status_t spool_confirm_resending(spool_confirm_t *c, spool_batch_t *b, uint64_t seq, uint32_t readings);

/**
 * The publisher's outcome for `seq`: with a PUBACK the batch waits for its confirmation (`by_broker`: it counts
 * as confirmed now, the broker mode); without one (timeout, disconnect) it is due again.
 */
spool_status_t spool_confirm_published(spool_confirm_t *c, uint64_t seq, bool puback, bool by_broker, uint64_t now_ms);

/**
 * Confirms every batch whose seq lies in [first, last] (its seq tested against the range, never the range
 * walked) and returns how many were newly confirmed; ranges that match nothing are counted in unknown_seqs.
 * Call spool_confirm_advance once after the ranges of a message.
 */
uint32_t spool_confirm_match(spool_confirm_t *c, uint64_t first, uint64_t last);

/**
 * Acknowledges the confirmed prefix in the spool. An error comes from the spool; the confirmed batches stay
 * confirmed and are acknowledged on the next call.
 */
spool_status_t spool_confirm_advance(spool_confirm_t *c);

/** After a reconnect: every batch not confirmed is due again (confirmations sent meanwhile are lost). */
void spool_confirm_resend_all(spool_confirm_t *c);

#ifdef __cplusplus
}
#endif

#endif /* SPOOL_CONFIRM_H */
