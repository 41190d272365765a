/**
 * @file test_wire.c
 * @brief Wire encoder: a hand-checked canonical batch, number formatting, status JSON, gateway ids, buffer limits
 *        and the spool record round trip.
 */
#include <string.h>

#include "unit.h"
#include "wire.h"

static const uint8_t df5_valid[24] = {0x05, 0x12, 0xFC, 0x53, 0x94, 0xC3, 0x7C, 0x00, 0x04, 0xFF, 0xFC, 0x04,
                                      0x0C, 0xAC, 0x36, 0x42, 0x00, 0xCD, 0xCB, 0xB8, 0x33, 0x4C, 0x88, 0x4F};

static void reading(wire_reading_t *r)
{
    static const uint8_t mac[6] = {0xCB, 0xB8, 0x33, 0x4C, 0x88, 0x4F};
    memset(r, 0, sizeof(*r));
    memcpy(r->mac, mac, 6);
    r->time_ns = 1763913600123456789LL;
    r->clock_synced = true;
    r->rssi_valid = true;
    r->rssi = -71;
    r->raw_len = sizeof(df5_valid);
    memcpy(r->raw, df5_valid, sizeof(df5_valid));
}

/* Written by hand from docs/wire-format.md (the example batch with the DF5 "valid" vector's fields). */
static const char expected_batch[] =
    "{\"v\":1,\"gateway\":\"pi-kitchen\",\"seq\":4711,\"readings\":[{\"mac\":\"cb:b8:33:4c:88:4f\","
    "\"time_ns\":1763913600123456789,\"clock_synced\":true,\"rssi\":-71,\"data_format\":5,"
    "\"raw\":\"0512fc5394c37c0004fffc040cac364200cdcbb8334c884f\",\"fields\":{\"data_format\":5,"
    "\"temperature\":24.3,\"humidity\":53.49,\"pressure\":100044,\"acceleration_x\":4,\"acceleration_y\":-4,"
    "\"acceleration_z\":1036,\"battery_voltage\":2977,\"tx_power\":4,\"movement_counter\":66,"
    "\"measurement_sequence_number\":205,\"mac\":\"cb:b8:33:4c:88:4f\"}},{\"mac\":\"cb:b8:33:4c:88:4f\","
    "\"time_ns\":1763913600123456790,\"clock_synced\":false,\"rssi\":null,\"data_format\":5,"
    "\"raw\":\"0512fc5394c37c0004fffc040cac364200cdcbb8334c884f\",\"fields\":{\"data_format\":5,"
    "\"temperature\":24.3,\"humidity\":53.49,\"pressure\":100044,\"acceleration_x\":4,\"acceleration_y\":-4,"
    "\"acceleration_z\":1036,\"battery_voltage\":2977,\"tx_power\":4,\"movement_counter\":66,"
    "\"measurement_sequence_number\":205,\"mac\":\"cb:b8:33:4c:88:4f\"}}]}";

static void test_batch_by_hand(void)
{
    wire_reading_t r[2];
    char buf[2048];
    size_t len = 0;
    reading(&r[0]);
    reading(&r[1]);
    r[1].time_ns++;
    r[1].clock_synced = false;
    r[1].rssi_valid = false;
    CHECK_EQ_INT(wire_encode_batch(buf, sizeof(buf), "pi-kitchen", 4711, r, 2, &len), WIRE_OK);
    CHECK_EQ_STR(buf, expected_batch);
    CHECK_EQ_INT(len, strlen(expected_batch));
}

