"""Where adverts come from: `bleak` (BlueZ), `simulate` (virtual tags) or `replay:FILE` (a capture).

`open_source(spec, options, counters)` builds one. bleak (and D-Bus) is imported only when the bleak source is
opened, so the simulator and replay do not pay for it in start-up time or memory.
"""

from __future__ import annotations

from edge.metrics import Counters
from edge.sources.base import Emit, Source, SourceError, SourceOptions, SourceUnavailable
from edge.sources.replay import Recorder

__all__ = ["Emit", "Recorder", "Source", "SourceError", "SourceOptions", "SourceUnavailable", "open_source"]


def open_source(spec: str, options: SourceOptions, counters: Counters) -> Source:
    """`spec` is `bleak`, `simulate` or `replay:FILE`. Raises SourceError for a bad spec or an unreadable capture."""
    if spec == "bleak":
        from edge.sources.ble import BleakSource

        return BleakSource(options, counters)
    if spec == "simulate":
        from edge.sources.simulate import SimulatedSource

        try:
            return SimulatedSource(options)
        except ValueError as e:
            raise SourceError(str(e)) from None
    if spec.startswith("replay:") and len(spec) > len("replay:"):
        from edge.sources.replay import ReplaySource

        return ReplaySource(spec[len("replay:"):], options)
    raise SourceError(f"unknown source {spec!r}: expected bleak, simulate or replay:FILE")
