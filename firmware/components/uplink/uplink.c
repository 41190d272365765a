/**
 * @file uplink.c
 * @brief The uplink decisions described in uplink.h, over spool_confirm (the table) and wire (the JSON).
 */
#include "uplink.h"

#include <string.h>

/* A new batch is built this much short of the buffer, so that re-sending it under a longer seq (up to 16 digits
 * instead of 1) still fits: a re-send must carry every record of its range. */
#define SEQ_HEADROOM (16U)

uplink_status_t uplink_init(uplink_t *u, spool_t *spool, const char *gateway_id, const uplink_config_t *cfg,
                            const spool_seq_store_t *store)
{
    if (u == NULL || spool == NULL || cfg == NULL || !wire_gateway_id_valid(gateway_id) ||
        cfg->batch_max_readings == 0U || cfg->max_unconfirmed == 0U || cfg->seq_block == 0U ||
        (cfg->confirm != UPLINK_CONFIRM_CLOUD && cfg->confirm != UPLINK_CONFIRM_BROKER)) {
        return UPLINK_ERR_ARG;
    }
    memset(u, 0, sizeof(*u));
    u->cfg = *cfg;
    memcpy(u->gateway_id, gateway_id, strlen(gateway_id) + 1U);
    switch (spool_confirm_init(&u->table, spool, store, cfg->seq_block, cfg->confirm_timeout_ms)) {
    case SPOOL_OK:
        return UPLINK_IDLE;
    case SPOOL_ERR_IO:
        return UPLINK_ERR_SEQ;
    default:
        return UPLINK_ERR_ARG;
    }
}

typedef struct {
    spool_pos_t upto;   /* cursor after the last record taken */
    uint32_t readings;  /* readings in the batch */
    uint32_t records;   /* records taken (readings + records that no longer decode) */
    bool short_of_end;  /* stopped before `end` for lack of room */
} fill_t;

/* Puts the readings of the records from `from` (up to `end`, if given) into a batch in buf. */
static spool_status_t fill(uplink_t *u, const spool_pos_t *from, const spool_pos_t *end, uint64_t seq, char *buf,
                           size_t cap, size_t *len, fill_t *f)
{
    spool_t *s = u->table.spool;
    wire_batch_t w;
    spool_pos_t pos = *from;
    memset(f, 0, sizeof(*f));
    f->upto = pos;
    if (wire_batch_begin(&w, buf, cap, u->gateway_id, seq) != WIRE_OK) {
        return SPOOL_ERR_ARG;
    }
    for (;;) {
        uint8_t rec[WIRE_RECORD_MAX];
        size_t n = 0;
        wire_reading_t r;
        spool_pos_t before = pos;
        wire_status_t ws;
        spool_status_t st = spool_read(s, &pos, rec, sizeof(rec), &n);
        if (st == SPOOL_END) {
            break;
        }
        if (st != SPOOL_OK) {
            return st;
        }
        if (end != NULL && spool_pos_cmp(&pos, end) > 0) {
            break; /* the record after the range */
        }
        if (f->readings == u->cfg.batch_max_readings) {
            f->short_of_end = true;
            break;
        }
        ws = wire_record_unpack(rec, n, &r);
        if (ws == WIRE_OK) {
            ws = wire_batch_add(&w, &r);
        }
        if (ws == WIRE_ERR_FULL) {
            f->short_of_end = true;
            pos = before;
            break;
        }
        if (ws == WIRE_OK) {
            f->readings++;
        } else {
            u->counters.skipped_records++; /* acknowledged with the batch: one bad record cannot block the spool */
        }
        f->records++;
        f->upto = pos;
    }
    if (f->readings > 0U && wire_batch_end(&w, len) != WIRE_OK) {
        return SPOOL_ERR_ARG;
    }
    return SPOOL_OK;
}

static uplink_status_t spool_error(spool_status_t st, spool_status_t *out)
{
    if (out != NULL) {
        *out = st;
    }
    return UPLINK_ERR_SPOOL;
}

