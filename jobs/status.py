"""A status line every few seconds from a long-running stage (inputs, outputs, lag), on
stderr through logging, so a supervised live run (``bookstream live``) shows each process
moving without a terminal's progress bar."""

from __future__ import annotations

import logging
import time

logger = logging.getLogger("bookstream.status")

STATUS_EVERY_S = 5.0


class StatusLine:
    def __init__(self, stage: str, every_s: float = STATUS_EVERY_S) -> None:
        self.stage = stage
        self.every_s = every_s
        self._next = time.monotonic() + every_s

    def due(self) -> bool:
        """Time for the next line (cheap: call it on every poll)."""
        return time.monotonic() >= self._next

    def emit(self, **fields: object) -> None:
        self._next = time.monotonic() + self.every_s
        logger.info("[%s] %s", self.stage, " ".join(f"{k}={v}" for k, v in fields.items()))
