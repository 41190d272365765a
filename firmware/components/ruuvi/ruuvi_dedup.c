/**
 * @file ruuvi_dedup.c
 * @brief Per-tag "last measurement" table for dropping re-advertised measurements.
 */
#include "ruuvi_dedup.h"

#include <string.h>

void ruuvi_dedup_init(ruuvi_dedup_t *dd, ruuvi_dedup_entry_t *entries, size_t capacity, uint32_t window_ms)
{
    memset(dd, 0, sizeof(*dd));
    dd->entries = entries;
    dd->capacity = (entries != NULL) ? capacity : 0U;
    dd->window_ms = (window_ms > 0U) ? window_ms : 1U;
    if (dd->capacity > 0U) {
        memset(entries, 0, capacity * sizeof(*entries));
    }
}

void ruuvi_dedup_set_min_interval(ruuvi_dedup_t *dd, uint32_t min_interval_ms)
{
    if (dd != NULL) {
        dd->min_interval_ms = min_interval_ms;
    }
}

/* FNV-1a: cheap, and collisions only merge two different payloads of one tag within the window. */
static uint32_t fnv1a(const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261U;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 16777619U;
    }
    return h;
}

bool ruuvi_dedup_check(ruuvi_dedup_t *dd, const uint8_t mac[6], const ruuvi_data_t *d, const uint8_t *payload,
                       size_t payload_len, uint32_t now_ms)
{
    ruuvi_dedup_entry_t *slot = NULL;
    ruuvi_dedup_entry_t *oldest = NULL;
    uint32_t key;
    if (dd == NULL || mac == NULL || d == NULL || dd->capacity == 0U) {
        return false;
    }
    /* The sequence number when the format has one and it is available, else the whole payload; the top bit keeps
     * the two kinds of key apart. */
    if (ruuvi_available(d, RUUVI_F_MEASUREMENT_SEQUENCE_NUMBER)) {
        key = d->measurement_sequence_number & 0x7FFFFFFFU;
    } else {
        key = (payload != NULL) ? (fnv1a(payload, payload_len) | 0x80000000U) : 0x80000000U;
    }
    for (size_t i = 0; i < dd->capacity; i++) {
        ruuvi_dedup_entry_t *e = &dd->entries[i];
        if (!e->in_use) {
            if (slot == NULL) {
                slot = e;
            }
            continue;
        }
        if (e->data_format == d->data_format && memcmp(e->mac, mac, 6) == 0) {
            e->last_ms = now_ms;
            /* Unsigned difference: correct across the 49-day wrap of a 32-bit ms clock. */
            if (e->key == key && (uint32_t)(now_ms - e->first_ms) < dd->window_ms) {
                dd->duplicates++;
                return true;
            }
            e->key = key;
            e->first_ms = now_ms;
            /* A new measurement. Its re-adverts are duplicates of it whether it is kept or thinned out. */
            if (dd->min_interval_ms > 0U && (uint32_t)(now_ms - e->kept_ms) < dd->min_interval_ms) {
                dd->thinned++;
                return true;
            }
            e->kept_ms = now_ms;
            return false;
        }
        if (oldest == NULL || (uint32_t)(now_ms - e->last_ms) > (uint32_t)(now_ms - oldest->last_ms)) {
            oldest = e;
        }
    }
    if (slot == NULL) {
        slot = oldest;
        dd->evicted++;
    }
    memcpy(slot->mac, mac, 6);
    slot->data_format = d->data_format;
    slot->in_use = 1;
    slot->key = key;
    slot->first_ms = now_ms;
    slot->last_ms = now_ms;
    slot->kept_ms = now_ms;
    return false;
}
