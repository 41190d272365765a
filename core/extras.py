"""Which optional dependency ("extra") a missing module belongs to, so a CLI can say what to install in one line.

A Pi installs `edge-gw[gateway]` and a cloud host `edge-gw[cloud]` (pyproject.toml); each daemon's CLI is on the
PATH on both, so running the other one must say what is missing, not print a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

EXTRA_OF = {
    "bleak": "gateway",
    "dbus_fast": "gateway",
    "paho": "gateway",
    "gmqtt": "cloud",
    "influxdb_client": "cloud",
    "aiohttp": "cloud",
}


def run_with_extras(prog: str, main: Callable[[], None]) -> None:
    """Run a CLI's main(); a module of a missing extra ends it with one line and exit status 1."""
    try:
        main()
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        extra = EXTRA_OF.get(top)
        if extra is None:
            raise
        print(f"Error: {prog} needs the '{extra}' extra, which is not installed (no module {top!r}): "
              f"pip install 'edge-gw[{extra}]'", file=sys.stderr)
        sys.exit(1)
