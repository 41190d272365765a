/**
 * @file spool.h
 * @brief Crash-safe, bounded store-and-forward ring of records over a NOR-flash-like block device.
 *
 * Layout: the device is a ring of erase sectors. Each sector in use starts with a 16-byte header (magic, a
 * sector sequence number that grows by one per newly opened sector, the geometry, CRC-32). Records follow, each
 * a 8-byte header (length, ack word, CRC-32 over length and payload) and the payload padded to 4 bytes.
 *
 * Crash safety: a record's payload is written first and its header last, so a record exists only once its
 * CRC-protected header is complete. Recovery (spool_mount) scans the sectors at boot: the newest sector is the
 * head, the chain of sectors with consecutive sequence numbers before it holds the records in order, a torn
 * header or dirty (not erased) bytes after the last record close the head sector, and appends continue in a fresh
 * sector. A power cut at any write step therefore loses at most the record being written.
 *
 * Acknowledgement: records are removed only by spool_ack(), once the cloud has confirmed their batch
 * (spool_confirm.h; or on the MQTT PUBACK in the "broker" confirm mode); an ack clears the record's ack word in place (NOR flash can clear bits without an erase). A sector is erased
 * only when the ring needs it again. Bounded: when the ring is full, the oldest sector is erased even if it
 * still holds unacknowledged records (drop-oldest), and they are counted in counters.dropped.
 *
 * Device semantics expected: erase sets a whole sector to 0xFF; write may only clear bits (it ANDs, as NOR
 * flash does), at any byte address and length. Not thread-safe: one task owns a spool.
 */
#ifndef SPOOL_H
#define SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SPOOL_SECTOR_HEADER (16U)
#define SPOOL_RECORD_HEADER (8U)

/** The block device: flash partition on the ESP32, memory in the host tests. Functions return 0 on success. */
typedef struct {
    uint32_t sector_size;  /**< erase unit in bytes, a multiple of 4, at least 64 (4096 on ESP32 flash) */
    uint32_t sector_count; /**< at least 2 */
    int (*read)(void *ctx, uint32_t addr, void *dst, size_t len);
    int (*write)(void *ctx, uint32_t addr, const void *src, size_t len);
    int (*erase)(void *ctx, uint32_t sector);
    void *ctx;
} spool_bdev_t;

typedef enum {
    SPOOL_OK = 0,
    SPOOL_END,         /**< no more records */
    SPOOL_ERR_ARG,     /**< bad argument (NULL, empty or too large record, bad geometry) */
    SPOOL_ERR_IO,      /**< the device reported an error; the operation did not happen */
    SPOOL_ERR_SMALL,   /**< the caller's buffer is smaller than the record */
    SPOOL_ERR_CORRUPT, /**< a committed record failed its check (flash wear?) */
} spool_status_t;

/** A place in the ring: a sector sequence number and an offset in that sector. */
typedef struct {
    uint32_t seq;
    uint32_t off;
} spool_pos_t;

/** Counters since spool_mount(). */
typedef struct {
    uint32_t appended;      /**< records committed by spool_append() */
    uint32_t acked;         /**< records acknowledged (removed) */
    uint32_t dropped;       /**< unacknowledged records erased because the ring was full (drop-oldest) */
    uint32_t recovered;     /**< unacknowledged records found by spool_mount() */
    uint32_t torn;          /**< sectors whose last record was torn or whose free space was dirty at mount */
    uint32_t io_errors;     /**< device errors seen */
    uint32_t erases;        /**< sector erases */
} spool_counters_t;

typedef struct {
    const spool_bdev_t *dev;
    bool has_head;      /**< a sector is open (false only on a blank device) */
    uint32_t head_sector;
    uint32_t head_seq;
    uint32_t head_off;  /**< next append offset in the head sector; sector_size once it is closed */
    uint32_t head_end;  /**< end of the last valid record in the head sector */
    uint32_t first_seq; /**< oldest sector of the chain */
    spool_pos_t tail;   /**< oldest unacknowledged record, valid while pending > 0 */
    uint32_t pending;   /**< unacknowledged records */
    uint32_t pending_bytes; /**< their payload bytes */
    spool_counters_t counters;
} spool_t;

/** Recovers the spool from the device (a blank or garbage device gives an empty spool). */
spool_status_t spool_mount(spool_t *s, const spool_bdev_t *dev);

/** Largest record the geometry allows. */
size_t spool_record_max(const spool_bdev_t *dev);

/**
 * Appends one record (1 .. spool_record_max bytes). Returns only once its header is written: SPOOL_OK means
 * committed. May erase the oldest sector first (drop-oldest).
 */
spool_status_t spool_append(spool_t *s, const void *data, size_t len);

/** A cursor at the oldest unacknowledged record. */
void spool_begin(const spool_t *s, spool_pos_t *pos);

/**
 * Reads the record at or after *pos into buf and moves *pos past it. A cursor left behind by acks or drops
 * moves forward to the oldest unacknowledged record.
 * @return SPOOL_OK, SPOOL_END when there is no further record, or an error (SPOOL_ERR_SMALL leaves *pos as is)
 */
spool_status_t spool_read(spool_t *s, spool_pos_t *pos, void *buf, size_t cap, size_t *len);

/** Acknowledges every record before `upto` (a cursor returned by spool_read). Records are removed in order. */
spool_status_t spool_ack(spool_t *s, const spool_pos_t *upto);

/** Orders two cursors: negative, 0 or positive as a is before, at or after b in the ring. */
int spool_pos_cmp(const spool_pos_t *a, const spool_pos_t *b);

const char *spool_status_str(spool_status_t status);

#ifdef __cplusplus
}
#endif

#endif /* SPOOL_H */
