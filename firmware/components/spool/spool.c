/**
 * @file spool.c
 * @brief The crash-safe ring described in spool.h.
 */
#include "spool.h"

#include <string.h>

#define SECTOR_MAGIC (0x31504C53UL) /* "SPL1" little-endian */
#define ACK_LIVE (0xFFFFU)
#define ACK_DONE (0x0000U)
#define LEN_ERASED (0xFFFFU)
#define CHUNK (64U)
#define SEQ_MAX (0x7FFFFFFFUL)

/* Record header as stored: len u16, ack u16, crc u32 (little-endian). */
typedef struct {
    uint16_t len;
    uint16_t ack;
    uint32_t crc;
} rec_hdr_t;

typedef enum { REC_VALID, REC_ERASED, REC_BAD, REC_IO } rec_kind_t;

static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n)
{
    /* Bitwise CRC-32 (IEEE 802.3, reflected 0xEDB88320): small, and records are short. */
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0xEDB88320UL & (0U - (crc & 1U)));
        }
    }
    return ~crc;
}

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (unsigned i = 0; i < 4U; i++) {
        p[i] = (uint8_t)(v >> (8U * i));
    }
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint32_t pad4(uint32_t n)
{
    return (n + 3U) & ~3U;
}

static bool geometry_ok(const spool_bdev_t *dev)
{
    return dev != NULL && dev->read != NULL && dev->write != NULL && dev->erase != NULL && dev->sector_count >= 2U &&
           dev->sector_size >= 64U && dev->sector_size % 4U == 0U && dev->sector_size <= 0x10000U &&
           dev->sector_count <= 0x10000U;
}

size_t spool_record_max(const spool_bdev_t *dev)
{
    return geometry_ok(dev) ? (size_t)(dev->sector_size - SPOOL_SECTOR_HEADER - SPOOL_RECORD_HEADER) : 0U;
}

static uint32_t addr_of(const spool_t *s, uint32_t sector, uint32_t off)
{
    return sector * s->dev->sector_size + off;
}

static int dev_read(spool_t *s, uint32_t addr, void *dst, size_t len)
{
    int rc = s->dev->read(s->dev->ctx, addr, dst, len);
    if (rc != 0) {
        s->counters.io_errors++;
    }
    return rc;
}

static int dev_write(spool_t *s, uint32_t addr, const void *src, size_t len)
{
    int rc = s->dev->write(s->dev->ctx, addr, src, len);
    if (rc != 0) {
        s->counters.io_errors++;
    }
    return rc;
}

/* Physical sector holding chain sequence number seq (first_seq <= seq <= head_seq). */
static uint32_t sector_of(const spool_t *s, uint32_t seq)
{
    uint32_t n = s->dev->sector_count;
    return (s->head_sector + n - ((s->head_seq - seq) % n)) % n;
}

int spool_pos_cmp(const spool_pos_t *a, const spool_pos_t *b)
{
    if (a->seq != b->seq) {
        return (a->seq < b->seq) ? -1 : 1;
    }
    if (a->off != b->off) {
        return (a->off < b->off) ? -1 : 1;
    }
    return 0;
}

/* CRC of a record starts with its length field (little-endian), then runs over the payload. */
static uint32_t len_crc(uint16_t len)
{
    uint8_t l[2];
    put_u16(l, len);
    return crc32_update(0, l, 2);
}

/* Reads and checks the record at (sector, off): header shape and CRC over length and payload. The payload is
 * copied to buf when buf is given and large enough. */
static rec_kind_t read_record(spool_t *s, uint32_t sector, uint32_t off, rec_hdr_t *h, void *buf, size_t cap)
{
    uint8_t raw[SPOOL_RECORD_HEADER];
    uint8_t chunk[CHUNK];
    uint32_t crc;
    uint32_t size = s->dev->sector_size;
    bool erased = true;
    if (off + SPOOL_RECORD_HEADER > size) {
        return REC_ERASED; /* no room for another record: the sector ends here */
    }
    if (dev_read(s, addr_of(s, sector, off), raw, sizeof(raw)) != 0) {
        return REC_IO;
    }
    for (size_t i = 0; i < sizeof(raw); i++) {
        erased = erased && raw[i] == 0xFFU;
    }
    if (erased) {
        return REC_ERASED;
    }
    h->len = get_u16(&raw[0]);
    h->ack = get_u16(&raw[2]);
    h->crc = get_u32(&raw[4]);
    if (h->len == 0U || h->len == LEN_ERASED || off + SPOOL_RECORD_HEADER + pad4(h->len) > size) {
        return REC_BAD;
    }
    crc = len_crc(h->len);
    for (uint32_t done = 0; done < h->len;) {
        uint32_t n = (h->len - done < CHUNK) ? h->len - done : CHUNK;
        if (dev_read(s, addr_of(s, sector, off + SPOOL_RECORD_HEADER + done), chunk, n) != 0) {
            return REC_IO;
        }
        crc = crc32_update(crc, chunk, n);
        if (buf != NULL && cap >= h->len) {
            memcpy((uint8_t *)buf + done, chunk, n);
        }
        done += n;
    }
    return (crc == h->crc) ? REC_VALID : REC_BAD;
}

