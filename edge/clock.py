"""The clock behind a small interface, so tests can drive time and clock synchronisation.

Test-only knob: `EDGE_GW_TEST_CLOCK_STEPS="<after s>:<offset s>[,...]"` makes SystemClock's wall clock run
`offset` seconds off the real one from `after` seconds (monotonic) after the clock was made, e.g. `0:-3600` for a
gateway an hour behind from the start, `3:3600,8:0` for a clock that steps an hour ahead after 3 s and back after
8 s. The fault suite uses it to step a gateway's clock in a subprocess without touching the host's clock. Never set
it on a real gateway: its readings would carry wrong times.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import time
from typing import Protocol

_STA_UNSYNC = 0x0040
_TIME_ERROR = 5
TEST_STEPS_ENV = "EDGE_GW_TEST_CLOCK_STEPS"


class Clock(Protocol):
    def wall_ns(self) -> int: ...

    def mono_ns(self) -> int: ...

    def synced(self) -> bool: ...

    def boot_id(self) -> str: ...


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h> on 64-bit Linux: 8 longs-ish fields then padding; only `status` is read.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_pad", ctypes.c_int * 11),
    ]


def kernel_clock_synced() -> bool | None:
    """Ask the kernel (adjtimex) whether an NTP daemon has synchronised the clock; None when it cannot tell."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR and not tx.status & _STA_UNSYNC


def _read_boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def parse_test_steps(text: str) -> list[tuple[int, int]]:
    """`<after s>:<offset s>,...` (EDGE_GW_TEST_CLOCK_STEPS) as (after ns, offset ns), in order of `after`."""
    steps: list[tuple[int, int]] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        after, sep, offset = part.partition(":")
        try:
            steps.append((int(float(after) * 1e9), int(float(offset) * 1e9)))
        except ValueError:
            raise ValueError(f"{TEST_STEPS_ENV}: {part!r} is not <after s>:<offset s>") from None
        if not sep:
            raise ValueError(f"{TEST_STEPS_ENV}: {part!r} is not <after s>:<offset s>")
    return sorted(steps)


class SystemClock:
    """The real clock. `assume_synced` is for hosts whose time is right but whose kernel does not say so
    (containers, hosts synchronised by a hypervisor)."""

    def __init__(self, *, assume_synced: bool = False) -> None:
        self._assume_synced = assume_synced
        self._synced_latch = False
        self._boot_id = _read_boot_id()
        self._steps = parse_test_steps(os.environ.get(TEST_STEPS_ENV, ""))
        self._made = time.monotonic_ns()

    def wall_ns(self) -> int:
        if self._steps:
            return time.time_ns() + self._test_offset()
        return time.time_ns()

    def _test_offset(self) -> int:
        since = time.monotonic_ns() - self._made
        offset = 0
        for after, value in self._steps:
            if since < after:
                break
            offset = value
        return offset

    def mono_ns(self) -> int:
        # BOOTTIME keeps counting through suspend, so offsets stay valid on a laptop or a Pi that sleeps.
        return time.clock_gettime_ns(time.CLOCK_BOOTTIME)

    def synced(self) -> bool:
        if self._assume_synced or self._synced_latch:
            return True
        self._synced_latch = kernel_clock_synced() is True
        return self._synced_latch

    def boot_id(self) -> str:
        return self._boot_id
