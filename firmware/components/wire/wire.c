/**
 * @file wire.c
 * @brief Canonical JSON of docs/wire-format.md ("Canonical encoding"), written into bounded buffers.
 */
#include "wire.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Decimals of the JSON "number" fields (docs/wire-format.md, "Decoded fields"). */
#define DEC_TEMPERATURE (3)
#define DEC_HUMIDITY (4)
#define DEC_PM (1)
#define DEC_LUMINOSITY (2)
#define DEC_SOUND (1)

static const char hex_digits[] = "0123456789abcdef";

void wire_buf_init(wire_buf_t *b, char *buf, size_t cap)
{
    b->buf = buf;
    b->cap = cap;
    b->len = 0;
    b->full = (buf == NULL || cap == 0U);
    if (!b->full) {
        buf[0] = '\0';
    }
}

static void put_mem(wire_buf_t *b, const char *s, size_t n)
{
    if (b->full || n >= b->cap - b->len) {
        b->full = true;
        return;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

static void put_str(wire_buf_t *b, const char *s)
{
    put_mem(b, s, strlen(s));
}

static void put_i64(wire_buf_t *b, int64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%" PRId64, v);
    put_mem(b, tmp, (size_t)n);
}

static void put_u64(wire_buf_t *b, uint64_t v)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof(tmp), "%" PRIu64, v);
    put_mem(b, tmp, (size_t)n);
}

/* A JSON "number": rounded to `decimals` by printf (round-half-even on the exact binary value, like Python's
 * round()), trailing zeros removed but one digit after the point kept: 24.3, 24.0, -0.005. */
static void put_number(wire_buf_t *b, double v, int decimals)
{
    char tmp[48];
    int n = snprintf(tmp, sizeof(tmp), "%.*f", decimals, v);
    size_t end;
    if (n <= 0 || (size_t)n >= sizeof(tmp)) {
        b->full = true; /* cannot happen for the bounded values a decoder yields */
        return;
    }
    end = (size_t)n;
    while (end > 2U && tmp[end - 1U] == '0' && tmp[end - 2U] != '.') {
        end--;
    }
    put_mem(b, tmp, end);
}

static void put_hex(wire_buf_t *b, const uint8_t *p, size_t n, char sep)
{
    for (size_t i = 0; i < n; i++) {
        char pair[3];
        size_t k = 0;
        if (sep != '\0' && i > 0U) {
            pair[k++] = sep;
        }
        pair[k++] = hex_digits[p[i] >> 4];
        pair[k++] = hex_digits[p[i] & 0x0FU];
        put_mem(b, pair, k);
    }
}

static void put_key(wire_buf_t *b, bool *first, const char *key)
{
    if (!*first) {
        put_mem(b, ",", 1);
    }
    *first = false;
    put_mem(b, "\"", 1);
    put_str(b, key);
    put_mem(b, "\":", 2);
}

static void put_bool(wire_buf_t *b, bool v)
{
    put_str(b, v ? "true" : "false");
}