/* True if bytes [off, sector end) of a sector are all 0xFF, i.e. safe to program. */
static int tail_erased(spool_t *s, uint32_t sector, uint32_t off, bool *erased)
{
    uint8_t chunk[CHUNK];
    *erased = true;
    while (off < s->dev->sector_size) {
        uint32_t n = (s->dev->sector_size - off < CHUNK) ? s->dev->sector_size - off : CHUNK;
        if (dev_read(s, addr_of(s, sector, off), chunk, n) != 0) {
            return -1;
        }
        for (uint32_t i = 0; i < n; i++) {
            if (chunk[i] != 0xFFU) {
                *erased = false;
                return 0;
            }
        }
        off += n;
    }
    return 0;
}

static bool read_sector_header(spool_t *s, uint32_t sector, uint32_t *seq)
{
    uint8_t h[SPOOL_SECTOR_HEADER];
    if (dev_read(s, addr_of(s, sector, 0), h, sizeof(h)) != 0) {
        return false;
    }
    if (get_u32(&h[0]) != SECTOR_MAGIC || get_u32(&h[8]) != ((s->dev->sector_size << 16) ^ s->dev->sector_count) ||
        get_u32(&h[12]) != crc32_update(0, h, 12)) {
        return false;
    }
    *seq = get_u32(&h[4]);
    /* A real spool never opens 2^31 sectors (flash endurance ends long before), so a larger number is not ours
     * and would break the "newest + 1" arithmetic. */
    return *seq >= 1U && *seq <= SEQ_MAX;
}

/* Moves *pos to the next valid unacknowledged record at or after it (filling h and, optionally, buf). */
static spool_status_t locate(spool_t *s, spool_pos_t *pos, rec_hdr_t *h, void *buf, size_t cap)
{
    if (!s->has_head) {
        return SPOOL_END;
    }
    if (pos->seq < s->first_seq) {
        pos->seq = s->first_seq;
        pos->off = SPOOL_SECTOR_HEADER;
    }
    if (pos->off < SPOOL_SECTOR_HEADER) {
        pos->off = SPOOL_SECTOR_HEADER;
    }
    while (pos->seq <= s->head_seq) {
        bool is_head = (pos->seq == s->head_seq);
        rec_kind_t k;
        if (is_head && pos->off >= s->head_end) {
            return SPOOL_END;
        }
        k = read_record(s, sector_of(s, pos->seq), pos->off, h, buf, cap);
        if (k == REC_VALID && h->ack != ACK_LIVE) {
            /* Acknowledged already. Acks go in order, so this is only met after damage (a flipped bit in an ack
             * word); skipping it keeps reads, acks and the pending count agreeing with what mount counted. */
            pos->off += SPOOL_RECORD_HEADER + pad4(h->len);
            continue;
        }
        if (k == REC_VALID) {
            return SPOOL_OK;
        }
        if (k == REC_IO) {
            return SPOOL_ERR_IO;
        }
        if (is_head) {
            /* Below head_end every record was checked at mount or written by us. */
            return SPOOL_ERR_CORRUPT;
        }
        /* A closed sector ends at its first erased or torn header: go on with the next sector. */
        pos->seq++;
        pos->off = SPOOL_SECTOR_HEADER;
    }
    return SPOOL_END;
}

static void advance(spool_pos_t *pos, const rec_hdr_t *h)
{
    pos->off += SPOOL_RECORD_HEADER + pad4(h->len);
}

