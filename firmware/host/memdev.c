/**
 * @file memdev.c
 * @brief In-memory NOR flash with power-cut simulation (see memdev.h).
 */
#include "memdev.h"

#include <string.h>

static int md_read(void *ctx, uint32_t addr, void *dst, size_t len)
{
    memdev_t *m = ctx;
    size_t size = (size_t)m->sector_size * m->sector_count;
    if (m->dead || addr > size || len > size - addr) {
        return -1;
    }
    m->reads++;
    memcpy(dst, m->mem + addr, len);
    return 0;
}

/* Returns how many bytes of a `len`-byte operation happen before the cut, or len if there is no cut now. */
static size_t budget(memdev_t *m, size_t len, bool *torn)
{
    *torn = false;
    if (m->ops_left < 0) {
        return len;
    }
    if (m->ops_left > 0) {
        m->ops_left--;
        return len;
    }
    *torn = true;
    m->dead = true;
    switch (m->tear) {
    case MEMDEV_TEAR_HALF:
        return len / 2U;
    case MEMDEV_TEAR_ALL_BUT_LAST:
        return len > 0U ? len - 1U : 0U;
    default:
        return 0;
    }
}

static int md_write(void *ctx, uint32_t addr, const void *src, size_t len)
{
    memdev_t *m = ctx;
    const uint8_t *p = src;
    size_t size = (size_t)m->sector_size * m->sector_count;
    bool torn;
    size_t n;
    if (m->dead || addr > size || len > size - addr) {
        return -1;
    }
    m->ops++;
    n = budget(m, len, &torn);
    for (size_t i = 0; i < n; i++) {
        m->mem[addr + i] &= p[i];
    }
    if (torn) {
        if (n < len && m->tear == MEMDEV_TEAR_HALF) {
            /* The byte at the cut is half-programmed: only its high nibble's zero bits made it. */
            m->mem[addr + n] &= (uint8_t)(p[n] | 0x0FU);
        }
        return -1;
    }
    return 0;
}

static int md_erase(void *ctx, uint32_t sector)
{
    memdev_t *m = ctx;
    bool torn;
    size_t n;
    if (m->dead || sector >= m->sector_count) {
        return -1;
    }
    m->ops++;
    n = budget(m, m->sector_size, &torn);
    memset(m->mem + (size_t)sector * m->sector_size, 0xFF, n);
    return torn ? -1 : 0;
}

void memdev_init(memdev_t *m, uint8_t *mem, uint32_t sector_size, uint32_t sector_count, bool blank)
{
    memset(m, 0, sizeof(*m));
    m->mem = mem;
    m->sector_size = sector_size;
    m->sector_count = sector_count;
    m->ops_left = -1;
    if (blank) {
        memset(mem, 0xFF, (size_t)sector_size * sector_count);
    }
    m->bdev.sector_size = sector_size;
    m->bdev.sector_count = sector_count;
    m->bdev.read = md_read;
    m->bdev.write = md_write;
    m->bdev.erase = md_erase;
    m->bdev.ctx = m;
}

void memdev_cut_after(memdev_t *m, long ops, memdev_tear_t tear)
{
    m->ops_left = ops;
    m->tear = tear;
    m->dead = false;
}

void memdev_power_on(memdev_t *m)
{
    m->ops_left = -1;
    m->dead = false;
}
