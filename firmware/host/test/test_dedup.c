/**
 * @file test_dedup.c
 * @brief Dedup table: re-adverts dropped within the window, payload keys without a sequence number, eviction.
 */
#include <string.h>

#include "ruuvi.h"
#include "ruuvi_dedup.h"
#include "unit.h"

static uint8_t df5[24] = {0x05, 0x12, 0xFC, 0x53, 0x94, 0xC3, 0x7C, 0x00, 0x04, 0xFF, 0xFC, 0x04,
                          0x0C, 0xAC, 0x36, 0x42, 0x00, 0xCD, 0xCB, 0xB8, 0x33, 0x4C, 0x88, 0x4F};
static const uint8_t df3[14] = {0x03, 0x29, 0x1A, 0x1E, 0xCE, 0x1E, 0xFC, 0x18, 0xF9, 0x42, 0x02, 0xCA, 0x0B, 0x53};

static bool check(ruuvi_dedup_t *dd, const uint8_t *mac, const uint8_t *p, size_t n, uint32_t now)
{
    ruuvi_data_t d;
    if (ruuvi_decode(p, n, &d) != RUUVI_OK) {
        return false;
    }
    return ruuvi_dedup_check(dd, mac, &d, p, n, now);
}

static void test_sequence_key(void)
{
    static ruuvi_dedup_entry_t table[4];
    ruuvi_dedup_t dd;
    const uint8_t mac[6] = {1, 2, 3, 4, 5, 6};
    ruuvi_dedup_init(&dd, table, 4, 60000);
    CHECK(!check(&dd, mac, df5, 24, 1000));
    CHECK(check(&dd, mac, df5, 24, 1500));
    /* Another value in the payload but the same sequence number is still the same measurement. */
    df5[1] ^= 1;
    CHECK(check(&dd, mac, df5, 24, 2000));
    df5[1] ^= 1;
    /* Window over: heard again (the counter wrapped round). */
    CHECK(!check(&dd, mac, df5, 24, 1000 + 60000));
    /* Next measurement. */
    df5[17]++;
    CHECK(!check(&dd, mac, df5, 24, 62000));
    df5[17]--;
    CHECK_EQ_INT(dd.duplicates, 2);
}

static void test_payload_key_and_wrap(void)
{
    static ruuvi_dedup_entry_t table[4];
    ruuvi_dedup_t dd;
    const uint8_t mac[6] = {1, 2, 3, 4, 5, 7};
    uint8_t other[14];
    ruuvi_dedup_init(&dd, table, 4, 10000);
    /* Near the 32-bit wrap of the millisecond clock. */
    CHECK(!check(&dd, mac, df3, 14, 0xFFFFF000U));
    CHECK(check(&dd, mac, df3, 14, 0x00000100U));
    memcpy(other, df3, 14);
    other[13] ^= 1;
    CHECK(!check(&dd, mac, other, 14, 0x00000200U));
}

static void test_eviction(void)
{
    static ruuvi_dedup_entry_t table[3];
    ruuvi_dedup_t dd;
    uint8_t mac[6] = {9, 9, 9, 9, 9, 0};
    ruuvi_dedup_init(&dd, table, 3, 60000);
    for (uint8_t i = 0; i < 4U; i++) {
        mac[5] = i;
        CHECK(!check(&dd, mac, df5, 24, 100U * i));
    }
    CHECK_EQ_INT(dd.evicted, 1);
    /* Tag 0 was the least recently heard, so it was forgotten; tag 3 is remembered. */
    mac[5] = 3;
    CHECK(check(&dd, mac, df5, 24, 500));
    mac[5] = 0;
    CHECK(!check(&dd, mac, df5, 24, 600));
}

static void test_thinning(void)
{
    static ruuvi_dedup_entry_t table[2];
    ruuvi_dedup_t dd;
    const uint8_t mac[6] = {7, 7, 7, 7, 7, 7};
    ruuvi_dedup_init(&dd, table, 2, 60000);
    ruuvi_dedup_set_min_interval(&dd, 10000);
    CHECK(!check(&dd, mac, df5, 24, 0));       /* kept */
    df5[17]++;
    CHECK(check(&dd, mac, df5, 24, 1285));     /* a new measurement, thinned */
    CHECK(check(&dd, mac, df5, 24, 1300));     /* its re-advert: a duplicate */
    df5[17]++;
    CHECK(!check(&dd, mac, df5, 24, 10000));   /* interval over: kept */
    df5[17] = (uint8_t)(df5[17] - 2U);
    CHECK_EQ_INT(dd.thinned, 1);
    CHECK_EQ_INT(dd.duplicates, 1);
}

int main(void)
{
    RUN_TEST(test_sequence_key);
    RUN_TEST(test_payload_key_and_wrap);
    RUN_TEST(test_eviction);
    RUN_TEST(test_thinning);
    return UNIT_END();
}
