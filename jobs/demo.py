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
  currency) from the execution sink, which runs beside the job over the same run's records
  (below)
* ``history_rows``     rows the history sink stored in Iceberg (every topic, up to its end)
* ``audit_rows``       rows it chained into the audit table (orders, risk decisions, kill
                       switches, configurations: ``udfs/audit.py``)
* ``energy``           CPU seconds of each process (this one, its Flink JVM, the broker,
  PostgreSQL, Redis; with ``--cluster`` the session cluster's JobManager, TaskManagers and
  their Python workers instead of a local JVM) over the run, and the energy and emissions
  they stand for, in total, per 1,000 events and per trade (fill): jobs/energy.py,
  udfs/energy.py, ``[energy]`` factors

Both sinks run beside the job, each in a process of its own (jobs/sidecar.py): the execution
sink from the end of publishing, following the orders until the job has finished; the history
sink from the start, handed each topic's end as its writers finish. Each stops exactly at those
end offsets, so it decides and stores what a sink started after the job would (the execution
sink's order depends on the records only). ``phases_s`` is the run's timeline (wall seconds of
each step, the job's from the JobManager's own times) and ``sidecar_cpu_s`` each sink process's
CPU seconds (in ``energy``'s ``bookstream`` too).

The run's offset ranges of every topic are written to ``<lake root>/runs/<run_id>.json`` (and the
newest to ``latest.json``): ``bookstream replay --run latest`` replays exactly this run. The
summary goes beside it, ``<run_id>.summary.json`` (``bookstream report`` takes the run's energy
from there).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable

from pyflink.datastream import StreamExecutionEnvironment
from tqdm import tqdm

from jobs import metrics
from jobs.audit import publish_config
from jobs.energy import EnergyMeter
from jobs.kafka_io import as_role, create_topics, drain_topic, end_offsets, record_value
from jobs.publish import publish
from jobs.runs import load_run, record_run
from jobs.sidecar import Sidecar
from jobs.status import JobCounts
from jobs.stream_job import (
    CONFIG_PROCESS,
    ROUTES,
    build_stream_job,
    execute_with_status,
    launch_local_gateway,
)
from udfs.config import Config, TopicsConfig
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
    wall0 = time.time()
    marks: dict[str, float] = {}

    def mark(name: str) -> None:
        marks[name] = time.perf_counter() - t0

    meter = EnergyMeter(cfg, cluster=cluster)
    # the sinks in processes of their own, beside the job (jobs/sidecar.py): they import while
    # this one publishes, follow their topics while the job writes them, and stop exactly at
    # the end offsets handed to them once the writers are done
    exec_sink = Sidecar("exec-sink", cfg, "exec-sink").spawn()
    history_sink = Sidecar("history-sink", cfg, "history-sink").spawn()
    try:
        summary = _pipeline(
            cfg, source, exec_sink, history_sink, speed, progress, cluster, parallelism, mark
        )
    finally:
        exec_sink.stop()
        history_sink.stop()
    pub, sink, history, timeline = (
        summary.pop("_pub"),
        summary.pop("_sink"),
        summary.pop("_history"),
        summary.pop("_job"),
    )
    fills = sink.stats.get("fills", 0)
    energy = meter.stop().summary(events=pub.events_in, trades=fills)
    mark("energy")
    summary.update(
        {
            "orders_rejected": sink.stats.get("rejected", 0),
            "sink_refused": sink.skipped,
            "fills": fills,
            "pnl": round(sink.pnl.get("equity", 0.0), 6),
            "history_rows": history.total_rows,
            "audit_rows": history.audit_rows,
            "wall_s": round(time.perf_counter() - t0, 3),
            "positions": sink.positions,
            "pnl_detail": {k: round(v, 6) for k, v in sink.pnl.items()},
            "energy": energy,
            "phases_s": _phases(marks, {k: v - wall0 for k, v in timeline.items()}),
            "sidecar_cpu_s": {
                "exec_sink": round(exec_sink.cpu_s, 2),
                "history_sink": round(history_sink.cpu_s, 2),
            },
        }
    )
    # beside the run's offsets, for `bookstream report` (its energy figures)
    (cfg.lake_dir / "runs" / f"{summary['run_id']}.summary.json").write_text(
        json.dumps(summary, sort_keys=True, default=str)
    )
    return summary


def _pipeline(
    cfg: Config,
    source: Source,
    exec_sink: Sidecar,
    history_sink: Sidecar,
    speed: float | None,
    progress: bool | None,
    cluster: bool,
    parallelism: int | None,
    mark: Callable[[str], None],
) -> dict:
    """Publish, then the job with both sinks beside it; the counts. Returns the summary's
    counts, with the publisher's, the sinks' results and the job's timeline under ``_pub``,
    ``_sink``, ``_history``, ``_job``."""
    # one process runs every stage: its CPU (its JVM's too) under process="demo"
    metrics.serve(cfg, "demo", cfg.metrics.publisher_port)
    source.check_files()
    create_topics(cfg)
    topics = cfg.topics
    run_id = f"demo-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    all_topics = [spec.name for spec in topics.specs()]
    before = {t: end_offsets(cfg, t) for t in all_topics}
    # the history sink follows every topic from what its tables hold (its start does not
    # depend on this run's offsets)
    history_sink.start()
    mark("setup")

    # the JVM gateway starts while the events are published (the job itself needs their end
    # offsets: its bounded source stops there)
    gateway = None
    if not cluster:
        gateway = threading.Thread(
            target=launch_local_gateway, args=(cfg,), name="gateway", daemon=True
        )
        gateway.start()

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
    mark("publish")
    published = end_offsets(cfg, topics.events)
    # the biggest table's rows are complete: stored while the job runs
    history_sink.finish({topics.events: published})
    # the execution sink over this run's market data (complete now) and orders (to come)
    exec_sink.start(
        group=f"bookstream-demo-sink-{uuid.uuid4().hex[:8]}",
        start_offsets={t: before[t] for t in (topics.events, topics.orders, topics.control)},
        open_topics=[topics.orders],
    )

    # stream job over exactly this run's events
    t_job = time.perf_counter()
    group = f"bookstream-demo-{uuid.uuid4().hex[:8]}"
    timeline: dict[str, float] = {}
    if cluster:
        _run_on_cluster(cfg, group, before[topics.events], parallelism)
    else:
        if gateway is not None:
            gateway.join()
        mark("gateway")
        env = build_stream_job(
            cfg,
            bounded=True,
            group_id=group,
            start_offsets=before[topics.events],
            stop_offsets=published,
        )
        with as_role("job"):
            publish_config(cfg, CONFIG_PROCESS)
        mark("job_built")
        timeline = _run_with_progress(env, pub.published, progress)
    job_s = time.perf_counter() - t_job
    mark("job")
    job_ends = {t: end_offsets(cfg, t) for t in _job_only_topics(topics)}
    exec_sink.finish({topics.orders: job_ends[topics.orders]})
    history_sink.finish(job_ends)

    # what came out (the job's topics are complete; the sink still works beside this)
    signals_out = sum(
        1 for _ in drain_topic(cfg, topics.signals, from_offsets=before[topics.signals])
    )
    orders_sent = sum(
        1
        for r in drain_topic(cfg, topics.orders, from_offsets=before[topics.orders])
        if r.value is not None and b'"action":"new"' in r.value  # a tombstone is no order
    )
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
    mark("drains")

    sink = exec_sink.result()
    sink_s = exec_sink.run_s
    mark("exec_sink")
    after = {t: end_offsets(cfg, t) for t in all_topics}
    record_run(cfg, run_id, before, after)
    history_sink.finish(
        {t: ends for t, ends in after.items() if t not in job_ends and t != topics.events}
    )
    history = history_sink.result()
    history_s = history_sink.run_s
    mark("history_sink")
    return {
        "events_in": pub.events_in,
        "events_processed": processed,
        "dead_lettered": len(dead),
        "features_out": features_out,
        "signals_out": signals_out,
        "orders_sent": orders_sent,
        "input_problems": pub.problems,
        "run_id": run_id,
        "published": pub.published,
        "job_events_in": job_in,
        "job_s": round(job_s, 3),
        "sink_s": round(sink_s, 3),
        "history_s": round(history_s, 3),
        "job_events_per_s": round(pub.published / job_s, 1) if job_s else None,
        "dead_letter_reasons": reasons,
        "instruments": sorted(last_stats),
        "reconciled": pub.events_in == processed + len(dead) and job_in == pub.published,
        "_pub": pub,
        "_sink": sink,
        "_history": history,
        "_job": timeline,
    }


def _job_only_topics(topics: TopicsConfig) -> list[str]:
    """The topics only the stream job writes (its routes but the dead letters, which the
    publisher and the sinks write too): complete once it has finished."""
    return [getattr(topics, route) for route in ROUTES if route != "dead_letter"]


def _phases(marks: dict[str, float], job: dict[str, float]) -> dict[str, float]:
    """Each phase's wall seconds, in the order they end (``marks``: seconds since the demo's
    start at the end of each step; ``job``: the job's own timeline in the same clock). The
    sinks run beside the job: theirs is what they took past the step before them (the wait)."""
    out: dict[str, float] = {}
    prev = 0.0
    for name in ("setup", "publish", "gateway", "job_built"):
        if name in marks:
            out[name] = marks[name] - prev
            prev = marks[name]
    # the job from the client's execute: the MiniCluster's start until the job is submitted,
    # start-up until its tasks run (operators open, Python included), reading and processing
    # to the end of input, then the MiniCluster's shutdown until execute returns
    points = [
        ("job_submit", job.get("submitted")),
        ("job_startup", job.get("tasks_running")),
        ("job_process", job.get("finished")),
        ("job_teardown", marks.get("job")),
    ]
    for name, at in points:
        if at is not None:
            out[name] = at - prev
            prev = at
    for name in ("drains", "exec_sink", "history_sink", "energy"):
        if name in marks:
            out[f"{name}_wait" if "sink" in name else name] = marks[name] - prev
            prev = marks[name]
    return {k: round(v, 3) for k, v in out.items()}


def _run_with_progress(
    env: StreamExecutionEnvironment, events: int, progress: bool | None
) -> dict[str, float]:
    """The demo's longest phase, the local stream job, with a progress bar on a terminal (or
    when ``progress``): events its source has read of this run's ``events``, records sent,
    lag; otherwise its status lines (jobs/status.py). Returns the job's timeline."""
    show = sys.stderr.isatty() if progress is None else progress
    if not show:
        # polled every second (the callback), so the job's timeline is fresh at its end
        return execute_with_status(env, "bookstream-demo", lambda _counts: None)
    bar = tqdm(desc="stream job", total=events, unit=" ev", unit_scale=True, file=sys.stderr)

    def on_counts(counts: JobCounts) -> None:
        bar.n = min(counts.inputs, events)
        bar.set_postfix(out=counts.outputs, lag=counts.lag, refresh=False)
        bar.refresh()

    try:
        timeline = execute_with_status(env, "bookstream-demo", on_counts, lines=False)
        bar.n = events  # a bounded job that finished read every event
        bar.refresh()
    finally:
        bar.close()
    return timeline


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
