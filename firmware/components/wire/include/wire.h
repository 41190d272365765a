/**
 * @file wire.h
 * @brief The edge-gw wire format, version 1 (docs/wire-format.md): canonical JSON for decoded fields, batches
 *        and the status message, plus the compact record a reading is stored as in the spool.
 *
 * Everything writes into a caller-supplied buffer; nothing allocates. A writer that runs out of room reports
 * WIRE_ERR_FULL and leaves the buffer's earlier content (and its NUL terminator) intact.
 */
#ifndef WIRE_H
#define WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ruuvi.h"

#ifdef __cplusplus
extern "C" {
#endif

#define WIRE_VERSION (1)
#define WIRE_GATEWAY_ID_MAX (64U)
/** A batch is at most 256 KiB of JSON (docs/wire-format.md). */
#define WIRE_BATCH_BYTES_MAX (256U * 1024U)
/** Packed reading: time 8 + mac 6 + flags 1 + rssi 1 + raw length 1 + raw. */
#define WIRE_RECORD_HEADER (17U)
#define WIRE_RECORD_MAX (WIRE_RECORD_HEADER + RUUVI_PAYLOAD_MAX)

typedef enum {
    WIRE_OK = 0,
    WIRE_ERR_NULL,
    WIRE_ERR_FULL,       /**< the output buffer is too small */
    WIRE_ERR_GATEWAY_ID, /**< not 1-64 characters of [A-Za-z0-9._-], or "dlq" */
    WIRE_ERR_DECODE,     /**< the raw payload of a reading does not decode */
    WIRE_ERR_RECORD,     /**< a packed record is malformed */
    WIRE_ERR_STATE,      /**< batch calls out of order */
    WIRE_ERR_CONFIRM,    /**< a confirmation that is not canonical, not version 1, or not for this gateway */
} wire_status_t;

/** One reading as stored and sent: the fields are decoded from raw when the batch is written. */
typedef struct {
    int64_t time_ns;   /**< receive time, Unix ns (UTC), fixed when stored */
    uint8_t mac[6];    /**< the sender's BLE address, most significant byte first */
    bool clock_synced; /**< time_ns comes from a synchronised clock */
    bool rssi_valid;   /**< false: JSON null */
    int8_t rssi;       /**< dBm */
    uint8_t raw_len;
    uint8_t raw[RUUVI_PAYLOAD_MAX]; /**< manufacturer data after 0x0499, format byte first */
} wire_reading_t;

/** A bounded output buffer; len excludes the NUL terminator that is always kept. */
typedef struct {
    char *buf;
    size_t cap;
    size_t len;
    bool full; /**< sticky: something did not fit */
} wire_buf_t;

void wire_buf_init(wire_buf_t *b, char *buf, size_t cap);

/** Canonical JSON object of decoded fields, exactly what `edge-gw decode HEX` prints. */
wire_status_t wire_fields_json(wire_buf_t *b, const ruuvi_data_t *d);

/** True if id is a valid gateway id (1-64 of [A-Za-z0-9._-], not "dlq"). */
bool wire_gateway_id_valid(const char *id);

/** `{"v":1,"gateway":"<id>","state":"online"|"offline"}`: the retained status and the last will. */
wire_status_t wire_status_json(wire_buf_t *b, const char *gateway_id, bool online);

/** Incremental batch writer, so a batch can be filled from the spool one record at a time. */
typedef struct {
    wire_buf_t out;
    size_t count;  /**< readings added */
    bool open;
} wire_batch_t;

/** Starts `{"v":1,"gateway":...,"seq":...,"readings":[`. */
wire_status_t wire_batch_begin(wire_batch_t *w, char *buf, size_t cap, const char *gateway_id, uint64_t seq);

/**
 * Appends one reading. On WIRE_ERR_FULL the batch is unchanged (the reading is rolled back) and can still be
 * ended; room for the closing `]}` is always kept.
 */
wire_status_t wire_batch_add(wire_batch_t *w, const wire_reading_t *r);

/** Closes the batch; *len receives the JSON length. A batch needs at least one reading. */
wire_status_t wire_batch_end(wire_batch_t *w, size_t *len);

/** One-shot form of begin / add... / end. */
wire_status_t wire_encode_batch(char *buf, size_t cap, const char *gateway_id, uint64_t seq,
                                const wire_reading_t *readings, size_t n, size_t *len);

/** Largest seq a confirmation may carry: 2**53 - 1, the largest integer every JSON parser reads exactly. */
#define WIRE_SEQ_MAX (9007199254740991ULL)
/** A confirmation carries 1 to 64 ranges. */
#define WIRE_CONFIRM_RANGES_MAX (64U)
/** Longest canonical confirmation: header with a 64-character id, 64 ranges of two 16-digit numbers, commas. */
#define WIRE_CONFIRM_BYTES_MAX (18U + WIRE_GATEWAY_ID_MAX + 10U + WIRE_CONFIRM_RANGES_MAX * 35U + 63U + 2U)

/** An inclusive range of batch seqs, first <= last <= WIRE_SEQ_MAX. */
typedef struct {
    uint64_t first;
    uint64_t last;
} wire_seq_range_t;

/**
 * Parses a confirmation (docs/wire-format.md "Confirmation") addressed to gateway_id: exactly the canonical bytes
 * `{"v":1,"gateway":"<id>","seqs":[[first,last],...]}`, 1 to 64 ranges, each 0 <= first <= last <= 2**53 - 1,
 * integers without sign, fraction, exponent or leading zeros. The payload need not be NUL-terminated. Anything else
 * is refused with WIRE_ERR_CONFIRM and *n = 0, so a bad message deletes nothing. One pass, no allocation, and the
 * ranges are only read, never walked. `out` needs room for WIRE_CONFIRM_RANGES_MAX ranges.
 */
wire_status_t wire_confirm_parse(const char *payload, size_t len, const char *gateway_id, wire_seq_range_t *out,
                                 size_t *n);

/** Packs a reading into the spool record format; returns the record length, or 0 if it does not fit. */
size_t wire_record_pack(const wire_reading_t *r, uint8_t *out, size_t cap);

/** Unpacks a spool record. */
wire_status_t wire_record_unpack(const uint8_t *rec, size_t len, wire_reading_t *r);

const char *wire_status_str(wire_status_t status);

#ifdef __cplusplus
}
#endif

#endif /* WIRE_H */
