/**
 * @file test_spool.c
 * @brief Spool tests, above all a power cut at every write and erase step of two workloads, each step cut
 *        three ways (nothing written, half written with a half-programmed byte, all but the last byte).
 *
 * After every cut the spool is mounted again on the same memory ("reboot") and must hold every committed,
 * unacknowledged record, in order, with its exact bytes; the record being written may or may not be there; no
 * acknowledged record comes back; and the spool keeps working afterwards.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memdev.h"
#include "spool.h"
#include "unit.h"

#define SECTOR (256U)
#define SECTORS (4U)
#define MAX_IDS (200U)

static uint8_t mem[SECTOR * SECTORS];

/* Record i: 4..60 bytes, starting with i (little-endian), then a pattern of i. */
static size_t make_record(unsigned i, uint8_t *buf)
{
    size_t len = 4U + (i * 37U) % 57U;
    buf[0] = (uint8_t)i;
    buf[1] = (uint8_t)(i >> 8);
    buf[2] = 0x5A;
    buf[3] = (uint8_t)~i;
    for (size_t j = 4; j < len; j++) {
        buf[j] = (uint8_t)((i + j) * 7U);
    }
    return len;
}

/* The id of a record read back, or -1 if its bytes are not exactly what make_record gives. */
static int record_id(const uint8_t *buf, size_t len)
{
    uint8_t want[64];
    unsigned i;
    if (len < 4U) {
        return -1;
    }
    i = (unsigned)buf[0] | ((unsigned)buf[1] << 8);
    if (make_record(i, want) != len || memcmp(want, buf, len) != 0) {
        return -1;
    }
    return (int)i;
}

/* What the test knows about each record id. */
enum { ST_NONE = 0, ST_APPENDING, ST_COMMITTED, ST_ACKING, ST_ACKED };

typedef struct {
    unsigned char state[MAX_IDS];
    unsigned next;  /* next id to append */
    bool failed;    /* an operation returned an error: power is gone */
} model_t;

static void do_append(spool_t *s, model_t *mo)
{
    uint8_t buf[64];
    size_t len = make_record(mo->next, buf);
    mo->state[mo->next] = ST_APPENDING;
    if (spool_append(s, buf, len) == SPOOL_OK) {
        mo->state[mo->next] = ST_COMMITTED;
    } else {
        mo->failed = true;
    }
    mo->next++;
}

/* Reads up to `n` records from the oldest and acknowledges them, like the publisher after a PUBACK. */
static void do_publish(spool_t *s, model_t *mo, unsigned n)
{
    spool_pos_t pos;
    unsigned ids[32];
    unsigned got = 0;
    spool_begin(s, &pos);
    while (got < n && got < 32U) {
        uint8_t buf[SECTOR];
        size_t len = 0;
        spool_status_t st = spool_read(s, &pos, buf, sizeof(buf), &len);
        int id;
        if (st == SPOOL_END) {
            break;
        }
        if (st != SPOOL_OK) {
            mo->failed = true;
            return;
        }
        id = record_id(buf, len);
        CHECK(id >= 0);
        if (id < 0) {
            return;
        }
        ids[got++] = (unsigned)id;
    }
    for (unsigned i = 0; i < got; i++) {
        mo->state[ids[i]] = ST_ACKING;
    }
    if (spool_ack(s, &pos) != SPOOL_OK) {
        mo->failed = true;
        return;
    }
    for (unsigned i = 0; i < got; i++) {
        mo->state[ids[i]] = ST_ACKED;
    }
}

/* Workload A: no drops. 60 records; every 4 appends, publish all but the newest 2. Wraps the ring many times. */
static void workload_a(spool_t *s, model_t *mo)
{
    while (!mo->failed && mo->next < 60U) {
        do_append(s, mo);
        if (!mo->failed && mo->next % 4U == 0U && s->pending > 2U) {
            do_publish(s, mo, s->pending - 2U);
        }
    }
}

/* Workload B: the publisher falls behind (1 record per 4 appends), so the ring fills and drops the oldest. */
static void workload_b(spool_t *s, model_t *mo)
{
    while (!mo->failed && mo->next < 80U) {
        do_append(s, mo);
        if (!mo->failed && mo->next % 4U == 0U) {
            do_publish(s, mo, 1);
        }
    }
}

