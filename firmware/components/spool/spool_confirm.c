/**
 * @file spool_confirm.c
 * @brief The table of sent, unconfirmed batches described in spool_confirm.h.
 */
#include "spool_confirm.h"

#include <string.h>

static spool_batch_t *at(spool_confirm_t *c, uint32_t i)
{
    return &c->batch[(c->first + i) % SPOOL_INFLIGHT_MAX];
}

static void pop_front(spool_confirm_t *c)
{
    spool_batch_t *b = at(c, 0);
    if (b->state != SPOOL_BATCH_CONFIRMED) {
        c->unconfirmed -= (b->readings < c->unconfirmed) ? b->readings : c->unconfirmed;
    }
    memset(b, 0, sizeof(*b));
    c->first = (c->first + 1U) % SPOOL_INFLIGHT_MAX;
    c->count--;
}

static void mark_confirmed(spool_confirm_t *c, spool_batch_t *b)
{
    c->unconfirmed -= (b->readings < c->unconfirmed) ? b->readings : c->unconfirmed;
    b->state = SPOOL_BATCH_CONFIRMED;
}

spool_status_t spool_confirm_init(spool_confirm_t *c, spool_t *s, const spool_seq_store_t *store, uint32_t seq_block,
                                  uint32_t timeout_ms)
{
    uint64_t next = 0;
    if (c == NULL || s == NULL || store == NULL || store->load == NULL || store->store == NULL || seq_block == 0U) {
        return SPOOL_ERR_ARG;
    }
    memset(c, 0, sizeof(*c));
    c->spool = s;
    c->store = *store;
    c->seq_block = seq_block;
    c->timeout_ms = timeout_ms;
    c->backoff = 1;
    if (store->load(store->ctx, &next) != 0 || next > SPOOL_SEQ_MAX) {
        c->counters.seq_store_errors++;
        return SPOOL_ERR_IO;
    }
    /* Nothing of this boot is reserved yet: the first seq persists a new block. */
    c->next_seq = next;
    c->reserved_until = next;
    spool_begin(s, &c->send_pos);
    return SPOOL_OK;
}

void spool_confirm_reset(spool_confirm_t *c)
{
    memset(c->batch, 0, sizeof(c->batch));
    c->first = 0;
    c->count = 0;
    c->unconfirmed = 0;
    spool_begin(c->spool, &c->send_pos);
}

spool_status_t spool_confirm_take_seq(spool_confirm_t *c, uint64_t *seq)
{
    if (c->next_seq >= SPOOL_SEQ_MAX) {
        return SPOOL_ERR_ARG; /* 2**53 batches: not reached in the life of any flash */
    }
    if (c->next_seq >= c->reserved_until) {
        uint64_t until = c->next_seq + c->seq_block;
        if (until > SPOOL_SEQ_MAX) {
            until = SPOOL_SEQ_MAX;
        }
        /* Persist before use: a seq handed out is below the stored value on every later boot. */
        if (c->store.store(c->store.ctx, until) != 0) {
            c->counters.seq_store_errors++;
            return SPOOL_ERR_IO;
        }
        c->reserved_until = until;
    }
    *seq = c->next_seq++;
    return SPOOL_OK;
}

void spool_confirm_untake_seq(spool_confirm_t *c, uint64_t seq)
{
    if (seq + 1U == c->next_seq) {
        c->next_seq = seq;
    }
}

spool_batch_t *spool_confirm_due(spool_confirm_t *c, uint64_t now_ms)
{
    spool_pos_t tail;
    bool timed_out = false;
    spool_begin(c->spool, &tail);
    /* Drop-oldest may have erased every record of the oldest batches: nothing is left to confirm or send. */
    while (c->count > 0U && spool_pos_cmp(&at(c, 0)->end, &tail) <= 0 && at(c, 0)->state != SPOOL_BATCH_PUBLISHING) {
        if (at(c, 0)->state != SPOOL_BATCH_CONFIRMED) {
            c->counters.dropped_batches++;
        }
        pop_front(c);
    }
    for (uint32_t i = 0; i < c->count; i++) {
        spool_batch_t *b = at(c, i);
        if (b->state == SPOOL_BATCH_SENT && now_ms >= b->deadline_ms) {
            b->state = SPOOL_BATCH_RESEND;
            timed_out = true;
        }
    }
    if (timed_out) {
        c->counters.timeouts++;
        if (c->backoff < SPOOL_BACKOFF_MAX) {
            c->backoff *= 2U;
        }
    }
    for (uint32_t i = 0; i < c->count; i++) {
        if (at(c, i)->state == SPOOL_BATCH_RESEND) {
            return at(c, i);
        }
    }
    return NULL;
}