spool_status_t spool_mount(spool_t *s, const spool_bdev_t *dev)
{
    uint32_t n;
    bool any = false;
    uint32_t head = 0;
    uint32_t head_seq = 0;
    bool have_tail = false;
    if (s == NULL || !geometry_ok(dev)) {
        return SPOOL_ERR_ARG;
    }
    memset(s, 0, sizeof(*s));
    s->dev = dev;
    n = dev->sector_count;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t seq;
        if (read_sector_header(s, i, &seq) && (!any || seq > head_seq)) {
            any = true;
            head = i;
            head_seq = seq;
        }
    }
    if (!any) {
        return (s->counters.io_errors > 0U) ? SPOOL_ERR_IO : SPOOL_OK; /* blank: formatted lazily */
    }
    s->has_head = true;
    s->head_sector = head;
    s->head_seq = head_seq;
    s->first_seq = head_seq;
    /* The chain: sectors just before the head in ring order whose sequence numbers count down by one. */
    for (uint32_t k = 1; k < n && head_seq >= k; k++) {
        uint32_t seq;
        if (!read_sector_header(s, (head + n - k) % n, &seq) || seq != head_seq - k) {
            break;
        }
        s->first_seq = seq;
    }
    s->head_off = dev->sector_size;
    for (uint32_t seq = s->first_seq; seq <= head_seq; seq++) {
        uint32_t sector = sector_of(s, seq);
        uint32_t off = SPOOL_SECTOR_HEADER;
        for (;;) {
            rec_hdr_t h;
            rec_kind_t k = read_record(s, sector, off, &h, NULL, 0);
            if (k == REC_IO) {
                return SPOOL_ERR_IO;
            }
            if (k != REC_VALID) {
                if (seq == head_seq) {
                    bool erased = false;
                    if (k == REC_ERASED && tail_erased(s, sector, off, &erased) != 0) {
                        return SPOOL_ERR_IO;
                    }
                    /* Append after the last record only over erased bytes; a torn record or dirty free space
                     * closes the sector and the next append opens a new one. */
                    s->head_off = erased ? off : dev->sector_size;
                    s->head_end = off;
                    if (!erased && off < dev->sector_size) {
                        s->counters.torn++;
                    }
                } else if (k == REC_BAD) {
                    s->counters.torn++;
                }
                break;
            }
            if (h.ack == ACK_LIVE) {
                if (!have_tail) {
                    s->tail.seq = seq;
                    s->tail.off = off;
                    have_tail = true;
                }
                s->pending++;
                s->pending_bytes += h.len;
            }
            off += SPOOL_RECORD_HEADER + pad4(h.len);
        }
    }
    s->counters.recovered = s->pending;
    return SPOOL_OK;
}

/* Opens the next sector of the ring as the head, dropping the oldest sector if the ring is full. */
static spool_status_t open_sector(spool_t *s)
{
    uint32_t n = s->dev->sector_count;
    uint32_t next = s->has_head ? (s->head_sector + 1U) % n : 0U;
    uint32_t seq = s->has_head ? s->head_seq + 1U : 1U;
    uint8_t h[SPOOL_SECTOR_HEADER];
    if (s->has_head && s->head_seq - s->first_seq + 1U == n) {
        /* Ring full: `next` holds the oldest sector. Unacknowledged records in it are dropped. */
        if (s->pending > 0U && s->tail.seq == s->first_seq) {
            spool_pos_t p = s->tail;
            rec_hdr_t rh;
            while (p.seq == s->first_seq && locate(s, &p, &rh, NULL, 0) == SPOOL_OK && p.seq == s->first_seq) {
                s->pending--;
                s->pending_bytes -= rh.len;
                s->counters.dropped++;
                advance(&p, &rh);
            }
            s->tail.seq = s->first_seq + 1U;
            s->tail.off = SPOOL_SECTOR_HEADER;
        }
        s->first_seq++;
    }
    if (s->pending == 0U) {
        s->tail.seq = seq;
        s->tail.off = SPOOL_SECTOR_HEADER;
    }
    s->counters.erases++;
    if (s->dev->erase(s->dev->ctx, next) != 0) {
        s->counters.io_errors++;
        return SPOOL_ERR_IO;
    }
    if (!s->has_head) {
        s->first_seq = seq;
    }
    put_u32(&h[0], SECTOR_MAGIC);
    put_u32(&h[4], seq);
    put_u32(&h[8], (s->dev->sector_size << 16) ^ s->dev->sector_count);
    put_u32(&h[12], crc32_update(0, h, 12));
    if (dev_write(s, addr_of(s, next, 0), h, sizeof(h)) != 0) {
        return SPOOL_ERR_IO;
    }
    if (!s->has_head) {
        s->has_head = true;
    }
    s->head_sector = next;
    s->head_seq = seq;
    s->head_off = SPOOL_SECTOR_HEADER;
    s->head_end = SPOOL_SECTOR_HEADER;
    return SPOOL_OK;
}

