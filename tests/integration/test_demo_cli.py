"""The ``bookstream`` command line end to end: ``demo`` (on topics holding an earlier run's
events), ``publish`` with bad input lines (ingest dead letters) and ``publish --speed``
pacing."""

from __future__ import annotations

import gzip
import math
import uuid
from pathlib import Path

import pytest
from it_helpers import config_for, read_topic, run_cli

from jobs.execution_sink import run_sink
from jobs.kafka_io import as_role, drain_topic, end_offsets
from jobs.runs import load_run
from udfs.config import Config, EnergyConfig
from udfs.market.adapters.lobster import iter_lobster_events
from udfs.market.adapters.sources import SAMPLE_BINANCE, SAMPLE_LOBSTER, Source
from udfs.schema import Reason, decode_dead_letter

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

COUNTS = ("events_in", "events_processed", "dead_lettered", "features_out")


def test_demo_processes_only_its_own_events(kafka_topics, demo_history) -> None:
    """A demo on topics that already hold the same sample (published before it, as an earlier
    run would have left them) reads only what it published itself: its counts are those of
    the session's demo on fresh topics (``demo_history``), not twice them."""
    _cfg, env = kafka_topics("demo", create=False)
    # the earlier run's events: the same sample
    published, _proc, _elapsed = run_cli(["publish", "--no-progress"], env)
    assert published["published"] == demo_history.summary["events_in"]
    summary, _proc, _elapsed = run_cli(["demo", "--no-progress"], env)
    for key in (*COUNTS, "wall_s"):
        assert key in summary, (key, summary)
    assert summary["events_in"] == summary["events_processed"] + summary["dead_lettered"]
    assert summary["reconciled"] is True
    assert summary["events_in"] > 0 and summary["features_out"] > 0
    assert summary["wall_s"] > 0
    check_energy(summary)
    first = demo_history.summary
    assert {k: summary[k] for k in COUNTS} == {k: first[k] for k in COUNTS}
    assert summary["instruments"] == first["instruments"]
    assert len(first["instruments"]) == 2  # AAPL.XNAS and BTCUSDT.BINANCE_USDM
    check_sinks_beside_the_job(config_for(env), summary)


def check_sinks_beside_the_job(cfg: Config, summary: dict) -> None:
    """The demo runs its execution sink beside the job (following the orders, stopped at their
    end once the job is done): it decided exactly what a sink started after the job decides.
    The same sink, run the old way over the same run's offsets (bounded, ends known at its
    start, a group of its own), writes the same execution reports, control and risk records,
    byte for byte, partition by partition. And the summary's phases are in order."""
    run = load_run(cfg, summary["run_id"])
    topics = cfg.topics
    outputs = (topics.executions, topics.control, topics.risk)
    beside = {t: _by_partition(cfg, t, run["from"][t], run["to"][t]) for t in outputs}
    assert sum(len(v) for v in beside[topics.executions].values()) > 0
    with as_role("exec-sink"):
        after = run_sink(
            cfg,
            group=f"it-sequential-sink-{uuid.uuid4().hex[:8]}",
            bounded=True,
            start_offsets={
                t: run["from"][t] for t in (topics.events, topics.orders, topics.control)
            },
        )
    assert after.stats.get("fills", 0) == summary["fills"]
    assert after.stats.get("rejected", 0) == summary["orders_rejected"]
    for t in outputs:
        assert _by_partition(cfg, t, run["to"][t], end_offsets(cfg, t)) == beside[t], t
    phases = summary["phases_s"]
    assert list(phases)[:2] == ["setup", "publish"] and "history_sink_wait" in phases
    assert (
        summary["sidecar_cpu_s"]["exec_sink"] > 0 and summary["sidecar_cpu_s"]["history_sink"] > 0
    )


def _by_partition(
    cfg: Config, topic: str, start: dict[int, int], end: dict[int, int]
) -> dict[int, list[bytes]]:
    """The committed record values of ``topic`` in ``[start, end)``, per partition in order."""
    out: dict[int, list[bytes]] = {}
    for rec in drain_topic(cfg, topic, from_offsets=start, read_committed=True, idle_timeout_s=15):
        if rec.offset < end.get(rec.partition, 0):
            out.setdefault(rec.partition, []).append(rec.value or b"")
    return out