bool spool_confirm_room(const spool_confirm_t *c, uint32_t max_unconfirmed)
{
    return c->count < SPOOL_INFLIGHT_MAX && c->unconfirmed < max_unconfirmed;
}

spool_status_t spool_confirm_add(spool_confirm_t *c, uint64_t seq, const spool_pos_t *start, const spool_pos_t *end,
                                 uint32_t readings)
{
    spool_batch_t *b;
    if (c->count >= SPOOL_INFLIGHT_MAX || spool_pos_cmp(start, end) > 0) {
        return SPOOL_ERR_ARG;
    }
    b = &c->batch[(c->first + c->count) % SPOOL_INFLIGHT_MAX];
    memset(b, 0, sizeof(*b));
    b->seq = seq;
    b->start = *start;
    b->end = *end;
    b->readings = readings;
    c->count++;
    c->send_pos = *end;
    if (seq == SPOOL_SEQ_NONE) {
        b->state = SPOOL_BATCH_CONFIRMED;
        return spool_confirm_advance(c);
    }
    b->state = SPOOL_BATCH_PUBLISHING;
    c->unconfirmed += readings;
    return SPOOL_OK;
}

spool_status_t spool_confirm_resending(spool_confirm_t *c, spool_batch_t *b, uint64_t seq, uint32_t readings)
{
    c->unconfirmed -= (b->readings < c->unconfirmed) ? b->readings : c->unconfirmed;
    b->readings = readings;
    b->seq = seq;
    c->counters.resent++;
    if (seq == SPOOL_SEQ_NONE) {
        b->state = SPOOL_BATCH_CONFIRMED;
        return spool_confirm_advance(c);
    }
    c->unconfirmed += readings;
    b->state = SPOOL_BATCH_PUBLISHING;
    return SPOOL_OK;
}

static spool_batch_t *find(spool_confirm_t *c, uint64_t seq)
{
    for (uint32_t i = 0; i < c->count; i++) {
        spool_batch_t *b = at(c, i);
        if (b->seq == seq && b->state != SPOOL_BATCH_RESEND) {
            return b;
        }
    }
    return NULL;
}

spool_status_t spool_confirm_published(spool_confirm_t *c, uint64_t seq, bool puback, bool by_broker, uint64_t now_ms)
{
    spool_batch_t *b = find(c, seq);
    if (b == NULL || b->state != SPOOL_BATCH_PUBLISHING) {
        return SPOOL_OK; /* confirmed before its PUBACK was seen, or forgotten meanwhile */
    }
    if (!puback) {
        b->state = SPOOL_BATCH_RESEND;
        return SPOOL_OK;
    }
    if (by_broker) {
        mark_confirmed(c, b);
        c->counters.confirmed_batches++;
        c->counters.confirmed_readings += b->readings;
        return spool_confirm_advance(c);
    }
    b->state = SPOOL_BATCH_SENT;
    b->deadline_ms = now_ms + (uint64_t)c->timeout_ms * c->backoff;
    return SPOOL_OK;
}

uint32_t spool_confirm_match(spool_confirm_t *c, uint64_t first, uint64_t last)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->count; i++) {
        spool_batch_t *b = at(c, i);
        /* A confirmation may overtake its PUBACK; a batch due again has no seq any more. */
        if ((b->state == SPOOL_BATCH_PUBLISHING || b->state == SPOOL_BATCH_SENT) && b->seq >= first &&
            b->seq <= last) {
            mark_confirmed(c, b);
            c->counters.confirmed_batches++;
            c->counters.confirmed_readings += b->readings;
            n++;
        }
    }
    if (n == 0U) {
        c->counters.unknown_seqs++;
    } else {
        c->backoff = 1;
    }
    return n;
}

spool_status_t spool_confirm_advance(spool_confirm_t *c)
{
    while (c->count > 0U && at(c, 0)->state == SPOOL_BATCH_CONFIRMED) {
        /* The only place the tail moves: over records of confirmed batches, everything before them confirmed. */
        spool_status_t st = spool_ack(c->spool, &at(c, 0)->end);
        if (st != SPOOL_OK) {
            return st;
        }
        pop_front(c);
    }
    return SPOOL_OK;
}

void spool_confirm_resend_all(spool_confirm_t *c)
{
    for (uint32_t i = 0; i < c->count; i++) {
        spool_batch_t *b = at(c, i);
        if (b->state == SPOOL_BATCH_PUBLISHING || b->state == SPOOL_BATCH_SENT) {
            b->state = SPOOL_BATCH_RESEND;
        }
    }
}
