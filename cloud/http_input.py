"""The HTTP input: Ruuvi Gateways POST their readings here (cloud/formats/ruuvi_gateway_http.py) instead of MQTT.

aiohttp on the receiver's own event loop, next to gmqtt. One request is one Message of the write path: it joins the
open batch like an MQTT message, and its answer waits for that batch to be handled (dedup, write, dead letters).
So the answer tells the gateway the truth:

- 200 `{"readings": n, "refused": m}`: the readings are stored (or dead-lettered one by one: `refused`);
- 400 with a one-line reason: the body is not Ruuvi Gateway JSON; it was dead-lettered before the answer;
- 401 without valid credentials (Basic or Bearer, as the gateway's HTTP(S) backend sends them);
- 408 when the body did not arrive within `timeout`; 413 for a body over `max_body` (neither is dead-lettered: no
  body to keep);
- 503 with Retry-After while the database is down (the sink is retrying), the write queue is full, the receiver is
  stopping, or the readings were not stored within `timeout`. Not stored means retry: a body sent again maps to the
  same points (same tag, same time), so a retry after a late write stores nothing twice.

A request holds no more than its body and its points, and only while it is in a batch: while the database is down,
requests are turned away at once instead of piling up.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import logging
from collections.abc import Callable

import orjson
from aiohttp import web

from cloud.receiver_settings import HttpSettings
from cloud.write_path import Message
from core.ratelog import RateLimitedLog

log = logging.getLogger("cloud.receiver")
_refusals = RateLimitedLog(log, 10.0)

RETRY_AFTER_S = 10  # the Ruuvi Gateway's default http_period: its next post comes about then anyway
SHUTDOWN_TIMEOUT_S = 2.0


class HttpMessage(Message, eq=False):
    future: asyncio.Future[None] | None = None
    readings: int = 0  # points handed to the write path
    given_up: bool = False  # not handled (the receiver stopped first): the answer is 503

    def acknowledge(self) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_result(None)

    def give_up(self) -> None:
        if self.future is not None and not self.future.done():
            self.given_up = True
            self.future.set_result(None)


# (topic, body) -> the message, already in a batch.
Accept = Callable[[str, bytes], HttpMessage]
# Why no request can be taken now (database down, queue full, stopping), or None.
Busy = Callable[[], str | None]


class HttpInput:
    def __init__(self, settings: HttpSettings, accept: Accept, *, busy: Busy,
                 answered: Callable[[int], None]) -> None:
        self.settings = settings
        self._accept = accept
        self._busy = busy
        self._answered = answered
        self._pending: set[HttpMessage] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0  # the bound port, once started
        self.topic = f"http:{settings.path}"  # the `topic` of its messages and dead letters
        s = settings
        if s.auth == "basic":
            self._expected = b"Basic " + base64.b64encode(f"{s.user}:{s.password}".encode())
        elif s.auth == "bearer":
            self._expected = f"Bearer {s.token}".encode()
        else:
            self._expected = b""

    @property
    def url(self) -> str:
        s = self.settings
        host = f"[{s.host}]" if ":" in s.host else s.host
        return f"{'https' if s.tls else 'http'}://{host}:{self.port}{s.path}"

    async def start(self) -> None:
        """Listen; OSError when the address cannot be bound."""
        app = web.Application(client_max_size=self.settings.max_body)
        app.router.add_post(self.settings.path, self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.host, self.settings.port, ssl_context=self.settings.tls)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses  # the bound port, when the settings said 0 (tests)
        self.port = int(addresses[0][1]) if addresses else self.settings.port

    def give_up_all(self) -> None:
        """Answer 503 to every request whose readings were not handled: the gateway sends them again."""
        for msg in list(self._pending):
            msg.give_up()

    async def stop(self) -> None:
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
            self._runner = None

    # ---- one request ------------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        status, text, headers = await self._answer(request)
        self._answered(status)
        if status >= 400 and status != 401:
            _refusals.warning("HTTP %d to %s: %s", status, request.remote, text)
        if status == 503:
            headers["Retry-After"] = str(RETRY_AFTER_S)
        content_type = "application/json" if status == 200 else "text/plain"
        return web.Response(status=status, text=text + "\n", headers=headers, content_type=content_type)

    async def _answer(self, request: web.Request) -> tuple[int, str, dict[str, str]]:
        s = self.settings
        if not self._authorized(request.headers.get("Authorization", "")):
            realm = {"WWW-Authenticate": 'Basic realm="cloud-ingest"'} if s.auth == "basic" else \
                {"WWW-Authenticate": 'Bearer realm="cloud-ingest"'}
            return 401, "unauthorized", realm
        if request.content_length is not None and request.content_length > s.max_body:
            return 413, f"body of {request.content_length} bytes exceeds {s.max_body}", {}
        busy = self._busy()
        if busy is not None:
            return 503, f"not accepting readings now: {busy}", {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return 413, f"body exceeds {s.max_body} bytes", {}
        except TimeoutError:
            return 408, f"body not received within {s.timeout_s:g} s", {}
        busy = self._busy()  # it may have changed while the body came in
        if busy is not None:
            return 503, f"not accepting readings now: {busy}", {}
        msg = self._accept(self.topic, body)
        assert msg.future is not None
        self._pending.add(msg)
        try:
            async with asyncio.timeout_at(deadline):
                await asyncio.shield(msg.future)
        except TimeoutError:
            # Still in a batch: it may be stored later. A retry of the same body lands on the same points.
            return 503, f"readings not stored within {s.timeout_s:g} s; retry", {}
        finally:
            self._pending.discard(msg)
        if msg.given_up:
            return 503, "receiver stopping; readings not stored, retry", {}
        if msg.failure is not None:
            return 400, " ".join(msg.failure.reason.split())[:500], {}
        return 200, orjson.dumps({"readings": msg.readings, "refused": len(msg.refused)}).decode(), {}

    def _authorized(self, header: str) -> bool:
        if self.settings.auth == "none":
            return True
        try:
            given = header.strip().encode("latin-1")
        except UnicodeEncodeError:
            return False
        if self.settings.auth == "basic":
            # Compare decoded credentials, so that base64 padding or case variants of "Basic" still match.
            scheme, _, b64 = header.strip().partition(" ")
            if scheme.lower() != "basic":
                return False
            try:
                given = b"Basic " + base64.b64encode(base64.b64decode(b64.strip(), validate=True))
            except (binascii.Error, ValueError):
                return False
        return hmac.compare_digest(given, self._expected)
