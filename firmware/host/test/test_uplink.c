/**
 * @file test_uplink.c
 * @brief The uplink core (components/uplink over spool_confirm) driven with a fake clock, a fake publisher and a
 *        fake seq store (NVS on the ESP32): re-send after no confirmation, out-of-order confirmations, broker
 *        mode, refused confirmations, reconnects, seqs across reboots, drop-oldest, and a power cut at every write
 *        and erase step of a workload that applies confirmations.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "confirm_vectors.h"
#include "memdev.h"
#include "spool.h"
#include "spool_confirm.h"
#include "unit.h"
#include "uplink.h"
#include "wire.h"

#define SECTOR (512U)
#define SECTORS (8U)
#define MAX_IDS (256U)
#define MAX_SEQS (1024U)
#define BASE_NS (1763913600000000000LL)

static uint8_t mem[SECTOR * SECTORS];
static char buf[4096];

static const uint8_t df5[24] = {0x05, 0x12, 0xFC, 0x53, 0x94, 0xC3, 0x7C, 0x00, 0x04, 0xFF, 0xFC, 0x04,
                                0x0C, 0xAC, 0x36, 0x42, 0x00, 0xCD, 0xCB, 0xB8, 0x33, 0x4C, 0x88, 0x4F};

/* The seq store: survives a "reboot" like NVS; can be made to fail. */
typedef struct {
    uint64_t stored;
    unsigned writes;
    bool fail;
} fake_store_t;

static int store_load(void *ctx, uint64_t *next)
{
    fake_store_t *f = ctx;
    if (f->fail) {
        return -1;
    }
    *next = f->stored;
    return 0;
}

static int store_save(void *ctx, uint64_t next)
{
    fake_store_t *f = ctx;
    if (f->fail) {
        return -1;
    }
    f->stored = next;
    f->writes++;
    return 0;
}

static fake_store_t store_state;
static const spool_seq_store_t store = {store_load, store_save, &store_state};

/* Reading id i: a DF5 reading whose time_ns is BASE_NS + i. */
static spool_status_t append_id(spool_t *s, unsigned id)
{
    wire_reading_t r;
    uint8_t rec[WIRE_RECORD_MAX];
    size_t n;
    memset(&r, 0, sizeof(r));
    r.time_ns = BASE_NS + (int64_t)id;
    memcpy(r.mac, &df5[18], 6);
    r.clock_synced = true;
    r.rssi_valid = true;
    r.rssi = -60;
    r.raw_len = sizeof(df5);
    memcpy(r.raw, df5, sizeof(df5));
    n = wire_record_pack(&r, rec, sizeof(rec));
    return spool_append(s, rec, n);
}

/* The reading ids of a batch, in order, from its JSON. */
static unsigned batch_ids(const char *json, size_t len, unsigned *ids, unsigned cap)
{
    unsigned n = 0;
    const char *p = json;
    const char *end = json + len;
    while (n < cap && (p = strstr(p, "\"time_ns\":")) != NULL && p < end) {
        long long t = strtoll(p + 10, NULL, 10);
        ids[n++] = (unsigned)(t - BASE_NS);
        p += 10;
    }
    return n;
}

static unsigned long long batch_seq(const char *json)
{
    const char *p = strstr(json, "\"seq\":");
    return p != NULL ? strtoull(p + 6, NULL, 10) : ~0ULL;
}

/* Every unacknowledged reading id in the spool, in order; -1 on an error. */
static int spool_ids(spool_t *s, unsigned *ids, unsigned cap)
{
    spool_pos_t pos;
    unsigned n = 0;
    spool_begin(s, &pos);
    for (;;) {
        uint8_t rec[SECTOR];
        size_t len = 0;
        wire_reading_t r;
        spool_status_t st = spool_read(s, &pos, rec, sizeof(rec), &len);
        if (st == SPOOL_END) {
            return (int)n;
        }
        if (st != SPOOL_OK || n >= cap || wire_record_unpack(rec, len, &r) != WIRE_OK) {
            return -1;
        }
        ids[n++] = (unsigned)(r.time_ns - BASE_NS);
    }
}

