"""The config sections both daemons share ([mqtt]'s connection, [metrics], [log]) with their checks, and the helpers
that go with them: the MQTT credentials (percent-decoded), the one TLS context, URLs with the password hidden."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from core.settings import ConfigError, Duration, read_secret_file


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def redact_url(url: str) -> str:
    """The URL with its password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


@dataclass
class MqttConnection:
    """The broker connection settings both daemons share ([mqtt] in edge-gw and cloud-ingest), and their checks."""

    url: str = "mqtt://127.0.0.1:1883"
    username: str = ""
    password: str = ""
    password_file: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    keepalive: int = 30

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        _check(
            parts.scheme in ("mqtt", "mqtts") and bool(parts.hostname),
            f"mqtt.url: expected mqtt://[user[:pass]@]host[:port] or mqtts://..., got {redact_url(self.url)!r}",
        )
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ConfigError(f"mqtt.url: bad port in {redact_url(self.url)!r}") from None
        _check(5 <= self.keepalive <= 3600, f"mqtt.keepalive: must be 5..3600 s, got {self.keepalive}")
        for key in ("ca_file", "cert_file", "key_file", "password_file"):
            path = getattr(self, key)
            _check(not path or Path(path).is_file(), f"mqtt.{key}: {path} does not exist")
        _check(bool(self.cert_file) == bool(self.key_file), "mqtt.cert_file and mqtt.key_file go together")

    def credentials(self) -> tuple[str, str]:
        """(username, password) from, in order: mqtt.password_file, mqtt.username/password, the URL. A user or
        password in the URL is percent-decoded (`mqtt://gw1:s%40cret@host` logs in with `s@cret`)."""
        parts = urlsplit(self.url)
        user = self.username or unquote(parts.username or "")
        if self.password_file:
            return user, read_secret_file("mqtt.password_file", self.password_file)
        return user, self.password or unquote(parts.password or "")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for an mqtts:// URL (None for mqtt://)."""
        if urlsplit(self.url).scheme != "mqtts":
            return None
        return tls_context(self.ca_file or None, self.cert_file or None, self.key_file or None)


def tls_context(ca_file: str | None, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    """A client TLS context that verifies the server (against `ca_file`, else the system's CAs), with a client
    certificate when one is given. A file that does not load is a one-line ConfigError naming it: it never starts
    to load by retrying."""
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
        if cert_file:
            ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"MQTT TLS setup failed (mqtt.ca_file={ca_file or '-'}, mqtt.cert_file={cert_file or '-'}): "
                          f"{e}") from None
    return ctx


@dataclass
class MetricsSection:
    port: int = 0
    addr: str = "127.0.0.1"

    def __post_init__(self) -> None:
        _check(0 <= self.port <= 65535, f"metrics.port: must be 0 (off) or a TCP port, got {self.port}")


@dataclass
class LogSection:
    level: str = "info"

    def __post_init__(self) -> None:
        _check(
            self.level.lower() in ("debug", "info", "warning", "error"),
            f"log.level: expected debug, info, warning or error, got {self.level!r}",
        )


_PLAIN_TOPIC = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


@dataclass
class HomeAssistantSection:
    """[homeassistant] of both daemons: Home Assistant MQTT discovery (docs/homeassistant.md), off by default."""

    enabled: bool = False
    discovery_prefix: str = "homeassistant"
    state_prefix: str = ""  # "": the daemon's own default (edge-gw: <mqtt.topic_prefix>/<gateway id>/ha)
    state_interval: Duration = Duration(10.0)
    expire_after: Duration = Duration(300.0)
    remove_after: Duration = Duration(86400.0)

    def __post_init__(self) -> None:
        for key in ("discovery_prefix", "state_prefix"):
            value = getattr(self, key)
            _check((value == "" and key == "state_prefix") or _PLAIN_TOPIC.fullmatch(value) is not None,
                   f"homeassistant.{key}: {value!r} must be a plain topic path (no wildcards)")
        _check(0.1 <= self.state_interval <= 3600,
               f"homeassistant.state_interval: must be 0.1 s..1 h, got {self.state_interval}")
        _check(self.expire_after >= 1 and self.expire_after >= 2 * self.state_interval,
               f"homeassistant.expire_after: must be at least 1 s and twice homeassistant.state_interval "
               f"({2 * self.state_interval:g} s), got {self.expire_after}")
        _check(self.remove_after <= 0 or self.remove_after >= self.expire_after,
               f"homeassistant.remove_after: must be 0 (never) or at least homeassistant.expire_after "
               f"({self.expire_after:g} s), got {self.remove_after}")