def check_energy(
    summary: dict, working: tuple[str, ...] = ("flink", "bookstream", "kafka")
) -> None:
    """The run's CPU seconds: the job ran in this run's Flink JVM, the broker served it (the
    ``working`` groups used CPU); the energy follows from them with the configured factors
    (udfs/config.py EnergyConfig). A demo's summary, or a live session's."""
    energy = summary["energy"]
    cpu = energy["cpu_s"]
    assert all(cpu[group] > 0 for group in working), cpu
    assert math.isclose(energy["cpu_s_total"], sum(cpu.values()), abs_tol=0.01)
    factors = EnergyConfig()
    kwh = energy["cpu_s_total"] * factors.watts_per_cpu * factors.pue / 3.6e6
    assert math.isclose(energy["kwh"], kwh, rel_tol=1e-3), (energy, kwh)
    assert math.isclose(energy["g_co2e"], kwh * factors.grid_g_co2e_per_kwh, rel_tol=1e-3)
    per_k = energy["g_co2e"] * 1000 / summary["events_in"]
    assert math.isclose(energy["g_co2e_per_1k_events"], per_k, rel_tol=1e-9)
    if summary["fills"]:
        per_trade = energy["g_co2e"] / summary["fills"]
        assert math.isclose(energy["g_co2e_per_trade"], per_trade, rel_tol=1e-9)
    assert energy["method"] == ("model" if energy["rapl_kwh"] is None else "rapl+model")


GARBAGE = (b"this is not a capture line\n", b'1721347020984480942 {"stream": truncated\n')


def test_publish_dead_letters_bad_lines(kafka_topics, tmp_path: Path) -> None:
    cfg, env = kafka_topics("ingest")
    with gzip.open(SAMPLE_BINANCE[0], "rb") as fh:
        lines = fh.readlines()
    # garbage after line 100 and after line 5000 of the original: new lines 101 and 5002
    bad_at = (101, 5002)
    patched = [*lines[:100], GARBAGE[0], *lines[100:5000], GARBAGE[1], *lines[5000:]]
    assert [patched[n - 1] for n in bad_at] == list(GARBAGE)
    capture = tmp_path / "btcusdt_garbage.gz"
    with gzip.open(capture, "wb") as fh:
        fh.writelines(patched)
    clean_events = sum(1 for _ in Source(binance=[[SAMPLE_BINANCE[0]]]).events())

    summary, _proc, _elapsed = run_cli(["publish", "--binance", str(capture), "--no-progress"], env)
    assert summary["dead_lettered"] == 2
    assert summary["events_in"] == summary["published"] + summary["dead_lettered"]
    # the bad lines are skipped, nothing else is lost
    assert summary["published"] == clean_events

    dead = [decode_dead_letter(r.value) for r in read_topic(cfg, cfg.topics.dead_letter)]
    assert len(dead) == 2
    for d, line_no, raw in zip(dead, bad_at, GARBAGE, strict=True):
        assert d.stage == "ingest"
        assert d.source == f"file:{capture}"
        assert d.offset == line_no
        assert d.reason_code is Reason.MALFORMED
        assert d.raw == raw.decode().rstrip("\n")
    events = read_topic(cfg, cfg.topics.events)
    assert len(events) == summary["published"]


def test_publish_speed_paces_by_exchange_time(kafka_topics) -> None:
    _cfg, env = kafka_topics("speed")
    speed = 10.0
    events = list(iter_lobster_events(*SAMPLE_LOBSTER))
    span_s = (events[-1].ts_event - events[0].ts_event) / 1e9
    assert 40 < span_s < 60
    message_file, orderbook_file = SAMPLE_LOBSTER
    summary, _proc, elapsed = run_cli(
        [
            "publish",
            "--lobster",
            str(message_file),
            str(orderbook_file),
            "--speed",
            str(speed),
            "--no-progress",
        ],
        env,
    )
    assert summary["published"] == len(events)
    floor = 0.9 * span_s / speed
    assert summary["wall_s"] >= floor, (summary["wall_s"], floor)
    assert elapsed >= floor
    # paced by the recording, not stalled: well under the 1x replay time
    assert summary["wall_s"] < 3 * span_s / speed
