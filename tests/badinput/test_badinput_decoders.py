"""One million generated inputs each for `core.ruuvi.decode` and `core.ruuvi.payload_from_hex`: only DecodeError
may escape, and what decodes has the shape of its format.

A seeded, structured generator in one process instead of hypothesis (1M hypothesis examples take many minutes) or
atheris (one more native dependency for no extra reach here: the decoders are straight-line struct unpacking, so
what matters is reaching every format byte with every length and every byte value, which the generator does on
purpose). The seed is printed on failure so any finding replays exactly. The C decoder has its own libFuzzer run
in tests/firmware.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from core.ruuvi import DecodeError, decode, payload_from_hex
from core.ruuvi.hexinput import PAYLOAD_LENGTHS

RUNS = 1_000_000
SEED = 20261123
VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "ruuvi.json").read_text())
SEEDS = [bytes.fromhex(v["hex"]) for v in VECTORS if v.get("hex")]
FORMATS = sorted(PAYLOAD_LENGTHS)
INTERESTING = [0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF]


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four classic mutations: flip a bit, set a byte (often to a boundary value), insert, delete,
    truncate, duplicate a slice, or swap the format byte."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        if op == 0 and buf:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[rng.randrange(len(buf))] = rng.choice(INTERESTING) if rng.random() < 0.5 else rng.randrange(256)
        elif op == 2:
            buf.insert(rng.randint(0, len(buf)), rng.randrange(256))
        elif op == 3 and buf:
            del buf[rng.randrange(len(buf))]
        elif op == 4:
            del buf[rng.randint(0, len(buf)):]
        elif op == 5 and buf:
            i = rng.randrange(len(buf))
            buf[i:i] = buf[i : i + rng.randint(1, 8)]
        elif op == 6 and buf:
            buf[0] = rng.choice(FORMATS)
        else:
            buf.append(rng.randrange(256))
    return bytes(buf)


def payloads(rng: random.Random) -> Iterator[bytes]:
    """An endless mix: exact-length bodies of every format (these must decode), mutated test vectors, and
    random bytes of random length with a known or unknown format byte."""
    randbytes = rng.randbytes
    while True:
        kind = rng.randrange(10)
        if kind < 4:
            fmt = rng.choice(FORMATS)
            body = randbytes(PAYLOAD_LENGTHS[fmt] - 1)
            if kind == 0:
                # Sentinel-heavy bodies reach the "not available" branches that uniform bytes rarely hit.
                body = bytes(b if rng.random() < 0.5 else rng.choice(INTERESTING) for b in body)
            yield bytes([fmt]) + body
        elif kind < 8:
            yield mutate(rng, rng.choice(SEEDS))
        else:
            n = rng.randint(0, 48)
            first = rng.choice(FORMATS) if rng.random() < 0.7 else rng.randrange(256)
            yield bytes([first]) + randbytes(n - 1) if n else b""


def hex_texts(rng: random.Random, source: Iterator[bytes]) -> Iterator[str]:
    """Text for payload_from_hex: plain payload hex, manufacturer data with company id, whole advertisements
    (valid and broken AD structures, zero padding), then text-level damage (odd digits, non-hex characters,
    whitespace, 0x prefix, non-ASCII)."""
    junk = "xg \t\n\x00é€😀-:0xX"
    while True:
        p = next(source)
        kind = rng.randrange(6)
        if kind == 1:
            p = b"\x99\x04" + p
        elif kind == 2:
            mfr = b"\xff\x99\x04" + p
            ad = b"\x02\x01\x06" + bytes([len(mfr) & 0xFF]) + mfr
            if rng.random() < 0.3:
                ad += bytes(rng.randint(1, 6))
            p = mutate(rng, ad) if rng.random() < 0.5 else ad
        elif kind == 3:
            p = bytes([rng.randint(0, 40), 0xFF]) + rng.randbytes(rng.randint(0, 40))
        text = p.hex()
        if rng.random() < 0.5:
            text = text.upper()
        damage = rng.randrange(8)
        if damage == 0:
            text = "0x" + text
        elif damage == 1 and text:
            text = text[: rng.randrange(len(text))]
        elif damage == 2:
            i = rng.randint(0, len(text))
            text = text[:i] + rng.choice(junk) + text[i:]
        elif damage == 3:
            text = " " * rng.randint(0, 3) + text + "\n" * rng.randint(0, 2)
        elif damage == 4:
            text = "".join(rng.choice(junk) for _ in range(rng.randint(0, 6)))
        yield text


def run(fn: Callable[[], object], runs: int) -> tuple[int, int]:
    ok = errors = 0
    for _ in range(runs):
        try:
            fn()
        except DecodeError:
            errors += 1
        else:
            ok += 1
    return ok, errors


def test_decode_one_million_inputs() -> None:
    rng = random.Random(SEED)
    source = payloads(rng)
    formats_seen: set[int] = set()
    current = b""

    def one() -> None:
        nonlocal current
        current = next(source)
        try:
            fields = decode(current)
        except DecodeError as exc:
            assert str(exc), current.hex()
            raise
        except Exception as exc:  # pragma: no cover - the finding itself
            raise AssertionError(f"seed {SEED}: decode({current.hex()}) raised {exc!r}") from exc
        assert fields["data_format"] == current[0], current.hex()
        assert len(current) == PAYLOAD_LENGTHS[current[0]], current.hex()
        formats_seen.add(current[0])

    started = time.monotonic()
    ok, errors = run(one, RUNS)
    took = time.monotonic() - started
    assert ok + errors == RUNS
    # Both outcomes are reached in bulk, and every format decoded at least once.
    assert ok > RUNS // 4 and errors > RUNS // 4, (ok, errors)
    assert formats_seen == set(FORMATS)
    print(f"decode: {RUNS} inputs, {ok} decoded, {errors} DecodeError, {took:.1f} s")


def test_payload_from_hex_one_million_inputs() -> None:
    rng = random.Random(SEED + 1)
    texts = hex_texts(rng, payloads(rng))
    current = ""
    ad_payloads = 0

    def one() -> None:
        nonlocal current, ad_payloads
        current = next(texts)
        try:
            out = payload_from_hex(current)
        except DecodeError as exc:
            assert str(exc), repr(current)
            raise
        except Exception as exc:  # pragma: no cover - the finding itself
            raise AssertionError(f"seed {SEED + 1}: payload_from_hex({current!r}) raised {exc!r}") from exc
        assert isinstance(out, bytes), repr(current)
        # What comes out is a part of the input bytes, never more.
        assert out.hex() in current.strip().lower().removeprefix("0x"), repr(current)
        if out and len(out) < len(current.strip()) // 2:
            ad_payloads += 1

    started = time.monotonic()
    ok, errors = run(one, RUNS)
    took = time.monotonic() - started
    assert ok + errors == RUNS
    assert ok > RUNS // 4 and errors > RUNS // 20, (ok, errors)
    assert ad_payloads > RUNS // 20, ad_payloads  # the advertisement/company-id paths were reached in bulk
    print(f"payload_from_hex: {RUNS} inputs, {ok} payloads, {errors} DecodeError, {took:.1f} s")
