"""``bookstream live`` (what ``make live`` runs): the paced publisher, the Flink job, both sinks
and the desk page as supervised processes on the session's own topics; the page watched in a
real browser (Debian's chromium driven by Playwright) while the session runs: its order count
grows, its PnL card updates, and a KILL on the control topic shows as HALTED; status lines while it
runs; a SIGTERM (what ``make stop`` sends) ends every process, the sinks with their summaries,
and the session is recorded as a run with its energy, which ``bookstream report`` reads."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
from it_helpers import BOOKSTREAM, PROJECT_ROOT, config_for, free_port, wait_for
from test_demo_cli import check_energy

from jobs.energy import EnergyMeter
from jobs.kafka_io import as_role, delete_topics, make_producer
from jobs.live import _Supervisor, record_session
from jobs.report import _energy, run_config, run_filters
from jobs.runs import load_run
from udfs.config import topics_env
from udfs.market.adapters.lobster import iter_lobster_events
from udfs.market.adapters.sources import SAMPLE_LOBSTER
from udfs.schema import Control, ControlCommand, encode_record

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

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


def _watch_the_page(url: str, cfg_env: dict[str, str], proc: subprocess.Popen, log: Path) -> None:
    """The desk page in headless chromium while the session runs: the order count grows, the
    equity moves, and a KILL sent to the session's control topic turns the mode to HALTED."""
    from playwright.sync_api import sync_playwright

    def up() -> bool:
        try:
            with urllib.request.urlopen(url + "state", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    wait_for(up, 120, "the live page", proc, log)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(url)

            shown_equity: set[str] = set()

            def count() -> int:
                shown_equity.add(page.text_content("#equity") or "")  # what the desk saw
                return int(page.text_content("#n-orders") or 0)

            first = int(wait_for(count, 240, "orders on the page", proc, log, poll_s=0.2))  # type: ignore[arg-type]
            wait_for(lambda: count() > first, 180, "the order count growing", proc, log, poll_s=0.2)
            rows = page.locator("#orders tr.order").count()
            assert rows > 0, "the orders table is empty"
            # the PnL card moves while the session runs (from nothing to a figure when the
            # sink's first risk report arrives, then between figures)

            def equity_shown() -> bool:
                count()
                return bool(shown_equity - {"-", ""})

            wait_for(equity_shown, 180, "the PnL on the page", proc, log, poll_s=0.2)
            assert len(shown_equity) >= 2, shown_equity
            assert page.text_content("#mode-value") == "ACTIVE"

            cfg = config_for(cfg_env)
            first_ts = next(iter(iter_lobster_events(*SAMPLE_LOBSTER))).ts_event
            with as_role("operator"):  # the desk's principal: the kill switch and no more
                producer = make_producer(cfg)
            kill = Control(ControlCommand.KILL, "", "it: desk kill", first_ts)
            producer.produce(cfg.topics.control, value=encode_record(kill))
            assert producer.flush(30) == 0
            wait_for(lambda: page.text_content("#mode-value") == "HALTED", 60, "HALTED", proc, log)
            assert "desk kill" in (page.text_content("#mode-reason") or "")
        finally:
            browser.close()


def test_a_live_session_runs_reports_and_stops_gracefully(tmp_path: Path) -> None:
    page_port = free_port()
    env = {
        "BOOKSTREAM_LAKE_ROOT": str(tmp_path / "lake"),
        "BOOKSTREAM_METRICS_PAGE_PORT": str(page_port),
    }
    log = tmp_path / "live.log"
    message, book = SAMPLE_LOBSTER
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BOOKSTREAM), "live", "--speed", "300", "--lobster", str(message), str(book)],
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
        session_env = {**env, **topics_env(config_for(env).topics.for_run(run))}
        _watch_the_page(f"http://127.0.0.1:{page_port}/", session_env, proc, log)
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
        # the stream job's own status line (its REST metrics): every published event read
        wait_for(
            lambda: last_status("stream-job", "inputs") == published,
            60,
            "the stream job's status line at every published event",
            proc,
            log,
        )

        proc.send_signal(signal.SIGTERM)  # what `make stop` (infra/live/stop.sh) sends
        assert proc.wait(timeout=150) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:  # the whole session: the supervisor and every process of it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        if run:
            cfg = config_for({**env, **topics_env(config_for(env).topics.for_run(run))})
            delete_topics(cfg, list(cfg.topics.names().values()))

    sink = _summary(log, "exec-sink")
    assert sink["new_orders"] > 0 and sink["inputs"] >= published and sink["kills"] == 1
    assert sink["accepted"] + sink["rejected"] == sink["new_orders"]
    history = _summary(log, "history-sink")
    assert history["rows"]["events"] == published
    assert history["dead_lettered"] == 0
    assert not (config_for(env).state_dir / "run" / "live.pid").exists()

    # the stopped session is a recorded run (its offsets, topics and energy), the newest one
    recorded = load_run(config_for(env), run)
    assert load_run(config_for(env))["run_id"] == run
    session = run_config(config_for(env), recorded)
    assert session.topics == config_for(env).topics.for_run(run)
    events = session.topics.events
    assert (
        sum(recorded["to"][events].values()) - sum(recorded["from"][events].values()) == published
    )
    assert run_filters(session, recorded)["events"] != "0"
    summary = json.loads(
        next(ln for ln in reversed(log.read_text().splitlines()) if '"kind": "live"' in ln)
    )
    assert summary == json.loads((session.lake_dir / "runs" / f"{run}.summary.json").read_text())
    assert summary["events_in"] == published and summary["fills"] == sink["fills"] > 0
    # each process of the session (the job's JVM apart), the broker
    check_energy(
        summary, ("stream-job", "flink", "exec-sink", "history-sink", "publisher", "page", "kafka")
    )
    # the supervisor's own, and the processes' CPU while they stop (the sinks' last commits)
    assert summary["energy"]["cpu_s"]["supervisor"] > 0
    assert summary["cpu_s_after_stop"] > 0, summary
    # what the report shows of it: the recorded energy per event and fill of the lake
    shown = _energy(session, run, published, summary["fills"])
    assert shown is not None and shown["kwh"] == summary["energy"]["kwh"]
    assert shown["g_co2e_per_trade"] == summary["energy"]["g_co2e_per_trade"]


def test_a_session_that_cannot_be_recorded_still_ends_and_says_why(tmp_path: Path, capsys) -> None:
    """Kafka gone when a session stops (its broker's port answers nothing): the session's end
    reads no offsets, so it is not recorded as a run; the supervisor says so on one line with
    the reason, raises nothing (the session ends with its own status) and writes no run."""
    gone = str(free_port())
    env = {"BOOKSTREAM_LAKE_ROOT": str(tmp_path / "lake"), "BOOKSTREAM_KAFKA_PORT": gone}
    run = "live.it-unrecorded"
    cfg = config_for(env).for_run(run)
    before = {topic: {0: 0} for topic in cfg.topics.names().values()}
    summary = record_session(cfg, run, before, EnergyMeter(cfg), _Supervisor(), 1.0)
    assert summary is None
    err = capsys.readouterr().err
    line = rf"live session {re.escape(run)}: not recorded as a run: .*transport failure"
    assert re.search(line, err), err
    assert not (cfg.lake_dir / "runs" / f"{run}.json").exists()
    assert not (cfg.lake_dir / "runs" / f"{run}.summary.json").exists()
