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
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

from jobs.kafka_io import create_topics
from udfs.config import Config, topics_env
from udfs.market.adapters.sources import Source

__all__ = ["live_processes", "run_live"]

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


def run_live(
    cfg: Config, source: Source, *, speed: float, loops: int = 1, print_procfile: bool = False
) -> int:
    """Run a live session until stopped; its exit status (0 after a requested stop)."""
    from honcho import manager as honcho_manager

    source.check_files()
    run = f"live.{time.strftime('%Y%m%dT%H%M%S')}"
    live_cfg = cfg.for_run(run)
    env = topics_env(live_cfg.topics)
    processes = live_processes(source, speed=speed, run=run, loops=loops)
    if print_procfile:
        sys.stdout.write(procfile(processes, env))
        return 0
    create_topics(live_cfg)
    pid_file = cfg.state_dir / "run" / "live.pid"
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{os.getpid()}\n")
    honcho_manager.KILL_WAIT = STOP_WAIT_S
    supervisor = honcho_manager.Manager()
    for name, argv in processes.items():
        supervisor.add_process(name, shlex.join(argv), env={**os.environ, **env})
    print(
        f"live session {run}: topics {live_cfg.topics.events} ...; stop with Ctrl-C or `make stop`",
        file=sys.stderr,
        flush=True,
    )
    try:
        supervisor.loop()
    finally:
        pid_file.unlink(missing_ok=True)
    # a stop we were asked for (SIGINT/SIGTERM) is a normal end
    return 0 if supervisor.returncode in (0, 130, 143, -15, -2) else int(supervisor.returncode or 1)