static int confirm_seqs(uplink_t *u, const uint64_t *seqs, unsigned n)
{
    char msg[WIRE_CONFIRM_BYTES_MAX + 1];
    int len = snprintf(msg, sizeof(msg), "{\"v\":1,\"gateway\":\"%s\",\"seqs\":[", u->gateway_id);
    for (unsigned i = 0; i < n; i++) {
        len += snprintf(msg + len, sizeof(msg) - (size_t)len, "%s[%llu,%llu]", i ? "," : "",
                        (unsigned long long)seqs[i], (unsigned long long)seqs[i]);
    }
    len += snprintf(msg + len, sizeof(msg) - (size_t)len, "]}");
    return uplink_confirm(u, msg, (size_t)len);
}

static int confirm_one(uplink_t *u, uint64_t seq)
{
    return confirm_seqs(u, &seq, 1);
}

static uplink_config_t config(uplink_confirm_t mode, uint32_t batch_max)
{
    uplink_config_t c;
    c.confirm = mode;
    c.confirm_timeout_ms = 1000;
    c.batch_max_readings = batch_max;
    c.max_unconfirmed = 400;
    c.seq_block = 4;
    return c;
}

/* A fresh device, spool and uplink with `n` readings 0..n-1. */
static void setup(memdev_t *m, spool_t *s, uplink_t *u, uplink_confirm_t mode, uint32_t batch_max, unsigned n)
{
    uplink_config_t c = config(mode, batch_max);
    memset(&store_state, 0, sizeof(store_state));
    memdev_init(m, mem, SECTOR, SECTORS, true);
    CHECK_EQ_INT(spool_mount(s, &m->bdev), SPOOL_OK);
    for (unsigned i = 0; i < n; i++) {
        CHECK_EQ_INT(append_id(s, i), SPOOL_OK);
    }
    CHECK_EQ_INT(uplink_init(u, s, "pi-kitchen", &c, &store), UPLINK_IDLE);
}

static uplink_status_t next(uplink_t *u, uint64_t now, size_t *len, uint64_t *seq)
{
    return uplink_next(u, now, buf, sizeof(buf), len, seq, NULL);
}

static void test_resend_after_timeout(void)
{
    memdev_t m;
    spool_t s;
    uplink_t u;
    size_t len = 0;
    uint64_t seq = 0;
    uint64_t first_seq;
    unsigned ids[16];
    spool_pos_t tail;
    char first[sizeof(buf)];
    uint64_t t = 0;
    static const uint32_t backoff[] = {1, 2, 4, 8, 16, 16, 16};
    setup(&m, &s, &u, UPLINK_CONFIRM_CLOUD, 10, 5);
    tail = s.tail;
    CHECK_EQ_INT(next(&u, t, &len, &seq), UPLINK_BATCH);
    first_seq = seq;
    memcpy(first, buf, len + 1U);
    CHECK_EQ_INT(batch_ids(buf, len, ids, 16), 5);
    CHECK_EQ_INT(ids[0], 0);
    CHECK_EQ_INT(ids[4], 4);
    CHECK_EQ_INT(uplink_published(&u, seq, true, t), SPOOL_OK);
    CHECK_EQ_INT(uplink_unconfirmed(&u), 5);
    /* The PUBACK moves nothing in cloud mode. */
    CHECK_EQ_INT(s.pending, 5);
    /* Each timeout in a row doubles the wait, up to 16 times the setting; every re-send has a new seq and the
     * same readings, and the tail does not move. */
    for (size_t k = 0; k < sizeof(backoff) / sizeof(backoff[0]); k++) {
        uint64_t due = t + 1000U * backoff[k];
        uint64_t old = seq;
        CHECK_EQ_INT(next(&u, due - 1U, &len, &seq), UPLINK_IDLE);
        CHECK_EQ_INT(next(&u, due, &len, &seq), UPLINK_BATCH);
        CHECK(seq > old);
        CHECK(batch_seq(buf) == seq);
        CHECK_EQ_INT(batch_ids(buf, len, ids, 16), 5);
        CHECK(ids[0] == 0U && ids[4] == 4U);
        /* Byte for byte the first batch but for the seq. */
        CHECK(strcmp(strstr(buf, "\"readings\""), strstr(first, "\"readings\"")) == 0);
        CHECK_EQ_INT(s.pending, 5);
        CHECK(spool_pos_cmp(&s.tail, &tail) == 0);
        t = due;
        CHECK_EQ_INT(uplink_published(&u, seq, true, t), SPOOL_OK);
    }
    CHECK_EQ_INT(u.table.counters.timeouts, 7);
    CHECK_EQ_INT(u.table.counters.resent, 7);
    /* A late confirmation of the first seq is ignored: that seq was re-sent under a new one. */
    CHECK_EQ_INT(confirm_one(&u, first_seq), 0);
    CHECK_EQ_INT(s.pending, 5);
    CHECK_EQ_INT(u.table.counters.unknown_seqs, 1);
    /* The current seq frees the readings, and the backoff starts again at 1. */
    CHECK_EQ_INT(confirm_one(&u, seq), 1);
    CHECK_EQ_INT(s.pending, 0);
    CHECK_EQ_INT(uplink_unconfirmed(&u), 0);
    CHECK_EQ_INT(u.table.backoff, 1);
    CHECK_EQ_INT(spool_mount(&s, &m.bdev), SPOOL_OK);
    CHECK_EQ_INT(s.pending, 0);
}

