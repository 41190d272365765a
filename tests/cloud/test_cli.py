"""The cloud-ingest CLI: every command documented, config errors name the key, status output and exit codes."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import click
import pytest
from cli_commands import all_commands, check_readme_table
from click.testing import CliRunner

from cloud import status
from cloud.cli import EXIT_NOT_RUNNING, cli

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "cloud-ingest.md"


def test_every_command_has_help_and_is_documented() -> None:
    doc = DOC.read_text()
    runner = CliRunner()
    found = all_commands(cli)
    assert {p for p, _ in found} >= {"run", "setup", "status", "config", "config check"}
    for path, cmd in found:
        assert cmd.help and len(cmd.help.strip()) > 20, path
        result = runner.invoke(cli, [*path.split(), "--help"])
        assert result.exit_code == 0, result.output
        assert cmd.help.strip().splitlines()[0][:40] in " ".join(result.output.split())
        if not isinstance(cmd, click.Group):
            assert f"`cloud-ingest {path}`" in doc, f"docs/cloud-ingest.md does not document `cloud-ingest {path}`"
            for param in cmd.params:
                if isinstance(param, click.Option) and param.name != "help":
                    assert param.help, f"{path} {param.opts}"


def test_run_flags_are_in_the_docs() -> None:
    doc = DOC.read_text()
    run = cli.commands["run"]
    for param in run.params:
        if isinstance(param, click.Option) and param.name not in ("help", "config"):
            assert f"`{param.opts[0]}" in doc, param.opts[0]


def test_config_check_prints_the_effective_settings_without_secrets(tmp_path: Path) -> None:
    env = {k: "" for k in os.environ if k.startswith("CLOUD_INGEST_")}
    result = CliRunner().invoke(cli, ["config", "check", "--set", "influx.url=http://u:topsecret@db:8086/iot",
                                      "--set", "mqtt.shared_group=g", "--set", "mqtt.receive_maximum=300"], env=env)
    assert result.exit_code == 0, result.output
    assert "topsecret" not in result.output
    data = json.loads(result.stdout.split("config ok")[0])
    assert data["influx"]["url"] == "http://u:***@db:8086/iot"
    assert data["mqtt"]["subscriptions"][0] == "$share/g/edge-gw/+/batch"
    assert data["batch"]["effective_max_messages"] == 150


def test_config_errors_name_the_key_and_exit_1(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[batch]\nmax_points = -5\n")
    result = CliRunner().invoke(cli, ["config", "check", "-c", str(cfg)])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: config: batch.max_points: must be 1..1000000, got -5"
    result = CliRunner().invoke(cli, ["config", "check"], env={"CLOUD_INGEST_MQTT_QOS": "2"})
    assert result.exit_code == 1
    assert "mqtt.qos: must be 1" in result.output
    result = CliRunner().invoke(cli, ["run", "--influx", "ftp://x/y", "--status-file", str(tmp_path / "s.json")])
    assert result.exit_code == 1 and "influx.url (from the command line)" not in result.output
    assert "influx.url: expected http://" in result.output
    (tmp_path / "a-file").write_text("")
    result = CliRunner().invoke(cli, ["run", "--status-file", str(tmp_path / "a-file" / "s.json")])
    assert result.exit_code == 1
    assert f"status.file: cannot create the folder {tmp_path / 'a-file'}: " in result.output
    result = CliRunner().invoke(cli, ["config", "check", "--set", "nonsense"])
    assert result.exit_code == 2 and "SECTION.KEY=VALUE" in result.output


def test_run_kafka_refuses_what_publishes_over_mqtt_in_one_line(tmp_path: Path) -> None:
    """Alerts and Home Assistant publish over MQTT and the HTTP listener feeds the MQTT-side parsers: `run --kafka`
    has none of those, so each is a config error naming the key, before anything starts."""
    base = ["run", "--kafka", "127.0.0.1:9092", "--status-file", str(tmp_path / "s.json")]
    env = {k: "" for k in os.environ if k.startswith("CLOUD_INGEST_")}
    rule = tmp_path / "rules.toml"
    rule.write_text('[[alerts.rules]]\nname = "hot"\nkind = "threshold"\nfield = "temperature"\nop = ">"\n'
                    'value = 30.0\n')
    cases = {
        ("-c", str(rule)): "Error: config: alerts.rules: alerts publish over MQTT, not available with --kafka "
                           "(run them in an MQTT receiver, or remove the rules)",
        ("--set", "homeassistant.enabled=true"): "Error: config: homeassistant.enabled: Home Assistant discovery "
                                                 "publishes over MQTT, not available with --kafka",
        ("--set", "http.listen=127.0.0.1:0", "--set", "http.auth=none"):
            "Error: config: http.listen: the Ruuvi Gateway HTTP listener is not available with --kafka",
        ("--set", "kafka.session_timeout=0"): "Error: config: kafka.session_timeout: must be 1 s..1 h, got 0.0",
    }
    for extra, error in cases.items():
        result = CliRunner().invoke(cli, [*base, *extra], env=env)
        assert result.exit_code == 1, result.output
        assert result.output.strip() == error


def test_status_says_not_running_without_a_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["status", "--status-file", str(tmp_path / "status.json")])
    assert result.exit_code == EXIT_NOT_RUNNING
    assert result.output.startswith("receiver: NOT RUNNING (no status file at")


def test_status_shows_queue_last_write_gateways_and_dead_letters(tmp_path: Path) -> None:
    now = time.time_ns()
    st = status.Status(
        client_id="rx-1", pid=4242, started_ns=now - 60 * 10**9, updated_ns=now, mqtt_connected=True, sink_state="ok",
        queue_batches=1, queue_points=250, inflight_messages=12, last_write_ns=now - 2 * 10**9,
        last_batch_points=5000, received_messages=70, received_readings=12000, written=11900, dead_letters=3,
        duplicates=100, redeliveries=2, resent_points=7, confirmations=4, confirmed_seqs=9, held_back_reconnects=1,
        gateways={
            "pi-kitchen": status.GatewayState(last_seen_ns=now - 10**9, state="online", readings=8000, duplicates=0),
            "c8:25:2d:8e:9c:2c": status.GatewayState(last_seen_ns=now - 20 * 60 * 10**9, state="unknown",
                                                     readings=4000, duplicates=100),
            "pi-garage": status.GatewayState(last_seen_ns=now - 10**9, state="offline", readings=0),
        },
    )
    path = tmp_path / "status.json"
    status.write(path, st)
    result = CliRunner().invoke(cli, ["status", "--status-file", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert re.fullmatch(r"receiver: +running \(client id rx-1, pid 4242, status updated \d\.\d s ago\)", lines[0])
    assert lines[1:12] == [
        "mqtt:           connected",
        "database:       ok",
        "queue:          1 batches, 250 points, 12 messages not acknowledged",
        "last write:     2.0 s ago (5000 points)",
        "received:       70 messages, 12000 readings, 1 reconnects for a message the broker held back",
        "written:        11900 points",
        "dead letters:   3 (0 readings refused on their own)",
        "duplicates:     100 (cross-gateway), 7 points written before (re-sent), 2 messages redelivered (DUP)",
        "confirmed:      9 edge-gw batches, in 4 messages",
        "broker drops:   unknown: not seen yet",
        "gateways:       3",
    ]
    assert lines[12:] == [
        "  c8:25:2d:8e:9c:2c  OFFLINE  last seen 20.0 min ago, 4000 readings, 100 duplicates",
        "  pi-garage          OFFLINE  last seen 1.0 s ago, 0 readings, 0 duplicates",
        "  pi-kitchen         online   last seen 1.0 s ago, 8000 readings, 0 duplicates",
    ]
    result = CliRunner().invoke(cli, ["status", "--status-file", str(path), "--json"])
    assert json.loads(result.output)["dead_letters"] == 3
    # A file nobody updates any more: the receiver is gone.
    st.updated_ns = now - 60 * 10**9
    status.write(path, st)
    result = CliRunner().invoke(cli, ["status", "--status-file", str(path)])
    assert result.exit_code == EXIT_NOT_RUNNING
    assert result.output.startswith("receiver:       NOT RUNNING")
    assert "mqtt:           disconnected" in result.output


@pytest.mark.parametrize("cmd", [["run"], ["setup"], ["status"], ["config", "check"]])
def test_config_file_option_everywhere(cmd: list[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[nope]\n")
    result = CliRunner().invoke(cli, [*cmd, "-c", str(bad)])
    assert result.exit_code == 1 and "nope: unknown section" in result.output


def test_the_readme_cli_table_matches_each_commands_help() -> None:
    check_readme_table(cli, "cloud-ingest", (Path(__file__).resolve().parents[2] / "README.md").read_text())
