/**
 * @file fuzz_decode.c
 * @brief libFuzzer target: any bytes through the advertisement rules, the decoder, the JSON writer, the dedup
 *        table and the wire batch encoder. ASan/UBSan catch out-of-bounds reads and undefined behaviour; the
 *        asserts check the invariants that must hold for every input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ruuvi.h"
#include "ruuvi_dedup.h"
#include "wire.h"

#define REQUIRE(c)                                                                                                    \
    do {                                                                                                              \
        if (!(c)) {                                                                                                   \
            abort();                                                                                                  \
        }                                                                                                             \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ruuvi_dedup_entry_t table[4];
    static ruuvi_dedup_t dd;
    static int dd_ready;
    static uint32_t now;
    const uint8_t *payload = NULL;
    size_t len = 0;
    ruuvi_data_t d;
    char json[1024];
    wire_buf_t b;
    if (!dd_ready) {
        ruuvi_dedup_init(&dd, table, 4, 1000);
        dd_ready = 1;
    }
    (void)ruuvi_find_in_adv(data, size, &payload, &len);
    if (ruuvi_payload_from_bytes(data, size, &payload, &len) != RUUVI_OK) {
        return 0;
    }
    REQUIRE(len <= size);
    REQUIRE(len == 0 || (payload >= data && payload + len <= data + size));
    if (ruuvi_decode(payload, len, &d) != RUUVI_OK) {
        REQUIRE(d.carried == 0);
        return 0;
    }
    REQUIRE(len == ruuvi_payload_length(payload[0]));
    REQUIRE((d.available & ~d.carried) == 0);
    wire_buf_init(&b, json, sizeof(json));
    REQUIRE(wire_fields_json(&b, &d) == WIRE_OK);
    REQUIRE(strlen(json) == b.len && json[0] == '{' && json[b.len - 1] == '}');
    /* Small buffers must fail cleanly, never overflow. */
    wire_buf_init(&b, json, (size % 64U) + 1U);
    (void)wire_fields_json(&b, &d);
    REQUIRE(strlen(json) == b.len && b.len < (size % 64U) + 1U);
    {
        uint8_t mac[6] = {0};
        wire_reading_t r;
        char batch[2048];
        size_t blen = 0;
        memcpy(mac, payload, len < 6U ? len : 6U);
        (void)ruuvi_dedup_check(&dd, mac, &d, payload, len, now);
        now += (uint32_t)size * 97U;
        memset(&r, 0, sizeof(r));
        memcpy(r.mac, mac, 6);
        r.time_ns = (int64_t)size * 1000000007LL;
        r.rssi_valid = (size & 1U) != 0U;
        r.rssi = (int8_t)(size & 0x7FU);
        r.raw_len = (uint8_t)len;
        memcpy(r.raw, payload, len);
        REQUIRE(wire_encode_batch(batch, sizeof(batch), "fuzz", size, &r, 1, &blen) == WIRE_OK);
        REQUIRE(strlen(batch) == blen);
    }
    return 0;
}