/* Reads every unacknowledged record id in order. Returns the count, or -1 on an error or a bad record. */
static int read_all(spool_t *s, int *ids, int cap)
{
    spool_pos_t pos;
    int n = 0;
    spool_begin(s, &pos);
    for (;;) {
        uint8_t buf[SECTOR];
        size_t len = 0;
        spool_status_t st = spool_read(s, &pos, buf, sizeof(buf), &len);
        if (st == SPOOL_END) {
            return n;
        }
        if (st != SPOOL_OK || n >= cap) {
            return -1;
        }
        ids[n] = record_id(buf, len);
        if (ids[n] < 0) {
            return -1;
        }
        n++;
    }
}

/* After a reboot: what must, may and must not be there. `drops` allows older committed records to be gone. */
static int check_after_reboot(spool_t *s, const model_t *mo, bool drops, const char *what)
{
    int ids[MAX_IDS];
    int n = read_all(s, ids, (int)MAX_IDS);
    int bad = 0;
    unsigned char seen[MAX_IDS] = {0};
    if (n < 0) {
        fprintf(stderr, "%s: unreadable spool after reboot\n", what);
        return 1;
    }
    if ((uint32_t)n != s->pending) {
        fprintf(stderr, "%s: read %d records, pending says %u\n", what, n, (unsigned)s->pending);
        bad++;
    }
    for (int i = 0; i < n; i++) {
        unsigned char st = mo->state[ids[i]];
        seen[ids[i]] = 1;
        if (i > 0 && ids[i] <= ids[i - 1]) {
            fprintf(stderr, "%s: order broken at %d (%d after %d)\n", what, i, ids[i], ids[i - 1]);
            bad++;
        }
        if (st == ST_NONE || st == ST_ACKED) {
            fprintf(stderr, "%s: record %d is back (state %d)\n", what, ids[i], st);
            bad++;
        }
    }
    for (unsigned id = 0; id < mo->next; id++) {
        if (mo->state[id] != ST_COMMITTED || seen[id]) {
            continue;
        }
        /* With drops, only records older than everything present may be missing. */
        if (!drops || (n > 0 && (int)id > ids[0])) {
            fprintf(stderr, "%s: committed record %u lost\n", what, id);
            bad++;
        }
    }
    if (drops) {
        /* The newest committed record always survives. */
        for (unsigned id = mo->next; id-- > 0;) {
            if (mo->state[id] == ST_COMMITTED) {
                if (!seen[id]) {
                    fprintf(stderr, "%s: newest committed record %u lost\n", what, id);
                    bad++;
                }
                break;
            }
        }
    }
    return bad;
}

/* After recovery the spool must work normally: append, read in order after the survivors, ack everything. */
static int check_still_works(spool_t *s, memdev_t *m, const char *what)
{
    int ids[MAX_IDS];
    int before;
    int n;
    spool_pos_t pos;
    before = read_all(s, ids, (int)MAX_IDS);
    for (unsigned i = 0; i < 10U; i++) {
        uint8_t buf[64];
        size_t len = make_record(150U + i, buf);
        if (spool_append(s, buf, len) != SPOOL_OK) {
            fprintf(stderr, "%s: append after recovery failed\n", what);
            return 1;
        }
    }
    n = read_all(s, ids, (int)MAX_IDS);
    if (n < 10 || ids[n - 1] != 159 || ids[n - 10] != 150 || (before >= 0 && n > before + 10)) {
        fprintf(stderr, "%s: records after recovery wrong (n=%d)\n", what, n);
        return 1;
    }
    spool_begin(s, &pos);
    while (n-- > 0) {
        uint8_t buf[SECTOR];
        size_t len;
        if (spool_read(s, &pos, buf, sizeof(buf), &len) != SPOOL_OK) {
            return 1;
        }
    }
    if (spool_ack(s, &pos) != SPOOL_OK || s->pending != 0U) {
        fprintf(stderr, "%s: ack after recovery failed\n", what);
        return 1;
    }
    /* And a reboot after that finds nothing pending. */
    if (spool_mount(s, &m->bdev) != SPOOL_OK || s->pending != 0U) {
        fprintf(stderr, "%s: acked records came back after a reboot\n", what);
        return 1;
    }
    return 0;
}

