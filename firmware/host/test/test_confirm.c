/**
 * @file test_confirm.c
 * @brief The confirmation parser (wire_confirm_parse) against every `parse` case of tests/vectors/confirm.json
 *        and every message of its `encode` cases (confirm_vectors.h, generated at build time), plus edges the
 *        vectors leave out: no NUL terminator, every truncation, leading zeros, whitespace, the largest seq.
 */
#include <stdio.h>
#include <string.h>

#include "confirm_vectors.h"
#include "unit.h"
#include "wire.h"

static void test_vectors(void)
{
    size_t accepted = 0;
    for (size_t i = 0; i < confirm_vector_count; i++) {
        const confirm_vector_t *v = &confirm_vectors[i];
        wire_seq_range_t out[WIRE_CONFIRM_RANGES_MAX];
        size_t n = 99;
        char payload[WIRE_CONFIRM_BYTES_MAX + 64];
        wire_status_t st;
        /* Not NUL-terminated, as an MQTT payload: the byte after it must not matter. */
        memcpy(payload, v->payload, v->len);
        payload[v->len] = ']';
        st = wire_confirm_parse(payload, v->len, v->gateway, out, &n);
        if (v->error) {
            if (st != WIRE_ERR_CONFIRM || n != 0U) {
                fprintf(stderr, "vector %s: accepted, must be refused\n", v->name);
            }
            CHECK_EQ_INT(st, WIRE_ERR_CONFIRM);
            CHECK_EQ_INT(n, 0);
            continue;
        }
        if (st != WIRE_OK) {
            fprintf(stderr, "vector %s: refused (%s)\n", v->name, wire_status_str(st));
        }
        CHECK_EQ_INT(st, WIRE_OK);
        CHECK_EQ_INT(n, v->nranges);
        for (size_t k = 0; k < n && k < v->nranges; k++) {
            CHECK(out[k].first == v->ranges[2 * k]);
            CHECK(out[k].last == v->ranges[2 * k + 1]);
        }
        accepted++;
    }
    CHECK(accepted >= 9U);
    printf("     %zu confirm vectors, %zu accepted\n", confirm_vector_count, accepted);
}

static wire_status_t parse_str(const char *s, wire_seq_range_t *out, size_t *n)
{
    return wire_confirm_parse(s, strlen(s), "gw-1", out, n);
}

static void test_edges(void)
{
    static const char ok[] = "{\"v\":1,\"gateway\":\"gw-1\",\"seqs\":[[0,0],[7,9007199254740991]]}";
    static const char *const bad[] = {
        "{\"v\":1,\"gateway\":\"gw-1\",\"seqs\":[[01,2]]}",
        "{\"v\":1,\"gateway\":\"gw-1\",\"seqs\":[[0,00]]}",
        "{\"v\":1,\"gateway\":\"gw-1\",\"seqs\":[[-0,2]]}",
        "{\"v\":1,\"gateway\":\"gw-1\",\"seqs\":[[1,2],]}",
        "{\"v\":1,\"gateway\":\"gw-1\",\"seqs\":[[1,2]]} ",
        "{\"v\":1,\"gateway\":\"gw-1\",\"seqs\":[[1,2]]}}",
        "{\"v\":1,\"gateway\":\"gw-1\",\"seqs\":[[1, 2]]}",
        "{\"v\": 1,\"gateway\":\"gw-1\",\"seqs\":[[1,2]]}",
        "{\"v\":1,\"gateway\":\"gw-\",\"seqs\":[[1,2]]}",
        "{\"v\":1,\"gateway\":\"GW-1\",\"seqs\":[[1,2]]}",
        "{\"v\":1,\"gateway\":\"gw\\u002d1\",\"seqs\":[[1,2]]}",
        "{\"v\":1,\"gateway\":\"gw-1\",\"seqs\":[[1,2]],\"x\":1}",
        "{\"v\":1,\"gateway\":\"gw-1\",\"seqs\":[[1,10000000000000000]]}",
        "{\"v\":1,\"gateway\":\"gw-1\",\"seqs\":[[1,18446744073709551617]]}",
        "{\"v\":1,\"gateway\":\"gw-1\",\"seqs\":[[1,+2]]}",
        "{\"v\":1,\"gateway\":\"gw-1\",\"seqs\":[[1,2]\0]}",
    };
    wire_seq_range_t out[WIRE_CONFIRM_RANGES_MAX];
    size_t n = 0;
    char longest[WIRE_CONFIRM_BYTES_MAX + 2];
    size_t len;
    CHECK_EQ_INT(parse_str(ok, out, &n), WIRE_OK);
    CHECK_EQ_INT(n, 2);
    CHECK(out[1].first == 7U && out[1].last == WIRE_SEQ_MAX);
    /* Every truncation of a good message is refused. */
    for (size_t cut = 0; cut < sizeof(ok) - 1U; cut++) {
        n = 5;
        CHECK_EQ_INT(wire_confirm_parse(ok, cut, "gw-1", out, &n), WIRE_ERR_CONFIRM);
        CHECK_EQ_INT(n, 0);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        n = 5;
        if (parse_str(bad[i], out, &n) != WIRE_ERR_CONFIRM) {
            fprintf(stderr, "accepted: %s\n", bad[i]);
        }
        CHECK_EQ_INT(parse_str(bad[i], out, &n), WIRE_ERR_CONFIRM);
        CHECK_EQ_INT(n, 0);
    }
    /* The embedded NUL case, measured to the end. */
    CHECK_EQ_INT(wire_confirm_parse(bad[15], 39, "gw-1", out, &n), WIRE_ERR_CONFIRM);
    /* The longest canonical message is exactly WIRE_CONFIRM_BYTES_MAX bytes and is accepted. */
    len = (size_t)snprintf(longest, sizeof(longest), "{\"v\":1,\"gateway\":\"%s\",\"seqs\":[",
                           "x234567890123456789012345678901234567890123456789012345678901234");
    for (unsigned i = 0; i < WIRE_CONFIRM_RANGES_MAX; i++) {
        len += (size_t)snprintf(longest + len, sizeof(longest) - len, "%s[%llu,%llu]", i ? "," : "",
                                9007199254740000ULL + i, 9007199254740900ULL + i);
    }
    len += (size_t)snprintf(longest + len, sizeof(longest) - len, "]}");
    CHECK_EQ_INT(len, WIRE_CONFIRM_BYTES_MAX);
    CHECK_EQ_INT(wire_confirm_parse(longest, len, "x234567890123456789012345678901234567890123456789012345678901234",
                                    out, &n),
                 WIRE_OK);
    CHECK_EQ_INT(n, WIRE_CONFIRM_RANGES_MAX);
    /* Arguments. */
    CHECK_EQ_INT(wire_confirm_parse(NULL, 0, "gw-1", out, &n), WIRE_ERR_NULL);
    CHECK_EQ_INT(wire_confirm_parse(ok, sizeof(ok) - 1U, "dlq", out, &n), WIRE_ERR_CONFIRM);
    CHECK_EQ_INT(wire_confirm_parse(ok, sizeof(ok) - 1U, "", out, &n), WIRE_ERR_CONFIRM);
}

int main(void)
{
    RUN_TEST(test_vectors);
    RUN_TEST(test_edges);
    return UNIT_END();
}
