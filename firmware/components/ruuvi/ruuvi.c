/**
 * @file ruuvi.c
 * @brief Decoders for data formats 3, 5, C5, 6, E1 and recognition of 8.
 *
 * Every read is at a fixed offset below the exact length checked first, so no input can read out of bounds.
 * The arithmetic follows tests/vectors/README.md to the bit: each value is the IEEE double nearest to its
 * rounded decimal, so printf("%.Nf") prints what Python's repr() prints.
 */
#include "ruuvi.h"

#include <math.h>
#include <string.h>

#define BIT(f) (UINT32_C(1) << (uint32_t)(f))

/* "Not available" sentinels (docs.ruuvi.com). */
#define NA_I16 (-32768)
#define NA_U16 (0xFFFFU)
#define NA_U24 (0xFFFFFFUL)
#define NA_U9 (0x1FFU)
#define NA_MOVEMENT (0xFFU)
#define NA_VOLTAGE_BITS (2047U)
#define NA_TX_CODE (31U)
#define NA_LUX_CODE (0xFFU)

/* Flags byte of the Air formats (DF6 byte 16, E1 byte 28). Bits 1-5 are "reserved" in the docs; Ruuvi Air
 * firmware and ruuvi.endpoints.c use them as below. */
#define FLAG_CALIBRATION (0x01U)
#define FLAG_BUTTON (0x02U)
#define FLAG_RTC_ON_BOOT (0x04U)
#define LSB_SOUND_INSTANT (3U)
#define LSB_SOUND_AVERAGE (4U)
#define LSB_SOUND_PEAK (5U)
#define LSB_VOC (6U)
#define LSB_NOX (7U)

static const char *const field_names[RUUVI_F_COUNT] = {
    "data_format",
    "temperature",
    "humidity",
    "pressure",
    "acceleration_x",
    "acceleration_y",
    "acceleration_z",
    "battery_voltage",
    "tx_power",
    "movement_counter",
    "measurement_sequence_number",
    "mac",
    "pm1_0",
    "pm2_5",
    "pm4_0",
    "pm10_0",
    "co2",
    "voc_index",
    "nox_index",
    "luminosity",
    "sound_instant_dba",
    "sound_average_dba",
    "sound_peak_spl_db",
    "calibration_in_progress",
    "button_pressed",
    "rtc_running_on_boot",
    "encrypted",
};

static uint16_t u16_at(const uint8_t *p, size_t off)
{
    return (uint16_t)(((uint16_t)p[off] << 8) | p[off + 1U]);
}

static int16_t i16_at(const uint8_t *p, size_t off)
{
    /* Two's complement without implementation-defined conversion of out-of-range values. */
    uint16_t u = u16_at(p, off);
    return (u < 0x8000U) ? (int16_t)u : (int16_t)(-(int32_t)(0x10000UL - u));
}

static uint32_t u24_at(const uint8_t *p, size_t off)
{
    return ((uint32_t)p[off] << 16) | ((uint32_t)p[off + 1U] << 8) | p[off + 2U];
}

static void set_field(ruuvi_data_t *d, ruuvi_field_t f, bool available)
{
    d->carried |= BIT(f);
    if (available) {
        d->available |= BIT(f);
    }
}

static void set_mac(ruuvi_data_t *d, const uint8_t *p, size_t off, uint8_t n)
{
    bool all_ff = true;
    for (uint8_t i = 0; i < n; i++) {
        d->mac[i] = p[off + i];
        all_ff = all_ff && (p[off + i] == 0xFFU);
    }
    d->mac_len = n;
    set_field(d, RUUVI_F_MAC, !all_ff);
}

/* Temperature, humidity and pressure: same coding in 5, C5, 6 and E1 (bytes 1..6). */
static void decode_thp(ruuvi_data_t *d, const uint8_t *p)
{
    int16_t t = i16_at(p, 1);
    uint16_t h = u16_at(p, 3);
    uint16_t pr = u16_at(p, 5);
    d->temperature_c = (double)t / 200.0;
    set_field(d, RUUVI_F_TEMPERATURE, t != NA_I16);
    d->humidity_pct = (double)h / 400.0;
    set_field(d, RUUVI_F_HUMIDITY, h != NA_U16);
    d->pressure_pa = (uint32_t)pr + 50000U;
    set_field(d, RUUVI_F_PRESSURE, pr != NA_U16);
}