static void test_out_of_order_confirmations(void)
{
    memdev_t m;
    spool_t s;
    uplink_t u;
    size_t len = 0;
    uint64_t seqs[3] = {0, 0, 0};
    unsigned ids[16];
    uint64_t both[2];
    setup(&m, &s, &u, UPLINK_CONFIRM_CLOUD, 3, 9);
    for (unsigned b = 0; b < 3U; b++) {
        CHECK_EQ_INT(next(&u, 0, &len, &seqs[b]), UPLINK_BATCH);
        CHECK_EQ_INT(batch_ids(buf, len, ids, 16), 3);
        CHECK_EQ_INT(ids[0], 3 * b);
        CHECK_EQ_INT(uplink_published(&u, seqs[b], true, 0), SPOOL_OK);
    }
    CHECK(seqs[0] < seqs[1] && seqs[1] < seqs[2]);
    CHECK_EQ_INT(next(&u, 10, &len, &seqs[0]), UPLINK_IDLE);
    /* The last and the middle batch first: they wait for the first one. */
    CHECK_EQ_INT(confirm_one(&u, seqs[2]), 1);
    CHECK_EQ_INT(s.pending, 9);
    CHECK_EQ_INT(confirm_one(&u, seqs[1]), 1);
    CHECK_EQ_INT(s.pending, 9);
    CHECK_EQ_INT(uplink_unconfirmed(&u), 3);
    /* A repeated confirmation changes nothing. */
    CHECK_EQ_INT(confirm_one(&u, seqs[1]), 0);
    /* Confirmed batches are not re-sent on a timeout; the first one is. */
    CHECK_EQ_INT(next(&u, 1000, &len, &seqs[0]), UPLINK_BATCH);
    CHECK_EQ_INT(batch_ids(buf, len, ids, 16), 3);
    CHECK_EQ_INT(ids[0], 0);
    CHECK_EQ_INT(next(&u, 1000, &len, &both[0]), UPLINK_IDLE);
    CHECK_EQ_INT(uplink_published(&u, seqs[0], true, 1000), SPOOL_OK);
    CHECK_EQ_INT(confirm_one(&u, seqs[0]), 1);
    CHECK_EQ_INT(s.pending, 0);
    CHECK_EQ_INT(u.table.count, 0);

    /* Batches 0 and 2 confirmed in one message: batch 0's readings go, batch 2's wait for batch 1; a reboot then
     * re-sends 1 and 2 (the RAM table is gone), never 0. */
    setup(&m, &s, &u, UPLINK_CONFIRM_CLOUD, 3, 9);
    for (unsigned b = 0; b < 3U; b++) {
        CHECK_EQ_INT(next(&u, 0, &len, &seqs[b]), UPLINK_BATCH);
        CHECK_EQ_INT(uplink_published(&u, seqs[b], true, 0), SPOOL_OK);
    }
    both[0] = seqs[0];
    both[1] = seqs[2];
    CHECK_EQ_INT(confirm_seqs(&u, both, 2), 2);
    CHECK_EQ_INT(s.pending, 6);
    CHECK_EQ_INT(spool_mount(&s, &m.bdev), SPOOL_OK);
    CHECK_EQ_INT(s.pending, 6);
    {
        uplink_config_t c = config(UPLINK_CONFIRM_CLOUD, 10);
        uint64_t seq = 0;
        CHECK_EQ_INT(uplink_init(&u, &s, "pi-kitchen", &c, &store), UPLINK_IDLE);
        CHECK_EQ_INT(next(&u, 0, &len, &seq), UPLINK_BATCH);
        CHECK(seq > seqs[2]);
        CHECK_EQ_INT(batch_ids(buf, len, ids, 16), 6);
        CHECK(ids[0] == 3U && ids[5] == 8U);
        /* One wide range confirms it without walking 2**53 seqs. */
        CHECK_EQ_INT(uplink_published(&u, seq, true, 0), SPOOL_OK);
        static const char wide[] = "{\"v\":1,\"gateway\":\"pi-kitchen\",\"seqs\":[[0,9007199254740991]]}";
        CHECK_EQ_INT(uplink_confirm(&u, wide, sizeof(wide) - 1U), 1);
        CHECK_EQ_INT(s.pending, 0);
    }
}