static void power_cut_every_step(void (*workload)(spool_t *, model_t *), bool drops, const char *name)
{
    memdev_t m;
    spool_t s;
    model_t mo;
    unsigned long total;
    unsigned long cuts = 0;
    static const memdev_tear_t tears[] = {MEMDEV_TEAR_NONE, MEMDEV_TEAR_HALF, MEMDEV_TEAR_ALL_BUT_LAST};

    /* The uncut run, to count the steps. */
    memdev_init(&m, mem, SECTOR, SECTORS, true);
    memset(&mo, 0, sizeof(mo));
    CHECK_EQ_INT(spool_mount(&s, &m.bdev), SPOOL_OK);
    workload(&s, &mo);
    CHECK(!mo.failed);
    total = m.ops;
    CHECK(total > 100U);
    if (drops) {
        CHECK(s.counters.dropped > 0U);
    } else {
        CHECK_EQ_INT(s.counters.dropped, 0);
    }
    CHECK_EQ_INT(s.counters.appended, s.counters.acked + s.counters.dropped + s.pending);

    for (unsigned long cut = 0; cut < total; cut++) {
        for (size_t t = 0; t < sizeof(tears) / sizeof(tears[0]); t++) {
            char what[96];
            int bad;
            memdev_init(&m, mem, SECTOR, SECTORS, true);
            memset(&mo, 0, sizeof(mo));
            CHECK_EQ_INT(spool_mount(&s, &m.bdev), SPOOL_OK);
            memdev_cut_after(&m, (long)cut, tears[t]);
            workload(&s, &mo);
            CHECK(mo.failed);
            memdev_power_on(&m);
            snprintf(what, sizeof(what), "%s cut at op %lu tear %zu", name, cut, t);
            CHECK_EQ_INT(spool_mount(&s, &m.bdev), SPOOL_OK);
            bad = check_after_reboot(&s, &mo, drops, what);
            bad += check_still_works(&s, &m, what);
            CHECK_EQ_INT(bad, 0);
            cuts++;
        }
    }
    printf("     %s: %lu write/erase steps, %lu power cuts checked\n", name, total, cuts);
}

static void test_power_cut_no_drops(void)
{
    power_cut_every_step(workload_a, false, "workload A (acks keep up)");
}

static void test_power_cut_with_drops(void)
{
    power_cut_every_step(workload_b, true, "workload B (drop-oldest)");
}

/* Fixed-size records, 3 per sector: the exact numbers dropped are known. */
static void test_drop_oldest_counters(void)
{
    memdev_t m;
    spool_t s;
    uint8_t rec[56];
    int ids[MAX_IDS];
    spool_pos_t pos;
    uint8_t buf[SECTOR];
    size_t len;
    memdev_init(&m, mem, SECTOR, SECTORS, true);
    CHECK_EQ_INT(spool_mount(&s, &m.bdev), SPOOL_OK);
    for (unsigned i = 0; i < 20U; i++) {
        memset(rec, (int)i, sizeof(rec));
        CHECK_EQ_INT(spool_append(&s, rec, sizeof(rec)), SPOOL_OK);
    }
    /* Sectors hold r0-2, r3-5, r6-8, r9-11; r12, r15 and r18 each needed the oldest sector. */
    CHECK_EQ_INT(s.counters.appended, 20);
    CHECK_EQ_INT(s.counters.dropped, 9);
    CHECK_EQ_INT(s.pending, 11);
    CHECK_EQ_INT(s.pending_bytes, 11 * 56);
    spool_begin(&s, &pos);
    for (unsigned i = 9; i < 20U; i++) {
        CHECK_EQ_INT(spool_read(&s, &pos, buf, sizeof(buf), &len), SPOOL_OK);
        CHECK_EQ_INT(len, 56);
        CHECK_EQ_INT(buf[0], i);
    }
    CHECK_EQ_INT(spool_read(&s, &pos, buf, sizeof(buf), &len), SPOOL_END);
    /* A reboot finds the same 11. */
    CHECK_EQ_INT(spool_mount(&s, &m.bdev), SPOOL_OK);
    CHECK_EQ_INT(s.pending, 11);
    CHECK_EQ_INT(s.counters.recovered, 11);
    CHECK_EQ_INT(read_all(&s, ids, (int)MAX_IDS), -1); /* not make_record() records: just count below */
    {
        int n = 0;
        spool_begin(&s, &pos);
        while (spool_read(&s, &pos, buf, sizeof(buf), &len) == SPOOL_OK) {
            CHECK_EQ_INT(buf[0], 9 + n);
            n++;
        }
        CHECK_EQ_INT(n, 11);
    }
    /* A cursor taken before a drop moves forward to the oldest surviving record. */
    spool_begin(&s, &pos);
    for (unsigned i = 20; i < 23U; i++) {
        memset(rec, (int)i, sizeof(rec));
        CHECK_EQ_INT(spool_append(&s, rec, sizeof(rec)), SPOOL_OK);
    }
    CHECK_EQ_INT(s.counters.dropped, 3);
    CHECK_EQ_INT(spool_read(&s, &pos, buf, sizeof(buf), &len), SPOOL_OK);
    CHECK_EQ_INT(buf[0], 12);
    /* Acking with that cursor removes exactly one record. */
    CHECK_EQ_INT(spool_ack(&s, &pos), SPOOL_OK);
    CHECK_EQ_INT(s.counters.acked, 1);
    CHECK_EQ_INT(s.pending, 10);
}

