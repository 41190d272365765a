"""`edge-gw scan`: print decoded adverts as JSON lines, optionally recording them for `--source replay:FILE`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from core import ruuvi
from edge.metrics import Counters
from edge.model import Advert
from edge.sources import Recorder, SourceOptions, open_source


def scan(
    kind: str,
    options: SourceOptions,
    counters: Counters,
    *,
    record: Path | None,
    duration: float | None,
    out: Callable[[str], None],
) -> int:
    """Run the source until it ends, `duration` passes or Ctrl-C; return the number of adverts seen."""
    source = open_source(kind, options, counters)
    seen = 0
    start = time.monotonic()

    def on_advert(adv: Advert, recorder: Recorder | None) -> None:
        nonlocal seen
        seen += 1
        if recorder is not None:
            recorder.write(adv, time.monotonic() - start)
        try:
            fields: dict[str, object] = ruuvi.decode(adv.payload)
        except ruuvi.DecodeError as e:
            fields = {"error": str(e)}
        out(json.dumps({"mac": adv.mac, "rssi": adv.rssi, "raw": adv.payload.hex(), **fields}, separators=(",", ":")))

    async def main(recorder: Recorder | None) -> None:
        task = asyncio.ensure_future(source.run(lambda adv: on_advert(adv, recorder)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(task, duration)

    def go(recorder: Recorder | None) -> None:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main(recorder))

    if record is None:
        go(None)
    else:
        with Recorder(record) as recorder:
            go(recorder)
    return seen
