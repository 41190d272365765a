"""A real Apache Kafka 4.x broker for tests: one KRaft node (broker and controller in one JVM) on free loopback ports,
its log in a temporary folder, stopped by PID. Its jars come from Maven Central through tests/kafka/pom.xml, copied by
scripts/install-deps.sh into the cache folder `kafka_jars()` names; nothing is built.

With `secure=SaslSsl(...)` it also has a SASL_SSL listener (SCRAM-SHA-512 over TLS, what an operator would expose),
an SSL one (TLS alone) and a SASL_PLAINTEXT one (SCRAM-SHA-256 and PLAIN),
its certificate from a throwaway CA made with openssl (`make_pki`). The PLAINTEXT listener stays, for the broker's
own traffic and for the tests' helpers (topics, readers); the clients under test use `secure_bootstrap`."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from pki import make_ca, make_cert
from servers import ServerProcess, free_port

POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"

# Console only: a log4j2.yaml would need jackson-dataformat-yaml, and at INFO the broker prints every config key
# (about 2,400 lines per start); WARN keeps the log readable, KafkaRaftServer's INFO line says when it has started.
LOG4J2 = """\
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = INFO
"""

STARTED = "Kafka Server started"
SCRAM = "SCRAM-SHA-512"
SCRAM_256 = "SCRAM-SHA-256"


@dataclass(frozen=True)
class Pki:
    """A CA and one certificate it signed for 127.0.0.1; `pem` holds the server's key and certificate in one file,
    the form Kafka's PEM keystore reads from a file (ssl.keystore.type=PEM)."""

    ca: Path
    cert: Path
    key: Path
    pem: Path


def make_pki(d: Path, name: str = "kafka") -> Pki:
    """A throwaway CA (<name>-ca.crt) and a server certificate for IP 127.0.0.1 and localhost (tests/pki.py)."""
    ca_crt = make_ca(d, f"{name}-ca")
    crt, key = make_cert(d, f"{name}-server", f"{name}-ca", server=True, cn="127.0.0.1")
    pem = d / f"{name}-server.pem"
    pem.write_text(key.read_text() + crt.read_text())
    pem.chmod(0o600)
    return Pki(ca_crt, crt, key, pem)


@dataclass(frozen=True)
class SaslSsl:
    """A SASL_SSL listener: TLS with `pki`'s server certificate, SCRAM-SHA-512 users (name -> password) created
    when the data folder is formatted (KRaft keeps SCRAM credentials in its metadata log, so a user made at format
    time exists from the first start, with no running broker to ask)."""

    pki: Pki
    users: dict[str, str]


def kafka_jars() -> Path:
    """The folder of the broker's jars: $EDGE_GW_KAFKA_JARS, else the cache folder scripts/install-deps.sh fills."""
    env = os.environ.get("EDGE_GW_KAFKA_JARS")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "edge-gw" / "kafka-jars"


def pom_digest() -> str:
    """What scripts/install-deps.sh writes into the jars folder once the copy is complete (a changed pom re-copies)."""
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def java_binary() -> str:
    found = shutil.which("java")
    if found is None:
        msg = "java is not installed: run `make install` (scripts/install-deps.sh)"
        raise FileNotFoundError(msg)
    return found


def check_jars(jars: Path) -> None:
    stamp = jars / ".pom-sha256"
    if not stamp.is_file() or stamp.read_text().strip() != pom_digest():
        msg = f"the Kafka jars in {jars} are missing or stale: run `make install` (scripts/install-deps.sh)"
        raise FileNotFoundError(msg)


