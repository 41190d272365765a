/**
 * @file ruuvi.h
 * @brief Pure decoders for RuuviTag / Ruuvi Air BLE manufacturer data (no I/O, no allocation).
 *
 * Input is the manufacturer-specific data after company id 0x0499, starting with the data format byte.
 * Output is the field set of docs/wire-format.md ("Decoded fields"): a struct with one "carried" bit and one
 * "available" bit per field, so that the JSON writer can omit keys a format does not carry and print null
 * for "not available". Values are computed exactly as tests/vectors/README.md prescribes, so that the C, Python
 * and MicroPython decoders print the same JSON.
 *
 * Specs: https://docs.ruuvi.com/communication/bluetooth-advertisements
 */
#ifndef RUUVI_H
#define RUUVI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RUUVI_COMPANY_ID (0x0499U)

#define RUUVI_DF_3 (0x03U)
#define RUUVI_DF_5 (0x05U)
#define RUUVI_DF_6 (0x06U)
#define RUUVI_DF_8 (0x08U)
#define RUUVI_DF_C5 (0xC5U)
#define RUUVI_DF_E1 (0xE1U)

/** Exact payload lengths, format byte included. */
#define RUUVI_LEN_3 (14U)
#define RUUVI_LEN_5 (24U)
#define RUUVI_LEN_C5 (18U)
#define RUUVI_LEN_6 (20U)
#define RUUVI_LEN_E1 (40U)
#define RUUVI_LEN_8 (24U)
/** The longest payload of any known format (E1). */
#define RUUVI_PAYLOAD_MAX (40U)

/** Decoded fields in canonical JSON key order (docs/wire-format.md, "Canonical encoding"). */
typedef enum {
    RUUVI_F_DATA_FORMAT = 0,
    RUUVI_F_TEMPERATURE,
    RUUVI_F_HUMIDITY,
    RUUVI_F_PRESSURE,
    RUUVI_F_ACCELERATION_X,
    RUUVI_F_ACCELERATION_Y,
    RUUVI_F_ACCELERATION_Z,
    RUUVI_F_BATTERY_VOLTAGE,
    RUUVI_F_TX_POWER,
    RUUVI_F_MOVEMENT_COUNTER,
    RUUVI_F_MEASUREMENT_SEQUENCE_NUMBER,
    RUUVI_F_MAC,
    RUUVI_F_PM1_0,
    RUUVI_F_PM2_5,
    RUUVI_F_PM4_0,
    RUUVI_F_PM10_0,
    RUUVI_F_CO2,
    RUUVI_F_VOC_INDEX,
    RUUVI_F_NOX_INDEX,
    RUUVI_F_LUMINOSITY,
    RUUVI_F_SOUND_INSTANT_DBA,
    RUUVI_F_SOUND_AVERAGE_DBA,
    RUUVI_F_SOUND_PEAK_SPL_DB,
    RUUVI_F_CALIBRATION_IN_PROGRESS,
    RUUVI_F_BUTTON_PRESSED,
    RUUVI_F_RTC_RUNNING_ON_BOOT,
    RUUVI_F_ENCRYPTED,
    RUUVI_F_COUNT
} ruuvi_field_t;

typedef enum {
    RUUVI_OK = 0,
    RUUVI_ERR_NULL,           /**< a NULL pointer was passed */
    RUUVI_ERR_EMPTY,          /**< empty payload */
    RUUVI_ERR_UNKNOWN_FORMAT, /**< the format byte is not one of 3, 5, C5, 6, E1, 8 */
    RUUVI_ERR_LENGTH,         /**< the payload is not exactly the format's length */
    RUUVI_ERR_NO_RUUVI_AD,    /**< advertisement data without manufacturer data for 0x0499 */
} ruuvi_status_t;

/** One decoded payload. Read a value only if ruuvi_available() says so. */
typedef struct {
    uint32_t carried;   /**< bit (1 << ruuvi_field_t): the format has this key */
    uint32_t available; /**< bit (1 << ruuvi_field_t): the value is not "not available" (JSON null) */
    uint8_t data_format;
    uint8_t mac_len;    /**< 6, or 3 for data format 6 */
    uint8_t mac[6];
    double temperature_c;
    double humidity_pct;
    uint32_t pressure_pa;
    int16_t acceleration_mg[3];
    uint16_t battery_mv;
    int8_t tx_power_dbm;
    uint8_t movement_counter;
    uint32_t measurement_sequence_number;
    double pm_ugm3[4];  /**< PM1.0, PM2.5, PM4.0, PM10.0 */
    uint16_t co2_ppm;
    uint16_t voc_index;
    uint16_t nox_index;
    double luminosity_lux;
    double sound_db[3]; /**< instant dBA, average dBA, peak SPL dB */
    bool calibration_in_progress;
    bool button_pressed;
    bool rtc_running_on_boot;
    bool encrypted;
} ruuvi_data_t;

/**
 * Decode one payload (format byte first).
 * @param payload bytes after company id 0x0499; may be NULL only if len is 0
 * @param len     number of bytes
 * @param out     filled on success, zeroed on failure
 * @return RUUVI_OK, or the reason the bytes are not a Ruuvi payload this decoder knows
 */
ruuvi_status_t ruuvi_decode(const uint8_t *payload, size_t len, ruuvi_data_t *out);

/** True if the format carries field f (its key appears in the JSON). */
bool ruuvi_carries(const ruuvi_data_t *d, ruuvi_field_t f);

/** True if field f is carried and has a value (not JSON null). */
bool ruuvi_available(const ruuvi_data_t *d, ruuvi_field_t f);

/** The JSON key of field f (docs/wire-format.md), or NULL for an out-of-range value. */
const char *ruuvi_field_name(ruuvi_field_t f);

/** Exact payload length of a data format, or 0 if the format is unknown. */
size_t ruuvi_payload_length(uint8_t data_format);

/**
 * Find the manufacturer data of company 0x0499 in BLE advertisement data (a sequence of AD structures).
 * @param ad      advertisement data as received (len, type, data...)
 * @param ad_len  its length
 * @param payload set to the first byte after the company id
 * @param payload_len set to the payload length
 * @return RUUVI_OK, or RUUVI_ERR_NO_RUUVI_AD if the data is not well-formed AD structures or has no Ruuvi data
 */
ruuvi_status_t ruuvi_find_in_adv(const uint8_t *ad, size_t ad_len, const uint8_t **payload, size_t *payload_len);

/**
 * Where the payload is in bytes given by a user (a payload, `9904` + payload, or whole advertisement data), by
 * the fixed rule of core/ruuvi/hexinput.py: a leading 99 04 is dropped; a known format byte with that format's
 * exact length is a payload; well-formed AD structures yield their Ruuvi manufacturer data; anything else is
 * returned as is so that ruuvi_decode() reports what is wrong with it.
 */
ruuvi_status_t ruuvi_payload_from_bytes(const uint8_t *raw, size_t raw_len, const uint8_t **payload,
                                        size_t *payload_len);

/** A short English message for a status, for logs and the CLI. */
const char *ruuvi_status_str(ruuvi_status_t status);

#ifdef __cplusplus
}
#endif

#endif /* RUUVI_H */
