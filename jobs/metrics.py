"""Prometheus metrics of bookstream's own processes (publisher, execution sink, history sink,
the local stream job's driver, the demo): every metric declared here, once; Flink's come from
its own Prometheus reporter (jobs/stream_job.py). Alert rules over them: infra/prometheus/rules/.

Each process serves ``/metrics`` on 127.0.0.1 at a port of its own (``[metrics]``; 0: any free
one) and announces itself to Prometheus by a file-based service-discovery target file,
``<state>/prometheus/targets/<process>-<pid>.json``, removed when it exits: any number of
processes, no port to plan. Serving is best effort: a stage never stops because its metrics
cannot be served (the reason is logged).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from jobs.energy import proc_cpu_s, process_table, service_roots, tree_pids
from udfs.config import PROJECT_ROOT, Config
from udfs.energy import JOULES_PER_KWH
from udfs.schema import DeadLetter, ExecKind, ExecReport

logger = logging.getLogger(__name__)

REGISTRY = CollectorRegistry()
"""This process's metrics (not the client library's default registry: no stray collectors)."""

RECORDS_IN = Counter(
    "bookstream_records_in", "Records a stage read", ["process", "topic"], registry=REGISTRY
)
RECORDS_OUT = Counter(
    "bookstream_records_out", "Records a stage wrote", ["process", "topic"], registry=REGISTRY
)
LAST_RECORD = Gauge(
    "bookstream_last_record_timestamp_seconds",
    "Wall-clock time a stage last read a record of the topic (feed staleness)",
    ["process", "topic"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "bookstream_consumer_lag_records",
    "Records of the topic not yet read by the stage (log end - position)",
    ["process", "topic"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "bookstream_dead_letters",
    "Records a stage refused, by stage and reason",
    ["process", "stage", "reason"],
    registry=REGISTRY,
)
EXEC_REPORTS = Counter(
    "bookstream_execution_reports",
    "Execution reports by kind (ack, reject, canceled, fill)",
    ["kind"],
    registry=REGISTRY,
)
REJECTS = Counter(
    "bookstream_rejects",
    "Rejected orders by rule (the reason's first word: a risk rule or the venue's)",
    ["rule"],
    registry=REGISTRY,
)
FILLED_LOTS = Counter("bookstream_filled_lots", "Lots filled", registry=REGISTRY)
PNL = Gauge(
    "bookstream_pnl",
    "Money in quote currency: realised, unrealised, fees, equity, drawdown",
    ["component"],
    registry=REGISTRY,
)
POSITION = Gauge("bookstream_position_lots", "Position in lots", ["instrument"], registry=REGISTRY)
TRADING_MODE = Gauge(
    "bookstream_trading_mode",
    "1 for the risk engine's current global mode (ACTIVE, REDUCING, HALTED), 0 for the others",
    ["mode"],
    registry=REGISTRY,
)
ICEBERG_COMMIT = Histogram(
    "bookstream_iceberg_commit_seconds",
    "Wall time of one Iceberg append (the history sink)",
    ["table"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
RISK_LIMIT = Gauge(
    "bookstream_risk_limit",
    "The execution sink's configured risk limits ([risk]), for alert thresholds relative to them",
    ["limit"],
    registry=REGISTRY,
)

LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
)  # fmt: skip
"""Bucket bounds of the latency histograms, seconds: ms-level, 0.5 ms to 1 min (the venue's
ack-to-fill can rest for seconds). 0.01 is the tick-to-order SLO's bound (rules)."""
HOP_LATENCY = Histogram(
    "bookstream_hop_latency_seconds",
    "Latency of one hop of the trading path (udfs.latency.HOPS; each on its own clock)",
    ["hop"],
    buckets=LATENCY_BUCKETS_S,
    registry=REGISTRY,
)
TICK_TO_ORDER = Histogram(
    "bookstream_tick_to_order_seconds",
    "The stream job's read of the triggering event to the order's send to Kafka (wall clock)",
    buckets=LATENCY_BUCKETS_S,
    registry=REGISTRY,
)

