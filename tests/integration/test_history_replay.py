"""History in Iceberg and deterministic replay, on a real live run (``demo_history``).

* every topic of the run is in its table, row for row, and the newest snapshot records the
  topics' end offsets;
* ``bookstream replay --verify`` reproduces the live orders and fills byte for byte;
* a replay under a different strategy setting diverges, and the report names the first
  divergent record and the input event behind it.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from it_helpers import BOOKSTREAM, config_for, run_cli

from jobs.doctor import run_doctor
from jobs.kafka_io import drain_topic, end_offsets
from jobs.lake import committed_offsets, history_streams, open_catalog
from udfs.config import PROJECT_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def test_every_topic_is_stored_row_for_row(demo_history) -> None:
    cfg = demo_history.cfg
    catalog = open_catalog(cfg)
    total = 0
    for stream in history_streams(cfg):
        topic = getattr(cfg.topics, stream.topic_field)
        table = catalog.load_table(f"{cfg.lake.namespace}.{stream.name}")
        rows = table.scan(selected_fields=("_partition", "_offset")).to_arrow()
        stored = sorted(
            zip(rows["_partition"].to_pylist(), rows["_offset"].to_pylist(), strict=True)
        )
        in_kafka = sorted(
            (r.partition, r.offset)
            for r in drain_topic(cfg, topic, read_committed=True, idle_timeout_s=15)
        )
        assert stored == in_kafka, stream.name  # nothing lost, nothing twice
        total += len(stored)
        # the snapshot says how far the table holds the topic: its end (markers included)
        if in_kafka:
            assert committed_offsets(table)[topic] == {
                p: o for p, o in end_offsets(cfg, topic).items() if o > 0
            }, stream.name
    assert total == demo_history.summary["history_rows"]
    assert demo_history.summary["history_rows"] > demo_history.summary["events_in"]


def test_feature_rows_carry_event_and_availability_time(demo_history) -> None:
    cfg = demo_history.cfg
    table = open_catalog(cfg).load_table(f"{cfg.lake.namespace}.features")
    rows = table.scan(selected_fields=("ts_event", "ts_proc", "event_time")).to_arrow()
    assert rows.num_rows == demo_history.summary["features_out"]
    ts_event = rows["ts_event"].to_pylist()
    ts_proc = rows["ts_proc"].to_pylist()
    # available to the live path (job wall clock, 2026) long after the exchange time (2012/2024)
    assert all(p > e for p, e in zip(ts_proc, ts_event, strict=True))
    assert [t.timestamp() * 1e6 for t in rows["event_time"].to_pylist()] == pytest.approx(
        [e // 1000 for e in ts_event], abs=1
    )


def test_replay_reproduces_the_live_run(demo_history) -> None:
    summary, _proc, _elapsed = run_cli(
        ["replay", "--verify", "--no-progress"], demo_history.env, timeout_s=600
    )
    live = demo_history.summary
    assert summary["run_id"] == live["run_id"]
    assert summary["events_replayed"] == live["published"]
    assert summary["orders_live"] > 0 and summary["fills_live"] == live["fills"] > 0
    assert summary["orders_replayed"] == summary["orders_live"]
    assert summary["orders_identical"] == summary["orders_live"]
    assert summary["fills_identical"] == summary["fills_live"]
    assert summary["executions_identical"] == summary["executions_live"]
    assert summary["identical"] is True and summary["first_divergence"] is None
    # the verdict is kept beside the run's offsets, for `bookstream report`
    cfg = demo_history.cfg
    verdict = json.loads((cfg.lake_dir / "runs" / f"{live['run_id']}.replay.json").read_text())
    assert verdict["replay_id"] == summary["replay_id"] and verdict["identical"] is True
    assert verdict["orders_identical"] == summary["orders_live"] == verdict["orders_live"]


def test_replay_names_the_first_divergence(demo_history) -> None:
    # the same history replayed with a stricter entry threshold: decisions change
    env = {**os.environ, **demo_history.env, "BOOKSTREAM_STRATEGY_ENTER_THRESHOLD": "0.75"}
    proc = subprocess.run(
        [str(BOOKSTREAM), "replay", "--verify", "--no-progress"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["identical"] is False
    assert summary["orders_identical"] < summary["orders_live"]
    first = summary["first_divergence"]
    assert first["stream"] == "orders"
    assert first["key"] in demo_history.summary["instruments"]
    assert isinstance(first["position"], int)
    recorded = demo_history.cfg.lake_dir / "runs" / f"{summary['run_id']}.replay.json"
    assert json.loads(recorded.read_text())["first_divergence"] == {
        k: first[k] for k in ("stream", "key", "position")
    }
    live, replayed = first["live"], first["replayed"]
    assert live != replayed
    # the input event behind it is the recorded event of the divergent order
    order = live or replayed
    event = first["input_event"]
    assert event["instrument"] == first["key"] == order["instrument"]
    assert event["seq"] == order["source_seq"]


def test_replay_of_a_time_range(demo_history) -> None:
    # only the Binance day (2024): the LOBSTER 2012 events are outside the range
    cfg = demo_history.cfg
    summary, _proc, _elapsed = run_cli(
        [
            "replay",
            "--from",
            "2024-01-01T00:00:00",
            "--to",
            "2025-01-01",
            "--verify",
            "--no-progress",
        ],
        demo_history.env,
        timeout_s=600,
    )
    events = (
        open_catalog(cfg)
        .load_table(f"{cfg.lake.namespace}.events")
        .scan(selected_fields=("instrument", "event_time"))
        .to_arrow()
        .to_pylist()
    )
    in_range = [e for e in events if e["event_time"].year == 2024]
    assert 0 < len(in_range) < len(events)
    assert summary["run_id"] is None
    assert summary["events_replayed"] == len(in_range)
    assert summary["orders_live"] > 0
    assert summary["orders_identical"] == summary["orders_live"] == summary["orders_replayed"]
    assert summary["identical"] is True


def test_doctor_reports_the_lake(demo_history) -> None:
    ok, report = run_doctor(demo_history.cfg, need_broker=False)
    lake = report["checks"]["lake"]
    assert lake["ok"] is True
    assert f"events={demo_history.summary['published']}" in lake["detail"]
    assert f"features={demo_history.summary['features_out']}" in lake["detail"]
    broken = config_for({**demo_history.env, "BOOKSTREAM_LAKE_CATALOG": "rest"})
    ok, report = run_doctor(broken, need_broker=False)
    assert ok is False and report["checks"]["lake"]["ok"] is False
    assert "rest_uri" in report["checks"]["lake"]["detail"]
