"""``bookstream live`` (what ``make live`` runs): the paced publisher, the Flink job and both
sinks as supervised processes on the session's own topics; status lines while it runs; a
SIGTERM (what ``make stop`` sends) ends every process, the sinks with their summaries."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from it_helpers import BOOKSTREAM, PROJECT_ROOT, config_for, wait_for

from jobs.kafka_io import delete_topics
from udfs.config import topics_env
from udfs.market.adapters.sources import SAMPLE_LOBSTER

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

LINE = re.compile(r"^\S+ (?P<name>[\w-]+)\s+\| (?P<text>.*)$")


def _lines(log: Path) -> list[tuple[str, str]]:
    """(process, text) of each line the supervisor printed."""
    out = []
    for raw in log.read_text(errors="replace").splitlines():
        m = LINE.match(raw)
        if m:
            out.append((m["name"], m["text"]))
    return out


def _summary(log: Path, process: str) -> dict:
    """The JSON line a process printed last."""
    found = [t for name, t in _lines(log) if name == process and t.startswith("{")]
    assert found, f"{process} printed no summary:\n{log.read_text()[-3000:]}"
    return dict(json.loads(found[-1]))


def test_a_live_session_runs_reports_and_stops_gracefully(tmp_path: Path) -> None:
    env = {"BOOKSTREAM_LAKE_ROOT": str(tmp_path / "lake")}
    log = tmp_path / "live.log"
    message, book = SAMPLE_LOBSTER
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BOOKSTREAM), "live", "--speed", "2000", "--lobster", str(message), str(book)],
            cwd=PROJECT_ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    run = ""
    try:

        def session() -> str:
            m = re.search(r"live session (live\.\d{8}T\d{6}):", log.read_text(errors="replace"))
            return m.group(1) if m else ""

        run = str(wait_for(session, 60, "the session's name", proc, log))
        # the market is published, and the execution sink turns the job's orders into reports
        wait_for(
            lambda: any(n == "publisher" and t.startswith("{") for n, t in _lines(log)),
            120,
            "the publisher's summary",
            proc,
            log,
        )
        published = _summary(log, "publisher")["published"]

        def last_status(process: str, field: str) -> int:
            """``field`` of the newest status line of ``process`` (-1: none yet)."""
            status = [t for n, t in _lines(log) if n == process and f"[{process}]" in t]
            m = re.search(rf"{field}=(\d+)", status[-1]) if status else None
            return int(m[1]) if m else -1

        def trading() -> bool:
            return last_status("exec-sink", "outputs") > 0

        wait_for(trading, 240, "execution reports from the live job's orders", proc, log)

        def stored() -> bool:
            return last_status("history-sink", "rows") >= published

        wait_for(stored, 120, "the history sink past the published events", proc, log)

        proc.send_signal(signal.SIGTERM)  # what `make stop` (infra/live/stop.sh) sends
        assert proc.wait(timeout=150) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if run:
            cfg = config_for({**env, **topics_env(config_for(env).topics.for_run(run))})
            delete_topics(cfg, list(cfg.topics.names().values()))

    sink = _summary(log, "exec-sink")
    assert sink["new_orders"] > 0 and sink["inputs"] >= published
    assert sink["accepted"] + sink["rejected"] == sink["new_orders"]
    history = _summary(log, "history-sink")
    assert history["rows"]["events"] == published
    assert history["dead_lettered"] == 0
    assert not (config_for(env).state_dir / "run" / "live.pid").exists()
