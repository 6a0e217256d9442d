"""A bounded sink (execution or history) in a process of its own, beside the demo's stream job.

The demo (jobs/demo.py) runs both sinks while the job still writes their inputs: each follows
its topics and stops exactly at the end offsets the demo hands it once the writers are done
(``final_ends`` of :func:`~jobs.execution_sink.run_sink` and
:func:`~jobs.history_sink.run_history_sink`), so it stores and decides exactly what a sink
started after the job would. A process of its own, not a thread: decoding, the sequencer and
Parquet writing are Python CPU work that would otherwise share one GIL with the demo's
client, its counting and the other sink. Started with ``spawn`` (a fresh interpreter: the
demo's process holds librdkafka threads and a JVM gateway that a ``fork`` must not copy).

The protocol, over one pipe: the demo sends the keyword arguments of the run (when it may
start: the execution sink needs the events topic complete), later the end offsets; the
sidecar answers with ``("ok", result, cpu_s)`` or ``("error", traceback)``.
"""

from __future__ import annotations

import logging
import multiprocessing
import resource
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from udfs.config import Config

__all__ = ["Sidecar", "SidecarError"]

logger = logging.getLogger(__name__)

Ends = dict[str, dict[int, int]]


class SidecarError(RuntimeError):
    """The sidecar's run raised (its traceback in the message) or it died."""


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _main(kind: str, cfg: Config, role: str, conn: Connection) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from jobs.kafka_io import set_process_role

    set_process_role(role)
    # imported here, before the demo says go: the imports (pyiceberg, pyarrow) overlap its work
    run: Callable[..., object]
    if kind == "exec-sink":
        from jobs.execution_sink import run_sink

        run = run_sink
    else:
        from jobs.history_sink import run_history_sink

        run = run_history_sink
    try:
        kwargs = conn.recv()
        if kwargs is None:  # the demo gave up before starting this sink
            return
        started = time.perf_counter()

        def final_ends() -> Ends | None:
            return conn.recv() if conn.poll() else None

        result = run(cfg, bounded=True, final_ends=final_ends, **kwargs)
        conn.send(("ok", result, _own_cpu_s(), time.perf_counter() - started))
    except BaseException:
        conn.send(("error", traceback.format_exc(), _own_cpu_s(), 0.0))
        raise


@dataclass
class Sidecar:
    """One sink in its own process (see the module's docstring)."""

    kind: str
    """``exec-sink`` or ``history-sink``"""
    cfg: Config
    role: str
    cpu_s: float = 0.0
    """CPU seconds the sidecar's process used (user + system), once :meth:`result` returned"""
    run_s: float = 0.0
    """its run's wall time from :meth:`start` to its end"""
    _conn: Connection | None = None
    _proc: Any = None
    _started: bool = field(default=False)

    def spawn(self) -> Sidecar:
        """Start the process (it imports its sink, then waits for :meth:`start`)."""
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_main, args=(self.kind, self.cfg, self.role, child), name=self.kind
        )
        self._proc.start()
        child.close()
        return self

    def start(self, **kwargs: object) -> None:
        """Run the sink with ``kwargs`` (its open ends to come by :meth:`finish`)."""
        assert self._conn is not None
        self._conn.send(kwargs)
        self._started = True

    def finish(self, ends: Ends) -> None:
        """The end offsets of every topic it follows: it stops there."""
        assert self._conn is not None
        self._conn.send(ends)

    def result(self, timeout_s: float = 3600.0) -> Any:
        """Wait for the run's result (and the process's end)."""
        assert self._conn is not None and self._proc is not None
        if not self._conn.poll(timeout_s):
            self.stop()
            raise SidecarError(f"{self.kind}: no result after {timeout_s:.0f}s")
        try:
            status, payload, self.cpu_s, self.run_s = self._conn.recv()
        except EOFError as exc:
            self._proc.join(10)
            raise SidecarError(f"{self.kind}: died (exit code {self._proc.exitcode})") from exc
        self._proc.join(30)
        if status != "ok":
            raise SidecarError(f"{self.kind} failed:\n{payload}")
        return payload

    def stop(self) -> None:
        """End the process if it still runs (the demo failed before the sink's end)."""
        if self._proc is None or not self._proc.is_alive():
            return
        if not self._started and self._conn is not None:
            self._conn.send(None)
            self._proc.join(5)
        if self._proc.is_alive():
            self._proc.terminate()  # SIGTERM: the sink commits what it holds and stops
            self._proc.join(30)