/* DF5 and C5 pack battery voltage (11 bits) and TX power (5 bits) in one word, each with its own n/a value. */
static void decode_power(ruuvi_data_t *d, uint16_t power)
{
    uint16_t volts = (uint16_t)(power >> 5);
    uint16_t tx = (uint16_t)(power & 0x1FU);
    d->battery_mv = (uint16_t)(volts + 1600U);
    set_field(d, RUUVI_F_BATTERY_VOLTAGE, volts != NA_VOLTAGE_BITS);
    d->tx_power_dbm = (int8_t)((int)tx * 2 - 40);
    set_field(d, RUUVI_F_TX_POWER, tx != NA_TX_CODE);
}

static void decode_df3(ruuvi_data_t *d, const uint8_t *p)
{
    /* Sign-magnitude: the sign goes on the integer hundredths, so "-0" becomes 0.0 and the division gives
     * the double nearest to the 2-decimal value. The fraction byte is used as is, even above 99. */
    int32_t centi = (int32_t)(p[2] & 0x7FU) * 100 + (int32_t)p[3];
    if ((p[2] & 0x80U) != 0U) {
        centi = -centi;
    }
    d->temperature_c = (double)centi / 100.0;
    set_field(d, RUUVI_F_TEMPERATURE, true);
    d->humidity_pct = (double)p[1] / 2.0;
    set_field(d, RUUVI_F_HUMIDITY, true);
    d->pressure_pa = (uint32_t)u16_at(p, 4) + 50000U;
    set_field(d, RUUVI_F_PRESSURE, true);
    for (size_t i = 0; i < 3U; i++) {
        d->acceleration_mg[i] = i16_at(p, 6U + 2U * i);
        set_field(d, (ruuvi_field_t)(RUUVI_F_ACCELERATION_X + (int)i), true);
    }
    d->battery_mv = u16_at(p, 12);
    set_field(d, RUUVI_F_BATTERY_VOLTAGE, true);
}

static void decode_df5(ruuvi_data_t *d, const uint8_t *p)
{
    decode_thp(d, p);
    for (size_t i = 0; i < 3U; i++) {
        d->acceleration_mg[i] = i16_at(p, 7U + 2U * i);
        set_field(d, (ruuvi_field_t)(RUUVI_F_ACCELERATION_X + (int)i), d->acceleration_mg[i] != NA_I16);
    }
    decode_power(d, u16_at(p, 13));
    d->movement_counter = p[15];
    set_field(d, RUUVI_F_MOVEMENT_COUNTER, p[15] != NA_MOVEMENT);
    d->measurement_sequence_number = u16_at(p, 16);
    set_field(d, RUUVI_F_MEASUREMENT_SEQUENCE_NUMBER, d->measurement_sequence_number != NA_U16);
    set_mac(d, p, 18, 6);
}

static void decode_dfc5(ruuvi_data_t *d, const uint8_t *p)
{
    decode_thp(d, p);
    decode_power(d, u16_at(p, 7));
    d->movement_counter = p[9];
    set_field(d, RUUVI_F_MOVEMENT_COUNTER, p[9] != NA_MOVEMENT);
    d->measurement_sequence_number = u16_at(p, 10);
    set_field(d, RUUVI_F_MEASUREMENT_SEQUENCE_NUMBER, d->measurement_sequence_number != NA_U16);
    set_mac(d, p, 12, 6);
}

/* A 9-bit value: the byte holds bits 8..1, one flags bit holds bit 0. */
static uint16_t u9(uint8_t high8, uint8_t flags, unsigned lsb_bit)
{
    return (uint16_t)(((unsigned)high8 << 1) | (((unsigned)flags >> lsb_bit) & 1U));
}

static void set_u9(ruuvi_data_t *d, ruuvi_field_t f, uint16_t *dst, uint8_t high8, uint8_t flags, unsigned lsb)
{
    *dst = u9(high8, flags, lsb);
    set_field(d, f, *dst != NA_U9);
}