def random_cluster_id() -> str:
    # What `kafka-storage.sh random-uuid` prints (a UUID in URL-safe base64, unpadded), without a JVM start.
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass
class Kafka(ServerProcess):
    """A private single-node Kafka broker. `extra` lines are appended to server.properties. The data folder survives
    stop() and kill(), so start() again (restart()) comes back on the same log, cluster id and offsets. SIGTERM is a
    controlled shutdown (the log is flushed and closed cleanly); SIGKILL is a crash."""

    stop_timeout: ClassVar[float] = 30.0

    workdir: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    heap: str = "256m"
    extra: list[str] = field(default_factory=list)
    secure: SaslSsl | None = None
    secure_port: int = field(default_factory=free_port)
    ssl_port: int = field(default_factory=free_port)  # with `secure`: TLS alone, no SASL
    sasl_plaintext_port: int = field(default_factory=free_port)  # with `secure`: SCRAM-SHA-256 and PLAIN, no TLS
    jars: Path = field(default_factory=kafka_jars)
    cluster_id: str = field(default_factory=random_cluster_id)
    proc: subprocess.Popen[bytes] | None = None
    started_in: float = 0.0  # seconds from the java command to "Kafka Server started", for the last start()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def secure_bootstrap(self) -> str:
        """The SASL_SSL listener (only with `secure`)."""
        return self._secure_listener(self.secure_port)

    @property
    def ssl_bootstrap(self) -> str:
        """The SSL listener (TLS, no SASL; only with `secure`)."""
        return self._secure_listener(self.ssl_port)

    @property
    def sasl_plaintext_bootstrap(self) -> str:
        """The SASL_PLAINTEXT listener (SCRAM-SHA-256 and PLAIN, no TLS; only with `secure`)."""
        return self._secure_listener(self.sasl_plaintext_port)

    def _secure_listener(self, port: int) -> str:
        if self.secure is None:
            raise ValueError("this broker has no secure listeners (Kafka(secure=SaslSsl(...)))")
        return f"127.0.0.1:{port}"

    @property
    def log(self) -> Path:
        return self.workdir / "kafka.log"

    @property
    def data(self) -> Path:
        return self.workdir / "data"

    def config_text(self) -> str:
        lines = [
            "process.roles=broker,controller",
            "node.id=1",
            # Static voters: a one-node quorum needs no `format --standalone`, and the file is the same on 3.9.
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self.data}",
            "num.partitions=1",
            "auto.create.topics.enable=false",  # topics are made on purpose (AdminClient), a typo must not make one
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",  # the default 50 costs about a second per start on 2 cores
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",  # a single test consumer needs not wait 3 s for others
            # After a SIGKILL the controller (in the same, restarted JVM) refuses the broker's new registration
            # (DUPLICATE_BROKER_REGISTRATION) until the old one's session expires: 9 s by default, 2 s here.
            "broker.session.timeout.ms=2000",
            "broker.heartbeat.interval.ms=500",
        ]
        return "\n".join([*lines, *self._secure_lines(), *self.extra]) + "\n"

    def _secure_lines(self) -> list[str]:
        """The SASL_SSL, SSL and SASL_PLAINTEXT listeners' settings, after the plain ones (a later key wins in a
        properties file)."""
        if self.secure is None:
            return []
        ln, tls, sp = "listener.name.sasl_ssl.", "listener.name.ssl.", "listener.name.sasl_plaintext."
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        plain_users = " ".join(f'user_{name}="{password}"' for name, password in self.secure.users.items())
        others = f"SASL_SSL://127.0.0.1:{self.secure_port},SSL://127.0.0.1:{self.ssl_port}," \
                 f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_plaintext_port}"
        return [
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port},{others}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port},{others}",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,"
            "SASL_PLAINTEXT:SASL_PLAINTEXT",
            f"sasl.enabled.mechanisms={SCRAM}",
            # The broker side of SCRAM needs no credentials of its own: it checks clients against the metadata log.
            f"{ln}sasl.enabled.mechanisms={SCRAM}",
            f"{ln}{SCRAM.lower()}.sasl.jaas.config={scram}",
            f"{ln}ssl.keystore.type=PEM",
            f"{ln}ssl.keystore.location={self.secure.pki.pem}",
            f"{ln}ssl.client.auth=none",  # the clients prove who they are with SCRAM, not with a certificate
            # TLS alone: the client checks the broker's certificate, and anyone who connects is let in.
            f"{tls}ssl.keystore.type=PEM",
            f"{tls}ssl.keystore.location={self.secure.pki.pem}",
            f"{tls}ssl.client.auth=none",
            # SASL without TLS, with the other two mechanisms cloud-ingest offers. PLAIN's users live in the config.
            f"{sp}sasl.enabled.mechanisms={SCRAM_256},PLAIN",
            f"{sp}{SCRAM_256.lower()}.sasl.jaas.config={scram}",
            f"{sp}plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
            f"{plain_users};",
        ]

    def _java(self, *args: str) -> list[str]:
        return [
            java_binary(), f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile=file:{self.workdir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.workdir / 'logs'}",
            "-cp", f"{self.jars}/*", *args,
        ]

    def format(self) -> None:
        """Format the data folder once (KRaft refuses to start on an unformatted one); a formatted one is kept."""
        if (self.data / "meta.properties").exists():
            return
        check_jars(self.jars)
        scram = [] if self.secure is None else [
            arg for name, password in self.secure.users.items() for mechanism in (SCRAM, SCRAM_256)
            for arg in ("--add-scram", f"{mechanism}=[name={name},password={password}]")]
        run = subprocess.run(
            # `--cluster-id=ID` in one word: an id may start with "-" (URL-safe base64, 1 in 64), which the tool
            # would take for an option after a separate `-t`.
            self._java("kafka.tools.StorageTool", "format", f"--cluster-id={self.cluster_id}",
                       "-c", str(self.workdir / "server.properties"), *scram),
            capture_output=True, timeout=60, check=False,
        )
        if run.returncode != 0:
            raise RuntimeError(f"kafka StorageTool format failed: {(run.stdout + run.stderr).decode()[-2000:]}")

    def start(self, timeout: float = 120.0) -> Kafka:  # 2-8 s alone; longer beside other JVMs on 2 cores
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "server.properties").write_text(self.config_text())
        (self.workdir / "log4j2.properties").write_text(LOG4J2)
        self.format()
        seen = self.log.stat().st_size if self.log.exists() else 0  # a restart appends to the same log
        began = time.monotonic()
        with open(self.log, "ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(self._java("kafka.Kafka", str(self.workdir / "server.properties")),
                                         stdout=out, stderr=subprocess.STDOUT)
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kafka exited with {self.proc.returncode}: {self._tail()}")
            with open(self.log, "rb") as f:
                f.seek(seen)
                if STARTED.encode() in f.read() and self._accepts():
                    self.started_in = time.monotonic() - began
                    return self
            time.sleep(0.05)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"kafka not started after {timeout}s: {self._tail()}")

    def _accepts(self) -> bool:
        ports = [self.port] if self.secure is None else [self.port, self.secure_port]
        for port in ports:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            except OSError:
                return False
        return True

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

