/**
 * @file spool_seeds.c
 * @brief Writes seed inputs for fuzz_spool: real spool images (after wrap-around, drops, acks and power cuts at
 *        various steps) followed by a few operation bytes. Random bytes almost never carry a valid CRC, so
 *        without these seeds the fuzzer would only ever see blank spools.
 *   spool_seeds DIR
 */
#include <stdio.h>
#include <string.h>

#include "memdev.h"
#include "spool.h"

#define SECTOR (256U)
#define SECTORS (4U)

static uint8_t mem[SECTOR * SECTORS];

int main(int argc, char **argv)
{
    static const memdev_tear_t tears[] = {MEMDEV_TEAR_NONE, MEMDEV_TEAR_HALF, MEMDEV_TEAR_ALL_BUT_LAST};
    int written = 0;
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    for (unsigned appends = 3; appends <= 45U; appends += 6U) {
        for (size_t t = 0; t < 3U; t++) {
            memdev_t m;
            spool_t s;
            char path[512];
            FILE *f;
            static const uint8_t ops[] = {0x10, 0x07, 0x3e, 0x22, 0x05};
            memdev_init(&m, mem, SECTOR, SECTORS, true);
            (void)spool_mount(&s, &m.bdev);
            memdev_cut_after(&m, (long)(appends * 2U + t * 5U), tears[t]);
            for (unsigned i = 0; i < appends; i++) {
                uint8_t rec[64];
                size_t len = 4U + (i * 13U) % 50U;
                spool_pos_t pos;
                memset(rec, (int)i, len);
                if (spool_append(&s, rec, len) != SPOOL_OK) {
                    break;
                }
                if (i % 3U == 2U) {
                    uint8_t buf[SECTOR];
                    size_t n;
                    spool_begin(&s, &pos);
                    (void)spool_read(&s, &pos, buf, sizeof(buf), &n);
                    if (spool_ack(&s, &pos) != SPOOL_OK) {
                        break;
                    }
                }
            }
            snprintf(path, sizeof(path), "%s/seed_%u_%zu", argv[1], appends, t);
            f = fopen(path, "wb");
            if (f == NULL || fwrite(mem, 1, sizeof(mem), f) != sizeof(mem) || fwrite(ops, 1, sizeof(ops), f) != 5U) {
                fprintf(stderr, "cannot write %s\n", path);
                return 1;
            }
            fclose(f);
            written++;
        }
    }
    printf("%d seeds\n", written);
    return 0;
}
