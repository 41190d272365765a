"""Every role variable is documented in its defaults/main.yml and listed in ansible/README.md (geerlingguy style)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ANSIBLE = Path(__file__).resolve().parents[2] / "ansible"
ROLES = sorted(p.name for p in (ANSIBLE / "roles").iterdir() if p.is_dir())


def test_every_role_is_complete_and_used_by_a_playbook() -> None:
    playbooks = "".join(p.read_text() for p in (ANSIBLE / "playbooks").glob("*.yml"))
    assert ROLES == ["cloud_ingest", "edge_gateway", "grafana", "influxdb", "kafka", "mosquitto"]
    for role in ROLES:
        for part in ("defaults/main.yml", "tasks/main.yml", "meta/main.yml"):
            assert (ANSIBLE / "roles" / role / part).is_file(), f"{role} has no {part}"
        assert re.search(rf"^\s*- (role: )?{role}\s*$", playbooks, re.M), f"no playbook applies the role {role}"


@pytest.mark.parametrize("role", ROLES)
def test_role_variables_are_prefixed_commented_and_in_the_readme(role: str) -> None:
    text = (ANSIBLE / "roles" / role / "defaults" / "main.yml").read_text()
    names = list(yaml.safe_load(text))
    readme = (ANSIBLE / "README.md").read_text()
    lines = text.splitlines()
    for name in names:
        assert name.startswith(role + "_"), name
        assert f"| `{name}` |" in readme, f"{name} is missing from ansible/README.md"
        i = next(n for n, line in enumerate(lines) if line.startswith(f"{name}:"))
        assert lines[i - 1].startswith("#"), f"{name} has no comment in defaults/main.yml"
    # Variables the tasks use are either defaults or registered/looped/role vars, never undocumented inputs.
    used = set()
    for f in (ANSIBLE / "roles" / role).rglob("*"):
        if f.suffix in (".yml", ".j2"):
            used |= set(re.findall(rf"\b({role}_[a-z0-9_]+)", f.read_text()))
    internal = set()
    for f in (ANSIBLE / "roles" / role).rglob("*.yml"):
        internal |= set(re.findall(rf"register: ({role}_[a-z0-9_]+)", f.read_text()))
        internal |= set(re.findall(rf"loop_var: ({role}_[a-z0-9_]+)", f.read_text()))
        internal |= set(re.findall(rf"set_fact:\n\s+({role}_[a-z0-9_]+):", f.read_text()))
    role_vars = ANSIBLE / "roles" / role / "vars" / "main.yml"
    if role_vars.exists():
        internal |= set(yaml.safe_load(role_vars.read_text()))
    # A program the role runs and a jar's name (kafka_2.13-<version>.jar), not variables.
    not_variables = {"mosquitto_passwd", "kafka_2"}
    assert used - set(names) - internal - not_variables == set()
