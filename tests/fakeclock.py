"""A clock the tests set by hand (edge.clock.Clock)."""

from __future__ import annotations


class FakeClock:
    """A clock the tests set by hand."""

    def __init__(self, wall_ns: int = 1_763_900_000_000_000_000, *, synced: bool = True, boot: str = "boot-1") -> None:
        self.wall = wall_ns
        self.mono = 1_000_000_000
        self.is_synced = synced
        self.boot = boot

    def advance(self, seconds: float) -> None:
        step = int(seconds * 1e9)
        self.wall += step
        self.mono += step

    def step(self, seconds: float) -> None:
        """Step the wall clock (settimeofday, an NTP step): the monotonic clock does not move."""
        self.wall += int(seconds * 1e9)

    def wall_ns(self) -> int:
        return self.wall

    def mono_ns(self) -> int:
        return self.mono

    def synced(self) -> bool:
        return self.is_synced

    def boot_id(self) -> str:
        return self.boot
