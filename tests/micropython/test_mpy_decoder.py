"""micropython/ruuvi.py inside the MicroPython WebAssembly port: the shared vectors, bit for bit,
and the same output as core.ruuvi.decode on random payloads."""

from __future__ import annotations

import json
import math
import random
import struct
from typing import Any

from mpy_harness import ROOT, MicroPython

VECTORS = ROOT / "tests" / "vectors" / "ruuvi.json"

# The MicroPython side prints one line per payload: each field as [key, kind, value] where a float
# is sent as the hex of its IEEE double, so the comparison is exact and independent of repr().
DUMP = r"""
import ruuvi, binascii, json, struct
def dump(hexes):
    for h in hexes:
        try:
            d = ruuvi.decode(binascii.unhexlify(h))
        except ValueError as e:
            print("@" + json.dumps({"error": type(e).__name__}))
            continue
        items = []
        for k, v in d.items():
            if isinstance(v, float):
                items.append([k, "f", binascii.hexlify(struct.pack(">d", v)).decode()])
            else:
                items.append([k, "v", v])
        text = ruuvi.fields_json(binascii.unhexlify(h))
        print("@" + json.dumps({"items": items, "json": text}))
dump(json.load(open("/data/hexes.json")))
"""


def tagged(expected: dict[str, Any]) -> list[list[Any]]:
    out: list[list[Any]] = []
    for key, value in expected.items():
        if isinstance(value, float):
            out.append([key, "f", struct.pack(">d", value).hex()])
        else:
            out.append([key, "v", value])
    return out


def canonical(fields: dict[str, Any]) -> str:
    # docs/wire-format.md "Canonical encoding"; repr() of these doubles is the shortest decimal.
    return json.dumps(fields, separators=(",", ":"))


def run_decoder(mpy: MicroPython, hexes: list[str]) -> list[dict[str, Any]]:
    got = mpy.run_json(DUMP, files={"/data/hexes.json": json.dumps(hexes).encode()})
    assert len(got) == len(hexes)
    return got  # type: ignore[return-value]


def test_every_shared_vector_in_micropython(mpy: MicroPython) -> None:
    vectors = json.loads(VECTORS.read_text())
    assert len(vectors) >= 50
    got = run_decoder(mpy, [v["hex"] for v in vectors])
    for vector, result in zip(vectors, got, strict=True):
        where = f"{vector['format']} {vector['name']}"
        if vector.get("error"):
            assert result == {"error": "DecodeError"}, where
        else:
            assert result["items"] == tagged(vector["expected"]), where
            assert result["json"] == canonical(vector["expected"]), where


def random_payloads(n: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    lengths = {3: 14, 5: 24, 0xC5: 18, 6: 20, 0xE1: 40, 8: 24}
    out = []
    for i in range(n):
        fmt = list(lengths)[i % len(lengths)]
        body = bytearray(rnd.randbytes(lengths[fmt] - 1))
        # Make the sentinels common: a field that is all FF / 0x8000 somewhere in most payloads.
        if rnd.random() < 0.5:
            at = rnd.randrange(len(body) - 1)
            body[at : at + 2] = rnd.choice([b"\xff\xff", b"\x80\x00"])
        out.append(bytes([fmt]) + bytes(body))
    for _ in range(20):  # wrong lengths and unknown formats
        out.append(rnd.randbytes(rnd.randrange(0, 45)))
    return out


def test_random_payloads_match_edge_ruuvi(mpy: MicroPython) -> None:
    from core.ruuvi import DecodeError, decode

    payloads = random_payloads(3000, seed=5)
    got = run_decoder(mpy, [p.hex() for p in payloads])
    checked = 0
    for payload, result in zip(payloads, got, strict=True):
        try:
            expected = decode(payload)
        except DecodeError:
            assert result == {"error": "DecodeError"}, payload.hex()
            continue
        assert result["items"] == tagged(expected), payload.hex()
        assert result["json"] == canonical(expected), payload.hex()
        checked += 1
    assert checked >= 3000


def test_df6_luminosity_table_is_the_formula() -> None:
    # The board keeps DF6 luminosity as a table (float32 exp() would not reproduce the doubles).
    source = (ROOT / "micropython" / "ruuvi.py").read_text()
    hex_text = "".join(
        line.strip().strip('"') for line in source.split("_LUX6 = unhexlify(")[1].split(")")[0].splitlines()
    )
    table = bytes.fromhex(hex_text)
    assert len(table) == 255 * 3
    delta = math.log(65536) / 254
    for code in range(255):
        hundredths = int.from_bytes(table[code * 3 : code * 3 + 3], "big")
        assert hundredths / 100 == round(math.exp(code * delta) - 1, 2), code
