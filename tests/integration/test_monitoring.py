"""Metrics, alerts and dashboards on the real parts, over one live run shared by the tests of
this module: Debian's Prometheus and Alertmanager started by the project's scripts
(infra/prometheus/), the publisher, the Flink stream job (its own Prometheus reporter on),
the execution sink and the history sink running live as their own processes, each serving
/metrics; a kill switch tripped through the control topic, the alert delivered to a webhook
this test serves; every Grafana panel's query run against that Prometheus; and the alert
rules' own unit tests (promtool)."""

from __future__ import annotations

import json
import math
import os
import queue
import re
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from it_helpers import (
    PROJECT_ROOT,
    config_for,
    free_port,
    kill_job,
    start_job,
    state_env,
    topic_env,
    topic_names,
    wait_for,
)

from jobs.kafka_io import KafkaRecord, create_topics, delete_topics, drain_topic, make_producer
from jobs.metrics import DASHBOARDS_DIR, dashboard_queries
from udfs.config import Config, load_config
from udfs.latency import HOPS_HEADER, parse_hops_trace
from udfs.market.adapters.lobster import iter_lobster_events
from udfs.market.adapters.sources import SAMPLE_LOBSTER
from udfs.schema import Control, ControlCommand, encode_record
from udfs.strategy.trading import heartbeat

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

RULES = PROJECT_ROOT / "infra" / "prometheus" / "rules"


