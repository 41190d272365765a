"""libFuzzer runs of the firmware core (clang, -fsanitize=fuzzer,address,undefined), bounded in time.

`fuzz_decode` starts from the shared decoder vectors, `fuzz_confirm` from the confirmation vectors, `fuzz_spool`
from real spool images written by `spool_seeds` (random bytes almost never carry a valid CRC). Inputs that once
crashed a target are kept in firmware/fuzz/regressions/ and replayed first. FIRMWARE_FUZZ_SECONDS sets the time
per target (default 20).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REGRESSIONS = REPO / "firmware" / "fuzz" / "regressions"
SECONDS = int(os.environ.get("FIRMWARE_FUZZ_SECONDS", "20"))


def seed_decode(corpus: Path) -> None:
    vectors = json.loads((REPO / "tests" / "vectors" / "ruuvi.json").read_text(encoding="utf-8"))
    for i, v in enumerate(vectors):
        payload = bytes.fromhex(v["hex"])
        (corpus / f"vector-{i}").write_bytes(payload)
        (corpus / f"adv-{i}").write_bytes(b"\x02\x01\x06" + bytes([len(payload) + 3, 0xFF, 0x99, 0x04]) + payload)


def seed_confirm(corpus: Path) -> None:
    confirm = json.loads((REPO / "tests" / "vectors" / "confirm.json").read_text(encoding="utf-8"))
    for i, case in enumerate(confirm["parse"]):
        (corpus / f"parse-{i}").write_text(case["payload"], encoding="utf-8")
    for i, case in enumerate(confirm["encode"]):
        for k, msg in enumerate(case["messages"]):
            # The target confirms for "pi-kitchen".
            (corpus / f"encode-{i}-{k}").write_text(msg.replace(case["gateway"], "pi-kitchen", 1), encoding="utf-8")


def seed_spool(corpus: Path, fuzz_build: Path) -> None:
    done = subprocess.run(
        [str(fuzz_build / "spool_seeds"), str(corpus)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("target", ["fuzz_decode", "fuzz_spool", "fuzz_confirm"])
def test_fuzz_target(fuzz_build: Path, tmp_path: Path, target: str) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    if target == "fuzz_decode":
        seed_decode(corpus)
    elif target == "fuzz_confirm":
        seed_confirm(corpus)
    else:
        seed_spool(corpus, fuzz_build)
    regressions = REGRESSIONS / target.removeprefix("fuzz_")
    for crash in sorted(regressions.glob("*")) if regressions.is_dir() else []:
        replay = subprocess.run(
            [str(fuzz_build / target), str(crash)], capture_output=True, text=True, timeout=60, check=False
        )
        assert replay.returncode == 0, f"regression {crash.name}:\n{replay.stderr[-3000:]}"
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    cmd = [
        str(fuzz_build / target),
        f"-max_total_time={SECONDS}",
        "-timeout=10",
        "-rss_limit_mb=1024",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
        str(corpus),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS + 120, check=False)
    crashes = sorted(p.name for p in artifacts.iterdir())
    assert done.returncode == 0 and not crashes, f"{target} found {crashes}:\n{done.stderr[-4000:]}"
    # -print_final_stats=1 ends with "stat::number_of_executed_units: N".
    runs = [int(line.rsplit(":", 1)[1]) for line in done.stderr.splitlines() if line.startswith("stat::number_of_exec")]
    assert runs and runs[0] > 1000
