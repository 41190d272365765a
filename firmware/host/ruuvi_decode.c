/**
 * @file ruuvi_decode.c
 * @brief Host CLI: `ruuvi_decode HEX` prints the decoded fields as the canonical JSON object, exactly what
 *        `edge-gw decode HEX` prints. HEX is a payload, `9904` + payload, or whole advertisement data.
 *        Exit status 0 on success; 2 with a one-line "Error: ..." on stderr for bad input, as edge-gw decode.
 *
 *        `ruuvi_decode --lines` decodes one HEX per stdin line and prints one line each (the JSON, or the error
 *        line), so the tests can compare thousands of payloads with the Python decoder in one process.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "ruuvi.h"
#include "hex.h"
#include "wire.h"

#define MAX_INPUT_BYTES (256U)

/* Same rules as core/ruuvi/hexinput.py: surrounding whitespace and a 0x prefix are ignored. Returns NULL, or
 * what is wrong with the text. */
static const char *parse_hex(const char *text, unsigned char *out, size_t cap, size_t *len)
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
        return "empty hex string";
    }
    for (size_t i = start; i < end; i++) {
        if (hex_value(text[i]) < 0) {
            return "not a hex string";
        }
    }
    if (n % 2U != 0U) {
        return "odd number of hex digits";
    }
    if (n / 2U > cap) {
        return "input too long";
    }
    for (size_t i = 0; i < n / 2U; i++) {
        out[i] = (unsigned char)(hex_value(text[start + 2U * i]) * 16 + hex_value(text[start + 2U * i + 1U]));
    }
    *len = n / 2U;
    return NULL;
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

/* Decodes one input; prints the JSON to `out` or "Error: ..." to `err`. Returns 0, or 2 for bad input. */
static int decode_one(const char *text, FILE *out, FILE *err)
{
    unsigned char raw[MAX_INPUT_BYTES];
    size_t raw_len = 0;
    const uint8_t *payload = NULL;
    size_t payload_len = 0;
    ruuvi_data_t d;
    ruuvi_status_t st;
    char json[1024];
    wire_buf_t b;
    const char *problem = parse_hex(text, raw, sizeof(raw), &raw_len);

    if (problem != NULL) {
        fprintf(err, "Error: %s\n", problem);
        return 2;
    }
    st = ruuvi_payload_from_bytes(raw, raw_len, &payload, &payload_len);
    if (st == RUUVI_OK) {
        st = ruuvi_decode(payload, payload_len, &d);
    }
    if (st == RUUVI_ERR_LENGTH) {
        /* Same wording as the Python decoder's DecodeError. */
        fprintf(err, "Error: data format %s needs %zu bytes, got %zu\n", format_name(payload[0]),
                ruuvi_payload_length(payload[0]), payload_len);
        return 2;
    }
    if (st == RUUVI_ERR_UNKNOWN_FORMAT) {
        fprintf(err, "Error: unknown data format 0x%02x\n", payload[0]);
        return 2;
    }
    if (st != RUUVI_OK) {
        fprintf(err, "Error: %s\n", ruuvi_status_str(st));
        return 2;
    }
    wire_buf_init(&b, json, sizeof(json));
    if (wire_fields_json(&b, &d) != WIRE_OK) {
        fprintf(err, "Error: output buffer too small\n");
        return 2;
    }
    fprintf(out, "%s\n", json);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--lines") == 0) {
        char line[2 * MAX_INPUT_BYTES + 16];
        while (fgets(line, sizeof(line), stdin) != NULL) {
            (void)decode_one(line, stdout, stdout);
        }
        return 0;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: %s HEX | --lines\n", argv[0]);
        return 2;
    }
    return decode_one(argv[1], stdout, stderr);
}
