/**
 * @file wire_batch.c
 * @brief Host tool for the tests: prints the canonical batch the firmware would publish.
 *
 *   wire_batch GATEWAY_ID SEQ READING...
 *   wire_batch --status GATEWAY_ID online|offline     (the retained status / last will payload)
 *   READING = MAC,TIME_NS,SYNCED,RSSI,RAW_HEX   e.g. cb:b8:33:4c:88:4f,1763913600123456789,1,-71,0512fc...
 *   (SYNCED is 0 or 1, RSSI an integer or "null"). Every reading also goes through the spool record format.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hex.h"
#include "wire.h"

#define MAX_READINGS (64)

static int parse_reading(const char *arg, wire_reading_t *r)
{
    char copy[256];
    char *fields[5];
    char *save = NULL;
    char *end = NULL;
    size_t n = 0;
    size_t hexlen;
    long rssi;
    memset(r, 0, sizeof(*r));
    if (strlen(arg) >= sizeof(copy)) {
        return -1;
    }
    strcpy(copy, arg);
    for (char *tok = strtok_r(copy, ",", &save); tok != NULL && n < 5U; tok = strtok_r(NULL, ",", &save)) {
        fields[n++] = tok;
    }
    if (n != 5U || strlen(fields[0]) != 17U) {
        return -1;
    }
    for (size_t i = 0; i < 6U; i++) {
        int hi = hex_value(fields[0][3U * i]);
        int lo = hex_value(fields[0][3U * i + 1U]);
        if (hi < 0 || lo < 0) {
            return -1;
        }
        r->mac[i] = (uint8_t)(hi * 16 + lo);
    }
    errno = 0;
    r->time_ns = (int64_t)strtoll(fields[1], &end, 10);
    if (errno != 0 || *end != '\0') {
        return -1;
    }
    r->clock_synced = strcmp(fields[2], "1") == 0;
    if (strcmp(fields[3], "null") != 0) {
        rssi = strtol(fields[3], &end, 10);
        if (*end != '\0' || rssi < -128 || rssi > 127) {
            return -1;
        }
        r->rssi = (int8_t)rssi;
        r->rssi_valid = true;
    }
    hexlen = strlen(fields[4]);
    if (hexlen % 2U != 0U || hexlen / 2U > RUUVI_PAYLOAD_MAX) {
        return -1;
    }
    for (size_t i = 0; i < hexlen / 2U; i++) {
        int hi = hex_value(fields[4][2U * i]);
        int lo = hex_value(fields[4][2U * i + 1U]);
        if (hi < 0 || lo < 0) {
            return -1;
        }
        r->raw[i] = (uint8_t)(hi * 16 + lo);
    }
    r->raw_len = (uint8_t)(hexlen / 2U);
    return 0;
}

int main(int argc, char **argv)
{
    static wire_reading_t readings[MAX_READINGS];
    static char out[64 * 1024];
    size_t n = 0;
    size_t len = 0;
    unsigned long long seq;
    char *end = NULL;
    wire_status_t st;
    if (argc == 4 && strcmp(argv[1], "--status") == 0) {
        wire_buf_t b;
        wire_buf_init(&b, out, sizeof(out));
        st = wire_status_json(&b, argv[2], strcmp(argv[3], "online") == 0);
        if (st != WIRE_OK) {
            fprintf(stderr, "error: %s\n", wire_status_str(st));
            return 1;
        }
        fwrite(out, 1, b.len, stdout);
        return 0;
    }
    if (argc < 4 || argc - 3 > MAX_READINGS) {
        fprintf(stderr, "usage: %s GATEWAY_ID SEQ MAC,TIME_NS,SYNCED,RSSI,RAW_HEX...\n", argv[0]);
        return 2;
    }
    seq = strtoull(argv[2], &end, 10);
    if (*end != '\0') {
        fprintf(stderr, "error: bad seq\n");
        return 2;
    }
    for (int i = 3; i < argc; i++) {
        wire_reading_t parsed;
        uint8_t rec[WIRE_RECORD_MAX];
        size_t rec_len;
        if (parse_reading(argv[i], &parsed) != 0) {
            fprintf(stderr, "error: bad reading %s\n", argv[i]);
            return 2;
        }
        /* Through the spool's record format and back, as on the device. */
        rec_len = wire_record_pack(&parsed, rec, sizeof(rec));
        if (rec_len == 0U || wire_record_unpack(rec, rec_len, &readings[n]) != WIRE_OK) {
            fprintf(stderr, "error: record round trip failed\n");
            return 1;
        }
        n++;
    }
    st = wire_encode_batch(out, sizeof(out), argv[1], (uint64_t)seq, readings, n, &len);
    if (st != WIRE_OK) {
        fprintf(stderr, "error: %s\n", wire_status_str(st));
        return 1;
    }
    fwrite(out, 1, len, stdout);
    return 0;
}