static void set_sound(ruuvi_data_t *d, size_t idx, uint8_t high8, uint8_t flags, unsigned lsb)
{
    uint16_t code = u9(high8, flags, lsb);
    /* (90 + code) / 5 is the double nearest to the 1-decimal value; 18 + code / 5 can be one ulp off. */
    d->sound_db[idx] = (double)(90U + code) / 5.0;
    set_field(d, (ruuvi_field_t)(RUUVI_F_SOUND_INSTANT_DBA + (int)idx), code != NA_U9);
}

static void set_pm(ruuvi_data_t *d, size_t idx, uint16_t raw)
{
    d->pm_ugm3[idx] = (double)raw / 10.0;
    set_field(d, (ruuvi_field_t)(RUUVI_F_PM1_0 + (int)idx), raw != NA_U16);
}

static void set_flags(ruuvi_data_t *d, uint8_t flags)
{
    d->calibration_in_progress = (flags & FLAG_CALIBRATION) != 0U;
    d->button_pressed = (flags & FLAG_BUTTON) != 0U;
    d->rtc_running_on_boot = (flags & FLAG_RTC_ON_BOOT) != 0U;
    set_field(d, RUUVI_F_CALIBRATION_IN_PROGRESS, true);
    set_field(d, RUUVI_F_BUTTON_PRESSED, true);
    set_field(d, RUUVI_F_RTC_RUNNING_ON_BOOT, true);
}

static void decode_df6(ruuvi_data_t *d, const uint8_t *p)
{
    uint8_t flags = p[16];
    decode_thp(d, p);
    /* 8-bit sequence: the low byte of the E1 counter, with no "not available" value. */
    d->measurement_sequence_number = p[15];
    set_field(d, RUUVI_F_MEASUREMENT_SEQUENCE_NUMBER, true);
    set_mac(d, p, 17, 3);
    set_pm(d, 1, u16_at(p, 7));
    d->co2_ppm = u16_at(p, 9);
    set_field(d, RUUVI_F_CO2, d->co2_ppm != NA_U16);
    set_u9(d, RUUVI_F_VOC_INDEX, &d->voc_index, p[11], flags, LSB_VOC);
    set_u9(d, RUUVI_F_NOX_INDEX, &d->nox_index, p[12], flags, LSB_NOX);
    /* Luminosity is a log code: lux = exp(code * ln(65536) / 254) - 1. This is the one value that is not already
     * the double nearest to its rounded decimal: the JSON printer's "%.2f" does the rounding, which is Python's
     * round(x, 2) (half-even on the exact binary value). */
    if (p[13] != NA_LUX_CODE) {
        d->luminosity_lux = exp((double)p[13] * (log(65536.0) / 254.0)) - 1.0;
    }
    set_field(d, RUUVI_F_LUMINOSITY, p[13] != NA_LUX_CODE);
    /* DF6 carries only the average sound level (byte 14, docs: "reserved"). */
    d->carried |= BIT(RUUVI_F_SOUND_AVERAGE_DBA);
    set_sound(d, 1, p[14], flags, LSB_SOUND_AVERAGE);
    set_flags(d, flags);
}

static void decode_dfe1(ruuvi_data_t *d, const uint8_t *p)
{
    uint8_t flags = p[28];
    uint32_t lux = u24_at(p, 19);
    decode_thp(d, p);
    d->measurement_sequence_number = u24_at(p, 25);
    set_field(d, RUUVI_F_MEASUREMENT_SEQUENCE_NUMBER, d->measurement_sequence_number != NA_U24);
    set_mac(d, p, 34, 6);
    for (size_t i = 0; i < 4U; i++) {
        set_pm(d, i, u16_at(p, 7U + 2U * i));
    }
    d->co2_ppm = u16_at(p, 15);
    set_field(d, RUUVI_F_CO2, d->co2_ppm != NA_U16);
    set_u9(d, RUUVI_F_VOC_INDEX, &d->voc_index, p[17], flags, LSB_VOC);
    set_u9(d, RUUVI_F_NOX_INDEX, &d->nox_index, p[18], flags, LSB_NOX);
    d->luminosity_lux = (double)lux / 100.0;
    set_field(d, RUUVI_F_LUMINOSITY, lux != NA_U24);
    set_sound(d, 0, p[22], flags, LSB_SOUND_INSTANT);
    set_sound(d, 1, p[23], flags, LSB_SOUND_AVERAGE);
    set_sound(d, 2, p[24], flags, LSB_SOUND_PEAK);
    set_flags(d, flags);
}

