"""Config loading: TOML, then EDGE_GW_* variables, then flags; every error names the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.config import redact_url
from core.settings import ConfigError, as_dict
from edge.config import load_config

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    p = tmp_path / "edge-gw.toml"
    p.write_text(text)
    p.chmod(mode)
    return p


def test_example_config_is_valid_and_complete() -> None:
    cfg = load_config(REPO / "edge-gw.example.toml", environ={})
    assert cfg.gateway.id == "pi-kitchen"
    # "The values shown are the defaults": everything but the required id loads as no file at all does.
    assert cfg == load_config(None, {"gateway.id": "pi-kitchen"}, environ={})
    # Every setting the loader knows appears in the shipped sample, so the sample documents them all.
    text = (REPO / "edge-gw.example.toml").read_text()
    for section, values in as_dict(cfg).items():
        assert f"[{section}]" in text
        for key in values:
            assert f"\n{key} =" in text or f"\n# {key} =" in text, f"{section}.{key} missing from the sample"


def test_precedence_file_env_flag(tmp_path: Path) -> None:
    p = write(tmp_path, '[gateway]\nid = "from-file"\n[uplink]\ninflight = 4\n[source]\ntags = 3\n')
    env = {"EDGE_GW_GATEWAY_ID": "from-env", "EDGE_GW_UPLINK_INFLIGHT": "9"}
    cfg = load_config(p, {"gateway.id": "from-flag"}, environ=env)
    assert cfg.gateway.id == "from-flag"
    assert cfg.uplink.inflight == 9
    assert cfg.source.tags == 3


def test_sizes_and_durations(tmp_path: Path) -> None:
    p = write(tmp_path, '[store]\nmax_bytes = "64MiB"\nmax_age = "2d"\ncommit_interval = "250ms"\n')
    cfg = load_config(p, environ={})
    assert cfg.store.max_bytes == 64 * 2**20
    assert cfg.store.max_age == 172800.0
    assert cfg.store.commit_interval == 0.25


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ('[mqtt]\nkeepalive = "ten"\n', {}, "mqtt.keepalive: expected an integer, got a string 'ten'"),
        ("[mqtt]\nkeepalive = 1\n", {}, "mqtt.keepalive: must be 5..3600 s, got 1"),
        ('[mqtt]\nurl = "http://x"\n', {}, "mqtt.url: expected mqtt://"),
        ('[mqtt]\nca_file = "/nonexistent/ca.pem"\n', {}, "mqtt.ca_file: /nonexistent/ca.pem does not exist"),
        ("[mqtt]\nbogus = 1\n", {}, "mqtt.bogus: unknown key"),
        ("[nope]\nx = 1\n", {}, "nope: unknown section"),
        ('[store]\npolicy = "keep-all"\n', {}, "store.policy: expected drop-oldest or drop-newest"),
        ('[store]\nmax_bytes = "lots"\n', {}, "store.max_bytes: expected a size"),
        ('[gateway]\nid = "a b"\n', {}, "gateway.id: 'a b' must be"),
        ('[gateway]\nid = "dlq"\n', {}, "gateway.id: 'dlq' must be"),
        (
            "",
            {"EDGE_GW_UPLINK_INFLIGHT": "many"},
            "uplink.inflight (from $EDGE_GW_UPLINK_INFLIGHT): expected an integer",
        ),
        ('[source]\nkind = "wifi"\n', {}, "source.kind: expected bleak, simulate or replay:FILE"),
        ("[gateway\n", {}, "is not valid TOML"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(p, environ=env)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_inline_password_needs_private_file(tmp_path: Path) -> None:
    p = write(tmp_path, '[mqtt]\nusername = "gw"\npassword = "s3cret"\n', mode=0o644)
    with pytest.raises(ConfigError, match=r"mqtt.password is set inline .* \(mode 0644\)"):
        load_config(p, environ={})
    p.chmod(0o600)
    cfg = load_config(p, environ={})
    assert cfg.mqtt.credentials()[1] == "s3cret"
    assert as_dict(cfg)["mqtt"]["password"] == "***"


def test_password_file_must_be_0600(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    os.chmod(secret, 0o640)
    p = write(tmp_path, f'[mqtt]\npassword_file = "{secret}"\n')
    cfg = load_config(p, environ={})
    with pytest.raises(ConfigError, match=r"mqtt\.password_file: .* readable by group or others"):
        cfg.mqtt.credentials()[1]
    os.chmod(secret, 0o600)
    assert cfg.mqtt.credentials()[1] == "hunter2"


def test_redact_url() -> None:
    assert redact_url("mqtts://gw:pa55@host:8883") == "mqtts://gw:***@host:8883"
    assert redact_url("mqtt://host") == "mqtt://host"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})


def test_a_percent_escaped_password_in_the_url_is_decoded(tmp_path: Path) -> None:
    from edge.gateway import mqtt_settings

    cfg = load_config(None, {"mqtt.url": "mqtt://gw%2D1:s%40cret%3A%25@broker:1883", "gateway.id": "gw-1"}, environ={})
    s = mqtt_settings(cfg)
    assert (s.username, s.password) == ("gw-1", "s@cret:%")
    assert cfg.mqtt.credentials() == ("gw-1", "s@cret:%")


def test_a_percent_escaped_password_logs_in_to_a_real_broker(tmp_path: Path) -> None:
    import subprocess
    import sys

    from servers import Mosquitto

    passwd = tmp_path / "passwd"
    passwd.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "gw-1", "s@cret:%"], check=True)
    passwd.chmod(0o600)
    broker = Mosquitto(tmp_path / "broker", anonymous=False, extra=[f"password_file {passwd}"]).start()
    try:
        url = f"mqtt://gw-1:s%40cret%3A%25@127.0.0.1:{broker.port}"
        env = {**os.environ, "EDGE_GW_MQTT_URL": url, "EDGE_GW_GATEWAY_ID": "gw-1"}
        proc = subprocess.run([sys.executable, "-m", "edge.cli", "config", "check", "--connect"],
                              capture_output=True, text=True, check=False, env=env)
        assert proc.returncode == 0, proc.stderr
        assert "s@cret" not in proc.stdout + proc.stderr and "s%40cret" not in proc.stdout + proc.stderr
    finally:
        broker.stop()


@pytest.mark.parametrize(("prefix", "ok"), [("ruuvi-lab", True), ("site/a", True), ("site//a", False),
                                            ("ruuvi/lab", False), ("ruuvi", False), ("a/+", False), ("a/#", False)])
def test_topic_prefix_one_rule_for_config_check_and_run(tmp_path: Path, prefix: str, ok: bool) -> None:
    """The wire format reserves only `ruuvi/`; `config check` and `run` apply the same rule, in one line."""
    import subprocess
    import sys

    env = {**os.environ, "EDGE_GW_MQTT_TOPIC_PREFIX": prefix, "EDGE_GW_GATEWAY_ID": "gw-1"}
    for cmd in (["config", "check"], ["run", "--source", "simulate", "--count", "1", "--db", str(tmp_path / "b.db"),
                                      "--mqtt", "mqtt://127.0.0.1:1"]):
        proc = subprocess.run([sys.executable, "-m", "edge.cli", *cmd], capture_output=True, text=True, check=False,
                              env=env, timeout=60)
        if ok:
            assert "mqtt.topic_prefix" not in proc.stderr, proc.stderr
        else:
            assert proc.returncode == 1, proc.stderr
            assert proc.stderr.strip().splitlines() == [
                f"Error: config: mqtt.topic_prefix: topic prefix {prefix!r}: "
                "expected a plain topic path (no wildcards) that is not under 'ruuvi/'"], proc.stderr


def test_state_folder_rule(tmp_path: Path) -> None:
    from core.settings import state_dir

    assert state_dir("edge-gw", {"STATE_DIRECTORY": "/srv/a:/srv/b"}) == Path("/srv/a")  # systemd StateDirectory=
    if os.geteuid() == 0:
        assert state_dir("edge-gw", {}) == Path("/var/lib/edge-gw")
        assert load_config(None, environ={}).gateway.db == "/var/lib/edge-gw/buffer.db"
    else:
        assert state_dir("edge-gw", {"XDG_STATE_HOME": "/x"}) == Path("/x/edge-gw")
        assert state_dir("edge-gw", {"HOME": "/home/u"}) == Path("/home/u/.local/state/edge-gw")
    cfg = load_config(None, environ={"STATE_DIRECTORY": str(tmp_path / "st")})
    assert cfg.gateway.db == str(tmp_path / "st" / "buffer.db")


def test_run_creates_a_missing_buffer_folder_or_says_why_not_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    run = [sys.executable, "-m", "edge.cli", "run", "--gateway-id", "gw-1", "--source", "simulate", "--count", "3",
           "--mqtt", "mqtt://127.0.0.1:1", "--assume-synced"]
    proc = subprocess.run([*run, "--db", str(tmp_path / "some" / "missing" / "dir" / "buffer.db")],
                          capture_output=True, text=True, check=False, timeout=60)
    assert "adverts=3" in proc.stderr, proc.stderr
    assert (tmp_path / "some/missing/dir/buffer.db").is_file()
    assert (tmp_path / "some/missing/dir").stat().st_mode & 0o777 == 0o750
    (tmp_path / "a-file").write_text("")
    proc = subprocess.run([*run, "--db", str(tmp_path / "a-file" / "buffer.db")],
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"Error: config: gateway.db: cannot create the folder {tmp_path / 'a-file'}: File exists"]
    # Without --db (and no config), the state folder: here systemd's, through $STATE_DIRECTORY.
    env = {**os.environ, "STATE_DIRECTORY": str(tmp_path / "state")}
    proc = subprocess.run(run, capture_output=True, text=True, check=False, timeout=60, env=env, cwd=tmp_path)
    assert "adverts=3" in proc.stderr, proc.stderr
    assert (tmp_path / "state" / "buffer.db").is_file()
    assert not (tmp_path / "edge-gw.db").exists()


def test_held_readings_are_reported_by_run_and_by_flush(tmp_path: Path) -> None:
    """On a host whose kernel does not report NTP sync (this VM, most containers), readings are held; run says so
    and flush exits 1 saying why, instead of 'buffer is empty'."""
    import subprocess
    import sys

    from edge.clock import SystemClock

    if SystemClock().synced():
        pytest.skip("this host's clock reports NTP sync: nothing is held")
    db = tmp_path / "b.db"
    base = [sys.executable, "-m", "edge.cli"]
    proc = subprocess.run([*base, "run", "--gateway-id", "gw-1", "--source", "simulate", "--count", "30", "--db",
                           str(db), "--mqtt", "mqtt://127.0.0.1:1"], capture_output=True, text=True, check=False,
                          timeout=60)
    assert "the system clock is not synchronised (NTP): readings are held" in proc.stderr, proc.stderr
    assert "readings are held until the system clock is synchronised" in proc.stderr, proc.stderr
    proc = subprocess.run([*base, "flush", "--gateway-id", "gw-1", "--db", str(db), "--mqtt", "mqtt://127.0.0.1:1"],
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "readings are held until the clock is " \
        "synchronised" in lines[0] and "timedatectl" in lines[0], proc.stderr
