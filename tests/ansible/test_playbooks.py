"""gateways.yml and cloud.yml run for real against a Debian chroot, then the result is checked and started."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import kafka_role_checks as _kafka
import pytest
from provision import HOST, SECRETS, Daemons, Provisioned, owner
from servers import stop_pid
from target import ANSIBLE_DIR, ansible_env, ansible_playbook

# The Kafka role's checks (kafka_role_checks.py) are collected in this module: under pytest-xdist (`--dist loadfile`,
# the Makefile) a module runs on one worker, so the target the session fixture provisions (debootstrap and the
# playbooks, 2-5 minutes) is built once, not once more on another worker. They run first, as they did in their own
# file (sorted before this one).
# In their order there: the last ones replace the jars and switch Kafka off.
kafka_on = _kafka.kafka_on
test_broker_files_users_and_modes = _kafka.test_broker_files_users_and_modes
test_the_runs_format_once_and_make_the_topics_once = _kafka.test_the_runs_format_once_and_make_the_topics_once
test_no_password_in_the_ansible_output = _kafka.test_no_password_in_the_ansible_output
test_the_bridge_and_the_consumer_units = _kafka.test_the_bridge_and_the_consumer_units
test_kafka_units_systemd_analyze_verify_is_silent = _kafka.test_systemd_analyze_verify_is_silent
test_config_check_passes_with_the_kafka_section = _kafka.test_config_check_passes_with_the_kafka_section
test_installed_broker_runs_from_its_unit_and_survives_a_sigkill = \
    _kafka.test_installed_broker_runs_from_its_unit_and_survives_a_sigkill
test_scram_users_added_later_and_a_password_rotated = _kafka.test_scram_users_added_later_and_a_password_rotated
test_kafka_off_leaves_the_receiver_as_it_was = _kafka.test_kafka_off_leaves_the_receiver_as_it_was
test_a_new_jar_set_replaces_the_old_one_and_restarts_the_broker = \
    _kafka.test_a_new_jar_set_replaces_the_old_one_and_restarts_the_broker
test_switching_kafka_off_removes_the_bridge = _kafka.test_switching_kafka_off_removes_the_bridge

UNITS = ("edge-gw.service", "cloud-ingest.service")
# The session fixture (debootstrap and four playbook runs, about 2-3 minutes) is set up inside the first test.
pytestmark = pytest.mark.timeout(900)


def group_members(root: Path, group: str) -> list[str]:
    for line in (root / "etc/group").read_text().splitlines():
        name, _, _, members = line.split(":")
        if name == group:
            return [m for m in members.split(",") if m]
    raise AssertionError(f"no group {group}")


def test_first_run_changes_and_second_run_changes_nothing(provisioned: Provisioned) -> None:
    for book in ("gateways.yml", "cloud.yml"):
        first, second = provisioned.recaps[book]
        assert first["failed"] == 0 and first["unreachable"] == 0
        assert first["changed"] > 10, (book, first)
        assert second["changed"] == 0, (book, second, provisioned.outputs[f"{book} second"][-6000:])
        assert second["failed"] == 0


def test_each_host_gets_only_its_extra(provisioned: Provisioned) -> None:
    """The gateway's venv has the [gateway] extra and no cloud libraries; the receiver's has no bleak."""
    root = provisioned.root.path

    def installed(venv: str) -> set[str]:
        site = next((root / venv.lstrip("/") / "lib").glob("python3*/site-packages"))
        return {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}

    gateway, cloud = installed("/opt/edge-gw"), installed("/opt/cloud-ingest")
    assert {"bleak", "paho_mqtt", "edge_gw"} <= gateway
    assert not gateway & {"gmqtt", "influxdb_client", "pytest", "edge_gw_speedups"}, gateway
    assert {"gmqtt", "influxdb_client", "edge_gw"} <= cloud
    assert not cloud & {"bleak", "dbus_fast", "pytest"}, cloud


def test_the_receiver_runs_the_speedups(provisioned: Provisioned) -> None:
    """cloud_ingest_speedups: true (provision.py): the C extension from the wheelhouse imports in the receiver's venv,
    as its user, and the line protocol encoder takes it."""
    code = ("import edge_gw_speedups, cloud.lineproto; "
            "print(edge_gw_speedups.__file__, cloud.lineproto._c_line is not None)")
    p = subprocess.run(provisioned.root.chroot("/opt/cloud-ingest/bin/python", "-c", code, user="cloud-ingest"),
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    where, c_line = p.stdout.split()
    assert where.startswith("/opt/cloud-ingest/lib/python3") and where.endswith("/edge_gw_speedups/__init__.py")
    assert c_line == "True"


def test_gateway_files_modes_and_user(provisioned: Provisioned) -> None:
    root = provisioned.root.path
    assert owner(root / "etc/edge-gw/edge-gw.toml", root) == ("edge-gw", "edge-gw", "0o600")
    assert owner(root / "etc/edge-gw/mqtt-password", root) == ("edge-gw", "edge-gw", "0o600")
    assert (root / "etc/edge-gw/mqtt-password").read_text() == SECRETS["gateway"] + "\n"
    assert owner(root / "etc/edge-gw", root) == ("root", "edge-gw", "0o750")
    assert owner(root / "var/lib/edge-gw", root) == ("edge-gw", "edge-gw", "0o750")
    assert owner(root / "etc/systemd/system/edge-gw.service", root) == ("root", "root", "0o644")
    assert (root / "opt/edge-gw/bin/edge-gw").is_file()
    passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    assert passwd["edge-gw"][5:] == ["/var/lib/edge-gw", "/usr/sbin/nologin"]
    assert int(passwd["edge-gw"][2]) < 1000  # a system user
    assert "edge-gw" in group_members(root, "bluetooth")
    toml = (root / "etc/edge-gw/edge-gw.toml").read_text()
    assert f'id = "{HOST}"' in toml
    assert f'url = "mqtts://127.0.0.1:{provisioned.ports["mqtts"]}"' in toml
    assert 'ca_file = "/etc/edge-gw/ca.crt"' in toml
    assert SECRETS["gateway"] not in toml  # the password lives in its own 0600 file
    assert "AutoEnable=true" in (root / "etc/bluetooth/main.conf").read_text().splitlines()
    assert (root / "etc/systemd/timesyncd.conf.d/edge-gw.conf").read_text().endswith(
        "[Time]\nNTP=0.debian.pool.ntp.org 1.debian.pool.ntp.org\n")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert os.readlink(wants / "edge-gw.service") == "/etc/systemd/system/edge-gw.service"
    # Enabled as their [Install] sections say: bluetooth by bluetooth.target, timesyncd by sysinit.target.
    assert (root / "etc/systemd/system/bluetooth.target.wants/bluetooth.service").is_symlink()
    assert (root / "etc/systemd/system/sysinit.target.wants/systemd-timesyncd.service").is_symlink()


def test_gateway_unit_is_hardened(provisioned: Provisioned) -> None:
    unit = (provisioned.root.file("etc/systemd/system/edge-gw.service")).read_text().splitlines()
    for line in ("Restart=always", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/edge-gw",
                 "User=edge-gw", "SupplementaryGroups=bluetooth", "AmbientCapabilities=CAP_NET_ADMIN",
                 "CapabilityBoundingSet=CAP_NET_ADMIN",
                 "ExecStart=/opt/edge-gw/bin/edge-gw run --config /etc/edge-gw/edge-gw.toml"):
        assert line in unit
    # edge-gw does not call sd_notify, so a WatchdogSec would kill it: there must be none.
    assert not any(x.startswith("WatchdogSec") for x in unit)


def test_cloud_files_modes_and_users(provisioned: Provisioned) -> None:
    root = provisioned.root.path
    assert owner(root / "etc/mosquitto/edge-gw.passwd", root) == ("root", "mosquitto", "0o640")
    assert owner(root / "etc/mosquitto/edge-gw.passwords", root) == ("root", "root", "0o600")
    assert owner(root / "etc/mosquitto/certs/server.key", root) == ("root", "mosquitto", "0o640")
    hashed = dict(line.split(":", 1) for line in (root / "etc/mosquitto/edge-gw.passwd").read_text().splitlines())
    assert sorted(hashed) == ["cloud-ingest", HOST]
    assert all(h.startswith("$7$101$") for h in hashed.values())  # PBKDF2-SHA512, salted
    conf = (root / "etc/mosquitto/mosquitto.conf").read_text().splitlines()
    for line in ("allow_anonymous false", "persistence true", "max_queued_messages 0", "max_queued_bytes 0",
                 "max_inflight_messages 1000", "queue_qos0_messages true", "autosave_interval 5",
                 f"listener {provisioned.ports['mqtt']} 127.0.0.1",
                 f"listener {provisioned.ports['mqtts']} 127.0.0.1", "certfile /etc/mosquitto/certs/server.crt"):
        assert line in conf
    assert owner(root / "etc/cloud-ingest/cloud-ingest.toml", root) == ("cloud-ingest", "cloud-ingest", "0o600")
    assert owner(root / "etc/cloud-ingest/influx-password", root) == ("cloud-ingest", "cloud-ingest", "0o600")
    assert (root / "etc/cloud-ingest/influx-password").read_text() == SECRETS["receiver_influx"] + "\n"
    toml = (root / "etc/cloud-ingest/cloud-ingest.toml").read_text()
    assert f'url = "http://cloud_ingest@127.0.0.1:{provisioned.ports["influx"]}/ruuvi"' in toml
    influx_conf = (root / "etc/influxdb/influxdb.conf").read_text()
    assert "auth-enabled = true" in influx_conf
    assert f'bind-address = "127.0.0.1:{provisioned.ports["influx"]}"' in influx_conf
    assert owner(root / "etc/grafana/provisioning/datasources/edge-gw.yaml", root) == ("root", "grafana", "0o640")
    dashboards = sorted(p.name for p in (root / "var/lib/grafana/dashboards/edge-gw").iterdir())
    assert dashboards == sorted(p.name for p in (ANSIBLE_DIR.parent / "cloud/grafana").glob("*.json"))


def test_broker_acl_lets_only_the_receiver_confirm(provisioned: Provisioned) -> None:
    """Issue 10: a confirmation deletes a gateway's readings, so only the receiver's identity writes confirm topics;
    a gateway writes its own batch and status and reads its own confirm topic (test_acl.py runs this file's rules on
    a live broker)."""
    root = provisioned.root.path
    assert owner(root / "etc/mosquitto/edge-gw.acl", root) == ("root", "mosquitto", "0o640")
    acl = (root / "etc/mosquitto/edge-gw.acl").read_text()
    assert [x for x in acl.splitlines() if x and not x.startswith("#")] == [
        "user cloud-ingest", "topic read edge-gw/#", "topic read ruuvi/#", "topic read sensors/#",
        "topic write edge-gw/dlq", "topic write edge-gw/+/confirm",
        "topic read $SYS/broker/publish/messages/dropped", "topic read $SYS/broker/uptime",
        "topic write edge-gw/alerts/#", "topic write homeassistant/#", "topic write cloud-ingest/ha/#",
        "pattern write edge-gw/%u/batch", "pattern write edge-gw/%u/status", "pattern read edge-gw/%u/confirm",
        "pattern readwrite homeassistant/+/%u/#", "pattern write edge-gw/%u/ha/#", "pattern read homeassistant/status"]
    # The receiver the playbooks configure logs in as the ACL's user.
    toml = (root / "etc/cloud-ingest/cloud-ingest.toml").read_text()
    assert 'username = "cloud-ingest"' in toml.splitlines()


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_is_silent(provisioned: Provisioned, unit: str) -> None:
    p = provisioned.root.verify_unit(unit)
    # It exits 0 on unknown keys and bad values and only warns, so any output at all is a failure.
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")


def test_systemd_analyze_verify_catches_a_bad_key(provisioned: Provisioned) -> None:
    """The check above is not vacuous: the same call reports a misspelt key (on stderr, still exit 0)."""
    bad = provisioned.root.file("etc/systemd/system/edge-gw-typo.service")
    bad.write_text(provisioned.root.file("etc/systemd/system/edge-gw.service").read_text()
                   .replace("Restart=always", "Restartt=always"))
    try:
        p = provisioned.root.verify_unit("edge-gw-typo.service")
    finally:
        bad.unlink()
    assert p.returncode == 0
    assert "Unknown key 'Restartt' in section [Service], ignoring." in p.stderr


def test_config_check_passes_on_the_rendered_configs(provisioned: Provisioned) -> None:
    r = provisioned.root
    p = subprocess.run(r.chroot("/opt/edge-gw/bin/edge-gw", "config", "check", "--config", "/etc/edge-gw/edge-gw.toml",
                                user="edge-gw"), capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(r.chroot("/opt/cloud-ingest/bin/cloud-ingest", "config", "check", "--config",
                                "/etc/cloud-ingest/cloud-ingest.toml", user="cloud-ingest"),
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr


def test_ansible_lint_production_profile() -> None:
    exe = shutil.which("ansible-lint")
    if exe is None:
        pytest.skip("ansible-lint is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    p = subprocess.run([exe, "--offline", "--profile", "production", "--nocolor"], cwd=ANSIBLE_DIR, env=env,
                       capture_output=True, text=True, check=False, timeout=300)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]


def _influx(port: int, q: str, user: str, password: str) -> tuple[int, dict]:
    data = urllib.parse.urlencode({"q": q, "db": "ruuvi"}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/query", data=data, method="POST")
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_installed_daemons_carry_simulated_readings_end_to_end(provisioned: Provisioned, daemons: Daemons) -> None:
    """Mosquitto, influxd, cloud-ingest and edge-gw, each from the root with its installed config and user."""
    r, ports = provisioned.root, provisioned.ports
    daemons.start("influxd", r.chroot("/usr/bin/influxd", "-config", "/etc/influxdb/influxdb.conf", user="influxdb"),
                  ports["influx"])
    # Started as root, Mosquitto drops to its own user itself (as the packaged unit does).
    daemons.start("mosquitto", r.chroot("/usr/sbin/mosquitto", "-c", "/etc/mosquitto/mosquitto.conf"), ports["mqtts"])
    daemons.start("cloud-ingest", r.chroot("/opt/cloud-ingest/bin/cloud-ingest", "run", "--config",
                                           "/etc/cloud-ingest/cloud-ingest.toml", user="cloud-ingest"),
                  ports["cloud_metrics"])

    # A wrong password is refused by the provisioned broker (mosquitto_pub: 5 = not authorised).
    bad = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(ports["mqtts"]), "--cafile",
                          str(provisioned.workdir / "certs/ca.crt"), "-u", HOST, "-P", "wrong", "-t",
                          f"edge-gw/{HOST}/status", "-m", "x", "-q", "1"], capture_output=True, text=True, check=False)
    assert bad.returncode != 0 and "not authorised" in (bad.stderr + bad.stdout).lower()

    gw = subprocess.run(r.chroot("/opt/edge-gw/bin/edge-gw", "run", "--config", "/etc/edge-gw/edge-gw.toml",
                                 "--source", "simulate", "--tags", "5", "--rate", "400", "--count", "400",
                                 "--assume-synced", "--drain", "30", user="edge-gw"),
                        capture_output=True, text=True, check=False, timeout=90)
    assert gw.returncode == 0, gw.stderr[-3000:]
    m = re.search(r"committed=(\d+)", gw.stdout + gw.stderr)
    assert m, gw.stdout + gw.stderr
    committed = int(m.group(1))
    assert committed > 0
    assert f"connected to mqtts://{HOST}@127.0.0.1:{ports['mqtts']}" in gw.stderr

    # Grafana's read-only user sees every committed reading once cloud-ingest has written them.
    deadline = time.monotonic() + 30
    count = 0
    while time.monotonic() < deadline:
        status, body = _influx(ports["influx"], "SELECT count(rssi) FROM ruuvi", "grafana", SECRETS["grafana"])
        assert status == 200, body
        series = body["results"][0].get("series")
        count = series[0]["values"][0][1] if series else 0
        if count >= committed:
            break
        time.sleep(0.3)
    assert count == committed, daemons.log("cloud-ingest")[-3000:]
    tags = _influx(ports["influx"], 'SHOW TAG VALUES FROM ruuvi WITH KEY = "gateway"', "grafana", SECRETS["grafana"])
    assert tags[1]["results"][0]["series"][0]["values"] == [["gateway", HOST]]

    # The users have exactly their privileges: the receiver cannot read, Grafana cannot write.
    status, body = _influx(ports["influx"], "SELECT count(rssi) FROM ruuvi", "cloud_ingest", SECRETS["receiver_influx"])
    assert status == 403 and "requires READ" in body["error"]
    status, body = _influx(ports["influx"], "DROP MEASUREMENT ruuvi", "grafana", SECRETS["grafana"])
    assert status == 403


def _bump_wheel_version(wheels: Path, dest: Path, version: str) -> Path:
    """The same code as a new release: the edge-gw wheel re-labelled `version`, with its dependencies, as a tar."""
    src = next(wheels.glob("edge_gw-*.whl"))
    old = src.name.split("-")[1]
    out = dest / "wheels"
    out.mkdir(parents=True)
    for whl in wheels.glob("*.whl"):
        if whl != src:
            shutil.copy(whl, out / whl.name)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out / src.name.replace(old, version), "w",
                                                       zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            name = item.filename.replace(f"edge_gw-{old}.dist-info", f"edge_gw-{version}.dist-info")
            if name.endswith((".dist-info/METADATA", ".dist-info/RECORD")):
                data = data.replace(f"Version: {old}".encode(), f"Version: {version}".encode())
                data = data.replace(f"edge_gw-{old}.dist-info".encode(), f"edge_gw-{version}.dist-info".encode())
            zout.writestr(name, data)
    archive = dest / "wheelhouse.tar"
    with tarfile.open(archive, "w") as tar:
        for whl in sorted(out.glob("*.whl")):
            tar.add(whl, arcname=whl.name)
    return archive


def test_upgrade_in_place_restarts_and_keeps_the_buffer(provisioned: Provisioned, daemons: Daemons) -> None:
    """Readings buffered while the broker is down survive an upgrade and are delivered by the new version."""
    if "cloud-ingest" not in daemons.procs:
        pytest.skip("needs the daemons of the end-to-end test")
    r, ports = provisioned.root, provisioned.ports
    stop_pid(daemons.procs.pop("mosquitto"))
    gw = subprocess.run(r.chroot("/opt/edge-gw/bin/edge-gw", "run", "--config", "/etc/edge-gw/edge-gw.toml",
                                 "--source", "simulate", "--tags", "5", "--seed", "2", "--rate", "400",
                                 "--count", "200", "--assume-synced", user="edge-gw"),
                        capture_output=True, text=True, check=False, timeout=90)
    assert gw.returncode == 0, gw.stderr[-3000:]
    buffered = int(re.search(r"committed=(\d+)", gw.stdout + gw.stderr).group(1))  # type: ignore[union-attr]
    assert buffered > 0
    buffer_db = r.file("var/lib/edge-gw/buffer.db")
    inode = buffer_db.stat().st_ino

    archive = _bump_wheel_version(provisioned.workdir / "wheels", provisioned.workdir / "upgrade", "0.1.1")
    env = ansible_env(provisioned.workdir, provisioned.collections)
    recap, out = ansible_playbook(ANSIBLE_DIR / "playbooks" / "gateways.yml", provisioned.inventory, env,
                                  extra_vars={"edge_gateway_package": "edge-gw[gateway]==0.1.1",
                                              "edge_gateway_wheelhouse": str(archive)})
    assert recap["failed"] == 0 and recap["changed"] == 3, out[-4000:]  # archive, unpack, pip
    assert "changed: [gw-test-1]" in out.split("TASK [edge_gateway : Install edge-gw into its venv.]")[1][:300]
    assert "RUNNING HANDLER [edge_gateway : Restart edge-gw.]" in out  # skipped in the chroot, run on a real host
    site = next(r.file("opt/edge-gw/lib").glob("python3*/site-packages"))
    assert sorted(p.name for p in site.glob("edge_gw-*.dist-info")) == ["edge_gw-0.1.1.dist-info"]
    assert buffer_db.stat().st_ino == inode  # the buffer file was not replaced

    daemons.start("mosquitto", r.chroot("/usr/sbin/mosquitto", "-c", "/etc/mosquitto/mosquitto.conf"), ports["mqtts"])
    before = _influx(ports["influx"], "SELECT count(rssi) FROM ruuvi", "grafana", SECRETS["grafana"])[1]
    before_n = before["results"][0]["series"][0]["values"][0][1]
    flush = subprocess.run(r.chroot("/opt/edge-gw/bin/edge-gw", "flush", "--config", "/etc/edge-gw/edge-gw.toml",
                                    "--timeout", "60", user="edge-gw"),
                           capture_output=True, text=True, check=False, timeout=90)
    assert flush.returncode == 0, flush.stderr[-3000:]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = _influx(ports["influx"], "SELECT count(rssi) FROM ruuvi", "grafana", SECRETS["grafana"])[1]
        if now["results"][0]["series"][0]["values"][0][1] >= before_n + buffered:
            break
        time.sleep(0.3)
    assert now["results"][0]["series"][0]["values"][0][1] == before_n + buffered


def test_password_rotation_rehashes_and_resets_only_what_changed(provisioned: Provisioned, daemons: Daemons) -> None:
    """New secrets in the inventory: the broker's hash file and the InfluxDB password change, nothing else breaks."""
    if "cloud-ingest" not in daemons.procs:
        pytest.skip("needs the daemons of the end-to-end test")
    r, ports = provisioned.root, provisioned.ports
    # The role starts its own temporary influxd on the same data directory in a chroot: stop ours first.
    stop_pid(daemons.procs.pop("influxd"))
    new_gw, new_grafana = "gw-rotated 2", "grafana-rotated'2"
    recap, out = ansible_playbook(ANSIBLE_DIR / "playbooks" / "cloud.yml", provisioned.inventory,
                                  ansible_env(provisioned.workdir, provisioned.collections),
                                  extra_vars={"vault_gateway_mqtt_passwords": {HOST: new_gw},
                                              "vault_influxdb_grafana_password": new_grafana})
    assert recap["failed"] == 0, out[-4000:]

    def outcomes(task: str) -> list[str]:
        """The first result line of each run of the task (an included task runs once per loop item)."""
        return [re.findall(r"^(changed|ok|skipping): ", seg, re.M)[0] for seg in out.split(f"TASK [{task}]")[1:]]

    assert outcomes("mosquitto : Write the clear-text password list (root only; the broker reads the hashed file).") \
        == ["changed"]
    assert outcomes("mosquitto : Hash the password file.") == ["changed"]
    assert outcomes("mosquitto : Write the ACL.") == ["ok"]
    assert outcomes("influxdb : Create the admin user.") == ["skipping"]
    # Included once per user: the receiver's password is unchanged, Grafana's is set anew.
    assert outcomes("influxdb : Create the user or set its password.") == ["skipping", "changed"]
    assert outcomes("grafana : Provision the datasources.") == ["changed"]

    daemons.start("influxd", r.chroot("/usr/bin/influxd", "-config", "/etc/influxdb/influxdb.conf", user="influxdb"),
                  ports["influx"])
    assert _influx(ports["influx"], "SHOW DATABASES", "grafana", new_grafana)[0] == 200
    assert _influx(ports["influx"], "SHOW DATABASES", "grafana", SECRETS["grafana"])[0] == 401
    assert _influx(ports["influx"], "SHOW DATABASES", "cloud_ingest", SECRETS["receiver_influx"])[0] == 200

    stop_pid(daemons.procs.pop("mosquitto"))
    daemons.start("mosquitto", r.chroot("/usr/sbin/mosquitto", "-c", "/etc/mosquitto/mosquitto.conf"), ports["mqtts"])

    def publish(password: str) -> int:
        return subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(ports["mqtts"]), "--cafile",
                               str(provisioned.workdir / "certs/ca.crt"), "-u", HOST, "-P", password, "-q", "1",
                               "-t", f"edge-gw/{HOST}/rotation", "-m", "x"],
                              capture_output=True, check=False).returncode

    assert publish(new_gw) == 0
    assert publish(SECRETS["gateway"]) != 0