def test_alert_rules_check_and_pass_their_unit_tests() -> None:
    check = subprocess.run(
        ["promtool", "check", "rules", str(RULES / "bookstream.rules.yml")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 18 rules found" in check.stdout
    tested = subprocess.run(
        ["promtool", "test", "rules", "bookstream.test.yml"],
        cwd=RULES,
        capture_output=True,
        text=True,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


class _Hook(BaseHTTPRequestHandler):
    received: queue.Queue[dict] = queue.Queue()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.put(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


def _query(port: int, promql: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as resp:
        return list(json.load(resp)["data"]["result"])


def _value(port: int, promql: str) -> float | None:
    """The one sample of an instant query (None: no series)."""
    got = _query(port, promql)
    return float(got[0]["value"][1]) if got else None


STATUS = re.compile(r"\[stream-job\] state=(\w+) inputs=(\d+) outputs=(\d+) lag=(\d+)")


@dataclass
class LiveRun:
    cfg: Config
    prom_port: int
    events: int
    """market events published"""
    started: float
    """wall clock (s) before anything started"""
    received: queue.Queue[dict]
    """Alertmanager's notifications at the webhook"""
    sink: subprocess.Popen
    sink_log: Path
    job_log: Path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    """The live run: Prometheus + Alertmanager, then the stream job, the execution sink, the
    history sink and the publisher (the sample, once, then waiting like in ``bookstream
    live``) as processes of their own, a KILL in the middle of the market's time; ready once
    the job has read every event and its output is complete (its status line says so) and
    the trading stage's heartbeat at the end lets the sink decide up to there."""
    tmp = tmp_path_factory.mktemp("monitoring")
    state = tmp / "state"
    state.mkdir()
    (state / "jars").symlink_to(load_config().jars_dir)  # the Flink job's jars, built once
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.received = queue.Queue()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    prom_port, am_port, flink_port = free_port(), free_port(), free_port()
    env = topic_env(
        "mon",
        **state_env(state),
        BOOKSTREAM_LAKE_ROOT=str(tmp / "lake"),
        BOOKSTREAM_METRICS_PROMETHEUS_PORT=str(prom_port),
        BOOKSTREAM_METRICS_ALERTMANAGER_PORT=str(am_port),
        BOOKSTREAM_METRICS_SCRAPE_INTERVAL_S="1",
        BOOKSTREAM_METRICS_ALERT_GROUP_WAIT_S="1",
        BOOKSTREAM_METRICS_ALERT_WEBHOOK_URL=f"http://127.0.0.1:{server.server_port}/alerts",
        # Flink's own metrics (off by default: its reporter binds every interface)
        BOOKSTREAM_METRICS_FLINK_REPORTER="true",
        BOOKSTREAM_METRICS_FLINK_PORTS=str(flink_port),  # one JVM: one port
        BOOKSTREAM_FLINK_REST_PORT=str(free_port()),
    )
    cfg = config_for(env)
    create_topics(cfg)
    full_env = {**os.environ, **env}
    started = time.time()
    start = subprocess.run(
        ["bash", "infra/prometheus/start.sh"], cwd=PROJECT_ROOT, env=full_env, capture_output=True
    )
    assert start.returncode == 0, start.stderr.decode()[-3000:]
    logs = {name: tmp / f"{name}.log" for name in ("job", "sink", "history", "publisher")}
    message, book = SAMPLE_LOBSTER
    procs = {
        "job": start_job(["stream-job", "--group-id", "it-mon-job"], env, logs["job"]),
        "sink": start_job(["exec-sink", "--group-id", "it-mon-sink"], env, logs["sink"]),
        "history": start_job(
            ["history-sink", "--only", "events", "orders", "executions"], env, logs["history"]
        ),
        "publisher": start_job(
            ["publish", "--lobster", str(message), str(book), "--no-progress", "--wait"],
            env,
            logs["publisher"],
        ),
    }
    try:
        events = list(iter_lobster_events(*SAMPLE_LOBSTER))
        producer = make_producer(cfg)
        kill = Control(
            ControlCommand.KILL, "", "it: operator kill", events[len(events) // 2].ts_event
        )
        producer.produce(cfg.topics.control, value=encode_record(kill))
        assert producer.flush(30) == 0

        # the job has read every event (its status line) and sends nothing more (the next line)
        def job_done() -> bool:
            lines = STATUS.findall(logs["job"].read_text(errors="replace"))
            done = [ln for ln in lines if int(ln[1]) == len(events)]
            return len(done) >= 2 and done[-1][2] == done[-2][2]

        wait_for(
            job_done, 180, "the job's status line: every event read", procs["job"], logs["job"]
        )
        inst, last = events[0].instrument, events[-1]
        done = heartbeat(inst, last.ts_event, last.seq)  # the trading stage decided up to here
        producer.produce(cfg.topics.orders, key=inst, value=encode_record(done))
        assert producer.flush(30) == 0
        yield LiveRun(
            cfg,
            prom_port,
            len(events),
            started,
            _Hook.received,
            procs["sink"],
            logs["sink"],
            logs["job"],
        )
    finally:
        kill_job(procs["job"])
        for name in ("history", "publisher", "sink"):
            if procs[name].poll() is None:
                procs[name].send_signal(signal.SIGTERM)
        for name in ("history", "publisher", "sink"):
            try:
                procs[name].wait(timeout=60)
            except subprocess.TimeoutExpired:
                kill_job(procs[name])
        subprocess.run(["bash", "infra/prometheus/stop.sh"], cwd=PROJECT_ROOT, env=full_env)
        server.shutdown()
        delete_topics(cfg, topic_names(cfg))


def test_the_stream_job_prints_its_status_line(run: LiveRun) -> None:
    lines = STATUS.findall(run.job_log.read_text(errors="replace"))
    assert lines, "no status line from the stream job"
    inputs = [int(ln[1]) for ln in lines]
    assert inputs == sorted(inputs) and inputs[-1] == run.events
    assert all(ln[0] == "RUNNING" for ln in lines[-2:])
    assert int(lines[-1][2]) > run.events  # features, stats, quality, orders...
    assert int(lines[-1][3]) == 0  # nothing left to read


def test_a_kill_switch_trips_the_alert_through_alertmanager_to_the_webhook(run: LiveRun) -> None:
    # Prometheus scrapes the sink (found through its target file) and sees every event
    def events_counted() -> bool:
        got = _value(
            run.prom_port,
            f'bookstream_records_in_total{{process="exec-sink",topic="{run.cfg.topics.events}"}}',
        )
        return got == run.events

    wait_for(events_counted, 120, "the sink's events counted in Prometheus", run.sink, run.sink_log)
    wait_for(
        lambda: _value(run.prom_port, 'bookstream_trading_mode{mode="HALTED"}') == 1.0,
        60,
        "the sink HALTED in Prometheus",
        run.sink,
        run.sink_log,
    )

    def kill_alert() -> dict | None:
        while True:
            try:
                note = run.received.get(timeout=1)
            except queue.Empty:
                return None
            for alert in note["alerts"]:
                name = alert["labels"]["alertname"]
                if name == "BookstreamKillSwitchTripped" and alert["status"] == "firing":
                    return dict(alert)

    alert = wait_for(kill_alert, 90, "the kill-switch alert at the webhook", run.sink, run.sink_log)
    assert isinstance(alert, dict)
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["description"].startswith("No new order is accepted")


def test_latency_histograms_count_every_order_hop_by_hop(run: LiveRun) -> None:
    """Each new order the job sent carries its trace; the sink observes tick-to-order and the
    job's hops once per order, the venue's hops per ack and first fill. The job's orders are
    visible once its Kafka transaction commits (at a checkpoint): counted as the sink reads
    them, read_committed."""
    traced: list[KafkaRecord] = []

    def counted() -> bool:
        traced[:] = [
            rec
            for rec in drain_topic(run.cfg, run.cfg.topics.orders, read_committed=True)
            if rec.value and b'"action":"new"' in rec.value and parse_hops_trace(rec.hops)
        ]
        # every process exports the (unlabelled) histogram; only the sink observes it
        got = _value(run.prom_port, "sum(bookstream_tick_to_order_seconds_count)")
        return bool(traced) and got == len(traced)

    wait_for(counted, 180, "tick-to-order counted once per order", run.sink, run.sink_log)
    per_hop = {
        r["metric"]["hop"]: float(r["value"][1])
        for r in _query(run.prom_port, "sum by (hop) (bookstream_hop_latency_seconds_count)")
    }
    for hop in ("read_feature", "order_out", "out_gateway"):
        assert per_hop[hop] == len(traced), hop
    assert per_hop["receive_read"] == 0  # a replayed file: its ts_recv is no time of this run
    assert per_hop["exchange_receive"] == 0  # LOBSTER carries no receive time
    assert per_hop["order_ack"] > 0
    assert HOPS_HEADER == "bookstream.hops"


KNOWN_EMPTY = {
    "Dead letters /s by stage and reason": "the sample has no bad record",
    "History sink dead letters /s": "the sample has no bad record",
    "Feed latency, exchange -> receive": "LOBSTER records carry no receive time",
}
"""Panels with no finite value in this run, and why."""


def _range(port: int, promql: str, start: float) -> dict:
    query = {"query": promql, "start": f"{start:.3f}", "end": f"{time.time():.3f}", "step": "1"}
    url = f"http://127.0.0.1:{port}/api/v1/query_range?" + urllib.parse.urlencode(query)
    with urllib.request.urlopen(url, timeout=10) as resp:
        return dict(json.load(resp))


def test_every_dashboard_query_parses_and_returns_data(run: LiveRun) -> None:
    """Grafana runs each panel's query as a range query over the dashboard's time range: so
    does this test, over the run, with Grafana's ``$__rate_interval`` at 1m. Flink's own
    metrics are among them (the job dashboard), and the energy dashboard's CPU seconds, kWh
    and gCO2e per 1,000 events and per trade."""
    wait_for(
        lambda: _value(run.prom_port, "sum(bookstream_iceberg_commit_seconds_count)"),
        120,
        "an Iceberg commit of the history sink in Prometheus",
    )
    time.sleep(3)  # a few more scrapes after the last change
    empty, failed = {}, []
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        for title, expr in dashboard_queries(path):
            answer = _range(run.prom_port, expr.replace("$__rate_interval", "1m"), run.started)
            if answer["status"] != "success":
                failed.append((path.stem, title, answer))
                continue
            finite = [
                v
                for series in answer["data"]["result"]
                for _t, v in series["values"]
                if math.isfinite(float(v))
            ]
            if not finite:
                empty[title] = expr
    assert not failed
    assert set(empty) == set(KNOWN_EMPTY), empty


def test_each_process_exports_its_cpu_seconds_and_the_energy_factors(run: LiveRun) -> None:
    """What the energy dashboard is made of: every process's CPU seconds, the stream job's
    MiniCluster JVM apart (its driver serves them), and the [energy] model's factors."""
    cpu = {
        (r["metric"]["process"], r["metric"]["group"]): float(r["value"][1])
        for r in _query(run.prom_port, "max by (process, group) (bookstream_cpu_seconds_total)")
    }
    assert cpu[("stream-job", "flink")] > cpu[("stream-job", "python")] > 0, cpu
    for process in ("exec-sink", "history-sink", "publisher"):
        assert cpu[(process, "python")] > 0, cpu
    energy = run.cfg.energy
    factor = _value(run.prom_port, 'max(bookstream_energy_factor{factor="kwh_per_cpu_second"})')
    assert factor is not None
    assert math.isclose(factor, energy.watts_per_cpu * energy.pue / 3.6e6, rel_tol=1e-9)
    grid = _value(run.prom_port, 'max(bookstream_energy_factor{factor="g_co2e_per_kwh"})')
    assert grid == energy.grid_g_co2e_per_kwh
    # the energy dashboard's figures per 1,000 events and per trade, now
    shown = dict(dashboard_queries(DASHBOARDS_DIR / "energy.json"))
    for title in ("Emissions per 1,000 events (gCO2e)", "Emissions per trade (gCO2e)"):
        got = _value(run.prom_port, shown[title])
        assert got is not None and math.isfinite(got) and got > 0, (title, got)


def test_a_graceful_stop_commits_and_withdraws_the_target(run: LiveRun) -> None:
    targets = run.cfg.state_dir / "prometheus" / "targets"
    sink_targets = [p.name for p in targets.glob("exec-sink-*.json")]
    assert sink_targets == [f"exec-sink-{run.sink.pid}.json"]
    run.sink.send_signal(signal.SIGTERM)
    assert run.sink.wait(timeout=60) == 0, run.sink_log.read_text()[-3000:]
    last = run.sink_log.read_text().strip().splitlines()[-1]
    assert json.loads(last)["kills"] == 1
    assert not list(targets.glob("exec-sink-*.json"))