static void put_field_value(wire_buf_t *b, const ruuvi_data_t *d, ruuvi_field_t f)
{
    switch (f) {
    case RUUVI_F_DATA_FORMAT:
        put_i64(b, d->data_format);
        break;
    case RUUVI_F_TEMPERATURE:
        put_number(b, d->temperature_c, DEC_TEMPERATURE);
        break;
    case RUUVI_F_HUMIDITY:
        put_number(b, d->humidity_pct, DEC_HUMIDITY);
        break;
    case RUUVI_F_PRESSURE:
        put_i64(b, d->pressure_pa);
        break;
    case RUUVI_F_ACCELERATION_X:
    case RUUVI_F_ACCELERATION_Y:
    case RUUVI_F_ACCELERATION_Z:
        put_i64(b, d->acceleration_mg[f - RUUVI_F_ACCELERATION_X]);
        break;
    case RUUVI_F_BATTERY_VOLTAGE:
        put_i64(b, d->battery_mv);
        break;
    case RUUVI_F_TX_POWER:
        put_i64(b, d->tx_power_dbm);
        break;
    case RUUVI_F_MOVEMENT_COUNTER:
        put_i64(b, d->movement_counter);
        break;
    case RUUVI_F_MEASUREMENT_SEQUENCE_NUMBER:
        put_i64(b, d->measurement_sequence_number);
        break;
    case RUUVI_F_MAC:
        put_mem(b, "\"", 1);
        put_hex(b, d->mac, d->mac_len <= 6U ? d->mac_len : 6U, ':');
        put_mem(b, "\"", 1);
        break;
    case RUUVI_F_PM1_0:
    case RUUVI_F_PM2_5:
    case RUUVI_F_PM4_0:
    case RUUVI_F_PM10_0:
        put_number(b, d->pm_ugm3[f - RUUVI_F_PM1_0], DEC_PM);
        break;
    case RUUVI_F_CO2:
        put_i64(b, d->co2_ppm);
        break;
    case RUUVI_F_VOC_INDEX:
        put_i64(b, d->voc_index);
        break;
    case RUUVI_F_NOX_INDEX:
        put_i64(b, d->nox_index);
        break;
    case RUUVI_F_LUMINOSITY:
        put_number(b, d->luminosity_lux, DEC_LUMINOSITY);
        break;
    case RUUVI_F_SOUND_INSTANT_DBA:
    case RUUVI_F_SOUND_AVERAGE_DBA:
    case RUUVI_F_SOUND_PEAK_SPL_DB:
        put_number(b, d->sound_db[f - RUUVI_F_SOUND_INSTANT_DBA], DEC_SOUND);
        break;
    case RUUVI_F_CALIBRATION_IN_PROGRESS:
        put_bool(b, d->calibration_in_progress);
        break;
    case RUUVI_F_BUTTON_PRESSED:
        put_bool(b, d->button_pressed);
        break;
    case RUUVI_F_RTC_RUNNING_ON_BOOT:
        put_bool(b, d->rtc_running_on_boot);
        break;
    case RUUVI_F_ENCRYPTED:
        put_bool(b, d->encrypted);
        break;
    default:
        put_str(b, "null");
        break;
    }
}

wire_status_t wire_fields_json(wire_buf_t *b, const ruuvi_data_t *d)
{
    bool first = true;
    if (b == NULL || d == NULL) {
        return WIRE_ERR_NULL;
    }
    put_mem(b, "{", 1);
    for (int i = 0; i < (int)RUUVI_F_COUNT; i++) {
        ruuvi_field_t f = (ruuvi_field_t)i;
        if (!ruuvi_carries(d, f)) {
            continue;
        }
        put_key(b, &first, ruuvi_field_name(f));
        if (ruuvi_available(d, f)) {
            put_field_value(b, d, f);
        } else {
            put_str(b, "null");
        }
    }
    put_mem(b, "}", 1);
    return b->full ? WIRE_ERR_FULL : WIRE_OK;
}

bool wire_gateway_id_valid(const char *id)
{
    size_t n;
    if (id == NULL) {
        return false;
    }
    n = strlen(id);
    if (n == 0U || n > WIRE_GATEWAY_ID_MAX || strcmp(id, "dlq") == 0) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                  c == '_' || c == '-';
        if (!ok) {
            return false;
        }
    }
    return true;
}

wire_status_t wire_status_json(wire_buf_t *b, const char *gateway_id, bool online)
{
    if (b == NULL) {
        return WIRE_ERR_NULL;
    }
    if (!wire_gateway_id_valid(gateway_id)) {
        return WIRE_ERR_GATEWAY_ID;
    }
    put_str(b, "{\"v\":1,\"gateway\":\"");
    put_str(b, gateway_id);
    put_str(b, online ? "\",\"state\":\"online\"}" : "\",\"state\":\"offline\"}");
    return b->full ? WIRE_ERR_FULL : WIRE_OK;
}

/* Room kept for the closing "]}" of a batch, plus the terminator. */
#define BATCH_TAIL (2U)

wire_status_t wire_batch_begin(wire_batch_t *w, char *buf, size_t cap, const char *gateway_id, uint64_t seq)
{
    if (w == NULL || buf == NULL) {
        return WIRE_ERR_NULL;
    }
    memset(w, 0, sizeof(*w));
    if (!wire_gateway_id_valid(gateway_id)) {
        return WIRE_ERR_GATEWAY_ID;
    }
    if (cap <= BATCH_TAIL) {
        return WIRE_ERR_FULL;
    }
    wire_buf_init(&w->out, buf, cap - BATCH_TAIL);
    put_str(&w->out, "{\"v\":1,\"gateway\":\"");
    put_str(&w->out, gateway_id);
    put_str(&w->out, "\",\"seq\":");
    put_u64(&w->out, seq);
    put_str(&w->out, ",\"readings\":[");
    if (w->out.full) {
        return WIRE_ERR_FULL;
    }
    w->open = true;
    return WIRE_OK;
}

