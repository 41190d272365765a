"""A log line at a bounded rate: a failing disk or broker must not write its error hundreds of times a second."""

from __future__ import annotations

import logging
import threading
import time


class RateLimitedLog:
    """Logs at most once per `interval_s`; the next line that gets through says how many were held back."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._next = 0.0
        self._held = 0
        self._lock = threading.Lock()

    def log(self, level: int, msg: str, *args: object) -> bool:
        """Log now if the interval has passed (True), else count it as held back (False)."""
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._held += 1
                return False
            held, self._held = self._held, 0
            self._next = now + self.interval_s
        if held:
            msg += f" ({held} more like this in the last {self.interval_s:g} s)"
        self.logger.log(level, msg, *args)
        return True

    def error(self, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, msg, *args)

    def warning(self, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, msg, *args)