static void test_confirmation_before_puback_and_reconnect(void)
{
    memdev_t m;
    spool_t s;
    uplink_t u;
    size_t len = 0;
    uint64_t a = 0;
    uint64_t b = 0;
    uint64_t c2 = 0;
    unsigned ids[16];
    setup(&m, &s, &u, UPLINK_CONFIRM_CLOUD, 2, 4);
    /* The receiver may confirm before the gateway has seen its PUBACK. */
    CHECK_EQ_INT(next(&u, 0, &len, &a), UPLINK_BATCH);
    CHECK_EQ_INT(confirm_one(&u, a), 1);
    CHECK_EQ_INT(uplink_published(&u, a, true, 0), SPOOL_OK);
    CHECK_EQ_INT(s.pending, 2);
    /* A reconnect re-sends what is unconfirmed, at once and under new seqs; so does a publish without PUBACK. */
    CHECK_EQ_INT(next(&u, 0, &len, &b), UPLINK_BATCH);
    CHECK_EQ_INT(uplink_published(&u, b, true, 0), SPOOL_OK);
    uplink_reconnected(&u);
    CHECK_EQ_INT(next(&u, 1, &len, &c2), UPLINK_BATCH);
    CHECK(c2 > b);
    CHECK_EQ_INT(batch_ids(buf, len, ids, 16), 2);
    CHECK(ids[0] == 2U && ids[1] == 3U);
    CHECK_EQ_INT(uplink_published(&u, c2, false, 1), SPOOL_OK);
    CHECK_EQ_INT(next(&u, 2, &len, &b), UPLINK_BATCH);
    CHECK(b > c2);
    CHECK_EQ_INT(batch_ids(buf, len, ids, 16), 2);
    CHECK_EQ_INT(confirm_one(&u, c2), 0);
    CHECK_EQ_INT(s.pending, 2);
    CHECK_EQ_INT(confirm_one(&u, b), 1);
    CHECK_EQ_INT(s.pending, 0);
}

static void test_refused_confirmations_delete_nothing(void)
{
    memdev_t m;
    spool_t s;
    uplink_t u;
    size_t len = 0;
    uint64_t seq = 0;
    unsigned refused = 0;
    setup(&m, &s, &u, UPLINK_CONFIRM_CLOUD, 1, 6);
    /* Seqs 0..5 in flight, so that every range in the vectors would match one of them. */
    for (unsigned i = 0; i < 6U; i++) {
        CHECK_EQ_INT(next(&u, 0, &len, &seq), UPLINK_BATCH);
        CHECK_EQ_INT(seq, i);
        CHECK_EQ_INT(uplink_published(&u, seq, true, 0), SPOOL_OK);
    }
    for (size_t i = 0; i < confirm_vector_count; i++) {
        const confirm_vector_t *v = &confirm_vectors[i];
        if (!v->error || strcmp(v->gateway, "pi-kitchen") != 0) {
            continue;
        }
        CHECK_EQ_INT(uplink_confirm(&u, (const char *)v->payload, v->len), 0);
        refused++;
    }
    CHECK(refused >= 20U);
    CHECK_EQ_INT(u.counters.confirms_bad, refused);
    CHECK_EQ_INT(u.table.counters.confirmed_batches, 0);
    CHECK_EQ_INT(s.pending, 6);
    CHECK_EQ_INT(uplink_unconfirmed(&u), 6);
}