wire_status_t wire_batch_add(wire_batch_t *w, const wire_reading_t *r)
{
    ruuvi_data_t d;
    size_t mark;
    if (w == NULL || r == NULL) {
        return WIRE_ERR_NULL;
    }
    if (!w->open) {
        return WIRE_ERR_STATE;
    }
    if (r->raw_len > RUUVI_PAYLOAD_MAX || ruuvi_decode(r->raw, r->raw_len, &d) != RUUVI_OK) {
        return WIRE_ERR_DECODE;
    }
    mark = w->out.len;
    if (w->count > 0U) {
        put_mem(&w->out, ",", 1);
    }
    put_str(&w->out, "{\"mac\":\"");
    put_hex(&w->out, r->mac, sizeof(r->mac), ':');
    put_str(&w->out, "\",\"time_ns\":");
    put_i64(&w->out, r->time_ns);
    put_str(&w->out, ",\"clock_synced\":");
    put_bool(&w->out, r->clock_synced);
    put_str(&w->out, ",\"rssi\":");
    if (r->rssi_valid) {
        put_i64(&w->out, r->rssi);
    } else {
        put_str(&w->out, "null");
    }
    put_str(&w->out, ",\"data_format\":");
    put_i64(&w->out, d.data_format);
    put_str(&w->out, ",\"raw\":\"");
    put_hex(&w->out, r->raw, r->raw_len, '\0');
    put_str(&w->out, "\",\"fields\":");
    (void)wire_fields_json(&w->out, &d);
    put_mem(&w->out, "}", 1);
    if (w->out.full) {
        /* Roll back to the last complete reading. */
        w->out.len = mark;
        w->out.buf[mark] = '\0';
        w->out.full = false;
        return WIRE_ERR_FULL;
    }
    w->count++;
    return WIRE_OK;
}

wire_status_t wire_batch_end(wire_batch_t *w, size_t *len)
{
    if (w == NULL || len == NULL) {
        return WIRE_ERR_NULL;
    }
    if (!w->open || w->count == 0U) {
        return WIRE_ERR_STATE;
    }
    /* The tail was reserved in begin(): give it back, then it always fits. */
    w->out.cap += BATCH_TAIL;
    put_mem(&w->out, "]}", 2);
    w->open = false;
    if (w->out.full) {
        return WIRE_ERR_FULL;
    }
    *len = w->out.len;
    return WIRE_OK;
}

wire_status_t wire_encode_batch(char *buf, size_t cap, const char *gateway_id, uint64_t seq,
                                const wire_reading_t *readings, size_t n, size_t *len)
{
    wire_batch_t w;
    wire_status_t st = wire_batch_begin(&w, buf, cap, gateway_id, seq);
    if (st != WIRE_OK) {
        return st;
    }
    if (readings == NULL && n > 0U) {
        return WIRE_ERR_NULL;
    }
    for (size_t i = 0; i < n; i++) {
        st = wire_batch_add(&w, &readings[i]);
        if (st != WIRE_OK) {
            return st;
        }
    }
    return wire_batch_end(&w, len);
}

/* Record flags byte. */
#define REC_CLOCK_SYNCED (0x01U)
#define REC_RSSI_VALID (0x02U)

size_t wire_record_pack(const wire_reading_t *r, uint8_t *out, size_t cap)
{
    uint64_t t;
    size_t n;
    if (r == NULL || out == NULL || r->raw_len > RUUVI_PAYLOAD_MAX) {
        return 0;
    }
    n = WIRE_RECORD_HEADER + r->raw_len;
    if (cap < n) {
        return 0;
    }
    t = (uint64_t)r->time_ns;
    for (size_t i = 0; i < 8U; i++) {
        out[i] = (uint8_t)(t >> (8U * i)); /* little-endian */
    }
    memcpy(&out[8], r->mac, 6);
    out[14] = (uint8_t)((r->clock_synced ? REC_CLOCK_SYNCED : 0U) | (r->rssi_valid ? REC_RSSI_VALID : 0U));
    out[15] = (uint8_t)r->rssi;
    out[16] = r->raw_len;
    memcpy(&out[WIRE_RECORD_HEADER], r->raw, r->raw_len);
    return n;
}