static void test_batch_limits(void)
{
    wire_reading_t r;
    wire_batch_t w;
    char buf[700];
    size_t len = 0;
    size_t one;
    reading(&r);
    /* Every buffer size either fits the whole batch or fails cleanly. */
    for (size_t cap = 0; cap < sizeof(buf); cap++) {
        wire_status_t st = wire_encode_batch(buf, cap, "gw", 1, &r, 1, &len);
        CHECK(st == WIRE_OK || st == WIRE_ERR_FULL);
        if (st == WIRE_OK) {
            CHECK(len < cap);
            CHECK_EQ_INT(strlen(buf), len);
        }
    }
    /* add() rolls back a reading that does not fit; end() still closes the batch. */
    CHECK_EQ_INT(wire_encode_batch(buf, sizeof(buf), "gw", 1, &r, 1, &one), WIRE_OK);
    CHECK_EQ_INT(wire_batch_begin(&w, buf, one + 1U + 50U, "gw", 1), WIRE_OK);
    CHECK_EQ_INT(wire_batch_end(&w, &len), WIRE_ERR_STATE); /* empty batch */
    CHECK_EQ_INT(wire_batch_begin(&w, buf, one + 1U + 50U, "gw", 1), WIRE_OK);
    CHECK_EQ_INT(wire_batch_add(&w, &r), WIRE_OK);
    CHECK_EQ_INT(wire_batch_add(&w, &r), WIRE_ERR_FULL);
    CHECK_EQ_INT(wire_batch_end(&w, &len), WIRE_OK);
    CHECK_EQ_INT(len, one);
    /* A reading whose payload does not decode is refused. */
    r.raw_len = 3;
    CHECK_EQ_INT(wire_encode_batch(buf, sizeof(buf), "gw", 1, &r, 1, &len), WIRE_ERR_DECODE);
}

static void test_gateway_ids_and_status(void)
{
    char buf[128];
    wire_buf_t b;
    char long_id[66];
    memset(long_id, 'a', sizeof(long_id));
    long_id[65] = '\0';
    CHECK(wire_gateway_id_valid("esp32-hall_1.b"));
    CHECK(!wire_gateway_id_valid(""));
    CHECK(!wire_gateway_id_valid("dlq"));
    CHECK(!wire_gateway_id_valid("a/b"));
    CHECK(!wire_gateway_id_valid("a b"));
    CHECK(!wire_gateway_id_valid(long_id));
    long_id[64] = '\0';
    CHECK(wire_gateway_id_valid(long_id));
    wire_buf_init(&b, buf, sizeof(buf));
    CHECK_EQ_INT(wire_status_json(&b, "esp32-hall", true), WIRE_OK);
    CHECK_EQ_STR(buf, "{\"v\":1,\"gateway\":\"esp32-hall\",\"state\":\"online\"}");
    wire_buf_init(&b, buf, sizeof(buf));
    CHECK_EQ_INT(wire_status_json(&b, "esp32-hall", false), WIRE_OK);
    CHECK_EQ_STR(buf, "{\"v\":1,\"gateway\":\"esp32-hall\",\"state\":\"offline\"}");
    wire_buf_init(&b, buf, 10);
    CHECK_EQ_INT(wire_status_json(&b, "esp32-hall", false), WIRE_ERR_FULL);
    CHECK(strlen(buf) < 10U);
    CHECK_EQ_INT(wire_status_json(&b, "dlq", false), WIRE_ERR_GATEWAY_ID);
}

static void test_record_round_trip(void)
{
    wire_reading_t r;
    wire_reading_t back;
    uint8_t rec[WIRE_RECORD_MAX];
    size_t n;
    reading(&r);
    r.time_ns = -5; /* never on a device, but the format must not care */
    r.rssi = -128;
    n = wire_record_pack(&r, rec, sizeof(rec));
    CHECK_EQ_INT(n, WIRE_RECORD_HEADER + 24U);
    CHECK_EQ_INT(wire_record_unpack(rec, n, &back), WIRE_OK);
    CHECK(memcmp(&r, &back, sizeof(r)) == 0);
    CHECK_EQ_INT(wire_record_pack(&r, rec, n - 1U), 0);
    CHECK_EQ_INT(wire_record_unpack(rec, n - 1U, &back), WIRE_ERR_RECORD);
    rec[14] = 0x80;
    CHECK_EQ_INT(wire_record_unpack(rec, n, &back), WIRE_ERR_RECORD);
}

int main(void)
{
    RUN_TEST(test_batch_by_hand);
    RUN_TEST(test_batch_limits);
    RUN_TEST(test_gateway_ids_and_status);
    RUN_TEST(test_record_round_trip);
    return UNIT_END();
}
