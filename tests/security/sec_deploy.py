"""The shipped deployment (deploy/) on loopback for tests: throwaway certificates made with openssl, Mosquitto run with
deploy/mosquitto/mosquitto.conf + cloud/mosquitto/cloud-ingest.conf (only paths and ports changed), and influxd with
auth, its users made by deploy/influxdb/create_users.py."""

from __future__ import annotations

import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from servers import Influxd, _wait_tcp, free_port, server_binary, stop_pid

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
EDGE = [sys.executable, "-m", "edge.cli"]
# cloud/cli.py has no __main__ guard, so not `-m cloud.cli`.
CLOUD = [sys.executable, "-c", "from cloud.cli import main; main()"]
GATEWAYS = ("gw-a", "gw-b")
RECEIVER = "cloud-ingest"


def secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text + "\n")
    os.chmod(path, mode)
    return path


def _swap(text: str, old: str, new: str) -> str:
    # Every path the test changes must be in the shipped file: a renamed setting fails here, loudly.
    assert old in text, f"{old!r} is not in the shipped config"
    return text.replace(old, new)


@dataclass
class Broker:
    """Mosquitto with the shipped config. `port` is the TLS+password listener (8883), `mtls_port` the mutual-TLS
    one (8884). The log is at debug level (log_type all) so that the secret grep sees everything."""

    workdir: Path
    certs: Path
    port: int = field(default_factory=free_port)
    mtls_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.workdir / "mosquitto.log"

    def config_text(self) -> str:
        w = self.workdir
        text = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
        for old, new in (
            ("pid_file /run/mosquitto/mosquitto.pid", f"pid_file {w}/mosquitto.pid"),
            ("log_dest file /var/log/mosquitto/mosquitto.log", f"log_dest file {self.log}"),
            ("/etc/mosquitto/edge-gw.passwd", f"{w}/edge-gw.passwd"),
            ("/etc/mosquitto/edge-gw.acl", str(DEPLOY / "mosquitto" / "edge-gw.acl")),
            ("/etc/mosquitto/certs/clients-ca.crt", f"{self.certs}/ca.crt"),
            ("/etc/mosquitto/certs/", f"{self.certs}/"),
            ("listener 8883\n", f"listener {self.port} 127.0.0.1\n"),
            ("listener 8884\n", f"listener {self.mtls_port} 127.0.0.1\n"),
            ("include_dir /etc/mosquitto/conf.d", f"include_dir {w}/conf.d"),
        ):
            text = _swap(text, old, new)
        head = "user root\n" if os.geteuid() == 0 else ""
        return head + text + "log_type all\n"

    def start(self) -> Broker:
        w = self.workdir
        (w / "conf.d").mkdir(parents=True, exist_ok=True)
        (w / "data").mkdir(exist_ok=True)
        shipped = (REPO / "cloud" / "mosquitto" / "cloud-ingest.conf").read_text()
        (w / "conf.d" / "cloud-ingest.conf").write_text(
            _swap(shipped, "persistence_location /var/lib/mosquitto/", f"persistence_location {w}/data/"))
        conf = w / "mosquitto.conf"
        conf.write_text(self.config_text())
        with open(w / "mosquitto.stdout", "ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([server_binary("mosquitto"), "-c", str(conf)], stdout=out,
                                         stderr=subprocess.STDOUT)
        _wait_tcp(self.port, self.proc, w / "mosquitto.stdout")
        _wait_tcp(self.mtls_port, self.proc, w / "mosquitto.stdout")
        return self

    def stop(self) -> None:
        stop_pid(self.proc)
        self.proc = None


class LoggingInfluxd(Influxd):
    """influxd with auth, its HTTP access log and its query log on, so that the secret grep covers them too."""

    def config_text(self) -> str:
        text = super().config_text()
        text = text.replace("query-log-enabled = false", "query-log-enabled = true")
        return _swap(text, "  log-enabled = false\n  auth-enabled", "  log-enabled = true\n  auth-enabled")


@dataclass
class Secrets:
    """Every password of the deployment, each unique so that a grep finds exactly it."""

    mqtt: dict[str, str] = field(default_factory=lambda: {u: f"mq-{u}-{secrets.token_hex(8)}"
                                                          for u in (*GATEWAYS, RECEIVER)})
    influx: dict[str, str] = field(default_factory=lambda: {u: f"db-{u}-{secrets.token_hex(8)}"
                                                            for u in ("admin", "ingest", "grafana")})

    def all(self) -> list[str]:
        return [*self.mqtt.values(), *self.influx.values()]


def run(cmd: list[str], transcript: list[str], *, timeout: float = 60, check: bool = False,
        ) -> subprocess.CompletedProcess[str]:
    """Run a command and keep everything it printed for the secret grep."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    transcript.append(p.stdout + p.stderr)  # not the command line: a test may put a secret in it on purpose
    if check:
        assert p.returncode == 0, f"{cmd} -> {p.returncode}: {p.stderr[-2000:]}"
    return p


class Daemon:
    """A long-running command, its stdout/stderr in files, stopped by PID."""

    def __init__(self, cmd: list[str], workdir: Path, name: str) -> None:
        self.out = workdir / f"{name}.out"
        self.err = workdir / f"{name}.err"
        with open(self.out, "wb") as o, open(self.err, "wb") as e:
            self.proc = subprocess.Popen(cmd, stdout=o, stderr=e)

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode

    def text(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")


def tls_client(client_id: str, user: str, password: str, ca: Path, *, v5: bool = False) -> mqtt.Client:
    proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto)
    c.username_pw_set(user, password)
    c.tls_set_context(ssl.create_default_context(cafile=str(ca)))
    return c


def connect(client: mqtt.Client, port: int) -> None:
    """Connect, start the network thread and wait for a successful CONNACK."""
    ok = threading.Event()
    client.on_connect = lambda _c, _u, _f, rc, _p: ok.set() if not rc.is_failure else None
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert ok.wait(10), "no CONNACK"


class Listener:
    """An MQTT subscriber that keeps every message: (topic, payload)."""

    def __init__(self, broker: Broker, ca: Path, user: str, password: str, topics: list[str],
                 client_id: str, *, v5: bool = False) -> None:
        self.messages: list[tuple[str, bytes]] = []  # live ones
        self.retained: list[tuple[str, bytes]] = []  # what the broker held when we subscribed
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.granted: list[int] = []
        self.client = tls_client(client_id, user, password, ca, v5=v5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        connect(self.client, broker.port)
        result, _ = self.client.subscribe([(t, 1) for t in topics])
        assert result == mqtt.MQTT_ERR_SUCCESS
        assert self.subscribed.wait(10), "no SUBACK"

    def _on_subscribe(self, _c: object, _u: object, _mid: int, codes: list[object], _p: object) -> None:
        self.granted = [int(getattr(c, "value", c)) for c in codes]  # type: ignore[call-overload]
        self.subscribed.set()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            (self.retained if msg.retain else self.messages).append((msg.topic, msg.payload))

    def on(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p in self.messages if t == topic]

    def keys(self, gateway: str) -> set[tuple[str, int]]:
        out: set[tuple[str, int]] = set()
        for payload in self.on(f"edge-gw/{gateway}/batch"):
            out.update((r["mac"], r["time_ns"]) for r in json.loads(payload)["readings"])
        return out

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