static void test_broker_mode(void)
{
    memdev_t m;
    spool_t s;
    uplink_t u;
    size_t len = 0;
    uint64_t seq = 0;
    uint64_t old;
    unsigned ids[16];
    setup(&m, &s, &u, UPLINK_CONFIRM_BROKER, 3, 7);
    /* As before wire format 1.1: one batch, removed from the spool on its PUBACK. */
    CHECK_EQ_INT(next(&u, 0, &len, &seq), UPLINK_BATCH);
    CHECK_EQ_INT(batch_ids(buf, len, ids, 16), 3);
    CHECK_EQ_INT(uplink_published(&u, seq, true, 0), SPOOL_OK);
    CHECK_EQ_INT(s.pending, 4);
    CHECK_EQ_INT(u.table.count, 0);
    /* No PUBACK: the same readings again (new seq); nothing is re-sent on a timer. */
    old = seq;
    CHECK_EQ_INT(next(&u, 0, &len, &seq), UPLINK_BATCH);
    CHECK_EQ_INT(uplink_published(&u, seq, false, 0), SPOOL_OK);
    CHECK_EQ_INT(next(&u, 1, &len, &seq), UPLINK_BATCH);
    CHECK(seq > old + 1U);
    CHECK_EQ_INT(batch_ids(buf, len, ids, 16), 3);
    CHECK_EQ_INT(ids[0], 3);
    CHECK_EQ_INT(uplink_published(&u, seq, true, 1), SPOOL_OK);
    CHECK_EQ_INT(s.pending, 1);
    /* Confirmations are ignored in broker mode, and nothing waits for one. */
    CHECK_EQ_INT(confirm_one(&u, seq), 0);
    CHECK_EQ_INT(u.counters.confirms, 0);
    CHECK_EQ_INT(next(&u, 100000, &len, &seq), UPLINK_BATCH);
    CHECK_EQ_INT(batch_ids(buf, len, ids, 16), 1);
    CHECK_EQ_INT(uplink_published(&u, seq, true, 100000), SPOOL_OK);
    CHECK_EQ_INT(s.pending, 0);
    CHECK_EQ_INT(next(&u, 200000, &len, &seq), UPLINK_IDLE);
    CHECK_EQ_INT(u.table.counters.timeouts, 0);
    CHECK_EQ_INT(spool_mount(&s, &m.bdev), SPOOL_OK);
    CHECK_EQ_INT(s.pending, 0);
}

static void test_seqs_never_repeat_across_reboots(void)
{
    memdev_t m;
    spool_t s;
    uplink_t u;
    size_t len = 0;
    uint64_t seq = 0;
    uint64_t last = 0;
    unsigned used = 0;
    uplink_config_t c = config(UPLINK_CONFIRM_CLOUD, 1);
    setup(&m, &s, &u, UPLINK_CONFIRM_CLOUD, 1, 0);
    for (unsigned boot = 0; boot < 40U; boot++) {
        unsigned batches = (boot * 7U) % 6U; /* 0..5 batches per boot, against reservation blocks of 4 */
        unsigned writes = store_state.writes;
        CHECK_EQ_INT(spool_mount(&s, &m.bdev), SPOOL_OK);
        CHECK_EQ_INT(uplink_init(&u, &s, "pi-kitchen", &c, &store), UPLINK_IDLE);
        /* Idle polling takes no seq and writes no reservation. */
        for (unsigned i = 0; i < 10U && s.pending == 0U; i++) {
            CHECK_EQ_INT(next(&u, i, &len, &seq), UPLINK_IDLE);
        }
        for (unsigned b = 0; b < batches; b++) {
            CHECK_EQ_INT(append_id(&s, boot * 8U + b), SPOOL_OK);
            CHECK_EQ_INT(next(&u, 0, &len, &seq), UPLINK_BATCH);
            CHECK(used == 0U || seq > last);
            CHECK(store_state.stored > seq);
            last = seq;
            used++;
            CHECK_EQ_INT(uplink_published(&u, seq, true, 0), SPOOL_OK);
            CHECK_EQ_INT(confirm_one(&u, seq), 1);
        }
        CHECK(store_state.writes <= writes + (batches + 3U) / 4U);
    }
    CHECK(used > 60U);
    /* A reservation that cannot be persisted sends nothing; once it can, seqs go on above every one used. */
    CHECK_EQ_INT(append_id(&s, 999), SPOOL_OK);
    while (u.table.next_seq < u.table.reserved_until) {
        CHECK_EQ_INT(next(&u, 0, &len, &seq), UPLINK_BATCH);
        last = seq;
        CHECK_EQ_INT(uplink_published(&u, seq, true, 0), SPOOL_OK);
        CHECK_EQ_INT(confirm_one(&u, seq), 1);
        CHECK_EQ_INT(append_id(&s, 999), SPOOL_OK);
    }
    store_state.fail = true;
    CHECK_EQ_INT(next(&u, 0, &len, &seq), UPLINK_ERR_SEQ);
    CHECK_EQ_INT(u.table.count, 0);
    CHECK_EQ_INT(uplink_init(&u, &s, "pi-kitchen", &c, &store), UPLINK_ERR_SEQ);
    store_state.fail = false;
    CHECK_EQ_INT(uplink_init(&u, &s, "pi-kitchen", &c, &store), UPLINK_IDLE);
    CHECK_EQ_INT(next(&u, 0, &len, &seq), UPLINK_BATCH);
    CHECK(seq > last);
}

