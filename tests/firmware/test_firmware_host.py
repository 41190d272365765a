"""The firmware's portable C core, built on the host with gcc: unit tests (plain and under ASan+UBSan), the
`ruuvi_decode` CLI against the Python decoder, the C wire encoder against `edge.wire.encode_batch`, and the memory
figures that firmware/README.md quotes."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from firmware_build import make

from cloud.formats import edge_batch as edge_format
from core import ruuvi
from core import wire as core_wire
from edge import wire
from edge.model import Reading

REPO = Path(__file__).resolve().parents[2]
VECTORS = json.loads((REPO / "tests" / "vectors" / "ruuvi.json").read_text(encoding="utf-8"))
CONFIRM = json.loads((REPO / "tests" / "vectors" / "confirm.json").read_text(encoding="utf-8"))
UNIT_TESTS = ["test_ruuvi", "test_wire", "test_spool", "test_dedup", "test_confirm", "test_uplink"]
LENGTHS = {0x03: 14, 0x05: 24, 0xC5: 18, 0x06: 20, 0xE1: 40, 0x08: 24}


def run(*cmd: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], input=stdin, capture_output=True, text=True, timeout=120, check=False)


def python_line(text: str) -> str:
    """What `edge-gw decode TEXT` prints: the JSON line, or the error (the C CLI prints "Error: ..." too)."""
    try:
        fields = ruuvi.decode(ruuvi.payload_from_hex(text))
    except ruuvi.DecodeError:
        return "Error"
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


def c_lines(build: Path, inputs: list[str]) -> list[str]:
    done = run(build / "ruuvi_decode", "--lines", stdin="".join(f"{t}\n" for t in inputs))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(inputs)
    return ["Error" if line.startswith("Error: ") else line for line in lines]


@pytest.mark.parametrize("name", UNIT_TESTS)
def test_unit_tests_pass(host_build: Path, name: str) -> None:
    done = run(host_build / name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^\d+ checks, 0 failures$", done.stdout, re.M), done.stdout
    assert "FAIL" not in done.stdout


def test_unit_tests_cover_every_vector(host_build: Path) -> None:
    done = run(host_build / "test_ruuvi")
    assert f"     {len(VECTORS)} vectors\n" in done.stdout
    assert len(VECTORS) >= 70


def test_power_cuts_at_every_step(host_build: Path) -> None:
    done = run(host_build / "test_spool")
    counts = re.findall(r"(\d+) write/erase steps, (\d+) power cuts checked", done.stdout)
    assert len(counts) == 2
    for steps, cuts in counts:
        # Every step is cut three ways: nothing written, half written, all but the last byte.
        assert int(cuts) == 3 * int(steps) and int(steps) > 150


def test_confirm_parser_runs_every_vector(host_build: Path) -> None:
    """Every `parse` case of confirm.json, plus every message of its `encode` cases (which must parse)."""
    done = run(host_build / "test_confirm")
    assert done.returncode == 0, done.stdout + done.stderr
    messages = sum(len(c["messages"]) for c in CONFIRM["encode"])
    accepted = sum(1 for c in CONFIRM["parse"] if not c.get("error"))
    assert f"     {len(CONFIRM['parse']) + messages} confirm vectors, {accepted + messages} accepted\n" in done.stdout
    assert len(CONFIRM["parse"]) >= 27


def test_power_cuts_while_confirming(host_build: Path) -> None:
    done = run(host_build / "test_uplink")
    assert done.returncode == 0, done.stdout + done.stderr
    m = re.search(r"confirm workload: (\d+) write/erase steps, (\d+) power cuts checked", done.stdout)
    assert m is not None, done.stdout
    steps, cuts = int(m[1]), int(m[2])
    assert cuts == 3 * steps and steps > 100
    for name in ("test_resend_after_timeout", "test_out_of_order_confirmations", "test_broker_mode",
                 "test_seqs_never_repeat_across_reboots", "test_refused_confirmations_delete_nothing"):
        assert f"ok   {name}\n" in done.stdout


@pytest.mark.parametrize("name", UNIT_TESTS)
def test_unit_tests_under_sanitizers(san_build: Path, name: str) -> None:
    done = run(san_build / name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "runtime error" not in done.stderr
    assert "ERROR: AddressSanitizer" not in done.stderr
    assert re.search(r"^\d+ checks, 0 failures$", done.stdout, re.M)


@pytest.mark.parametrize("vector", VECTORS, ids=[f"{v['format'] or '-'}/{v['name']}" for v in VECTORS])
def test_cli_prints_what_python_prints(host_build: Path, vector: dict[str, object]) -> None:
    hex_text = str(vector["hex"])
    done = run(host_build / "ruuvi_decode", hex_text) if hex_text else run(host_build / "ruuvi_decode", "")
    if "expected" in vector:
        canonical = json.dumps(vector["expected"], separators=(",", ":"))
        assert done.returncode == 0, done.stderr
        assert done.stdout == canonical + "\n"
        assert done.stdout.rstrip("\n") == python_line(hex_text)
        # The gateways put edge.wire's orjson form into `fields`; it must be the same bytes.
        assert done.stdout.rstrip("\n") == wire.fields_json(ruuvi.decode(bytes.fromhex(hex_text)))
    else:
        assert done.returncode == 2
        assert done.stdout == ""
        assert done.stderr.startswith("Error: ")
        # The same one-line message as `edge-gw decode` (click prints "Error: <DecodeError message>").
        with pytest.raises(ruuvi.DecodeError) as err:
            ruuvi.decode(ruuvi.payload_from_hex(hex_text))
        assert done.stderr == f"Error: {err.value}\n"


def test_cli_accepts_prefix_and_whole_advertisement(host_build: Path) -> None:
    inputs: list[str] = []
    for v in VECTORS:
        payload = bytes.fromhex(str(v["hex"]))
        if not payload:
            continue
        ad = bytes([len(payload) + 3, 0xFF, 0x99, 0x04]) + payload
        inputs += [
            "9904" + payload.hex(),
            "020106" + ad.hex(),  # flags AD first, as Ruuvi Gateway's `data`
            ad.hex().upper(),
            "0303" + "98fc" + ad.hex() + "0000",  # service UUID AD, zero padding
            "  0x" + payload.hex() + "  ",
        ]
    inputs += ["020106", "0201060303aafe", "xyz", "051", ""]
    assert c_lines(host_build, inputs) == [python_line(t) for t in inputs]


def _random_payloads(rng: random.Random) -> list[str]:
    out: list[str] = []
    special = [0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF]
    for fmt, length in LENGTHS.items():
        for i in range(400):
            # Half uniformly random, half built from values next to the sentinels and sign boundaries.
            body = [rng.randrange(256) if i % 2 else rng.choice(special) for _ in range(length - 1)]
            out.append(bytes([fmt, *body]).hex())
        out.append(bytes([fmt] + [0xFF] * (length - 1)).hex())
        out.append(bytes([fmt] + [0x00] * (length - 1)).hex())
        for delta in (-1, 1):
            out.append(bytes([fmt] + [0x55] * (length - 1 + delta)).hex())
    for code in range(256):  # every DF6 luminosity code, the one value that needs explicit rounding
        out.append(bytes([0x06] + [0] * 12 + [code] + [0] * 6).hex())
    for fmt in range(256):
        if fmt not in LENGTHS:
            out.append(bytes([fmt, 1, 2, 3]).hex())
    return out


def test_cli_matches_python_on_random_payloads(host_build: Path) -> None:
    inputs = _random_payloads(random.Random(20261123))
    c_out = c_lines(host_build, inputs)
    py_out = [python_line(t) for t in inputs]
    mismatches = [(t, c, p) for t, c, p in zip(inputs, c_out, py_out, strict=True) if c != p]
    assert mismatches == []
    assert sum(1 for line in c_out if line != "Error") > 2400


def _readings() -> list[Reading]:
    rng = random.Random(7)
    readings = []
    for i, v in enumerate(x for x in VECTORS if "expected" in x):
        raw = bytes.fromhex(str(v["hex"]))
        mac = ":".join(f"{rng.randrange(256):02x}" for _ in range(6))
        rssi = None if i % 5 == 0 else -rng.randrange(20, 110)
        fields = ruuvi.decode(raw)
        readings.append(
            Reading(
                mac,
                1763913600_000000000 + i * 1_285_000_123,
                i * 1000,
                i % 7 != 3,
                rssi,
                fields["data_format"],
                raw,
                fields,
            )
        )
    return readings


def _c_batch(build: Path, gateway: str, seq: int, readings: list[Reading]) -> bytes:
    args = [
        f"{r.mac},{r.time_ns},{int(r.clock_synced)},{'null' if r.rssi is None else r.rssi},{r.raw.hex()}"
        for r in readings
    ]
    done = subprocess.run(
        [str(build / "wire_batch"), gateway, str(seq), *args], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_wire_batch_bytes_equal_python_encoder(host_build: Path) -> None:
    readings = _readings()
    assert len(readings) > 50
    for start, gateway, seq in ((0, "esp32-hall", 0), (20, "a", 4711), (40, "gw_2.test-X", 2**53 + 1)):
        chunk = readings[start : start + 40]
        assert _c_batch(host_build, gateway, seq, chunk) == wire.encode_batch(gateway, seq, chunk)
    one = readings[:1]
    assert _c_batch(host_build, "pi-kitchen", 1, one) == wire.encode_batch("pi-kitchen", 1, one)


def test_wire_batch_refuses_bad_gateway_ids(host_build: Path) -> None:
    r = _readings()[0]
    arg = f"{r.mac},{r.time_ns},1,-70,{r.raw.hex()}"
    for bad in ("dlq", "a/b", "x" * 65, "with space"):
        done = run(host_build / "wire_batch", bad, "1", arg)
        assert done.returncode == 1
        assert "invalid gateway id" in done.stderr
        with pytest.raises(wire.WireError):
            wire.encode_batch(bad, 1, [r])


def sizes(build: Path) -> dict[str, int]:
    done = run(build / "sizes")
    assert done.returncode == 0
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\S+) (\d+)", done.stdout, re.M)}


STRUCTS = ["ruuvi_data_t", "ruuvi_dedup_entry_t", "wire_reading_t", "spool_t", "wire_batch_t", "uplink_t"]
FIGURES = [
    "dedup_table_bytes_100_tags",
    "spool_record_max_bytes",
    "spool_sectors",
    "spool_records_per_sector_df5",
    "spool_capacity_records_df5",
    "batch_buffer_bytes",
]


def test_memory_figures_match_readme(host_build: Path) -> None:
    s = sizes(host_build)
    assert s["sizeof(ruuvi_dedup_entry_t)"] == 24
    assert s["dedup_table_bytes_100_tags"] == 2400
    assert s["spool_record_max_bytes"] == 57
    assert s["spool_sectors"] == 512  # the 2 MiB `spool` partition of partitions.csv
    readme = (REPO / "firmware" / "README.md").read_text(encoding="utf-8")
    # The README's tables are this program's output; each figure must appear there as printed.
    for key in FIGURES:
        assert f"| `{key}` | {s[key]} |" in readme, key
    for name in STRUCTS:
        assert f"| `{name}` | {s[f'sizeof({name})']} |" in readme, name


def test_esp32_struct_sizes_match_readme(host_build: Path) -> None:
    if shutil.which("clang") is None:
        pytest.skip("clang not installed (Debian: apt-get install clang libclang-rt-14-dev)")
    make(host_build, "sizes32")
    s32 = dict(line.split() for line in (host_build / "sizes32.txt").read_text().splitlines())
    s = sizes(host_build)
    readme = (REPO / "firmware" / "README.md").read_text(encoding="utf-8")
    assert s32["spool_t"] == "72"
    for name in STRUCTS:
        assert f"| `{name}` | {s[f'sizeof({name})']} | {s32[name]} |" in readme, name


def test_cloud_ingest_accepts_the_firmware_payloads(host_build: Path) -> None:
    readings = _readings()[:30]
    payload = _c_batch(host_build, "esp32-hall", 7, readings)
    c_parsed = edge_format.parse("edge-gw/esp32-hall/batch", payload)
    py_parsed = edge_format.parse("edge-gw/esp32-hall/batch", wire.encode_batch("esp32-hall", 7, readings))
    assert len(c_parsed.points) == len(readings)
    assert c_parsed.points == py_parsed.points
    for state in ("online", "offline"):
        done = subprocess.run(
            [str(host_build / "wire_batch"), "--status", "esp32-hall", state], capture_output=True, check=False
        )
        assert done.returncode == 0
        assert done.stdout == core_wire.status_payload("esp32-hall", state)
        parsed = edge_format.parse("edge-gw/esp32-hall/status", done.stdout, received_ns=5)
        assert parsed.status is not None
        assert (parsed.status.gateway, parsed.status.state) == ("esp32-hall", state)
