/**
 * @file fuzz_confirm.c
 * @brief libFuzzer target for the confirmation parser and what a confirmation frees. The input is a confirmation
 *        payload for gateway "pi-kitchen". Invariants (abort on failure): an accepted payload has 1 to 64 ranges,
 *        each first <= last <= 2**53 - 1, and re-encoding them canonically gives the input back byte for byte
 *        (the parser accepts canonical bytes only); a refused payload reports no range. The same bytes then go to
 *        an uplink with six batches in flight: a refused payload frees nothing, an accepted one frees exactly the
 *        readings of the confirmed prefix of batches whose seq lies in a range.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memdev.h"
#include "spool.h"
#include "uplink.h"
#include "wire.h"

#define SECTOR (512U)
#define SECTORS (8U)
#define REQUIRE(c)                                                                                                    \
    do {                                                                                                              \
        if (!(c)) {                                                                                                   \
            abort();                                                                                                  \
        }                                                                                                             \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t stored;
static int load(void *ctx, uint64_t *next)
{
    (void)ctx;
    *next = stored;
    return 0;
}
static int save(void *ctx, uint64_t next)
{
    (void)ctx;
    stored = next;
    return 0;
}

static const uint8_t df5[24] = {0x05, 0x12, 0xFC, 0x53, 0x94, 0xC3, 0x7C, 0x00, 0x04, 0xFF, 0xFC, 0x04,
                                0x0C, 0xAC, 0x36, 0x42, 0x00, 0xCD, 0xCB, 0xB8, 0x33, 0x4C, 0x88, 0x4F};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t mem[SECTOR * SECTORS];
    static char json[4096];
    static uplink_t u;
    static const spool_seq_store_t store = {load, save, NULL};
    const char *payload = (const char *)data;
    wire_seq_range_t out[WIRE_CONFIRM_RANGES_MAX];
    size_t n = 99;
    wire_status_t st = wire_confirm_parse(payload, size, "pi-kitchen", out, &n);
    memdev_t m;
    spool_t s;
    uplink_config_t cfg = {UPLINK_CONFIRM_CLOUD, 1000, 1, 100, 64};
    bool confirmed[6] = {false};
    uint32_t expect_pending = 6;
    int freed;
    if (st != WIRE_OK) {
        REQUIRE(st == WIRE_ERR_CONFIRM && n == 0U);
    } else {
        char again[WIRE_CONFIRM_BYTES_MAX + 1];
        int len = snprintf(again, sizeof(again), "{\"v\":1,\"gateway\":\"pi-kitchen\",\"seqs\":[");
        REQUIRE(n >= 1U && n <= WIRE_CONFIRM_RANGES_MAX);
        for (size_t i = 0; i < n; i++) {
            REQUIRE(out[i].first <= out[i].last && out[i].last <= WIRE_SEQ_MAX);
            len += snprintf(again + len, sizeof(again) - (size_t)len, "%s[%" PRIu64 ",%" PRIu64 "]", i ? "," : "",
                            out[i].first, out[i].last);
        }
        len += snprintf(again + len, sizeof(again) - (size_t)len, "]}");
        REQUIRE((size_t)len == size && memcmp(again, payload, size) == 0);
    }

    /* Six one-reading batches with seqs 0..5, PUBACKed, then this payload as their confirmation. */
    stored = 0;
    memdev_init(&m, mem, SECTOR, SECTORS, true);
    REQUIRE(spool_mount(&s, &m.bdev) == SPOOL_OK);
    for (unsigned i = 0; i < 6U; i++) {
        wire_reading_t r;
        uint8_t rec[WIRE_RECORD_MAX];
        memset(&r, 0, sizeof(r));
        r.time_ns = 1763913600000000000LL + i;
        r.raw_len = sizeof(df5);
        memcpy(r.raw, df5, sizeof(df5));
        REQUIRE(spool_append(&s, rec, wire_record_pack(&r, rec, sizeof(rec))) == SPOOL_OK);
    }
    REQUIRE(uplink_init(&u, &s, "pi-kitchen", &cfg, &store) == UPLINK_IDLE);
    for (uint64_t i = 0; i < 6U; i++) {
        size_t len = 0;
        uint64_t seq = 99;
        REQUIRE(uplink_next(&u, 0, json, sizeof(json), &len, &seq, NULL) == UPLINK_BATCH && seq == i);
        REQUIRE(uplink_published(&u, seq, true, 0) == SPOOL_OK);
    }
    freed = uplink_confirm(&u, payload, size);
    for (size_t i = 0; st == WIRE_OK && i < n; i++) {
        for (uint64_t q = 0; q < 6U; q++) {
            confirmed[q] = confirmed[q] || (q >= out[i].first && q <= out[i].last);
        }
    }
    for (unsigned q = 0; q < 6U && confirmed[q]; q++) {
        expect_pending--;
    }
    REQUIRE(s.pending == expect_pending);
    REQUIRE(freed >= 0 && (st == WIRE_OK || freed == 0));
    return 0;
}
