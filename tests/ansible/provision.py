"""The provisioned test target: debootstrap root, both playbooks run twice, daemons started on demand (fixtures).

The root (about 40 s to make) and the playbook runs are shared by every test in tests/ansible and removed at the end
of the session. Needs root (debootstrap, chroot, mount), debootstrap, ansible-core and network access to the Debian
mirror (apt in the target) and to PyPI (the wheelhouse and the collections, unless ANSIBLE_COLLECTIONS_PATH has them).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))

from kafka_server import kafka_jars, pom_digest
from servers import _wait_tcp, free_port, stop_pid
from target import (
    ANSIBLE_DIR,
    Root,
    ansible_env,
    ansible_playbook,
    certificates,
    collections,
    wheelhouse,
)

HOST = "gw-test-1"
SECRETS = {
    "gateway": "gw-Secret 1'x",  # a quote and a space: the templates must escape them
    "receiver_mqtt": "rx-mqtt-secret",
    "admin": "admin-secret",
    "receiver_influx": "rx-influx'secret",
    "grafana": "grafana-secret",
}
# SCRAM-SHA-512 users of the Kafka role's SASL_SSL listener, made when the storage is formatted. The receiver's has a
# space, a quote, a backslash and an equals sign: the format argument, the login check's client config (JAAS inside a
# properties file) and the --add-config argument must each pass them through unchanged. Distinct texts, so that a
# leak of any of them shows.
KAFKA_USERS = {
    "cloud-ingest": "kc-Secret 2'x\\y=z",
    "ruuvi-remote": "rr-secret-K8pQ2w",
}


def kafka_jars_ready() -> bool:
    """The controller's Kafka jar set (make install) is complete: then the cloud host gets the Kafka path too."""
    stamp = kafka_jars() / ".pom-sha256"
    return stamp.is_file() and stamp.read_text().strip() == pom_digest()


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (debootstrap, chroot, mount)"
    for tool in ("debootstrap", "openssl", "systemd-analyze", "mosquitto_pub"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if shutil.which("ansible-playbook", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}") is None:
        return "ansible-playbook is not installed (pip install 'ansible-core==2.19.*')"
    return None


def owner(path: Path, root: Path) -> tuple[str, str, str]:
    """(user, group, mode) as the target's /etc/passwd and /etc/group name them."""
    st = path.stat()
    users = {int(line.split(":")[2]): line.split(":")[0] for line in (root / "etc/passwd").read_text().splitlines()}
    groups = {int(line.split(":")[2]): line.split(":")[0] for line in (root / "etc/group").read_text().splitlines()}
    return users[st.st_uid], groups[st.st_gid], oct(stat.S_IMODE(st.st_mode))


@dataclass
class Provisioned:
    root: Root
    ports: dict[str, int]
    workdir: Path
    collections: Path
    inventory: Path
    recaps: dict[str, list[dict[str, int]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)


def host_vars(root: Root, ports: dict[str, int], certs: dict[str, str], wheels: Path) -> dict[str, object]:
    """The test host's variables. Secrets go through the vault_* names that group_vars/*.yml (the examples) use."""
    return {
        "ansible_connection": "community.general.chroot",
        "ansible_host": str(root.path),
        "ansible_become": False,
        "ansible_python_interpreter": "/usr/bin/python3",
        "vault_gateway_mqtt_passwords": {HOST: SECRETS["gateway"]},
        "vault_cloud_ingest_mqtt_password": SECRETS["receiver_mqtt"],
        "vault_influxdb_admin_password": SECRETS["admin"],
        "vault_influxdb_receiver_password": SECRETS["receiver_influx"],
        "vault_influxdb_grafana_password": SECRETS["grafana"],
        "edge_gw_broker_host": "127.0.0.1",
        "edge_gw_broker_tls_port": ports["mqtts"],
        "edge_gateway_mqtt_ca_cert": certs["ca"],
        "edge_gateway_wheelhouse": str(wheels),
        "edge_gateway_metrics_port": ports["edge_metrics"],
        "mosquitto_tls_address": "127.0.0.1",
        "mosquitto_tls_cert": certs["cert"],
        "mosquitto_tls_key": certs["key"],
        "mosquitto_tls_ca_cert": certs["ca"],
        "mosquitto_local_port": ports["mqtt"],
        # No syslog in the chroot; the test reads the broker's stderr.
        "mosquitto_log_dest": "stderr",
        "influxdb_http_port": ports["influx"],
        "influxdb_rpc_port": ports["influx_rpc"],
        "cloud_ingest_wheelhouse": str(wheels),
        # The wheelhouse holds the speed-ups' wheel too (target.wheelhouse()).
        "cloud_ingest_speedups": True,
        "cloud_ingest_mqtt_url": f"mqtt://127.0.0.1:{ports['mqtt']}",
        "cloud_ingest_influx_url": f"http://127.0.0.1:{ports['influx']}/ruuvi",
        "cloud_ingest_metrics_port": ports["cloud_metrics"],
        "cloud_ingest_batch_max_interval": "200ms",
        # Grafana is in none of the registries reachable here: only its provisioning files are written.
        "grafana_install": False,
        "grafana_influxdb_url": f"http://127.0.0.1:{ports['influx']}",
        # The Kafka path (kafka role, the bridge unit, the consumer), when the controller has the jars.
        **({
            "edge_gw_kafka_enabled": True,
            "kafka_jars_dir": str(kafka_jars()),
            "kafka_port": ports["kafka"],
            "kafka_controller_port": ports["kafka_controller"],
            "kafka_heap": "256m",
            "cloud_ingest_bridge_metrics_port": ports["bridge_metrics"],
            # The SASL_SSL listener (on loopback here), with the certificate Mosquitto's TLS listener has, and its two
            # SCRAM users; the passwords are checked by logging in on every run (always).
            "kafka_sasl_ssl_enabled": True,
            "kafka_sasl_ssl_address": "127.0.0.1",
            "kafka_sasl_ssl_port": ports["kafka_sasl_ssl"],
            "kafka_sasl_ssl_advertised_host": "127.0.0.1",
            "kafka_sasl_ssl_cert": certs["cert"],
            "kafka_sasl_ssl_key": certs["key"],
            "kafka_sasl_ssl_ca_cert": certs["ca"],
            "kafka_scram_users": [{"name": n, "password": pw} for n, pw in KAFKA_USERS.items()],
            "kafka_scram_update_password": "always",
            # The bridge and the consumer connect to it as a remote host's would.
            "cloud_ingest_kafka_bootstrap": f"127.0.0.1:{ports['kafka_sasl_ssl']}",
            "cloud_ingest_kafka_security_protocol": "sasl_ssl",
            "cloud_ingest_kafka_username": "cloud-ingest",
            "cloud_ingest_kafka_password": KAFKA_USERS["cloud-ingest"],
            "cloud_ingest_kafka_ca_cert": certs["ca"],
        } if kafka_jars_ready() else {}),
    }


def write_inventory(workdir: Path, hv: dict[str, object]) -> Path:
    """An inventory dir with the example group_vars next to it (so they are exercised) and the host's own vars."""
    inv_dir = workdir / "inventory"
    shutil.copytree(ANSIBLE_DIR / "group_vars", inv_dir / "group_vars", dirs_exist_ok=True)
    (inv_dir / "host_vars").mkdir(parents=True, exist_ok=True)
    (inv_dir / "host_vars" / f"{HOST}.yml").write_text(json.dumps(hv, indent=1))
    (inv_dir / "hosts.ini").write_text(f"[gateways]\n{HOST}\n\n[cloud]\n{HOST}\n")
    return inv_dir / "hosts.ini"


@pytest.fixture(scope="session")
def provisioned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provisioned]:
    reason = _missing()
    if reason:
        pytest.skip(f"cannot provision a target here: {reason}")
    work = tmp_path_factory.mktemp("ansible-target")
    t0 = time.monotonic()
    coll = collections(work / "collections")
    wheels = wheelhouse(work / "wheels")
    archive = work / "wheelhouse.tar"
    with tarfile.open(archive, "w") as tar:
        for whl in sorted(wheels.glob("*.whl")):
            tar.add(whl, arcname=whl.name)
    certs = certificates(work / "certs")
    prep = time.monotonic() - t0
    t0 = time.monotonic()
    root = Root(work / "root")
    try:
        root.create()
        ports = {k: free_port() for k in ("mqtt", "mqtts", "influx", "influx_rpc", "edge_metrics", "cloud_metrics",
                                          "kafka", "kafka_controller", "kafka_sasl_ssl", "bridge_metrics")}
        inventory = write_inventory(work, host_vars(root, ports, certs, archive))
        p = Provisioned(root, ports, work, coll, inventory,
                        seconds={"prepare": prep, "debootstrap": time.monotonic() - t0})
        env = ansible_env(work, coll)
        for run in ("first", "second"):
            for book in ("gateways.yml", "cloud.yml"):
                t0 = time.monotonic()
                recap, out = ansible_playbook(ANSIBLE_DIR / "playbooks" / book, inventory, env)
                p.recaps.setdefault(book, []).append(recap)
                p.seconds[f"{book} {run}"] = time.monotonic() - t0
                p.outputs[f"{book} {run}"] = out
        print("\nansible target timings (s):", {k: round(v, 1) for k, v in p.seconds.items()})
        yield p
    finally:
        root.destroy()


class Daemons:
    """Processes started from the target's root with its installed binaries and configs; stopped by PID."""

    def __init__(self, p: Provisioned) -> None:
        self.p = p
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, cmd: list[str], port: int | None = None) -> subprocess.Popen[bytes]:
        log = self.p.workdir / f"{name}.log"
        with open(log, "ab") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        if port is not None:
            _wait_tcp(port, proc, log, timeout=20)
        return proc

    def log(self, name: str) -> str:
        return (self.p.workdir / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs.values())):
            stop_pid(proc)


@pytest.fixture(scope="session")
def daemons(provisioned: Provisioned) -> Iterator[Daemons]:
    d = Daemons(provisioned)
    try:
        yield d
    finally:
        d.stop_all()
