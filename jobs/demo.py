"""The whole pipeline once, end to end, on real files: publish -> Flink job -> counts.

Each run uses its own consumer group and starts the job at the events topic's offsets as they
were before this run published, so a second demo in a row processes exactly its own events
(topics and services are reused). The counts in the summary are measured, not derived:

* ``events_in``        records read from the source files (bad lines included) -- publisher
* ``dead_lettered``    records on the dead-letter topic from this run (ingest + job)
* ``events_processed`` the job's own per-instrument counters (stats topic, event-time timers)
* ``features_out``     records on the features topic from this run
* ``signals_out``      signals (rule, traded model, shadow model) on the signals topic
* ``orders_sent``      new orders on the orders topic (cancels and heartbeats not counted)
* ``orders_rejected``, ``fills``, ``pnl`` (equity: realised + unrealised - fees, quote
  currency) from the execution sink, which runs after the job over the same run's records
* ``history_rows``     rows the history sink stored in Iceberg (every topic, up to its end)
* ``audit_rows``       rows it chained into the audit table (orders, risk decisions, kill
                       switches, configurations: ``udfs/audit.py``)
* ``energy``           CPU seconds of each process (this one, its Flink JVM, the broker,
  PostgreSQL, Redis; with ``--cluster`` the session cluster's JobManager, TaskManagers and
  their Python workers instead of a local JVM) over the run, and the energy and emissions
  they stand for, in total, per 1,000 events and per trade (fill): jobs/energy.py,
  udfs/energy.py, ``[energy]`` factors

The run's offset ranges of every topic are written to ``<lake root>/runs/<run_id>.json`` (and the
newest to ``latest.json``): ``bookstream replay --run latest`` replays exactly this run. The
summary goes beside it, ``<run_id>.summary.json`` (``bookstream report`` takes the run's energy
from there).
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid

from pyflink.datastream import StreamExecutionEnvironment
from tqdm import tqdm

from jobs import metrics
from jobs.audit import publish_config
from jobs.energy import EnergyMeter
from jobs.execution_sink import run_sink
from jobs.history_sink import run_history_sink
from jobs.kafka_io import as_role, create_topics, drain_topic, end_offsets, record_value
from jobs.publish import publish
from jobs.runs import load_run, record_run
from jobs.status import JobCounts
from jobs.stream_job import CONFIG_PROCESS, build_stream_job, execute_with_status
from udfs.config import Config
from udfs.market.adapters.sources import Source
from udfs.schema import StatsRow, decode_dead_letter, decode_row

__all__ = ["load_run", "record_run", "run_demo"]

logger = logging.getLogger(__name__)


def run_demo(
    cfg: Config,
    source: Source,
    *,
    speed: float | None = None,
    progress: bool | None = None,
    cluster: bool = False,
    parallelism: int | None = None,
) -> dict:
    """``cluster``: the stream job goes to the Flink session cluster (``bookstream submit``'s
    ``flink run``, at ``parallelism``, else the cluster's default) instead of a local
    MiniCluster; everything else is the same."""
    t0 = time.perf_counter()
    meter = EnergyMeter(cfg, cluster=cluster)
    # one process runs every stage: its CPU (its JVM's too) under process="demo"
    metrics.serve(cfg, "demo", cfg.metrics.publisher_port)
    source.check_files()
    create_topics(cfg)
    topics = cfg.topics
    run_id = f"demo-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    all_topics = [spec.name for spec in topics.specs()]
    before = {t: end_offsets(cfg, t) for t in all_topics}

    # ingest
    logger.info("publishing %s to %s", source.describe(), topics.events)
    with as_role("publisher"):  # each stage as its own Kafka principal (kafka.security=sasl)
        pub = publish(cfg, source, speed=speed, progress=progress)
    logger.info(
        "published %d events (%d bad lines dead-lettered) in %.2fs: %.0f ev/s",
        pub.published,
        pub.dead_lettered,
        pub.wall_s,
        pub.rate,
    )

    # stream job over exactly this run's events
    t_job = time.perf_counter()
    group = f"bookstream-demo-{uuid.uuid4().hex[:8]}"
    if cluster:
        _run_on_cluster(cfg, group, before[topics.events], parallelism)
    else:
        env = build_stream_job(
            cfg, bounded=True, group_id=group, start_offsets=before[topics.events]
        )
        with as_role("job"):
            publish_config(cfg, CONFIG_PROCESS)
        _run_with_progress(env, pub.published, progress)
    job_s = time.perf_counter() - t_job

    # execution sink over this run's orders and market data
    t_sink = time.perf_counter()
    with as_role("exec-sink"):
        sink = run_sink(
            cfg,
            group=f"bookstream-demo-sink-{uuid.uuid4().hex[:8]}",
            bounded=True,
            start_offsets={t: before[t] for t in (topics.events, topics.orders, topics.control)},
        )
    sink_s = time.perf_counter() - t_sink
    signals_out = sum(
        1 for _ in drain_topic(cfg, topics.signals, from_offsets=before[topics.signals])
    )
    orders_sent = sum(
        1
        for r in drain_topic(cfg, topics.orders, from_offsets=before[topics.orders])
        if r.value is not None and b'"action":"new"' in r.value  # a tombstone is no order
    )

    # what came out
    features_out = sum(
        1 for _ in drain_topic(cfg, topics.features, from_offsets=before[topics.features])
    )
    # the events' own dead letters (publisher and Flink job): what reconciles with events_in;
    # the execution sink's refusals of orders/controls are counted apart (sink_refused)
    dead = [
        letter
        for letter in (
            decode_dead_letter(record_value(r))
            for r in drain_topic(cfg, topics.dead_letter, from_offsets=before[topics.dead_letter])
        )
        if letter.stage in ("ingest", "features")
    ]
    last_stats: dict[str, StatsRow] = {}
    unkeyed_dead = 0
    for rec in drain_topic(cfg, topics.stats, from_offsets=before[topics.stats]):
        row = decode_row(StatsRow, record_value(rec))
        if row.unkeyed_dead is not None:
            unkeyed_dead += row.unkeyed_dead
        else:
            last_stats[row.instrument] = row
    processed = sum(s.events_processed or 0 for s in last_stats.values())
    job_in = sum(s.events_in or 0 for s in last_stats.values()) + unkeyed_dead
    reasons: dict[str, int] = {}
    for d in dead:
        reasons[d.reason_code.value] = reasons.get(d.reason_code.value, 0) + 1

    after = {t: end_offsets(cfg, t) for t in all_topics}
    record_run(cfg, run_id, before, after)
    t_hist = time.perf_counter()
    with as_role("history-sink"):
        history = run_history_sink(cfg, bounded=True)
    history_s = time.perf_counter() - t_hist
    fills = sink.stats.get("fills", 0)
    energy = meter.stop().summary(events=pub.events_in, trades=fills)

    summary = {
        "events_in": pub.events_in,
        "events_processed": processed,
        "dead_lettered": len(dead),
        "features_out": features_out,
        "signals_out": signals_out,
        "orders_sent": orders_sent,
        "orders_rejected": sink.stats.get("rejected", 0),
        "sink_refused": sink.skipped,
        "input_problems": pub.problems,
        "fills": fills,
        "pnl": round(sink.pnl.get("equity", 0.0), 6),
        "history_rows": history.total_rows,
        "audit_rows": history.audit_rows,
        "wall_s": round(time.perf_counter() - t0, 3),
        "run_id": run_id,
        "published": pub.published,
        "job_events_in": job_in,
        "job_s": round(job_s, 3),
        "sink_s": round(sink_s, 3),
        "history_s": round(history_s, 3),
        "positions": sink.positions,
        "pnl_detail": {k: round(v, 6) for k, v in sink.pnl.items()},
        "job_events_per_s": round(pub.published / job_s, 1) if job_s else None,
        "dead_letter_reasons": reasons,
        "instruments": sorted(last_stats),
        "reconciled": pub.events_in == processed + len(dead) and job_in == pub.published,
        "energy": energy,
    }
    # beside the run's offsets, for `bookstream report` (its energy figures)
    (cfg.lake_dir / "runs" / f"{run_id}.summary.json").write_text(
        json.dumps(summary, sort_keys=True, default=str)
    )
    return summary


def _run_with_progress(env: StreamExecutionEnvironment, events: int, progress: bool | None) -> None:
    """The demo's longest phase, the local stream job, with a progress bar on a terminal (or
    when ``progress``): events its source has read of this run's ``events``, records sent,
    lag; otherwise its status lines (jobs/status.py)."""
    show = sys.stderr.isatty() if progress is None else progress
    if not show:
        execute_with_status(env, "bookstream-demo")
        return
    bar = tqdm(desc="stream job", total=events, unit=" ev", unit_scale=True, file=sys.stderr)

    def on_counts(counts: JobCounts) -> None:
        bar.n = min(counts.inputs, events)
        bar.set_postfix(out=counts.outputs, lag=counts.lag, refresh=False)
        bar.refresh()

    try:
        execute_with_status(env, "bookstream-demo", on_counts, lines=False)
        bar.n = events  # a bounded job that finished read every event
        bar.refresh()
    finally:
        bar.close()


def _run_on_cluster(
    cfg: Config, group: str, start_offsets: dict[int, int], parallelism: int | None
) -> None:
    """The bounded stream job on the session cluster; returns when it has finished."""
    from jobs.cluster import TERMINAL_STATES, ClusterError, submit, wait_job

    offsets = ",".join(f"{p}:{o}" for p, o in sorted(start_offsets.items()))
    job_args = ["--bounded", "--group-id", group, "--start-offsets", offsets]
    done = submit(cfg, job_args, parallelism=parallelism)
    logger.info("stream job %s on the cluster %s", done.job_id, cfg.flink_cluster_rest_url)
    state = wait_job(cfg, done.job_id, TERMINAL_STATES, timeout_s=24 * 3600)
    if state != "FINISHED":
        raise ClusterError(
            f"the demo's stream job {done.job_id} ended {state}: see "
            f"{cfg.flink_cluster_rest_url}/#/job/completed/{done.job_id}/exceptions"
        )
