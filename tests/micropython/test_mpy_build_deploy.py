"""Build with mpy-cross (edge.mpy), load the .mpy files in the WebAssembly port, and drive that port's REPL with
the real mpremote over a loopback socket (bridge.mjs). `cp` to flash and `reset` need real hardware."""

from __future__ import annotations

import importlib.util
import json
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from mpy_harness import BOARD, FAKES, HERE, ROOT, MicroPython

from edge import mpy
from edge.cli import cli

MODULES = ["config", "gateway", "mqtt", "net", "ring", "ruuvi", "scanner", "timebase", "wire"]
DF5 = "0512fc5394c37c0004fffc040cac364200cdcbb8334c884f"
DF5_JSON = (
    '{"data_format":5,"temperature":24.3,"humidity":53.49,"pressure":100044,"acceleration_x":4,'
    '"acceleration_y":-4,"acceleration_z":1036,"battery_voltage":2977,"tx_power":4,"movement_counter":66,'
    '"measurement_sequence_number":205,"mac":"cb:b8:33:4c:88:4f"}'
)


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("build") / "micropython"
    mpy.build(out)
    return out


def test_build_compiles_every_module_for_esp32(build_dir: Path) -> None:
    assert sorted(p.name for p in build_dir.iterdir()) == sorted([f"{m}.mpy" for m in MODULES] + ["main.py"])
    for m in MODULES:
        header = (build_dir / f"{m}.mpy").read_bytes()[:4]
        assert header[:2] == b"M\x06", m  # .mpy version 6 (MicroPython >= 1.22)
    assert (build_dir / "main.py").read_bytes() == (BOARD / "main.py").read_bytes()
    # every board source file is either compiled or shipped as source
    assert sorted(p.stem for p in BOARD.glob("*.py") if p.name != "manifest.py") == sorted([*MODULES, "main"])


