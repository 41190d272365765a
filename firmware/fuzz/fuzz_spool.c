/**
 * @file fuzz_spool.c
 * @brief libFuzzer target for spool recovery: the input is the flash image (4 sectors of 256 bytes) plus a few
 *        operation bytes. Mounting any image must succeed without reading out of bounds; the records found must
 *        read back consistently with the pending count; and the spool must then accept, return and acknowledge
 *        new records in order.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "memdev.h"
#include "spool.h"

#define SECTOR (256U)
#define SECTORS (4U)
#define REQUIRE(c)                                                                                                    \
    do {                                                                                                              \
        if (!(c)) {                                                                                                   \
            abort();                                                                                                  \
        }                                                                                                             \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint32_t count_readable(spool_t *s)
{
    spool_pos_t pos;
    uint8_t buf[SECTOR];
    size_t len;
    uint32_t n = 0;
    spool_begin(s, &pos);
    while (spool_read(s, &pos, buf, sizeof(buf), &len) == SPOOL_OK) {
        REQUIRE(len > 0U && len <= spool_record_max(s->dev));
        n++;
        REQUIRE(n <= SECTOR * SECTORS / 12U);
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t mem[SECTOR * SECTORS];
    memdev_t m;
    spool_t s;
    size_t img = size < sizeof(mem) ? size : sizeof(mem);
    const uint8_t *ops = data + img;
    size_t nops = size - img;
    uint32_t before;
    memset(mem, 0xFF, sizeof(mem));
    memcpy(mem, data, img);
    memdev_init(&m, mem, SECTOR, SECTORS, false);
    REQUIRE(spool_mount(&s, &m.bdev) == SPOOL_OK);
    before = count_readable(&s);
    REQUIRE(before == s.pending);
    /* Operation bytes: even = append a record of (b % 64) + 1 bytes, odd = publish and ack (b / 2) % 8. */
    for (size_t i = 0; i < nops; i++) {
        uint8_t rec[64];
        uint8_t b = ops[i];
        if ((b & 1U) == 0U) {
            size_t len = (size_t)(b % 64U) + 1U;
            memset(rec, (int)i, len);
            REQUIRE(spool_append(&s, rec, len) == SPOOL_OK);
        } else {
            spool_pos_t pos;
            uint8_t buf[SECTOR];
            size_t len;
            uint32_t pending = s.pending;
            unsigned want = (b / 2U) % 8U;
            unsigned got = 0;
            spool_begin(&s, &pos);
            while (got < want && spool_read(&s, &pos, buf, sizeof(buf), &len) == SPOOL_OK) {
                got++;
            }
            REQUIRE(spool_ack(&s, &pos) == SPOOL_OK);
            REQUIRE(s.pending == pending - got);
        }
        REQUIRE(count_readable(&s) == s.pending);
    }
    /* A reboot sees what the spool said was pending (new records may have been dropped, never gained). */
    {
        uint32_t pending = s.pending;
        REQUIRE(spool_mount(&s, &m.bdev) == SPOOL_OK);
        REQUIRE(count_readable(&s) == s.pending);
        if (nops > 0U) {
            REQUIRE(s.pending == pending);
        }
    }
    return 0;
}
