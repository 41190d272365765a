"""Real Mosquitto and influxd processes for tests: free loopback ports, temporary directories, stopped by PID."""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Self

# Ports for servers come from below Linux's ephemeral range (32768-60999), so that no client's outgoing connection
# takes one between free_port() and the server's bind, and each pytest-xdist worker has its own band, so that two
# workers never pick the same port at once.
_PORT_BASE, _PORT_BAND, _BANDS = 20000, 1500, 8
_handed_out: set[int] = set()


def free_port() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    n = int(worker[2:]) if worker[2:].isdigit() else 0
    low = _PORT_BASE + (n % _BANDS) * _PORT_BAND
    candidates = [p for p in range(low, low + _PORT_BAND) if p not in _handed_out]
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {low}-{low + _PORT_BAND - 1}")


def _wait_tcp(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"port {port} not ready after {timeout}s: {log.read_text(errors='replace')[-2000:]}")


def stop_pid(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Stop a process by its PID with `sig`; SIGKILL it if it has not exited after `timeout` seconds."""
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a running process, from /proc: a figure the other jobs on the machine do not change much."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def callgrind_instructions(pid: int) -> int:
    """Instructions a process running under valgrind's callgrind has executed so far, all threads (benches only)."""
    out = subprocess.run(["callgrind_control", "-e", str(pid)], check=False, capture_output=True, text=True).stdout
    return sum(int(n.replace(",", "")) for n in re.findall(r"^\s*Th\s+\d+\s+([\d,]+)", out, re.MULTILINE))


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` for the test (a full file system in a few MiB); needs root, as CI has."""
    import pytest

    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def server_binary(name: str) -> str:
    """A server's program: on the PATH, or in the sbin folders, which a normal user's PATH on Debian lacks (Debian's
    mosquitto is /usr/sbin/mosquitto, and `make demo` must work for that user too)."""
    extra = os.pathsep.join(("/usr/local/sbin", "/usr/sbin", "/sbin"))
    found = shutil.which(name) or shutil.which(name, path=extra)
    if found is None:
        msg = f"{name} is not installed: run `make install` (scripts/install-deps.sh)"
        raise FileNotFoundError(msg)
    return found


class ServerProcess:
    """What every test server does with its process: stop it by PID (SIGTERM, or SIGKILL as a crash), and start it
    again on the same data and ports. A subclass has `proc` and `start()`, and may give its own `stop_timeout`."""

    proc: subprocess.Popen[bytes] | None
    stop_timeout: ClassVar[float] = 10.0

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_pid(self.proc, sig, timeout=self.stop_timeout)
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class Mosquitto(ServerProcess):
    """A private Mosquitto 2.x broker. `extra` lines are appended to its config (auth, TLS listeners, ACLs)."""

    workdir: Path
    port: int = field(default_factory=free_port)
    extra: list[str] = field(default_factory=list)
    anonymous: bool = True
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "mosquitto.log"

    def config_text(self) -> str:
        lines = [
            "per_listener_settings false",
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if self.anonymous else 'false'}",
            "persistence true",
            f"persistence_location {self.workdir}/",
            # The settings cloud/mosquitto/cloud-ingest.conf asks for: queue everything for offline persistent sessions,
            # and save the queue often so a broker crash loses little.
            "max_queued_messages 0",
            "max_queued_bytes 0",
            "max_inflight_messages 0",
            "autosave_interval 1",
            "max_packet_size 1048576",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if os.geteuid() == 0:
            lines.insert(0, "user root")
        return "\n".join([*lines, *self.extra]) + "\n"

    def start(self) -> Mosquitto:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        with open(self.workdir / "mosquitto.stdout", "ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([server_binary("mosquitto"), "-c", str(conf)], stdout=out,
                                         stderr=subprocess.STDOUT)
        _wait_tcp(self.port, self.proc, self.workdir / "mosquitto.stdout")
        return self



@dataclass
class Influxd(ServerProcess):
    """A private InfluxDB 1.x (Debian's 1.6.7) with its own config, data dirs and ports; reporting off."""

    stop_timeout: ClassVar[float] = 20.0

    workdir: Path
    port: int = field(default_factory=free_port)
    rpc_port: int = field(default_factory=free_port)
    auth: bool = False
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        d = self.workdir
        return f"""reporting-enabled = false
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  index-version = "inmem"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
  auth-enabled = {"true" if self.auth else "false"}
  max-body-size = 0
[continuous_queries]
  enabled = true
  log-enabled = true
  run-interval = "1s"
"""

    def start(self) -> Influxd:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "influxdb.conf"
        conf.write_text(self.config_text())
        log = self.workdir / "influxd.log"
        with open(log, "ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([server_binary("influxd"), "-config", str(conf)], stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"influxd exited: {log.read_text(errors='replace')[-2000:]}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{self.url}/ping", timeout=0.5) as r,
            ):
                if r.status == 204:
                    return self
            time.sleep(0.05)
        raise RuntimeError("influxd did not answer /ping")


    def query(self, q: str, db: str | None = None, *, user: str = "", password: str = "", method: str = "GET") -> dict:
        """Run an InfluxQL query and return the decoded JSON ({"results": [...]})."""
        import json
        import urllib.parse

        params = {"q": q}
        if db:
            params["db"] = db
        data = urllib.parse.urlencode(params).encode()
        if method == "GET":
            req = urllib.request.Request(f"{self.url}/query?{data.decode()}")
        else:
            req = urllib.request.Request(f"{self.url}/query", data=data, method="POST")
        if user:
            # Basic auth, not u=/p= parameters: those end up in influxd's access log.
            import base64

            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]


def series_values(result: dict) -> list[list]:
    """All value rows of all series of the first statement of a query result."""
    rows: list[list] = []
    for s in result["results"][0].get("series", []):
        rows.extend(s["values"])
    return rows


def have(binary: str) -> bool:
    return shutil.which(binary) is not None
