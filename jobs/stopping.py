"""Graceful stop of a long-running stage: SIGTERM (``make stop``, a supervisor) or SIGINT
(Ctrl-C) sets a flag; the stage's loop commits what it holds and returns its summary."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopFlag:
    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.stop = False

    def __call__(self, signum: int, _frame: object) -> None:
        logger.info("%s: signal %d: committing what it holds and stopping", self.stage, signum)
        self.stop = True

    def install(self) -> Callable[[], None]:
        """Handle SIGTERM/SIGINT with this flag; returns what puts the previous handlers back."""
        previous = [signal.signal(sig, self) for sig in SIGNALS]

        def restore() -> None:
            for sig, handler in zip(SIGNALS, previous, strict=True):
                signal.signal(sig, handler)

        return restore
