/**
 * @file test_ruuvi.c
 * @brief Decoder tests: every vector of tests/vectors/ruuvi.json (canonical JSON byte for byte), plus the
 *        advertisement parsing rules and a sweep over all values of the fields with special coding.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ruuvi.h"
#include "unit.h"
#include "vectors.h"
#include "wire.h"

static void test_vectors(void)
{
    size_t passed = 0;
    for (size_t i = 0; i < vector_count; i++) {
        const vector_t *v = &vectors[i];
        ruuvi_data_t d;
        ruuvi_status_t st = ruuvi_decode(v->len ? v->payload : NULL, v->len, &d);
        if (v->expected == NULL) {
            if (st == RUUVI_OK) {
                fprintf(stderr, "vector %s: decoded, expected an error\n", v->name);
            }
            CHECK(st != RUUVI_OK);
            CHECK_EQ_INT(d.carried, 0);
        } else {
            char json[1024];
            wire_buf_t b;
            CHECK_EQ_INT(st, RUUVI_OK);
            wire_buf_init(&b, json, sizeof(json));
            CHECK_EQ_INT(wire_fields_json(&b, &d), WIRE_OK);
            if (strcmp(json, v->expected) != 0) {
                fprintf(stderr, "vector %s:\n", v->name);
            }
            CHECK_EQ_STR(json, v->expected);
        }
        passed++;
    }
    printf("     %zu vectors\n", passed);
    CHECK(vector_count >= 70U);
}

static void test_error_kinds(void)
{
    ruuvi_data_t d;
    static const uint8_t df5_short[23] = {0x05};
    static const uint8_t unknown[1] = {0x07};
    CHECK_EQ_INT(ruuvi_decode(NULL, 0, &d), RUUVI_ERR_EMPTY);
    CHECK_EQ_INT(ruuvi_decode(unknown, 1, &d), RUUVI_ERR_UNKNOWN_FORMAT);
    CHECK_EQ_INT(ruuvi_decode(df5_short, sizeof(df5_short), &d), RUUVI_ERR_LENGTH);
    CHECK_EQ_INT(ruuvi_decode(df5_short, 1, NULL), RUUVI_ERR_NULL);
}

static const uint8_t df5_valid[24] = {0x05, 0x12, 0xFC, 0x53, 0x94, 0xC3, 0x7C, 0x00, 0x04, 0xFF, 0xFC, 0x04,
                                      0x0C, 0xAC, 0x36, 0x42, 0x00, 0xCD, 0xCB, 0xB8, 0x33, 0x4C, 0x88, 0x4F};

static void test_struct_values(void)
{
    ruuvi_data_t d;
    CHECK_EQ_INT(ruuvi_decode(df5_valid, sizeof(df5_valid), &d), RUUVI_OK);
    CHECK(d.temperature_c == 24.3);
    CHECK(d.humidity_pct == 53.49);
    CHECK_EQ_INT(d.pressure_pa, 100044);
    CHECK_EQ_INT(d.acceleration_mg[0], 4);
    CHECK_EQ_INT(d.acceleration_mg[1], -4);
    CHECK_EQ_INT(d.acceleration_mg[2], 1036);
    CHECK_EQ_INT(d.battery_mv, 2977);
    CHECK_EQ_INT(d.tx_power_dbm, 4);
    CHECK_EQ_INT(d.movement_counter, 66);
    CHECK_EQ_INT(d.measurement_sequence_number, 205);
    CHECK_EQ_INT(d.mac_len, 6);
    CHECK(ruuvi_carries(&d, RUUVI_F_MAC) && ruuvi_available(&d, RUUVI_F_MAC));
    CHECK(!ruuvi_carries(&d, RUUVI_F_PM2_5));
    CHECK(!ruuvi_carries(&d, RUUVI_F_COUNT));
    CHECK(ruuvi_field_name(RUUVI_F_COUNT) == NULL);
    CHECK_EQ_STR(ruuvi_field_name(RUUVI_F_SOUND_PEAK_SPL_DB), "sound_peak_spl_db");
}

static void test_adv_rules(void)
{
    /* Whole legacy advertisement: flags AD, then manufacturer data 1B FF 99 04 + DF5. */
    uint8_t adv[3 + 28];
    uint8_t with_id[26];
    const uint8_t *p = NULL;
    size_t n = 0;
    adv[0] = 0x02;
    adv[1] = 0x01;
    adv[2] = 0x06;
    adv[3] = 0x1B;
    adv[4] = 0xFF;
    adv[5] = 0x99;
    adv[6] = 0x04;
    memcpy(&adv[7], df5_valid, sizeof(df5_valid));
    CHECK_EQ_INT(ruuvi_payload_from_bytes(adv, sizeof(adv), &p, &n), RUUVI_OK);
    CHECK(p == &adv[7] && n == 24U);
    CHECK_EQ_INT(ruuvi_find_in_adv(adv, sizeof(adv), &p, &n), RUUVI_OK);
    CHECK(p == &adv[7] && n == 24U);
    /* Company id prefix only. */
    with_id[0] = 0x99;
    with_id[1] = 0x04;
    memcpy(&with_id[2], df5_valid, sizeof(df5_valid));
    CHECK_EQ_INT(ruuvi_payload_from_bytes(with_id, sizeof(with_id), &p, &n), RUUVI_OK);
    CHECK(p == &with_id[2] && n == 24U);
    /* A plain payload is used as is. */
    CHECK_EQ_INT(ruuvi_payload_from_bytes(df5_valid, sizeof(df5_valid), &p, &n), RUUVI_OK);
    CHECK(p == df5_valid && n == 24U);
    /* Well-formed AD structures without Ruuvi data. */
    {
        static const uint8_t other[] = {0x02, 0x01, 0x06, 0x03, 0xFF, 0x4C, 0x00};
        CHECK_EQ_INT(ruuvi_payload_from_bytes(other, sizeof(other), &p, &n), RUUVI_ERR_NO_RUUVI_AD);
        CHECK_EQ_INT(ruuvi_find_in_adv(other, sizeof(other), &p, &n), RUUVI_ERR_NO_RUUVI_AD);
    }
    /* Zero padding after the structures is allowed, other trailing bytes are not. */
    {
        uint8_t padded[sizeof(adv) + 3] = {0};
        memcpy(padded, adv, sizeof(adv));
        CHECK_EQ_INT(ruuvi_find_in_adv(padded, sizeof(padded), &p, &n), RUUVI_OK);
        padded[sizeof(padded) - 1U] = 1;
        CHECK_EQ_INT(ruuvi_find_in_adv(padded, sizeof(padded), &p, &n), RUUVI_ERR_NO_RUUVI_AD);
    }
    /* A length byte running past the end is not advertisement data: passed on for decode() to reject. */
    {
        static const uint8_t broken[] = {0x1B, 0xFF, 0x99};
        CHECK_EQ_INT(ruuvi_payload_from_bytes(broken, sizeof(broken), &p, &n), RUUVI_OK);
        CHECK(p == broken && n == 3U);
    }
}

/* DF6 luminosity: every code gives a value, rising to 65535 lux at code 254. That each prints what the Python
 * decoder prints is checked by tests/firmware (all 256 codes through ruuvi_decode --lines). */
static void test_df6_luminosity_monotonic(void)
{
    uint8_t p[20];
    double last = -1.0;
    memset(p, 0, sizeof(p));
    p[0] = RUUVI_DF_6;
    for (unsigned code = 0; code < 255U; code++) {
        ruuvi_data_t d;
        p[13] = (uint8_t)code;
        CHECK_EQ_INT(ruuvi_decode(p, sizeof(p), &d), RUUVI_OK);
        CHECK(ruuvi_available(&d, RUUVI_F_LUMINOSITY));
        CHECK(d.luminosity_lux > last);
        last = d.luminosity_lux;
    }
    CHECK(fabs(last - 65535.0) < 1e-6);
}

int main(void)
{
    RUN_TEST(test_vectors);
    RUN_TEST(test_error_kinds);
    RUN_TEST(test_struct_values);
    RUN_TEST(test_adv_rules);
    RUN_TEST(test_df6_luminosity_monotonic);
    return UNIT_END();
}