static void test_ack_persists_and_order(void)
{
    memdev_t m;
    spool_t s;
    spool_pos_t pos;
    uint8_t buf[SECTOR];
    size_t len;
    int ids[MAX_IDS];
    memdev_init(&m, mem, SECTOR, SECTORS, true);
    CHECK_EQ_INT(spool_mount(&s, &m.bdev), SPOOL_OK);
    CHECK_EQ_INT(spool_read(&s, &pos, buf, sizeof(buf), &len), SPOOL_END);
    for (unsigned i = 0; i < 8U; i++) {
        len = make_record(i, buf);
        CHECK_EQ_INT(spool_append(&s, buf, len), SPOOL_OK);
    }
    spool_begin(&s, &pos);
    for (unsigned i = 0; i < 5U; i++) {
        CHECK_EQ_INT(spool_read(&s, &pos, buf, sizeof(buf), &len), SPOOL_OK);
        CHECK_EQ_INT(record_id(buf, len), i);
    }
    CHECK_EQ_INT(spool_ack(&s, &pos), SPOOL_OK);
    CHECK_EQ_INT(s.pending, 3);
    CHECK_EQ_INT(spool_mount(&s, &m.bdev), SPOOL_OK);
    CHECK_EQ_INT(s.pending, 3);
    CHECK_EQ_INT(read_all(&s, ids, (int)MAX_IDS), 3);
    CHECK_EQ_INT(ids[0], 5);
    CHECK_EQ_INT(ids[2], 7);
    /* A buffer too small leaves the cursor in place. */
    spool_begin(&s, &pos);
    CHECK_EQ_INT(spool_read(&s, &pos, buf, 3, &len), SPOOL_ERR_SMALL);
    CHECK_EQ_INT(spool_read(&s, &pos, buf, sizeof(buf), &len), SPOOL_OK);
    CHECK_EQ_INT(record_id(buf, len), 5);
}

static void test_arguments_and_garbage(void)
{
    memdev_t m;
    spool_t s;
    uint8_t big[SECTOR];
    uint8_t buf[SECTOR];
    size_t len;
    spool_pos_t pos;
    memset(big, 0, sizeof(big));
    memdev_init(&m, mem, SECTOR, SECTORS, true);
    CHECK_EQ_INT(spool_mount(&s, &m.bdev), SPOOL_OK);
    CHECK_EQ_INT(spool_record_max(&m.bdev), SECTOR - 24U);
    CHECK_EQ_INT(spool_append(&s, big, 0), SPOOL_ERR_ARG);
    CHECK_EQ_INT(spool_append(&s, big, SECTOR - 23U), SPOOL_ERR_ARG);
    CHECK_EQ_INT(spool_append(&s, big, SECTOR - 24U), SPOOL_OK);
    CHECK_EQ_INT(spool_mount(NULL, &m.bdev), SPOOL_ERR_ARG);
    /* Random garbage mounts as an empty spool, which then works. */
    srand(7);
    for (size_t i = 0; i < sizeof(mem); i++) {
        mem[i] = (uint8_t)rand();
    }
    CHECK_EQ_INT(spool_mount(&s, &m.bdev), SPOOL_OK);
    CHECK_EQ_INT(s.pending, 0);
    len = make_record(3, buf);
    CHECK_EQ_INT(spool_append(&s, buf, len), SPOOL_OK);
    CHECK_EQ_INT(spool_mount(&s, &m.bdev), SPOOL_OK);
    spool_begin(&s, &pos);
    CHECK_EQ_INT(spool_read(&s, &pos, buf, sizeof(buf), &len), SPOOL_OK);
    CHECK_EQ_INT(record_id(buf, len), 3);
    /* The same memory seen with another geometry is not trusted. */
    {
        memdev_t other;
        memdev_init(&other, mem, SECTOR / 2U, SECTORS * 2U, false);
        CHECK_EQ_INT(spool_mount(&s, &other.bdev), SPOOL_OK);
        CHECK_EQ_INT(s.pending, 0);
    }
}

int main(void)
{
    RUN_TEST(test_ack_persists_and_order);
    RUN_TEST(test_drop_oldest_counters);
    RUN_TEST(test_arguments_and_garbage);
    RUN_TEST(test_power_cut_no_drops);
    RUN_TEST(test_power_cut_with_drops);
    return UNIT_END();
}
