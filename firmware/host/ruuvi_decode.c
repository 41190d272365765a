/**
 * @file ruuvi_decode.c
 * @brief Host CLI: `ruuvi_decode HEX` prints the decoded fields as the canonical JSON object, exactly what
 *        `edge-gw decode HEX` prints. HEX is a payload, `9904` + payload, or whole advertisement data.
 *        Exit status 0 on success; 1 with a message on stderr if the input does not decode; 2 on usage errors.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "ruuvi.h"
#include "wire.h"

#define MAX_INPUT_BYTES (256U)

static int hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Same rules as edge/ruuvi/hexinput.py: surrounding whitespace and a 0x prefix are ignored. */
static int parse_hex(const char *text, unsigned char *out, size_t cap, size_t *len)
{
    size_t start = 0;
    size_t end = strlen(text);
    size_t n;
    while (start < end && isspace((unsigned char)text[start])) {
        start++;
    }
    while (end > start && isspace((unsigned char)text[end - 1U])) {
        end--;
    }
    if (end - start >= 2U && text[start] == '0' && (text[start + 1U] == 'x' || text[start + 1U] == 'X')) {
        start += 2U;
    }
    n = end - start;
    if (n == 0U) {
        fprintf(stderr, "error: empty hex string\n");
        return -1;
    }
    for (size_t i = start; i < end; i++) {
        if (hex_value(text[i]) < 0) {
            fprintf(stderr, "error: not a hex string\n");
            return -1;
        }
    }
    if (n % 2U != 0U) {
        fprintf(stderr, "error: odd number of hex digits (%zu)\n", n);
        return -1;
    }
    if (n / 2U > cap) {
        fprintf(stderr, "error: input longer than %zu bytes\n", cap);
        return -1;
    }
    for (size_t i = 0; i < n / 2U; i++) {
        out[i] = (unsigned char)(hex_value(text[start + 2U * i]) * 16 + hex_value(text[start + 2U * i + 1U]));
    }
    *len = n / 2U;
    return 0;
}

static const char *format_name(unsigned char df)
{
    switch (df) {
    case RUUVI_DF_3:
        return "3";
    case RUUVI_DF_5:
        return "5";
    case RUUVI_DF_C5:
        return "C5";
    case RUUVI_DF_6:
        return "6";
    case RUUVI_DF_E1:
        return "E1";
    default:
        return "8";
    }
}

int main(int argc, char **argv)
{
    unsigned char raw[MAX_INPUT_BYTES];
    size_t raw_len = 0;
    const uint8_t *payload = NULL;
    size_t payload_len = 0;
    ruuvi_data_t d;
    ruuvi_status_t st;
    char json[1024];
    wire_buf_t b;

    if (argc != 2) {
        fprintf(stderr, "usage: %s HEX\n", argv[0]);
        return 2;
    }
    if (parse_hex(argv[1], raw, sizeof(raw), &raw_len) != 0) {
        return 1;
    }
    st = ruuvi_payload_from_bytes(raw, raw_len, &payload, &payload_len);
    if (st == RUUVI_OK) {
        st = ruuvi_decode(payload, payload_len, &d);
    }
    if (st == RUUVI_ERR_LENGTH) {
        /* Same wording as the Python decoder's DecodeError. */
        fprintf(stderr, "error: data format %s needs %zu bytes, got %zu\n", format_name(payload[0]),
                ruuvi_payload_length(payload[0]), payload_len);
        return 1;
    }
    if (st == RUUVI_ERR_UNKNOWN_FORMAT) {
        fprintf(stderr, "error: unknown data format 0x%02x\n", payload[0]);
        return 1;
    }
    if (st != RUUVI_OK) {
        fprintf(stderr, "error: %s\n", ruuvi_status_str(st));
        return 1;
    }
    wire_buf_init(&b, json, sizeof(json));
    if (wire_fields_json(&b, &d) != WIRE_OK) {
        fprintf(stderr, "error: output buffer too small\n");
        return 1;
    }
    puts(json);
    return 0;
}