static void test_drop_oldest_forgets_batches(void)
{
    memdev_t m;
    spool_t s;
    uplink_t u;
    size_t len = 0;
    uint64_t seq = 0;
    uint64_t old;
    unsigned ids[16];
    setup(&m, &s, &u, UPLINK_CONFIRM_CLOUD, 4, 4);
    CHECK_EQ_INT(next(&u, 0, &len, &old), UPLINK_BATCH);
    CHECK_EQ_INT(uplink_published(&u, old, true, 0), SPOOL_OK);
    /* The ring fills with new readings while no confirmation comes: drop-oldest erases the batch's records. */
    for (unsigned i = 4; i < 120U; i++) {
        CHECK_EQ_INT(append_id(&s, i), SPOOL_OK);
    }
    CHECK(s.counters.dropped > 4U);
    CHECK_EQ_INT(next(&u, 10, &len, &seq), UPLINK_BATCH);
    CHECK_EQ_INT(u.table.counters.dropped_batches, 1);
    CHECK_EQ_INT(batch_ids(buf, len, ids, 16), 4);
    CHECK((int)ids[0] > 4);
    /* A late confirmation of the forgotten batch frees nothing. */
    CHECK_EQ_INT(confirm_one(&u, old), 0);
    CHECK_EQ_INT(s.counters.acked, 0);
    CHECK_EQ_INT(uplink_published(&u, seq, true, 10), SPOOL_OK);
    CHECK_EQ_INT(confirm_one(&u, seq), 1);
    CHECK_EQ_INT(s.counters.acked, 4);
}

/* ---- A power cut at every write and erase step while confirmations are applied. ---- */

enum { ST_NONE = 0, ST_APPENDING, ST_COMMITTED, ST_CONFIRMED, ST_ACKED };

typedef struct {
    unsigned char state[MAX_IDS];
    unsigned next;
    bool failed;
    unsigned seq_ids[MAX_SEQS][4]; /* the reading ids of each seq sent */
    unsigned seq_n[MAX_SEQS];
    uint64_t max_seq;
} pmodel_t;

static pmodel_t mo;

/* Marks what a successful confirmation removed: confirmed ids no longer in the spool. */
static void note_acked(spool_t *s)
{
    unsigned ids[MAX_IDS];
    unsigned char present[MAX_IDS] = {0};
    int n = spool_ids(s, ids, MAX_IDS);
    CHECK(n >= 0);
    for (int i = 0; i < n; i++) {
        present[ids[i]] = 1;
    }
    for (unsigned id = 0; id < mo.next; id++) {
        if (!present[id] && mo.state[id] == ST_COMMITTED) {
            fprintf(stderr, "reading %u left the spool unconfirmed\n", id);
            CHECK(false);
        }
        if (!present[id] && mo.state[id] == ST_CONFIRMED) {
            mo.state[id] = ST_ACKED;
        }
    }
}

static void confirm_in_model(uplink_t *u, const uint64_t *seqs, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        for (unsigned k = 0; k < mo.seq_n[seqs[i]]; k++) {
            mo.state[mo.seq_ids[seqs[i]][k]] = ST_CONFIRMED;
        }
    }
    if (confirm_seqs(u, seqs, n) < 0) {
        mo.failed = true;
    }
}

