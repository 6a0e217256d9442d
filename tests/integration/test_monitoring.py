"""Metrics and alerts on the real parts: Debian's Prometheus and Alertmanager started by the
project's scripts (infra/prometheus/), the execution sink running live and serving /metrics,
a kill switch tripped through the control topic, the alert delivered to a webhook this test
serves; and the alert rules' own unit tests (promtool)."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from it_helpers import (
    PROJECT_ROOT,
    config_for,
    free_port,
    start_job,
    topic_env,
    topic_names,
    wait_for,
)

from jobs.kafka_io import create_topics, delete_topics, make_producer
from jobs.publish import publish
from udfs.market.adapters.lobster import iter_lobster_events
from udfs.market.adapters.sources import SAMPLE_LOBSTER, Source
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


@pytest.fixture
def webhook() -> Iterator[tuple[str, queue.Queue[dict]]]:
    """An Alertmanager webhook receiver: the URL, and the notifications it got."""
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.received = queue.Queue()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/alerts", _Hook.received
    server.shutdown()


def _query(port: int, promql: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as resp:
        return list(json.load(resp)["data"]["result"])


def test_a_kill_switch_trips_the_alert_through_alertmanager_to_the_webhook(
    tmp_path: Path, webhook: tuple[str, queue.Queue[dict]]
) -> None:
    url, received = webhook
    prom_port, am_port = free_port(), free_port()
    env = topic_env(
        "mon",
        BOOKSTREAM_STATE_DIR=str(tmp_path / "state"),
        BOOKSTREAM_METRICS_PROMETHEUS_PORT=str(prom_port),
        BOOKSTREAM_METRICS_ALERTMANAGER_PORT=str(am_port),
        BOOKSTREAM_METRICS_SCRAPE_INTERVAL_S="1",
        BOOKSTREAM_METRICS_ALERT_GROUP_WAIT_S="1",
        BOOKSTREAM_METRICS_ALERT_WEBHOOK_URL=url,
    )
    cfg = config_for(env)
    create_topics(cfg)
    full_env = {**os.environ, **env}
    start = subprocess.run(
        ["bash", "infra/prometheus/start.sh"], cwd=PROJECT_ROOT, env=full_env, capture_output=True
    )
    assert start.returncode == 0, start.stderr.decode()[-3000:]
    log = tmp_path / "sink.log"
    sink = start_job(["exec-sink", "--group-id", "it-monitoring"], env, log)
    try:
        # the market, the trading stage's heartbeat at its end, and a KILL in the middle
        events = list(iter_lobster_events(*SAMPLE_LOBSTER))
        assert publish(cfg, Source(lobster=[SAMPLE_LOBSTER]), progress=False).published == len(
            events
        )
        producer = make_producer(cfg)
        inst, last = events[0].instrument, events[-1]
        done = heartbeat(inst, last.ts_event, last.seq)  # the trading stage decided up to here
        producer.produce(cfg.topics.orders, key=inst, value=encode_record(done))
        kill_ts = events[len(events) // 2].ts_event
        kill = Control(ControlCommand.KILL, "", "it: operator kill", kill_ts)
        producer.produce(cfg.topics.control, value=encode_record(kill))
        assert producer.flush(30) == 0

        # Prometheus scrapes the sink (found through its target file) and sees every event
        def events_counted() -> bool:
            got = _query(
                prom_port,
                f'bookstream_records_in_total{{process="exec-sink",topic="{cfg.topics.events}"}}',
            )
            return bool(got) and float(got[0]["value"][1]) == len(events)

        wait_for(events_counted, 120, "the sink's events counted in Prometheus", sink, log)
        halted = _query(prom_port, 'bookstream_trading_mode{mode="HALTED"}')
        assert [float(r["value"][1]) for r in halted] == [1.0]

        def kill_alert() -> dict | None:
            while True:
                try:
                    note = received.get(timeout=1)
                except queue.Empty:
                    return None
                for alert in note["alerts"]:
                    name = alert["labels"]["alertname"]
                    if name == "BookstreamKillSwitchTripped" and alert["status"] == "firing":
                        return dict(alert)

        alert = wait_for(kill_alert, 90, "the kill-switch alert at the webhook", sink, log)
        assert isinstance(alert, dict)
        assert alert["labels"]["severity"] == "critical"
        assert alert["annotations"]["description"].startswith("No new order is accepted")

        # a graceful stop: the sink commits, prints its summary and withdraws its target
        targets = cfg.state_dir / "prometheus" / "targets"
        assert [p.name for p in targets.glob("exec-sink-*.json")] == [f"exec-sink-{sink.pid}.json"]
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(timeout=60) == 0, log.read_text()[-3000:]
        last = log.read_text().strip().splitlines()[-1]
        assert json.loads(last)["kills"] == 1
        assert not list(targets.glob("exec-sink-*.json"))
    finally:
        if sink.poll() is None:
            sink.kill()
        subprocess.run(["bash", "infra/prometheus/stop.sh"], cwd=PROJECT_ROOT, env=full_env)
        delete_topics(cfg, topic_names(cfg))
