"""``bookstream live``: the pipeline as long-running processes under one supervisor.

A paced publisher, the Flink stream job, the execution sink, the history sink and the live
desk page (jobs/live_page.py), each its own ``bookstream`` process, run by honcho's process
manager (the Procfile model: their output interleaved, each line prefixed with its name).
Every live session has a topic set of its own
(``live.<time>.<topic>``, :meth:`TopicsConfig.for_run`), so it never mixes with a demo's or an
earlier session's records; the history sink stores them in the same lake tables.

Stopping (Ctrl-C, SIGTERM, or ``make stop`` through ``<state>/run/live.pid``) sends SIGTERM to
every process: the sinks commit what they hold and print their summary; the stream job's state
is in its checkpoints. When one process ends by itself, the others are stopped too (so a
crash is never half a pipeline); the publisher therefore stays after its input is done
(``publish --wait``) until the session stops.

A stopped session is recorded as a run, like a demo (:func:`jobs.runs.record_run`): the offsets
``[from, to)`` it wrote on each of its topics (and their names) in
``<lake root>/runs/<session>.json``, and its summary beside them (``<session>.summary.json``,
also the supervisor's last line: events, fills, energy), so ``bookstream report --run
<session>`` (or ``latest``) covers it. Its energy: CPU seconds of each supervised process (its
Python; its JVMs as ``flink``) up to its exit, as :class:`_Supervisor` last read them, the
supervisor's own, and the services' over the session.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import threading
import time
from pathlib import Path

from confluent_kafka import KafkaException
from honcho import manager as honcho_manager

from jobs.energy import (
    EnergyMeter,
    cpu_seconds,
    proc_cpu_s,
    proc_start_and_cpu_s,
    process_table,
    tree_pids,
)
from jobs.kafka_io import as_role, create_topics, drain_topic, end_offsets
from jobs.runs import record_run
from udfs.config import Config, topics_env
from udfs.market.adapters.sources import Source
from udfs.schema import ExecKind, ExecReport, decode_record

__all__ = ["live_processes", "record_session", "run_live"]

SAMPLE_S = 2.0
"""How often the supervisor reads its processes' CPU time while the session runs (s)."""
STOP_SAMPLE_S = 0.1
"""... and while they stop (s): what a process used after its last reading is not counted."""

STOP_WAIT_S = 60
"""How long stopped processes get to commit before they are killed (honcho's default is 5 s,
less than an Iceberg commit of every table may take)."""


def live_processes(
    source: Source, *, speed: float, run: str, loops: int = 1
) -> dict[str, list[str]]:
    """name -> argv of each supervised process (``bookstream`` subcommands)."""
    bookstream = str(Path(sys.executable).with_name("bookstream"))
    files: list[str] = []
    for message, book in source.lobster:
        files += ["--lobster", str(message), str(book)]
    for capture in source.binance:  # one capture: its files, read in order as one stream
        files += ["--binance", *map(str, capture)]
    return {
        "stream-job": [bookstream, "stream-job", "--group-id", f"{run}.job", "--restore-latest"],
        "exec-sink": [bookstream, "exec-sink", "--group-id", f"{run}.sink"],
        "history-sink": [bookstream, "history-sink"],
        "page": [bookstream, "page"],
        "publisher": [
            bookstream,
            "publish",
            *files,
            "--speed",
            str(speed),
            "--loop",
            str(loops),
            "--no-progress",
            "--wait",
        ],
    }


def procfile(processes: dict[str, list[str]], env: dict[str, str]) -> str:
    """The same session as a Procfile (``honcho start -f FILE``), for those who run it that way."""
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    return "".join(f"{name}: {prefix} {shlex.join(argv)}\n" for name, argv in processes.items())


class _Supervisor(honcho_manager.Manager):
    """honcho's process manager that follows the CPU seconds of each process of the session.

    honcho runs each command under a shell, which the stop's signal kills before it reaps its
    command: the processes end orphaned, reaped by init, and their CPU time never reaches the
    supervisor's reaped-children counters. A thread therefore reads each one's own CPU time (and its
    descendants': the stream job's JVM as ``flink``) from /proc while it lives, every
    :data:`SAMPLE_S` (:data:`STOP_SAMPLE_S` once the stop has begun: the sinks' last commits);
    a process counts what it had used when last seen (one that ends by itself loses up to
    :data:`SAMPLE_S` of its CPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.own_cpu_s0 = proc_cpu_s(os.getpid())
        self.last_seen: dict[int, tuple[str, float]] = {}
        """pid -> (process name or ``flink``, own CPU seconds when last seen)"""
        self.cpu_at_stop: dict[str, float] | None = None
        self._alive_at_stop: dict[int, int] = {}
        """pid -> start time (clock ticks) of the session's processes alive at the stop"""
        self._stopping = threading.Event()
        self._ended = threading.Event()
        self._sampler = threading.Thread(target=self._sample_until_ended, daemon=True)

    def _sample(self, procs: dict[int, tuple[int, str, float]]) -> set[int]:
        """Read the session's processes in ``procs``; their pids."""
        seen: set[int] = set()
        for name, proc in list(self._processes.items()):
            if not proc.get("pid"):
                continue
            for pid in tree_pids(int(proc["pid"]), procs):
                _ppid, comm, cpu = procs[pid]
                self.last_seen[pid] = ("flink" if comm == "java" else name, cpu)
                seen.add(pid)
        return seen

    def _sample_until_ended(self) -> None:
        while not self._ended.is_set():
            if self._stopping.is_set():
                # orphaned as their shells die, they are in no tree of ours any more: re-read
                # those alive at the stop by pid, while it is still the same process
                for pid, started in list(self._alive_at_stop.items()):
                    with contextlib.suppress(OSError, ValueError):
                        start, cpu = proc_start_and_cpu_s(pid)
                        if start == started:
                            self.last_seen[pid] = (self.last_seen[pid][0], cpu)
                self._ended.wait(STOP_SAMPLE_S)
            else:
                self._sample(process_table(reaped_children=False))
                self._ended.wait(SAMPLE_S)

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds of each process as last seen, and the supervisor's own."""
        cpu = {name: 0.0 for name in self._processes} | {"flink": 0.0}
        for group, seconds in list(self.last_seen.values()):
            cpu[group] += seconds
        own = proc_cpu_s(os.getpid()) - self.own_cpu_s0
        return cpu | {"supervisor": own}

    def loop(self) -> None:
        self._sampler.start()
        try:
            super().loop()
        finally:
            self._ended.set()
            self._sampler.join()

    def terminate(self) -> None:
        if self.cpu_at_stop is None:
            # the session's processes now (a pid seen earlier may belong to another one now)
            for pid in self._sample(process_table(reaped_children=False)):
                with contextlib.suppress(OSError, ValueError):
                    self._alive_at_stop[pid] = proc_start_and_cpu_s(pid)[0]
            self.cpu_at_stop = self.cpu_by_process()
            self._stopping.set()
        super().terminate()


