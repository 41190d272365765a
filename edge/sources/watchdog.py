"""The BLE stall watchdog's decisions, kept pure (times in, actions out) so they are tested without Bluetooth.

BlueZ scanning on Linux can stop silently (discovery stuck "InProgress", the controller wedged, bluetoothd restarted
under us) and only a restart or a reboot brings it back; it is the top complaint against every peer gateway. Rule:
while tags are expected (one was heard within `expect_s`), `stall_s` without any advert triggers a recovery step,
and every `stall_s` of continued silence the next one: restart the scanner, then reset (power-cycle) the adapter,
alternately. Any advert ends the episode. Once nothing was heard for `expect_s`, the tags are taken to be gone (moved,
batteries out) and the watchdog stops poking the adapter, so the number of steps per episode is bounded.
"""

from __future__ import annotations

RESTART_SCANNER = "restart_scanner"
RESET_ADAPTER = "reset_adapter"


class Watchdog:
    def __init__(self, stall_s: float, expect_s: float, reset_every: int = 2) -> None:
        if stall_s <= 0 or expect_s < stall_s:
            raise ValueError("watchdog: need 0 < stall_s <= expect_s")
        self.stall_s = stall_s
        self.expect_s = expect_s
        self.reset_every = reset_every
        self.last_advert: float | None = None
        self.last_step: float | None = None
        self.steps = 0  # recovery steps in the current silence

    def advert(self, now: float) -> None:
        self.last_advert = now
        self.last_step = None
        self.steps = 0

    def expect_from(self, now: float) -> None:
        """Treat `now` as if a tag had just been heard: tags known from before a restart are expected."""
        if self.last_advert is None:
            self.advert(now)

    def expected(self, now: float) -> bool:
        return self.last_advert is not None and now - self.last_advert <= self.expect_s

    def check(self, now: float) -> str | None:
        """The recovery step due at `now`, if any (the caller performs it)."""
        if self.last_advert is None or not self.expected(now):
            return None
        since = now - (self.last_step if self.last_step is not None else self.last_advert)
        if since < self.stall_s:
            return None
        self.steps += 1
        self.last_step = now
        return RESET_ADAPTER if self.steps % self.reset_every == 0 else RESTART_SCANNER

    def status(self, now: float) -> str:
        if self.last_advert is None:
            return "waiting"  # no tag heard yet: nothing to compare against
        if not self.expected(now):
            return "idle"  # tags gone quiet for longer than expect_s
        if now - self.last_advert >= self.stall_s:
            return "stalled"
        return "receiving"
