/**
 * @file ruuvi_adv.c
 * @brief Locating the Ruuvi payload in advertisement data, with the rules of core/ruuvi/hexinput.py.
 */
#include "ruuvi.h"

#define AD_TYPE_MANUFACTURER_SPECIFIC (0xFFU)
/* Company id 0x0499, little-endian on air. */
#define RUUVI_ID_LO (0x99U)
#define RUUVI_ID_HI (0x04U)

/* Walks AD structures; returns false if the bytes are not exactly a sequence of them (optionally followed by
 * zero padding). On true, *found says whether a Ruuvi manufacturer-data structure was seen. */
static bool walk_ad(const uint8_t *ad, size_t ad_len, const uint8_t **payload, size_t *payload_len, bool *found)
{
    size_t i = 0;
    size_t structures = 0;
    *found = false;
    while (i < ad_len) {
        size_t length = ad[i];
        if (length == 0U) {
            /* A zero length byte ends the significant part; the rest must be zero padding. */
            for (size_t j = i; j < ad_len; j++) {
                if (ad[j] != 0U) {
                    return false;
                }
            }
            return structures > 0U;
        }
        if (length > ad_len - i - 1U) {
            return false;
        }
        structures++;
        if (!*found && length >= 3U && ad[i + 1U] == AD_TYPE_MANUFACTURER_SPECIFIC && ad[i + 2U] == RUUVI_ID_LO &&
            ad[i + 3U] == RUUVI_ID_HI) {
            *payload = &ad[i + 4U];
            *payload_len = length - 3U;
            *found = true;
        }
        i += 1U + length;
    }
    return structures > 0U;
}

ruuvi_status_t ruuvi_find_in_adv(const uint8_t *ad, size_t ad_len, const uint8_t **payload, size_t *payload_len)
{
    bool found = false;
    if (payload == NULL || payload_len == NULL) {
        return RUUVI_ERR_NULL;
    }
    if (ad == NULL || !walk_ad(ad, ad_len, payload, payload_len, &found) || !found) {
        *payload = NULL;
        *payload_len = 0;
        return RUUVI_ERR_NO_RUUVI_AD;
    }
    return RUUVI_OK;
}

ruuvi_status_t ruuvi_payload_from_bytes(const uint8_t *raw, size_t raw_len, const uint8_t **payload,
                                        size_t *payload_len)
{
    bool found = false;
    if (payload == NULL || payload_len == NULL || (raw == NULL && raw_len > 0U)) {
        return RUUVI_ERR_NULL;
    }
    *payload = raw;
    *payload_len = raw_len;
    if (raw_len >= 2U && raw[0] == RUUVI_ID_LO && raw[1] == RUUVI_ID_HI) {
        *payload = raw + 2;
        *payload_len = raw_len - 2U;
        return RUUVI_OK;
    }
    if (raw_len > 0U && ruuvi_payload_length(raw[0]) == raw_len) {
        return RUUVI_OK;
    }
    if (raw_len == 0U || !walk_ad(raw, raw_len, payload, payload_len, &found)) {
        /* Not advertisement data: hand it on as is, so the decoder says what is wrong with it. */
        *payload = raw;
        *payload_len = raw_len;
        return RUUVI_OK;
    }
    if (!found) {
        *payload = NULL;
        *payload_len = 0;
        return RUUVI_ERR_NO_RUUVI_AD;
    }
    return RUUVI_OK;
}