static void decode_df8(ruuvi_data_t *d, const uint8_t *p)
{
    /* Bytes 1-17 are ciphertext and a CRC of the cleartext: a gateway has no key, so only the clear MAC. */
    set_mac(d, p, 18, 6);
    d->encrypted = true;
    set_field(d, RUUVI_F_ENCRYPTED, true);
}

size_t ruuvi_payload_length(uint8_t data_format)
{
    switch (data_format) {
    case RUUVI_DF_3:
        return RUUVI_LEN_3;
    case RUUVI_DF_5:
        return RUUVI_LEN_5;
    case RUUVI_DF_C5:
        return RUUVI_LEN_C5;
    case RUUVI_DF_6:
        return RUUVI_LEN_6;
    case RUUVI_DF_E1:
        return RUUVI_LEN_E1;
    case RUUVI_DF_8:
        return RUUVI_LEN_8;
    default:
        return 0;
    }
}

ruuvi_status_t ruuvi_decode(const uint8_t *payload, size_t len, ruuvi_data_t *out)
{
    size_t need;
    if (out == NULL) {
        return RUUVI_ERR_NULL;
    }
    memset(out, 0, sizeof(*out));
    if (len == 0U) {
        return RUUVI_ERR_EMPTY;
    }
    if (payload == NULL) {
        return RUUVI_ERR_NULL;
    }
    need = ruuvi_payload_length(payload[0]);
    if (need == 0U) {
        return RUUVI_ERR_UNKNOWN_FORMAT;
    }
    if (len != need) {
        /* Exact lengths only: a longer payload is a different (future) layout, not something to truncate. */
        return RUUVI_ERR_LENGTH;
    }
    out->data_format = payload[0];
    set_field(out, RUUVI_F_DATA_FORMAT, true);
    switch (payload[0]) {
    case RUUVI_DF_3:
        decode_df3(out, payload);
        break;
    case RUUVI_DF_5:
        decode_df5(out, payload);
        break;
    case RUUVI_DF_C5:
        decode_dfc5(out, payload);
        break;
    case RUUVI_DF_6:
        decode_df6(out, payload);
        break;
    case RUUVI_DF_E1:
        decode_dfe1(out, payload);
        break;
    default: /* RUUVI_DF_8, the only other format with a length */
        decode_df8(out, payload);
        break;
    }
    return RUUVI_OK;
}

bool ruuvi_carries(const ruuvi_data_t *d, ruuvi_field_t f)
{
    return d != NULL && (unsigned)f < (unsigned)RUUVI_F_COUNT && (d->carried & BIT(f)) != 0U;
}

bool ruuvi_available(const ruuvi_data_t *d, ruuvi_field_t f)
{
    return ruuvi_carries(d, f) && (d->available & BIT(f)) != 0U;
}

const char *ruuvi_field_name(ruuvi_field_t f)
{
    return ((unsigned)f < (unsigned)RUUVI_F_COUNT) ? field_names[f] : NULL;
}

const char *ruuvi_status_str(ruuvi_status_t status)
{
    switch (status) {
    case RUUVI_OK:
        return "ok";
    case RUUVI_ERR_NULL:
        return "null pointer";
    case RUUVI_ERR_EMPTY:
        return "empty payload";
    case RUUVI_ERR_UNKNOWN_FORMAT:
        return "unknown data format";
    case RUUVI_ERR_LENGTH:
        return "wrong payload length for its data format";
    case RUUVI_ERR_NO_RUUVI_AD:
        return "advertisement has no manufacturer data with company id 0x0499 (Ruuvi)";
    default:
        return "unknown status";
    }
}