def _fills(cfg: Config, from_offsets: dict[int, int]) -> int:
    """Fills the session's execution sink committed."""
    return sum(
        1
        for rec in drain_topic(
            cfg, cfg.topics.executions, from_offsets=from_offsets, read_committed=True
        )
        if rec.value is not None and decode_record(ExecReport, rec.value).kind is ExecKind.FILL
    )


def record_session(
    cfg: Config,
    run: str,
    before: dict[str, dict[int, int]],
    meter: EnergyMeter,
    supervisor: _Supervisor,
    wall_s: float,
) -> dict[str, object] | None:
    """Record a stopped session as a run (offsets, topics, summary with its energy) and print
    the summary as the last line. When it cannot be recorded (its broker gone, the lake not
    writable): None, and a line on stderr naming the session and why; the session still ends,
    with its own status."""
    try:
        end = cpu_seconds(cfg)
        used = supervisor.cpu_by_process()
        at_stop = supervisor.cpu_at_stop or used
        for service in end.keys() - {"bookstream", "flink"}:
            used[service] = max(0.0, end[service] - meter.start_cpu_s.get(service, 0.0))
        with as_role("history-sink"):  # reads every topic (kafka.security=sasl)
            after = {t: end_offsets(cfg, t) for t in before}
            # a partition the start did not see yet (the topic was just created) starts at 0
            before = {t: {p: before[t].get(p, 0) for p in after[t]} for t in after}
            fills = _fills(cfg, before[cfg.topics.executions])
        record_run(cfg, run, before, after, topics=cfg.topics.names())
        events = sum(
            after[cfg.topics.events].get(p, o) - o for p, o in before[cfg.topics.events].items()
        )
        summary: dict[str, object] = {
            "run_id": run,
            "kind": "live",
            "events_in": events,
            "fills": fills,
            "wall_s": round(wall_s, 3),
            "energy": meter.stop(used).summary(events=events, trades=fills),
            # of which after the stop began (the sinks' last commits, every process's exit)
            "cpu_s_after_stop": round(sum(used.values()) - sum(at_stop.values()), 3),
        }
        line = json.dumps(summary, sort_keys=True, default=str)
        (cfg.lake_dir / "runs" / f"{run}.summary.json").write_text(line)
    except (KafkaException, OSError) as exc:
        print(f"live session {run}: not recorded as a run: {exc}", file=sys.stderr, flush=True)
        return None
    print(line, flush=True)
    return summary


def run_live(
    cfg: Config, source: Source, *, speed: float, loops: int = 1, print_procfile: bool = False
) -> int:
    """Run a live session until stopped, then record it as a run; its exit status (0 after a
    requested stop)."""
    source.check_files()
    run = f"live.{time.strftime('%Y%m%dT%H%M%S')}"
    live_cfg = cfg.for_run(run)
    env = topics_env(live_cfg.topics)
    processes = live_processes(source, speed=speed, run=run, loops=loops)
    if print_procfile:
        sys.stdout.write(procfile(processes, env))
        return 0
    create_topics(live_cfg)
    t0 = time.perf_counter()
    meter = EnergyMeter(cfg)
    with as_role("history-sink"):
        before = {t: end_offsets(live_cfg, t) for t in live_cfg.topics.names().values()}
    pid_file = cfg.state_dir / "run" / "live.pid"
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{os.getpid()}\n")
    honcho_manager.KILL_WAIT = STOP_WAIT_S
    supervisor = _Supervisor()
    for name, argv in processes.items():
        supervisor.add_process(name, shlex.join(argv), env={**os.environ, **env})
    print(
        f"live session {run}: topics {live_cfg.topics.events} ...; stop with Ctrl-C or `make stop`",
        file=sys.stderr,
        flush=True,
    )
    try:
        supervisor.loop()
        record_session(live_cfg, run, before, meter, supervisor, time.perf_counter() - t0)
    finally:
        pid_file.unlink(missing_ok=True)
    # a stop we were asked for (SIGINT/SIGTERM) is a normal end
    return 0 if supervisor.returncode in (0, 130, 143, -15, -2) else int(supervisor.returncode or 1)