uplink_status_t uplink_next(uplink_t *u, uint64_t now_ms, char *buf, size_t cap, size_t *len, uint64_t *seq,
                            spool_status_t *spool_st)
{
    spool_confirm_t *c;
    if (u == NULL || buf == NULL || len == NULL || seq == NULL || cap <= SEQ_HEADROOM) {
        return UPLINK_ERR_ARG;
    }
    c = &u->table;
    /* Each round either returns or retires a range of records that carry no reading, so this ends. */
    for (uint32_t round = 0; round <= SPOOL_INFLIGHT_MAX + 1U; round++) {
        spool_batch_t *due = spool_confirm_due(c, now_ms);
        spool_pos_t start;
        spool_status_t st;
        fill_t f;
        if (due != NULL) {
            if (spool_confirm_take_seq(c, seq) != SPOOL_OK) {
                return UPLINK_ERR_SEQ;
            }
            st = fill(u, &due->start, &due->end, *seq, buf, cap, len, &f);
            if (st != SPOOL_OK) {
                spool_confirm_untake_seq(c, *seq);
                return spool_error(st, spool_st);
            }
            if (f.short_of_end) {
                /* Cannot happen with the headroom kept above; if it did, the range could not be re-sent whole, and
                 * acknowledging it on a confirmation would drop what was left out. Start again from the tail. */
                spool_confirm_untake_seq(c, *seq);
                spool_confirm_reset(c);
                continue;
            }
            if (f.readings == 0U) {
                spool_confirm_untake_seq(c, *seq);
                st = spool_confirm_resending(c, due, SPOOL_SEQ_NONE, 0);
                if (st != SPOOL_OK) {
                    return spool_error(st, spool_st);
                }
                continue;
            }
            (void)spool_confirm_resending(c, due, *seq, f.readings);
            u->counters.batches++;
            return UPLINK_BATCH;
        }
        if (!spool_confirm_room(c, u->cfg.max_unconfirmed)) {
            return UPLINK_IDLE;
        }
        start = c->send_pos;
        {
            /* Look before taking a seq, so that idle polling writes no reservation. */
            uint8_t rec[WIRE_RECORD_MAX];
            size_t n = 0;
            spool_pos_t peek = start;
            st = spool_read(c->spool, &peek, rec, sizeof(rec), &n);
            if (st == SPOOL_END) {
                return UPLINK_IDLE;
            }
            if (st != SPOOL_OK) {
                return spool_error(st, spool_st);
            }
        }
        if (spool_confirm_take_seq(c, seq) != SPOOL_OK) {
            return UPLINK_ERR_SEQ;
        }
        st = fill(u, &start, NULL, *seq, buf, cap - SEQ_HEADROOM, len, &f);
        if (st != SPOOL_OK || f.readings == 0U) {
            spool_confirm_untake_seq(c, *seq); /* never published: the seq is still unused */
        }
        if (st != SPOOL_OK) {
            return spool_error(st, spool_st);
        }
        if (f.records == 0U) {
            return UPLINK_IDLE;
        }
        st = spool_confirm_add(c, f.readings > 0U ? *seq : SPOOL_SEQ_NONE, &start, &f.upto, f.readings);
        if (st != SPOOL_OK) {
            return spool_error(st, spool_st);
        }
        if (f.readings > 0U) {
            u->counters.batches++;
            return UPLINK_BATCH;
        }
    }
    return UPLINK_IDLE;
}

spool_status_t uplink_published(uplink_t *u, uint64_t seq, bool puback, uint64_t now_ms)
{
    if (u == NULL) {
        return SPOOL_ERR_ARG;
    }
    return spool_confirm_published(&u->table, seq, puback, u->cfg.confirm == UPLINK_CONFIRM_BROKER, now_ms);
}

int uplink_confirm(uplink_t *u, const char *payload, size_t len)
{
    size_t n = 0;
    uint32_t confirmed = 0;
    if (u == NULL || u->cfg.confirm != UPLINK_CONFIRM_CLOUD) {
        return 0;
    }
    if (wire_confirm_parse(payload, len, u->gateway_id, u->ranges, &n) != WIRE_OK) {
        u->counters.confirms_bad++;
        return 0;
    }
    u->counters.confirms++;
    for (size_t i = 0; i < n; i++) {
        confirmed += spool_confirm_match(&u->table, u->ranges[i].first, u->ranges[i].last);
    }
    if (spool_confirm_advance(&u->table) != SPOOL_OK) {
        return -1;
    }
    return (int)confirmed;
}

void uplink_reconnected(uplink_t *u)
{
    if (u != NULL) {
        spool_confirm_resend_all(&u->table);
    }
}

void uplink_remounted(uplink_t *u)
{
    if (u != NULL) {
        spool_confirm_reset(&u->table);
    }
}

uint32_t uplink_unconfirmed(const uplink_t *u)
{
    return (u != NULL) ? u->table.unconfirmed : 0U;
}

const char *uplink_confirm_name(uplink_confirm_t mode)
{
    return (mode == UPLINK_CONFIRM_BROKER) ? "broker" : "cloud";
}
