/**
 * @file memdev.h
 * @brief A NOR-flash-like block device in memory for the host tests and fuzzers, with power-cut simulation.
 *
 * Erase sets a sector to 0xFF; write ANDs bytes in (it can only clear bits, like NOR flash). A device can be
 * told to lose power after N more write/erase operations: operation N+1 is then torn (only part of it happens,
 * the byte at the cut is half-programmed) and it and every later operation fail, as if the chip lost power.
 * "Rebooting" is mounting a spool again on the same memory with the power restored.
 */
#ifndef MEMDEV_H
#define MEMDEV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spool.h"

typedef enum {
    MEMDEV_TEAR_NONE = 0, /**< the cut operation does nothing */
    MEMDEV_TEAR_HALF,     /**< half of it happens, the next byte is half-programmed */
    MEMDEV_TEAR_ALL_BUT_LAST, /**< all but the last byte happen */
} memdev_tear_t;

typedef struct {
    uint8_t *mem;
    uint32_t sector_size;
    uint32_t sector_count;
    long ops_left;      /**< write/erase operations until the power cut; negative: never */
    memdev_tear_t tear;
    bool dead;          /**< power is gone: every operation fails */
    unsigned long ops;  /**< write/erase operations done (including the torn one) */
    unsigned long reads;
    spool_bdev_t bdev;
} memdev_t;

/** Uses mem[sector_size * sector_count] (caller-owned) and fills it with 0xFF if `blank`. */
void memdev_init(memdev_t *m, uint8_t *mem, uint32_t sector_size, uint32_t sector_count, bool blank);

/** Cut the power after `ops` more write/erase operations, tearing the next one as `tear` says. */
void memdev_cut_after(memdev_t *m, long ops, memdev_tear_t tear);

/** Power back on (keeps the memory). */
void memdev_power_on(memdev_t *m);

#endif /* MEMDEV_H */