def test_build_removes_stale_modules_and_reports_errors(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "main.py").write_text("import good\n")
    (src / "good.py").write_text("X = 1\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "gone.mpy").write_bytes(b"M\x06old")
    assert [p.name for p in mpy.build(out, source_dir=src)] == ["good.mpy", "main.py"]
    assert sorted(p.name for p in out.iterdir()) == ["good.mpy", "main.py"]
    (src / "bad.py").write_text("def f(:\n")
    error = r"mpy-cross failed on bad.py: File .*bad.py\", line 1 SyntaxError: invalid syntax$"
    with pytest.raises(mpy.MpyError, match=error):
        mpy.build(out, source_dir=src)


def test_the_built_mpy_files_load_and_run_in_micropython(mpy: MicroPython, build_dir: Path) -> None:
    vectors = [v for v in json.loads((ROOT / "tests/vectors/ruuvi.json").read_text()) if "expected" in v]
    code = r"""
import json, ruuvi, gateway, ring, wire, mqtt
from binascii import unhexlify
from testkit import make, adv_data, df5, mac
print("@" + json.dumps([m.__file__ for m in (ruuvi, gateway, ring, wire, mqtt)]))
vectors = json.load(open("/data/v.json"))
print("@" + json.dumps([ruuvi.fields_json(unhexlify(v["hex"])) for v in vectors]))
gw, ble = make()
ble.inject(mac(1), -60, adv_data(df5(3)))
gw.poll_ble()
await gw.uplink_step()
gw.ring.flush()
await gw.uplink_step()
print("@" + json.dumps([gw.acked, gw.batches]))
"""
    files, fields, counts = mpy.run_json(code, board=build_dir, files={"/data/v.json": json.dumps(vectors).encode()})
    assert files == [f"/app/{m}.mpy" for m in ("ruuvi", "gateway", "ring", "wire", "mqtt")]
    assert fields == [json.dumps(v["expected"], separators=(",", ":")) for v in vectors]
    assert counts == [1, 1]


def test_deploy_command_is_one_chained_mpremote_call(build_dir: Path) -> None:
    cmds = mpy.deploy_command("/dev/ttyUSB0", Path("my-board.json"), build_dir)
    files = [str(build_dir / f"{m}.mpy") for m in MODULES] + [str(build_dir / "main.py")]
    copy_config = ["cp", "my-board.json", ":config.json"]
    assert cmds == [["mpremote", "connect", "/dev/ttyUSB0", "cp", *files, ":", "+", *copy_config, "+", "reset"]]
    with pytest.raises(mpy.MpyError, match=r"no \.mpy files"):
        mpy.deploy_command("/dev/ttyUSB0", Path("my-board.json"), build_dir.parent / "empty")


def test_cli_dry_run_and_config_check(build_dir: Path, tmp_path: Path) -> None:
    good = tmp_path / "board.json"
    good.write_text(json.dumps({"gateway_id": "esp32-1", "wifi": {"ssid": "lab"}, "broker": {"host": "b.lan"}}))
    args = ["mpy", "deploy", "--port", "/dev/ttyACM0", "--config", str(good), "--build-dir", str(build_dir)]
    result = CliRunner().invoke(cli, [*args, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"mpremote connect /dev/ttyACM0 cp {build_dir}/config.mpy ")
    assert result.output.endswith(f"main.py : + cp {good} :config.json + reset\n")
    assert mpy.check_config(good)["broker"] == {
        "host": "b.lan",
        "port": 1883,
        "tls": False,
        "ca_file": None,
        "insecure": False,
        "username": "esp32-1",
        "password": None,
        "keepalive_s": 60,
        "timeout_s": 10,
    }
    bad = tmp_path / "bad.json"
    bad.write_text('{"gateway_id": "a/b"}')
    with pytest.raises(mpy.MpyError, match=r"(?s)config.json is not valid:.*gateway_id must be"):
        mpy.deploy("/dev/ttyUSB0", bad, build_dir)  # refused before mpremote runs


# ---- mpremote against the WebAssembly REPL ------------------------------------------------------------------------


def mpremote() -> list[str]:
    found = shutil.which("mpremote")
    return [found] if found else [sys.executable, "-m", "mpremote"]


@pytest.fixture
def bridge(node: str, build_dir: Path) -> Iterator[str]:
    proc = subprocess.Popen(
        [node, str(HERE / "bridge.mjs"), "--mount", f"{FAKES}:/fakes", "--mount", f"{build_dir}:/app"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=HERE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening "), line
        yield f"socket://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.kill()
        proc.wait(5)


def run_mpremote(device: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*mpremote(), "connect", device, "resume", *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_mpremote_exec_and_run_against_the_wasm_repl(bridge: str, tmp_path: Path) -> None:
    r = run_mpremote(bridge, "exec", f"import ruuvi, binascii; print(ruuvi.fields_json(binascii.unhexlify('{DF5}')))")
    assert (r.returncode, r.stdout) == (0, DF5_JSON + "\n"), r.stderr

    script = tmp_path / "status.py"
    script.write_text(
        "from testkit import make, adv_data, df5, mac\n"
        "gw, ble = make()\n"
        "for i in range(3):\n"
        "    ble.inject(mac(i), -60, adv_data(df5(i)))\n"
        "gw.poll_ble()\n"
        "print(gw.status_line().split(' heap_free')[0])\n"
    )
    r = run_mpremote(bridge, "run", str(script))
    assert r.returncode == 0, r.stderr
    assert r.stdout == (
        "buffer=0/128 pending=3 dropped=0 lost=0 last_ack=never acked=0 batches=0 unconfirmed=0 oldest_unconfirmed=0s "
        "bad_confirms=0 tags=3 adverts=3 dup=0 bad=0\n"
    )

    r = run_mpremote(bridge, "ls", ":/app")
    assert r.returncode == 0, r.stderr
    assert sorted(line.split()[-1] for line in r.stdout.splitlines()[1:]) == sorted(
        [f"{m}.mpy" for m in MODULES] + ["main.py"]
    )


def test_tls_without_a_ca_file_is_refused_unless_insecure_is_asked_for(tmp_path: Path) -> None:
    """micropython/mqtt.py used to turn certificate checking off in silence when TLS had no ca_file."""
    base = {"gateway_id": "esp32-1", "wifi": {"ssid": "lab"}}
    cfg = tmp_path / "board.json"
    cfg.write_text(json.dumps({**base, "broker": {"host": "b.lan", "tls": True}}))
    with pytest.raises(mpy.MpyError, match=r"broker\.tls needs broker\.ca_file to verify the broker; set "
                                           r"broker\.insecure = true"):
        mpy.check_config(cfg)
    cfg.write_text(json.dumps({**base, "broker": {"host": "b.lan", "tls": True, "insecure": True}}))
    assert mpy.check_config(cfg)["broker"]["port"] == 8883  # type: ignore[index]
    cfg.write_text(json.dumps({**base, "broker": {"host": "b.lan", "tls": True, "ca_file": "/ca.pem"}}))
    assert mpy.check_config(cfg)["broker"]["insecure"] is False  # type: ignore[index]
    cfg.write_text(json.dumps({**base, "broker": {"host": "b.lan", "insecure": "yes"}}))
    with pytest.raises(mpy.MpyError, match=r"broker\.insecure must be true or false"):
        mpy.check_config(cfg)
    # The context itself refuses too (CPython runs the board module as it is).
    spec = importlib.util.spec_from_file_location("_board_mqtt", ROOT / "micropython" / "mqtt.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(ValueError, match="TLS without a CA file"):
        mod.tls_context(None)
    assert mod.tls_context(None, True).verify_mode == ssl.CERT_NONE
