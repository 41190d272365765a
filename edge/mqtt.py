"""MQTT connection settings and one broker session on top of paho-mqtt 2.x, with paho's errors turned into ours.

A `Session` is one TCP/TLS connection with a *clean* session and a fresh paho client. When the connection drops, the
session is thrown away and the uplink opens a new one: paho then has nothing of its own left to re-send, and the
uplink re-sends whatever was unacknowledged from the SQLite buffer. So there is exactly one re-send mechanism.

A session is driven by one thread (the uplink's) through `poll()`; paho's own network thread is not used, so the
paho callbacks run inside `poll()` on that same thread and need no locking.
"""

from __future__ import annotations

import contextlib
import os
import select
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from core.config import redact_url, tls_context
from core.settings import ConfigError
from core.wire import DEFAULT_PREFIX, WireError, check_prefix


class UplinkError(Exception):
    """Anything that goes wrong between the gateway and the broker, with a one-line message (never a password)."""


class ConnectionLost(UplinkError):
    """An open session went away (broker gone, socket reset, keepalive timeout)."""


class ConnectionRefused(UplinkError):
    """The broker answered CONNECT with a failure code (bad credentials, not authorised, ...)."""


@dataclass(frozen=True)
class MqttSettings:
    """Where and how to connect. `password` never appears in repr() or in any message."""

    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    client_id: str | None = None
    keepalive: int = 30
    topic_prefix: str = DEFAULT_PREFIX
    connect_timeout_s: float = 10.0

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> MqttSettings:
        """`mqtt://[user[:pass]@]host[:port]` or `mqtts://...` (TLS, port 8883 by default); keyword overrides that
        are None are ignored, so callers can pass optional config values straight through."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            msg = f"MQTT URL {redact_url(url)!r}: expected mqtt://[user[:pass]@]host[:port] or mqtts://..."
            raise UplinkError(msg)
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            msg = f"MQTT URL {redact_url(url)!r}: no path or query expected"
            raise UplinkError(msg)
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            msg = f"MQTT URL {redact_url(url)!r}: bad port"
            raise UplinkError(msg) from None
        settings = cls(
            host=parts.hostname,
            port=port,
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            msg = f"unknown MQTT setting(s): {', '.join(unknown)}"
            raise UplinkError(msg)
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
        settings.validate()
        return settings

    def validate(self) -> None:
        try:
            check_prefix(self.topic_prefix)
        except WireError as exc:
            raise UplinkError(str(exc)) from None
        if not 0 < self.port < 65536:
            msg = f"MQTT port must be 1..65535, got {self.port}"
            raise UplinkError(msg)
        if bool(self.cert_file) != bool(self.key_file):
            msg = "MQTT cert_file and key_file go together"
            raise UplinkError(msg)
        if (self.ca_file or self.cert_file) and not self.tls:
            msg = "MQTT ca_file/cert_file need TLS: use an mqtts:// URL"
            raise UplinkError(msg)

    @property
    def broker(self) -> str:
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        """For logs: scheme, user and broker, without the password."""
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.broker}"


class Session:
    """One connection to the broker. Publish QoS 1, then `poll()` to run the network and collect PUBACKed mids."""

    def __init__(self, settings: MqttSettings, client_id: str, will: tuple[str, bytes] | None = None,
                 max_inflight: int = 0) -> None:
        self.settings = settings
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=True,
            protocol=MQTTProtocolVersion.MQTTv311,
            reconnect_on_failure=False,
        )
        c = self._client
        c.connect_timeout = settings.connect_timeout_s
        # Our own window decides how much is in flight; paho must neither cap nor queue on its own.
        c.max_inflight_messages_set(max_inflight)
        c.max_queued_messages_set(0)
        if settings.username is not None:
            c.username_pw_set(settings.username, settings.password)
        if settings.tls:
            try:
                c.tls_set_context(tls_context(settings.ca_file, settings.cert_file, settings.key_file))
            except ConfigError as e:
                raise UplinkError(str(e)) from None
        if will is not None:
            c.will_set(will[0], will[1], qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_publish = self._on_publish
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self._connack: str | None = None
        self._subacks: dict[int, list[Any]] = {}
        self._messages: list[tuple[str, bytes]] = []
        self._refused: str | None = None
        self._acked: list[int] = []
        self._disconnected: str | None = None
        self.lost: str | None = None  # why the connection is gone, once it is

    # paho callbacks (VERSION2 signatures); they run inside poll()/open() on the driving thread.
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._refused = str(reason)
        else:
            self._connack = str(reason)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self._acked.append(mid)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        self._subacks[mid] = list(reasons)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        # paho sends the PUBACK of a QoS 1 message itself once this returns; the uplink applies it in the same
        # poll() turn, and a confirmation lost in between only makes the gateway send the readings again.
        self._messages.append((message.topic, bytes(message.payload)))

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._disconnected = str(reason)  # paho says "Unspecified error" for a dropped socket; poll() says better

    def open(self, cancelled: Callable[[], bool] = lambda: False) -> None:
        """Connect and wait for a successful CONNACK, or raise UplinkError / ConnectionRefused (also when
        `cancelled()` turns true while waiting)."""
        s = self.settings
        try:
            self._client.connect(s.host, s.port, keepalive=s.keepalive)
        except (OSError, ValueError) as exc:
            msg = f"cannot connect to {s.describe()}: {exc}"
            raise UplinkError(msg) from exc
        deadline = time.monotonic() + s.connect_timeout_s
        while self._connack is None:
            rc = self._run_network(0.05)
            if self._refused is not None:
                self.close(graceful=False)
                hint = ""
                if "authori" in self._refused.lower() or "password" in self._refused.lower():
                    hint = f" (check the username {s.username!r} and its password)"
                msg = f"broker {s.describe()} refused the connection: {self._refused}{hint}"
                raise ConnectionRefused(msg)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._disconnected is not None:
                self.lost = self.lost or self._disconnected or paho.error_string(rc)
                self.close(graceful=False)
                msg = f"connection to {s.describe()} closed before CONNACK: {self.lost or paho.error_string(rc)}"
                if s.tls:
                    # TLS 1.3 checks the client certificate after the client's side of the handshake, so a refused
                    # (or missing) one shows up only as this closed connection.
                    mine = f"cert_file {s.cert_file}" if s.cert_file else "no cert_file is set"
                    msg += f" (a broker that refuses the client certificate does this; {mine})"
                raise UplinkError(msg)
            if cancelled():
                self.close(graceful=False)
                msg = f"connecting to {s.describe()} cancelled"
                raise UplinkError(msg)
            if time.monotonic() > deadline:
                self.close(graceful=False)
                msg = f"no CONNACK from {s.describe()} within {s.connect_timeout_s:g} s"
                raise UplinkError(msg)

    def subscribe(self, topic: str, timeout: float) -> str | None:
        """Subscribe at QoS 1 and wait for the SUBACK: None once granted, the broker's reason if it refused.
        ConnectionLost if the SUBACK does not come."""
        try:
            rc, mid = self._client.subscribe(topic, qos=1)
        except (OSError, ValueError) as exc:
            raise ConnectionLost(f"subscribe to {topic} failed: {exc}") from exc
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            self.lost = self.lost or paho.error_string(rc)
            raise ConnectionLost(f"subscribe to {topic} failed: {paho.error_string(rc)}")
        deadline = time.monotonic() + timeout
        while mid not in self._subacks:
            rc = self._run_network(0.05)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._disconnected is not None:
                self.lost = self.lost or self._disconnected or paho.error_string(rc)
                raise ConnectionLost(f"connection lost while subscribing to {topic}: {self.lost}")
            if time.monotonic() > deadline:
                raise ConnectionLost(f"no SUBACK for {topic} within {timeout:g} s")
        refused = [r for r in self._subacks.pop(mid) if getattr(r, "is_failure", False)]
        return str(refused[0]) if refused else None

    def take_messages(self) -> list[tuple[str, bytes]]:
        """The (topic, payload) messages received since the last call (they arrive during poll())."""
        messages, self._messages = self._messages, []
        return messages

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> int:
        """Queue a QoS 1 message and write what the socket takes now; returns its mid."""
        try:
            info = self._client.publish(topic, payload, qos=1, retain=retain)
        except (OSError, ValueError) as exc:
            raise ConnectionLost(f"publish failed: {exc}") from exc
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.lost = self.lost or paho.error_string(info.rc)
            raise ConnectionLost(f"publish failed: {paho.error_string(info.rc)}")
        return info.mid

    def poll(self, timeout: float, wake_fd: int | None = None) -> list[int]:
        """Run the network for up to `timeout` s, or until `wake_fd` is readable (it is then drained); returns the
        mids PUBACKed since the last call. Check `lost` after."""
        if self.lost is None:
            rc = self._run_network(timeout, wake_fd)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and self.lost is None:
                self.lost = paho.error_string(rc)
            elif self._disconnected is not None and self.lost is None:
                self.lost = self._disconnected
        acked, self._acked = self._acked, []
        return acked

    def _run_network(self, timeout: float, wake_fd: int | None = None) -> MQTTErrorCode:
        # paho's "external event loop" API: we select() on its socket ourselves, so no thread and no socketpair.
        c = self._client
        sock = c.socket()
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        try:
            pending = sock.pending() if isinstance(sock, ssl.SSLSocket) else 0  # TLS may hold decrypted bytes
            wlist = [sock] if c.want_write() else []
            rlist: list[Any] = [sock] if wake_fd is None else [sock, wake_fd]
            readable, writable, _ = select.select(rlist, wlist, [], 0 if pending else timeout)
            if wake_fd is not None and wake_fd in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_fd, 4096)
            rc = MQTTErrorCode.MQTT_ERR_SUCCESS
            if sock in readable or pending:
                rc = c.loop_read()
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and writable:
                rc = c.loop_write()
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                rc = c.loop_misc()
        except (OSError, ValueError) as exc:
            self.lost = self.lost or str(exc) or type(exc).__name__
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        return rc

    def close(self, *, graceful: bool = True) -> None:
        """Send DISCONNECT (graceful: the broker drops the last will) or just drop the socket (the will fires)."""
        c = self._client
        try:
            if graceful and self.lost is None:
                c.disconnect()
            sock = c.socket()
            if sock is not None:
                sock.close()
        except (OSError, ValueError):
            pass