ENERGY_FACTOR = Gauge(
    "bookstream_energy_factor",
    "The [energy] model's factors (udfs/energy.py): kwh_per_cpu_second (watts_per_cpu x pue), "
    "g_co2e_per_kwh (the grid's carbon intensity)",
    ["factor"],
    registry=REGISTRY,
)


class _CpuSeconds(Collector):
    """``bookstream_cpu_seconds_total``, read from /proc at each scrape (jobs/energy.py): the
    serving process's own tree, ``group`` ``python`` (it and its Python children) and
    ``flink`` (its JVMs: the stream job's MiniCluster), and each service the project started
    (``process`` kafka/postgres/redis, ``group`` ``service``). Every process reports the
    services alike: aggregate ``max by (process, group)`` before summing.

    Scanning every process of the machine for the trees costs tens of ms on a loaded one: the
    trees are found again every :data:`CPU_TREE_REFRESH_S`, in between only their processes
    are read. A value never goes down (a child that ended unreaped takes its CPU time with
    it): Prometheus would take that for a counter reset."""

    def __init__(self) -> None:
        self.process = ""
        self.cfg: Config | None = None
        self._trees: dict[tuple[str, str], set[int]] = {}
        self._trees_at = -math.inf
        self._reported: dict[tuple[str, str], float] = {}

    def _find_trees(self, cfg: Config) -> dict[tuple[str, str], float]:
        procs = process_table()
        self._trees = {(self.process, "python"): set(), (self.process, "flink"): set()}
        for pid in tree_pids(os.getpid(), procs):
            group = "flink" if procs[pid][1] == "java" else "python"
            self._trees[(self.process, group)].add(pid)
        for service, root in service_roots(cfg).items():
            if root in procs:
                self._trees[(service, "service")] = tree_pids(root, procs)
        self._trees_at = time.monotonic()
        return {key: sum(procs[p][2] for p in pids) for key, pids in self._trees.items()}

    def _read_trees(self) -> dict[tuple[str, str], float]:
        found: dict[tuple[str, str], float] = {}
        for key, pids in self._trees.items():
            found[key] = 0.0
            for pid in pids:
                with contextlib.suppress(OSError, ValueError):  # ended since
                    found[key] += proc_cpu_s(pid, reaped_children=True)
        return found

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "bookstream_cpu_seconds",
            "CPU seconds (user + system, reaped children included) by process and group",
            labels=["process", "group"],
        )
        if self.cfg is not None:
            if time.monotonic() - self._trees_at > CPU_TREE_REFRESH_S:
                now = self._find_trees(self.cfg)
            else:
                now = self._read_trees()
            for key, cpu in now.items():
                self._reported[key] = max(cpu, self._reported.get(key, 0.0))
                family.add_metric(list(key), self._reported[key])
        yield family


CPU_TREE_REFRESH_S = 15.0
"""How often the CPU collector finds its process trees again (s)."""
CPU_SECONDS = _CpuSeconds()
REGISTRY.register(CPU_SECONDS)

MODES = ("ACTIVE", "REDUCING", "HALTED")

FLINK_METRICS = (
    "flink_taskmanager_job_task_operator_numRecordsOut",
    "flink_taskmanager_job_task_operator_numRecordsSend",
    "flink_taskmanager_job_task_operator_pendingRecords",
    "flink_jobmanager_job_lastCheckpointDuration",
    "flink_taskmanager_job_task_busyTimeMsPerSecond",
    "flink_taskmanager_job_task_backPressuredTimeMsPerSecond",
)
"""The Flink job's own metrics (its Prometheus reporter, ``metrics.flink_reporter``) that the
dashboards use: declared here with ours, so a dashboard names no metric nobody exports."""

DASHBOARDS_DIR = PROJECT_ROOT / "infra" / "grafana"
"""Grafana dashboards, one per flow (ingest, job, trading, lake): importable JSON with a
Prometheus data source variable."""
METRIC_NAME = re.compile(r"\b(?:bookstream[_:]|flink_)[A-Za-z0-9_:]+")


