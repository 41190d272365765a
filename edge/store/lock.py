"""Who runs on a buffer: an flock on `<buffer>.lock`, held by the daemon for as long as it lives.

The status heartbeat cannot say this on its own: on a full disk the heartbeat is not written, and a live daemon would
look dead, so that `edge-gw flush` would start a second uplink on the same buffer. A lock needs no write, and the
kernel drops it when the process dies, however it dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

from edge.store.model import StoreError


def lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


class BufferLock:
    """Held from acquire() until release() or the end of the process."""

    def __init__(self, db: Path) -> None:
        self.path = lock_path(db)
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        try:
            f = open(self.path, "a+")  # noqa: SIM115 - held for the life of the daemon
        except OSError as e:
            msg = f"cannot open the buffer lock {self.path}: {e.strerror or e}"
            raise StoreError(msg) from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            pid = holder(self.path.with_name(self.path.name.removesuffix(".lock")))
            msg = f"another edge-gw (pid {pid or '?'}) runs on this buffer"
            raise StoreError(msg) from None
        # The pid is for people and for `status`; a disk too full to take it does not matter to the lock.
        with contextlib.suppress(OSError):
            f.truncate(0)
            f.write(f"{os.getpid()}\n")
            f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def holder(db: Path) -> int | None:
    """The pid of the live process that holds the lock of buffer `db` (0 if it wrote none), or None."""
    path = lock_path(db)
    try:
        f = open(path)  # noqa: SIM115
    except OSError:
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = f.read().strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(f, fcntl.LOCK_UN)
        return None