spool_status_t spool_append(spool_t *s, const void *data, size_t len)
{
    uint8_t hdr[SPOOL_RECORD_HEADER];
    uint32_t need;
    uint32_t off;
    uint32_t crc;
    if (s == NULL || s->dev == NULL || data == NULL || len == 0U || len > spool_record_max(s->dev)) {
        return SPOOL_ERR_ARG;
    }
    need = SPOOL_RECORD_HEADER + pad4((uint32_t)len);
    if (!s->has_head || s->head_off + need > s->dev->sector_size) {
        spool_status_t st = open_sector(s);
        if (st != SPOOL_OK) {
            return st;
        }
    }
    off = s->head_off;
    /* Payload first, header last: the record exists only once its header (with the CRC) is complete. */
    if (dev_write(s, addr_of(s, s->head_sector, off + SPOOL_RECORD_HEADER), data, len) != 0) {
        s->head_off = s->dev->sector_size; /* the bytes there are unknown now: close the sector */
        return SPOOL_ERR_IO;
    }
    crc = crc32_update(len_crc((uint16_t)len), (const uint8_t *)data, len);
    put_u16(&hdr[0], (uint16_t)len);
    put_u16(&hdr[2], ACK_LIVE);
    put_u32(&hdr[4], crc);
    if (dev_write(s, addr_of(s, s->head_sector, off), hdr, sizeof(hdr)) != 0) {
        s->head_off = s->dev->sector_size;
        return SPOOL_ERR_IO;
    }
    if (s->pending == 0U) {
        s->tail.seq = s->head_seq;
        s->tail.off = off;
    }
    s->head_off = off + need;
    s->head_end = s->head_off;
    s->pending++;
    s->pending_bytes += (uint32_t)len;
    s->counters.appended++;
    return SPOOL_OK;
}

void spool_begin(const spool_t *s, spool_pos_t *pos)
{
    if (s == NULL || pos == NULL) {
        return;
    }
    if (s->pending > 0U) {
        *pos = s->tail;
    } else {
        pos->seq = s->has_head ? s->head_seq : 0U;
        pos->off = s->has_head ? s->head_end : 0U;
    }
}

spool_status_t spool_read(spool_t *s, spool_pos_t *pos, void *buf, size_t cap, size_t *len)
{
    rec_hdr_t h;
    spool_status_t st;
    spool_pos_t p;
    if (s == NULL || pos == NULL || buf == NULL || len == NULL) {
        return SPOOL_ERR_ARG;
    }
    if (s->pending == 0U) {
        return SPOOL_END;
    }
    p = *pos;
    if (spool_pos_cmp(&p, &s->tail) < 0) {
        p = s->tail; /* left behind by an ack or a drop */
    }
    st = locate(s, &p, &h, buf, cap);
    if (st != SPOOL_OK) {
        return st;
    }
    if (h.len > cap) {
        return SPOOL_ERR_SMALL;
    }
    *len = h.len;
    advance(&p, &h);
    *pos = p;
    return SPOOL_OK;
}

spool_status_t spool_ack(spool_t *s, const spool_pos_t *upto)
{
    static const uint8_t done[2] = {(uint8_t)ACK_DONE, (uint8_t)(ACK_DONE >> 8)};
    if (s == NULL || upto == NULL) {
        return SPOOL_ERR_ARG;
    }
    while (s->pending > 0U && spool_pos_cmp(&s->tail, upto) < 0) {
        rec_hdr_t h;
        spool_pos_t p = s->tail;
        spool_status_t st = locate(s, &p, &h, NULL, 0);
        if (st == SPOOL_END) {
            break;
        }
        if (st != SPOOL_OK) {
            return st;
        }
        if (spool_pos_cmp(&p, upto) >= 0) {
            s->tail = p;
            break;
        }
        /* Clearing the ack word in place; a torn clear leaves it != 0xFFFF, which also reads as acked. */
        if (dev_write(s, addr_of(s, sector_of(s, p.seq), p.off + 2U), done, sizeof(done)) != 0) {
            return SPOOL_ERR_IO;
        }
        s->pending--;
        s->pending_bytes -= h.len;
        s->counters.acked++;
        advance(&p, &h);
        s->tail = p;
    }
    return SPOOL_OK;
}

const char *spool_status_str(spool_status_t status)
{
    switch (status) {
    case SPOOL_OK:
        return "ok";
    case SPOOL_END:
        return "no more records";
    case SPOOL_ERR_ARG:
        return "bad argument";
    case SPOOL_ERR_IO:
        return "device error";
    case SPOOL_ERR_SMALL:
        return "buffer too small for the record";
    case SPOOL_ERR_CORRUPT:
        return "committed record failed its check";
    default:
        return "unknown status";
    }
}
