"""payload_from_hex(): plain payloads, company id prefix, whole advertisements, bad hex."""

from __future__ import annotations

import pytest

from core.ruuvi import DecodeError, decode, payload_from_hex

DF5 = "0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F"
DF6 = "06170C5668C79E007000C90501D9FFCD004C884F"
E1 = "E1170C5668C79E0065007004BD11CA00C90A0213E0ACFFFFFFDECDEE01FFFFFFFFFFCBB8334C884F"
C5 = "C512FC5394C37CAC364200CDCBB8334C884F"
DF3 = "03291A1ECE1EFC18F94202CA0B53"


@pytest.mark.parametrize("payload", [DF5, DF6, E1, C5, DF3])
@pytest.mark.parametrize("case", [str.upper, str.lower])
@pytest.mark.parametrize("pad", ["", " ", "\n", " \t\r\n"])
def test_plain_payload(payload: str, case: object, pad: str) -> None:
    text = case(payload)  # type: ignore[operator]
    assert payload_from_hex(pad + text + pad) == bytes.fromhex(payload)


def test_0x_prefix() -> None:
    assert payload_from_hex("0x" + DF5) == payload_from_hex("0X" + DF5.lower()) == bytes.fromhex(DF5)


def test_company_id_prefix_is_stripped() -> None:
    assert payload_from_hex("9904" + DF5) == bytes.fromhex(DF5)
    assert payload_from_hex("  9904" + DF6.lower() + " ") == bytes.fromhex(DF6)


@pytest.mark.parametrize(
    ("advert", "payload"),
    [
        ("0201061BFF9904" + DF5, DF5),  # DF5 legacy advert: flags + manufacturer data
        ("02010611FF9904" + DF3, DF3),  # DF3
        ("0201060303" + "98FC" + "17FF9904" + DF6, DF6),  # Ruuvi Air DF6: flags, 16-bit UUID, manufacturer
        ("2BFF9904" + E1 + "030398FC", E1),  # E1 extended advert: no flags AD, UUID after
        ("02010615FF9904" + C5 + "030398FC", C5),  # C5 with the FC98 service UUID
        ("1BFF9904" + DF5, DF5),  # manufacturer AD alone
        ("0201061BFF9904" + DF5 + "000000", DF5),  # zero padding after the significant part
    ],
)
def test_full_advertisement(advert: str, payload: str) -> None:
    assert payload_from_hex(advert) == bytes.fromhex(payload)
    assert payload_from_hex(advert.lower()) == bytes.fromhex(payload)


def test_other_vendors_manufacturer_data_is_skipped() -> None:
    # Apple (0x004C) manufacturer data first, then Ruuvi's.
    advert = "020106" + "07FF4C0010020B00" + "1BFF9904" + DF5
    assert payload_from_hex(advert) == bytes.fromhex(DF5)


# Ruuvi Gateway's `data` strings with the values the gateway itself decoded, from the Ruuvi Gateway
# docs ("Polling mode" /history example, docs.ruuvi.com/ruuvi-gateway-firmware/...). The example lists
# "txPower": -32 for all three, but each power word ends in 0b10110 = code 22 = +4 dBm by the DF5 spec
# (the same code as the DF5 "valid" vector, whose table says 4 dBm); we follow the spec.
GATEWAY_HISTORY = [
    (
        "0201061BFF990405164D77BDC74A03FCFF34FFFC87D6DA63CAE375CF374E23",
        {"temperature": 28.545, "humidity": 76.6325, "pressure": 101018, "acceleration_x": 1020,
         "acceleration_y": -204, "acceleration_z": -4, "movement_counter": 218, "battery_voltage": 2686,
         "measurement_sequence_number": 25546, "mac": "e3:75:cf:37:4e:23"},
    ),
    (
        "0201061BFF99040514F564D7C7B40008FFF403E8B2767A669BF41F0C28CBD6",
        {"temperature": 26.825, "humidity": 64.5375, "pressure": 101124, "acceleration_x": 8,
         "acceleration_y": -12, "acceleration_z": 1000, "movement_counter": 122, "battery_voltage": 3027,
         "measurement_sequence_number": 26267, "mac": "f4:1f:0c:28:cb:d6"},
    ),
    (
        "0201061BFF99040517C166ACC78C00540004041C8756086435C6A5B9E0AD06",
        {"temperature": 30.405, "humidity": 65.71, "pressure": 101084, "acceleration_x": 84,
         "acceleration_y": 4, "acceleration_z": 1052, "movement_counter": 8, "battery_voltage": 2682,
         "measurement_sequence_number": 25653, "mac": "c6:a5:b9:e0:ad:06"},
    ),
]  # fmt: skip


@pytest.mark.parametrize(("data", "gateway_decoded"), GATEWAY_HISTORY)
def test_ruuvi_gateway_data_strings(data: str, gateway_decoded: dict[str, object]) -> None:
    fields = decode(payload_from_hex(data))
    assert fields == {"data_format": 5, **gateway_decoded, "tx_power": 4}


def test_plain_payload_wins_over_an_ad_reading() -> None:
    # A DF5 payload whose bytes also parse as AD structures containing Ruuvi manufacturer data:
    # 05 <5 bytes> | 11 FF 99 04 03 <13 bytes>  -> 24 bytes starting with 0x05: rule 3 says plain DF5.
    tricky = "05" + "0000000000" + "11FF9904" + DF3
    assert len(bytes.fromhex(tricky)) == 24
    assert payload_from_hex(tricky) == bytes.fromhex(tricky)
    # The same structures after a flags AD are an advertisement.
    assert payload_from_hex("020106" + tricky) == bytes.fromhex(DF3)


def test_truncated_payload_is_left_for_decode_to_report() -> None:
    short = DF5[:-2]
    assert payload_from_hex(short) == bytes.fromhex(short)
    with pytest.raises(DecodeError, match="needs 24 bytes, got 23"):
        decode(payload_from_hex(short))


def test_advertisement_without_ruuvi_data() -> None:
    with pytest.raises(DecodeError, match="no manufacturer data with company id 0x0499"):
        payload_from_hex("020106" + "07FF4C0010020B00")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty hex string"),
        ("   ", "empty hex string"),
        ("0x", "empty hex string"),
        ("05 12", "not a hex string"),
        ("05:12:FC", "not a hex string"),
        ("zz", "not a hex string"),
        ("0512g4", "not a hex string"),
        ("ünï", "not a hex string"),
        ("051", "odd number of hex digits"),
        ("9904" + DF5 + "0", "odd number of hex digits"),
    ],
)
def test_bad_hex(text: str, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        payload_from_hex(text)