/* 14 rounds: 3 readings each, batches of at most 4, one PUBACK in 5 lost, confirmations of the newest batch only
 * (out of order), of every batch at once, or none, and a clock that makes batches time out and go again. */
static void confirm_workload(spool_t *s, uplink_t *u)
{
    uint64_t now = 0;
    for (unsigned round = 0; round < 14U && !mo.failed; round++) {
        uint64_t sent[SPOOL_INFLIGHT_MAX];
        unsigned nsent = 0;
        for (unsigned i = 0; i < 3U && !mo.failed; i++) {
            mo.state[mo.next] = ST_APPENDING;
            if (append_id(s, mo.next) == SPOOL_OK) {
                mo.state[mo.next] = ST_COMMITTED;
            } else {
                mo.failed = true;
            }
            mo.next++;
        }
        for (unsigned k = 0; k < 10U && !mo.failed; k++) {
            size_t len = 0;
            uint64_t seq = 0;
            spool_status_t sst = SPOOL_OK;
            uplink_status_t st = uplink_next(u, now, buf, sizeof(buf), &len, &seq, &sst);
            if (st == UPLINK_ERR_SPOOL) {
                mo.failed = true;
                break;
            }
            if (st != UPLINK_BATCH) {
                CHECK_EQ_INT(st, UPLINK_IDLE);
                break;
            }
            CHECK(seq < MAX_SEQS);
            mo.seq_n[seq] = batch_ids(buf, len, mo.seq_ids[seq], 4);
            if (seq > mo.max_seq) {
                mo.max_seq = seq;
            }
            if (uplink_published(u, seq, (seq % 5U) != 4U, now) != SPOOL_OK) {
                mo.failed = true;
            }
        }
        for (uint32_t i = 0; i < u->table.count; i++) {
            const spool_batch_t *b = &u->table.batch[(u->table.first + i) % SPOOL_INFLIGHT_MAX];
            if (b->state == SPOOL_BATCH_SENT) {
                sent[nsent++] = b->seq;
            }
        }
        if (!mo.failed && nsent > 0U && round % 3U == 1U) {
            confirm_in_model(u, &sent[nsent - 1U], 1);
        } else if (!mo.failed && nsent > 0U && round % 3U == 2U) {
            confirm_in_model(u, sent, nsent);
        }
        if (!mo.failed) {
            note_acked(s);
        }
        now += 700;
    }
}

static int check_confirm_reboot(spool_t *s, const char *what)
{
    unsigned ids[MAX_IDS];
    unsigned char seen[MAX_IDS] = {0};
    int n = spool_ids(s, ids, MAX_IDS);
    int bad = 0;
    if (n < 0) {
        fprintf(stderr, "%s: unreadable spool\n", what);
        return 1;
    }
    if ((uint32_t)n != s->pending) {
        fprintf(stderr, "%s: read %d readings, pending says %u\n", what, n, (unsigned)s->pending);
        bad++;
    }
    for (int i = 0; i < n; i++) {
        if (seen[ids[i]] || (i > 0 && ids[i] <= ids[i - 1])) {
            fprintf(stderr, "%s: reading %u twice or out of order\n", what, ids[i]);
            bad++;
        }
        seen[ids[i]] = 1;
        if (mo.state[ids[i]] == ST_NONE || mo.state[ids[i]] == ST_ACKED) {
            fprintf(stderr, "%s: reading %u is back (state %d)\n", what, ids[i], mo.state[ids[i]]);
            bad++;
        }
    }
    for (unsigned id = 0; id < mo.next; id++) {
        if (mo.state[id] == ST_COMMITTED && !seen[id]) {
            fprintf(stderr, "%s: unconfirmed reading %u lost\n", what, id);
            bad++;
        }
    }
    return bad;
}

