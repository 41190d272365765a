"""What every advert source provides: the `Source` protocol, its options and its errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from edge.model import Advert

Emit = Callable[[Advert], None]


class SourceError(Exception):
    """A source cannot start or go on (bad replay file, bad option, ...). The message is one line."""


class SourceUnavailable(SourceError):
    """The source's hardware or service is missing (no D-Bus, no BlueZ, no adapter). The message is one line and
    suggests `--source simulate`."""


class Source(Protocol):
    async def run(self, emit: Emit) -> None:
        """Hand every advert to `emit`. Returns when exhausted (count reached, replay file ended); cancel to stop."""
        ...

    def state(self) -> dict[str, Any]:
        """Scanner/adapter state for `edge-gw status`, JSON-safe."""
        ...


@dataclass(frozen=True, slots=True)
class SourceOptions:
    # bleak
    adapter: str | None = None  # "hci1"; None lets BlueZ pick the first powered adapter
    passive: bool = True  # passive scan where BlueZ supports it, else active (logged)
    watchdog_s: float = 60.0  # no advert for this long while tags are expected -> restart the scanner
    expect_s: float = 600.0  # tags count as "expected" for this long after the last advert
    # Tags were heard recently by an earlier run (from the buffer's per-tag state): the watchdog is armed from the
    # start, so an adapter that comes up deaf after a restart is recovered too, not only one that goes deaf later.
    tags_expected: bool = False
    check_s: float = 1.0  # how often the watchdog looks; tests make it small
    reset_pause_s: float = 2.0  # how long an adapter stays powered off during a reset
    # simulate
    tags: int = 10
    rate: float = 20.0  # adverts per second in total; 0 = as fast as possible
    seed: int = 1
    air_every: int = 10  # every n-th virtual tag is a Ruuvi Air (DF6/E1); 0 = none
    # replay
    realtime: bool = True  # replay at the recorded pace; False = as fast as possible
    # all sources
    count: int | None = None  # stop after this many adverts