def dashboard_queries(path: Path) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of a dashboard file."""
    doc = json.loads(path.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in doc["panels"]
        for target in panel.get("targets", [])
    ]


def exported_names() -> set[str]:
    """Every series name this module's metrics export (counters as ``_total``, histograms as
    ``_bucket``/``_count``/``_sum``), and the Flink ones the dashboards use."""
    names = set(FLINK_METRICS)
    for family in REGISTRY.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}_{s}" for s in ("bucket", "count", "sum"))
        else:
            names.add(family.name)
    return names


_served: dict[str, int] = {}


def serve(cfg: Config, process: str, port: int) -> int | None:
    """Serve this process's ``/metrics`` (once per process: the demo runs every stage in one,
    and each metric carries its stage in ``process``) and announce it to Prometheus; the
    port, or None when metrics are off (``[metrics] enabled``) or could not be served."""
    if not cfg.metrics.enabled:
        return None
    if "port" in _served:
        return _served["port"]
    try:
        server, _thread = start_http_server(port, addr=cfg.metrics.host, registry=REGISTRY)
    except OSError as exc:
        logger.warning("%s: metrics not served on %s:%d: %s", process, cfg.metrics.host, port, exc)
        return None
    bound = _served["port"] = int(server.server_port)
    CPU_SECONDS.process, CPU_SECONDS.cfg = process, cfg
    energy = cfg.energy
    ENERGY_FACTOR.labels("kwh_per_cpu_second").set(
        energy.watts_per_cpu * energy.pue / JOULES_PER_KWH
    )
    ENERGY_FACTOR.labels("g_co2e_per_kwh").set(energy.grid_g_co2e_per_kwh)
    targets = cfg.state_dir / "prometheus" / "targets"
    targets.mkdir(parents=True, exist_ok=True)
    target = targets / f"{process}-{os.getpid()}.json"
    doc = [{"targets": [f"{cfg.metrics.host}:{bound}"], "labels": {"job": "bookstream"}}]
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(target)  # Prometheus never reads a half-written file
    atexit.register(_forget, target)
    logger.info("%s: metrics on http://%s:%d/metrics", process, cfg.metrics.host, bound)
    return bound


def _forget(target: Path) -> None:
    target.unlink(missing_ok=True)


def count_in(process: str, topic: str, n: int) -> None:
    if n:
        RECORDS_IN.labels(process, topic).inc(n)
        LAST_RECORD.labels(process, topic).set(time.time())


def count_out(process: str, topic: str, n: int = 1) -> None:
    if n:
        RECORDS_OUT.labels(process, topic).inc(n)


def count_dead(process: str, letters: Iterable[DeadLetter]) -> None:
    for letter in letters:
        DEAD_LETTERS.labels(process, letter.stage, letter.reason_code.value).inc()


def count_reports(reports: Iterable[ExecReport]) -> None:
    """Execution reports of one commit: by kind, rejects by rule, filled lots."""
    for rep in reports:
        EXEC_REPORTS.labels(rep.kind.value).inc()
        if rep.kind is ExecKind.REJECT:
            REJECTS.labels(rep.reason.split(":", 1)[0][:40] or "unknown").inc()
        elif rep.kind is ExecKind.FILL:
            FILLED_LOTS.inc(rep.fill_qty)


def observe_hops(hops: Iterable[tuple[str, int]]) -> None:
    """(hop, ns) pairs of udfs.latency into the per-hop histogram."""
    for hop, ns in hops:
        HOP_LATENCY.labels(hop).observe(ns / 1e9)


def announce_hops(hops: Iterable[str]) -> None:
    """Create the hops' series a process measures (zero counts until the first observation),
    so a dashboard tells "nothing measured yet" from "not measured here"."""
    for hop in hops:
        HOP_LATENCY.labels(hop)


def set_book(pnl: dict[str, float], positions: dict[str, int], mode: str) -> None:
    """The engine's money, positions and trading mode after a commit."""
    for component, value in pnl.items():
        PNL.labels(component).set(value)
    for instrument, lots in positions.items():
        POSITION.labels(instrument).set(lots)
    for m in MODES:
        TRADING_MODE.labels(m).set(1 if m == mode else 0)