/* After the reboot: everything left goes out again under seqs never used before, and is confirmed. */
static int check_confirm_still_works(spool_t *s, memdev_t *m, const char *what)
{
    uplink_t u;
    uplink_config_t c = config(UPLINK_CONFIRM_CLOUD, 4);
    unsigned left = s->pending;
    unsigned sent = 0;
    if (uplink_init(&u, s, "pi-kitchen", &c, &store) != UPLINK_IDLE) {
        return 1;
    }
    for (unsigned k = 0; k < 100U; k++) {
        size_t len = 0;
        uint64_t seq = 0;
        unsigned ids[4];
        uplink_status_t st = uplink_next(&u, 0, buf, sizeof(buf), &len, &seq, NULL);
        if (st == UPLINK_IDLE) {
            break;
        }
        if (st != UPLINK_BATCH || (mo.max_seq > 0U && seq <= mo.max_seq)) {
            fprintf(stderr, "%s: status %d, seq %llu after %llu\n", what, st, (unsigned long long)seq,
                    (unsigned long long)mo.max_seq);
            return 1;
        }
        sent += batch_ids(buf, len, ids, 4);
        if (uplink_published(&u, seq, true, 0) != SPOOL_OK || confirm_one(&u, seq) != 1) {
            return 1;
        }
    }
    if (sent != left || s->pending != 0U || spool_mount(s, &m->bdev) != SPOOL_OK || s->pending != 0U) {
        fprintf(stderr, "%s: %u of %u re-sent, %u pending after\n", what, sent, left, (unsigned)s->pending);
        return 1;
    }
    return 0;
}

static void test_power_cut_while_confirming(void)
{
    memdev_t m;
    spool_t s;
    uplink_t u;
    uplink_config_t c = config(UPLINK_CONFIRM_CLOUD, 4);
    unsigned long total;
    unsigned long cuts = 0;
    static const memdev_tear_t tears[] = {MEMDEV_TEAR_NONE, MEMDEV_TEAR_HALF, MEMDEV_TEAR_ALL_BUT_LAST};

    memset(&mo, 0, sizeof(mo));
    memset(&store_state, 0, sizeof(store_state));
    memdev_init(&m, mem, SECTOR, SECTORS, true);
    CHECK_EQ_INT(spool_mount(&s, &m.bdev), SPOOL_OK);
    CHECK_EQ_INT(uplink_init(&u, &s, "pi-kitchen", &c, &store), UPLINK_IDLE);
    confirm_workload(&s, &u);
    CHECK(!mo.failed);
    total = m.ops;
    CHECK(total > 50U);
    CHECK_EQ_INT(s.counters.dropped, 0);
    CHECK(u.table.counters.timeouts > 0U);
    CHECK(u.table.counters.confirmed_batches > 5U);
    CHECK(s.counters.acked > 20U);
    printf("     uncut: %u readings, %u acked after confirmation, %u pending, %u timeouts, %u re-sent\n",
           (unsigned)s.counters.appended, (unsigned)s.counters.acked, (unsigned)s.pending,
           (unsigned)u.table.counters.timeouts, (unsigned)u.table.counters.resent);

    for (unsigned long cut = 0; cut < total; cut++) {
        for (size_t t = 0; t < sizeof(tears) / sizeof(tears[0]); t++) {
            char what[96];
            int bad;
            memset(&mo, 0, sizeof(mo));
            memset(&store_state, 0, sizeof(store_state));
            memdev_init(&m, mem, SECTOR, SECTORS, true);
            CHECK_EQ_INT(spool_mount(&s, &m.bdev), SPOOL_OK);
            CHECK_EQ_INT(uplink_init(&u, &s, "pi-kitchen", &c, &store), UPLINK_IDLE);
            memdev_cut_after(&m, (long)cut, tears[t]);
            confirm_workload(&s, &u);
            CHECK(mo.failed);
            memdev_power_on(&m);
            snprintf(what, sizeof(what), "confirm workload cut at op %lu tear %zu", cut, t);
            CHECK_EQ_INT(spool_mount(&s, &m.bdev), SPOOL_OK);
            bad = check_confirm_reboot(&s, what);
            bad += check_confirm_still_works(&s, &m, what);
            CHECK_EQ_INT(bad, 0);
            cuts++;
        }
    }
    printf("     confirm workload: %lu write/erase steps, %lu power cuts checked\n", total, cuts);
}

int main(void)
{
    RUN_TEST(test_resend_after_timeout);
    RUN_TEST(test_out_of_order_confirmations);
    RUN_TEST(test_confirmation_before_puback_and_reconnect);
    RUN_TEST(test_refused_confirmations_delete_nothing);
    RUN_TEST(test_broker_mode);
    RUN_TEST(test_seqs_never_repeat_across_reboots);
    RUN_TEST(test_drop_oldest_forgets_batches);
    RUN_TEST(test_power_cut_while_confirming);
    return UNIT_END();
}