wire_status_t wire_record_unpack(const uint8_t *rec, size_t len, wire_reading_t *r)
{
    uint64_t t = 0;
    if (rec == NULL || r == NULL) {
        return WIRE_ERR_NULL;
    }
    memset(r, 0, sizeof(*r));
    if (len < WIRE_RECORD_HEADER || rec[16] > RUUVI_PAYLOAD_MAX || len != WIRE_RECORD_HEADER + rec[16] ||
        (rec[14] & ~(REC_CLOCK_SYNCED | REC_RSSI_VALID)) != 0U) {
        return WIRE_ERR_RECORD;
    }
    for (size_t i = 0; i < 8U; i++) {
        t |= (uint64_t)rec[i] << (8U * i);
    }
    /* Two's complement back from the unsigned image, without implementation-defined conversion. */
    r->time_ns = (t <= (uint64_t)INT64_MAX) ? (int64_t)t : -(int64_t)(~t) - 1;
    memcpy(r->mac, &rec[8], 6);
    r->clock_synced = (rec[14] & REC_CLOCK_SYNCED) != 0U;
    r->rssi_valid = (rec[14] & REC_RSSI_VALID) != 0U;
    r->rssi = (rec[15] < 0x80U) ? (int8_t)rec[15] : (int8_t)((int)rec[15] - 256);
    r->raw_len = rec[16];
    memcpy(r->raw, &rec[WIRE_RECORD_HEADER], r->raw_len);
    return WIRE_OK;
}

/* A cursor over a payload that is not NUL-terminated. */
typedef struct {
    const char *p;
    size_t len;
    size_t at;
} scan_t;

static bool scan_lit(scan_t *sc, const char *lit)
{
    size_t n = strlen(lit);
    if (sc->len - sc->at < n || memcmp(sc->p + sc->at, lit, n) != 0) {
        return false;
    }
    sc->at += n;
    return true;
}

/* A JSON integer as the receiver writes it: 0, or 1-16 digits without a leading zero, at most 2**53 - 1. A sign,
 * a fraction or an exponent leaves a character the caller's next literal does not accept. */
static bool scan_seq(scan_t *sc, uint64_t *v)
{
    size_t digits = 0;
    *v = 0;
    while (sc->at < sc->len && sc->p[sc->at] >= '0' && sc->p[sc->at] <= '9') {
        if (digits == 16U || (digits == 1U && *v == 0U)) {
            return false; /* more than 2**53 - 1 has, or a leading zero */
        }
        *v = *v * 10U + (uint64_t)(sc->p[sc->at] - '0');
        digits++;
        sc->at++;
    }
    return digits > 0U && *v <= WIRE_SEQ_MAX;
}

wire_status_t wire_confirm_parse(const char *payload, size_t len, const char *gateway_id, wire_seq_range_t *out,
                                 size_t *n)
{
    scan_t sc;
    size_t count = 0;
    if (n != NULL) {
        *n = 0;
    }
    if (payload == NULL || gateway_id == NULL || out == NULL || n == NULL) {
        return WIRE_ERR_NULL;
    }
    if (!wire_gateway_id_valid(gateway_id) || len > WIRE_CONFIRM_BYTES_MAX) {
        return WIRE_ERR_CONFIRM;
    }
    sc.p = payload;
    sc.len = len;
    sc.at = 0;
    /* The id is compared with its closing quote, so a longer id that starts with ours is refused. */
    if (!scan_lit(&sc, "{\"v\":1,\"gateway\":\"") || !scan_lit(&sc, gateway_id) || !scan_lit(&sc, "\",\"seqs\":[")) {
        return WIRE_ERR_CONFIRM;
    }
    for (;;) {
        wire_seq_range_t r;
        if (count == WIRE_CONFIRM_RANGES_MAX || !scan_lit(&sc, "[") || !scan_seq(&sc, &r.first) ||
            !scan_lit(&sc, ",") || !scan_seq(&sc, &r.last) || !scan_lit(&sc, "]") || r.first > r.last) {
            return WIRE_ERR_CONFIRM;
        }
        out[count++] = r;
        if (!scan_lit(&sc, ",")) {
            break;
        }
    }
    if (!scan_lit(&sc, "]}") || sc.at != sc.len) {
        return WIRE_ERR_CONFIRM;
    }
    *n = count;
    return WIRE_OK;
}

const char *wire_status_str(wire_status_t status)
{
    switch (status) {
    case WIRE_OK:
        return "ok";
    case WIRE_ERR_NULL:
        return "null pointer";
    case WIRE_ERR_FULL:
        return "output buffer full";
    case WIRE_ERR_GATEWAY_ID:
        return "invalid gateway id";
    case WIRE_ERR_DECODE:
        return "raw payload does not decode";
    case WIRE_ERR_RECORD:
        return "malformed spool record";
    case WIRE_ERR_STATE:
        return "batch calls out of order";
    case WIRE_ERR_CONFIRM:
        return "not a confirmation for this gateway";
    default:
        return "unknown status";
    }
}
