/**
 * @file ruuvi_dedup.h
 * @brief Drop re-advertised measurements with a fixed-size table (no allocation).
 *
 * A tag sends each measurement several times. A measurement is identified by (mac, format byte, measurement
 * sequence number), or by (mac, format byte, a hash of the whole payload) for formats or adverts without a
 * sequence number, as in the Python gateway (edge/dedup.py). Unlike the Python gateway, which remembers every key
 * of its window, the table keeps one entry per (mac, format): the latest measurement of each tag. Re-adverts are
 * consecutive, so that catches them in a few bytes per tag; an older measurement heard again after a newer one
 * passes and is dropped by cloud-ingest's (mac, measurement_sequence_number) dedup. When the table is full, the
 * least recently seen tag is forgotten.
 */
#ifndef RUUVI_DEDUP_H
#define RUUVI_DEDUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ruuvi.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint8_t mac[6];
    uint8_t data_format;
    uint8_t in_use;
    uint32_t key;      /**< measurement sequence number, or payload hash */
    uint32_t first_ms; /**< when this measurement was first heard */
    uint32_t last_ms;  /**< when this tag was last heard (for eviction) */
    uint32_t kept_ms;  /**< when a measurement of this tag was last kept (for thinning) */
} ruuvi_dedup_entry_t;

typedef struct {
    ruuvi_dedup_entry_t *entries;
    size_t capacity;
    uint32_t window_ms;
    uint32_t min_interval_ms; /**< 0: keep every measurement; else at most one per tag per interval */
    uint32_t duplicates; /**< adverts reported as duplicates */
    uint32_t thinned;    /**< new measurements dropped by min_interval_ms */
    uint32_t evicted;    /**< tags forgotten because the table was full */
} ruuvi_dedup_t;

/** Uses `entries[capacity]` (caller-owned, e.g. static) as the table. window_ms must be > 0. */
void ruuvi_dedup_init(ruuvi_dedup_t *dd, ruuvi_dedup_entry_t *entries, size_t capacity, uint32_t window_ms);

/**
 * Thinning for small spools: keep at most one measurement per tag (and format) per `min_interval_ms`; 0 (the
 * default after init) keeps every measurement, like the Python gateway. Dropped ones count in `thinned`.
 */
void ruuvi_dedup_set_min_interval(ruuvi_dedup_t *dd, uint32_t min_interval_ms);

/**
 * True if this decoded advert repeats the measurement last heard from the same tag within the window, or is a new
 * measurement that thinning drops (then the caller drops it too).
 * @param mac     the sender's address (6 bytes)
 * @param d       the decoded payload
 * @param payload the raw payload (hashed when there is no sequence number)
 * @param now_ms  a monotonic millisecond clock; wrap-around is handled
 */
bool ruuvi_dedup_check(ruuvi_dedup_t *dd, const uint8_t mac[6], const ruuvi_data_t *d, const uint8_t *payload,
                       size_t payload_len, uint32_t now_ms);

#ifdef __cplusplus
}
#endif

#endif /* RUUVI_DEDUP_H */
