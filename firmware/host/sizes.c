/**
 * @file sizes.c
 * @brief Prints the memory figures of firmware/README.md from the real structs (host build, 64-bit: the
 *        ESP32 is 32-bit, so pointers are 4 bytes there; the lines say which structs hold pointers).
 */
#include <stdio.h>

#include "ruuvi.h"
#include "ruuvi_dedup.h"
#include "spool.h"
#include "uplink.h"
#include "wire.h"

/* Defaults of main/Kconfig.projbuild. */
#define DEDUP_TAGS (100U)
#define SPOOL_SECTOR (4096U)
#define SPOOL_PARTITION (0x200000UL) /* the `spool` partition in partitions.csv: 2 MiB */
#define BATCH_BUF (16U * 1024U)

int main(void)
{
    unsigned long sectors = SPOOL_PARTITION / SPOOL_SECTOR;
    unsigned long per_sector = (SPOOL_SECTOR - SPOOL_SECTOR_HEADER) / (SPOOL_RECORD_HEADER + ((WIRE_RECORD_MAX + 3U) & ~3U));
    unsigned long per_sector_df5 =
        (SPOOL_SECTOR - SPOOL_SECTOR_HEADER) / (SPOOL_RECORD_HEADER + ((WIRE_RECORD_HEADER + RUUVI_LEN_5 + 3U) & ~3U));
    printf("sizeof(ruuvi_data_t) %zu\n", sizeof(ruuvi_data_t));
    printf("sizeof(ruuvi_dedup_entry_t) %zu\n", sizeof(ruuvi_dedup_entry_t));
    printf("dedup_table_bytes_%u_tags %zu\n", DEDUP_TAGS, DEDUP_TAGS * sizeof(ruuvi_dedup_entry_t));
    printf("sizeof(ruuvi_dedup_t) %zu (a pointer and a size_t)\n", sizeof(ruuvi_dedup_t));
    printf("sizeof(wire_reading_t) %zu\n", sizeof(wire_reading_t));
    printf("sizeof(wire_batch_t) %zu (1 pointer)\n", sizeof(wire_batch_t));
    printf("sizeof(spool_t) %zu (1 pointer)\n", sizeof(spool_t));
    printf("sizeof(spool_bdev_t) %zu (4 pointers)\n", sizeof(spool_bdev_t));
    printf("sizeof(uplink_t) %zu (2 pointers)\n", sizeof(uplink_t));
    printf("spool_record_max_bytes %u\n", WIRE_RECORD_MAX);
    printf("spool_sectors %lu\n", sectors);
    printf("spool_records_per_sector_worst %lu\n", per_sector);
    printf("spool_records_per_sector_df5 %lu\n", per_sector_df5);
    printf("spool_capacity_records_df5 %lu\n", (sectors - 1UL) * per_sector_df5);
    printf("batch_buffer_bytes %u\n", BATCH_BUF);
    return 0;
}
