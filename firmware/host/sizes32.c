/**
 * @file sizes32.c
 * @brief Struct sizes as the ESP32 sees them, without an ESP32 toolchain (see the Makefile target sizes32).
 */
#include "ruuvi.h"
#include "ruuvi_dedup.h"
#include "spool.h"
#include "uplink.h"
#include "wire.h"

/* Compiled, not run: `nm -S` on the object prints each array's size, i.e. the struct sizes on a 32-bit target
 * (clang --target=riscv32-unknown-elf, ILP32 like the ESP32's Xtensa: 4-byte pointers, 8-byte-aligned doubles). */
char sz_ruuvi_data_t[sizeof(ruuvi_data_t)];
char sz_ruuvi_dedup_entry_t[sizeof(ruuvi_dedup_entry_t)];
char sz_ruuvi_dedup_t[sizeof(ruuvi_dedup_t)];
char sz_wire_reading_t[sizeof(wire_reading_t)];
char sz_wire_batch_t[sizeof(wire_batch_t)];
char sz_spool_t[sizeof(spool_t)];
char sz_spool_bdev_t[sizeof(spool_bdev_t)];
char sz_uplink_t[sizeof(uplink_t)];
