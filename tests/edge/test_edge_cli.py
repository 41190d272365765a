"""The edge-gw CLI: decode output and exit codes, and that every command is documented."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from cli_commands import all_commands, check_readme_table
from click.testing import CliRunner

from edge.cli import cli

REPO = Path(__file__).resolve().parents[2]
VECTORS = json.loads((REPO / "tests/vectors/ruuvi.json").read_text())


@pytest.mark.parametrize("vector", [v for v in VECTORS if "expected" in v], ids=lambda v: f"{v['format']}-{v['name']}")
def test_decode_prints_the_vector(vector: dict) -> None:
    result = CliRunner().invoke(cli, ["decode", vector["hex"].upper()])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed == vector["expected"]
    assert list(printed) == list(vector["expected"])


def test_decode_accepts_company_id_and_whole_advert() -> None:
    payload = "0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F"
    plain = CliRunner().invoke(cli, ["decode", payload]).output
    assert CliRunner().invoke(cli, ["decode", "9904" + payload]).output == plain
    assert CliRunner().invoke(cli, ["decode", "0201061BFF9904" + payload]).output == plain
    assert json.loads(plain)["temperature"] == 24.3


def test_decode_derived() -> None:
    out = json.loads(
        CliRunner().invoke(cli, ["decode", "--derived", "0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F"]).output
    )
    assert out["dew_point"] == pytest.approx(14.262, abs=0.001)
    assert out["absolute_humidity"] == pytest.approx(11.839, abs=0.001)


@pytest.mark.parametrize("bad", ["zz", "05", "0512", "", "07" + "00" * 23])
def test_decode_bad_input_exits_2_with_one_line(bad: str) -> None:
    # A real process, so the exit status and stderr are what a shell sees.
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", "decode", bad], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")


def test_every_command_has_help_and_is_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    commands = all_commands(cli)
    assert {name for name, _ in commands} >= {"run", "flush", "status", "scan", "decode", "config check"}
    for name, cmd in commands:
        assert cmd.help and cmd.help.strip(), f"edge-gw {name} has no help text"
        if not isinstance(cmd, click.Group):
            assert re.search(rf"edge-gw {re.escape(name)}\b", readme), f"edge-gw {name} is not in the README"
            result = CliRunner().invoke(cli, [*name.split(), "--help"])
            assert result.exit_code == 0


def test_the_readme_cli_table_matches_each_commands_help() -> None:
    check_readme_table(cli, "edge-gw", (REPO / "README.md").read_text())


def test_config_check_hides_secrets(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[gateway]\nid = "gw1"\n[mqtt]\nurl = "mqtt://gw1:topsecret@127.0.0.1:1883"\npassword = "alsosecret"\n'
    )
    cfg.chmod(0o600)
    result = CliRunner().invoke(cli, ["config", "check", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "topsecret" not in result.output and "alsosecret" not in result.output
    assert json.loads(result.output.split("config ok")[0])["gateway"]["id"] == "gw1"


def test_config_check_bad_key_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[uplink]\ninflight = 0\n")
    result = CliRunner().invoke(cli, ["config", "check", "--config", str(cfg)])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: config: uplink.inflight: must be 1..1000, got 0"
