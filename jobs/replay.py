"""Deterministic replay: recorded events from Iceberg -> the same Flink job and execution sink.

``bookstream replay`` reads a recorded run's events (``--run``, default the newest run
``bookstream demo`` recorded) or a time range (``--from/--to``) from the events table, in the
order they had on their Kafka partitions, and publishes them to a topic set of the replay's own
(``bookstream.replay.<id>.*``: a replay never mixes with live output). The operator's control
commands of the same range go along (the sink's own kill trips do not: the replayed sink makes
its own). Then the same job (``jobs/stream_job.py``) and the same execution sink
(``jobs/execution_sink.py``) run over them, bounded.

``--verify`` compares what the replay produced with what the live run recorded in history:
the orders (new and cancel; heartbeats are bookkeeping) and the execution reports (acks,
rejects, cancels, fills), per instrument and in order, after one stable serialisation (the
history table's row of each record, as JSON with sorted keys). The first divergent record is
named: stream, key, position, both versions, and the input event that led to it.

Why it reproduces the live run exactly: every decision is a function of the events of one
instrument in partition order (the job's lateness verdict is per instrument, in exchange time,
never wall-clock), ids are derived from inputs, venue latencies are drawn from seeded streams,
and the sink merges its inputs by event time (``udfs/execution/sequencer.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import (
    AlwaysFalse,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    LessThan,
    Or,
)

from jobs.execution_sink import run_sink
from jobs.history_sink import run_history_sink
from jobs.kafka_io import (
    DeliveryErrors,
    as_role,
    create_topics,
    delete_topics,
    drain_topic,
    make_producer,
    record_value,
)
from jobs.lake import committed_offsets, history_streams, open_catalog
from jobs.publish import produce_events
from jobs.runs import load_run
from jobs.stream_job import build_stream_job
from udfs.config import Config, load_config
from udfs.history import Stream
from udfs.schema import (
    Control,
    ControlCommand,
    DeadLetter,
    L2Event,
    OrderAction,
    Reason,
    SchemaError,
    decode_record,
    validate_fields,
)

__all__ = ["ReplayRange", "replay", "replay_run"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ReplayRange:
    """What to replay: the offsets ``[from, to)`` of a recorded run, or a time range."""

    run_id: str | None = None
    offsets_from: dict[str, dict[int, int]] | None = None
    offsets_to: dict[str, dict[int, int]] | None = None
    time_from_ns: int | None = None
    time_to_ns: int | None = None

    def filter_for(self, topic: str, time_column: str = "ts_event") -> BooleanExpression:
        """The rows of ``topic``'s table inside the range."""
        if self.offsets_from is not None and self.offsets_to is not None:
            expr: BooleanExpression = AlwaysFalse()
            ends = self.offsets_to.get(topic, {})
            for p, start in self.offsets_from.get(topic, {}).items():
                end = ends.get(p, start)
                if end > start:
                    expr = Or(
                        expr,
                        And(
                            EqualTo("_partition", p),
                            And(GreaterThanOrEqual("_offset", start), LessThan("_offset", end)),
                        ),
                    )
            return expr
        lo = self.time_from_ns if self.time_from_ns is not None else -(2**63)
        hi = self.time_to_ns if self.time_to_ns is not None else 2**63 - 1
        return And(GreaterThanOrEqual(time_column, lo), LessThan(time_column, hi))


def replay_run(replay_id: str) -> str:
    """The run name of a replay: its topics are ``bookstream.replay.<id>.<field>``."""
    return f"bookstream.replay.{replay_id}"


def _read(
    catalog: Catalog, cfg: Config, stream: Stream, topic: str, rng: ReplayRange
) -> list[dict[str, Any]]:
    """The stream's stored rows inside the range, in Kafka order (partition, offset)."""
    table = catalog.load_table(f"{cfg.lake.namespace}.{stream.name}")
    arrow: pa.Table = table.scan(row_filter=rng.filter_for(topic)).to_arrow()
    arrow = arrow.sort_by([("_partition", "ascending"), ("_offset", "ascending")])
    return arrow.to_pylist()


def _event_of(stream: Stream, row: dict[str, Any]) -> L2Event:
    """A stored events row back to its event, through the schema's own validation (a row the
    lake holds may still be one the schema refuses: :class:`SchemaError`)."""
    return validate_fields({c: row.get(c) for c in stream.columns})


def _control_value(stream: Stream, row: dict[str, Any]) -> bytes:
    """A stored control row back to its record, checked by the schema (:class:`SchemaError`)."""
    value = json.dumps({c: row.get(c) for c in stream.columns}, separators=(",", ":")).encode()
    decode_record(Control, value)
    return value


def rows_to_inputs(
    stream: Stream,
    rows: list[dict[str, Any]],
    table_topic: str,
    convert: Callable[[Stream, dict[str, Any]], Any],
) -> tuple[list[Any], list[DeadLetter]]:
    """``convert`` each stored row; a row it refuses (or that breaks it) becomes a dead letter
    with stage ``replay``, the table's Kafka position of the row and the reason -- one bad row
    never stops a replay."""
    out: list[Any] = []
    dead: list[DeadLetter] = []
    for row in rows:
        try:
            out.append(convert(stream, row))
        except Exception as exc:  # SchemaError, or a row the lake should never have held
            partition, offset = row.get("_partition"), row.get("_offset")
            dead.append(
                DeadLetter(
                    source=f"iceberg:{stream.name}:{table_topic}",
                    partition=partition if type(partition) is int else -1,
                    offset=offset if type(offset) is int else -1,
                    key=str(row.get("instrument") or ""),
                    reason_code=Reason.SCHEMA
                    if isinstance(exc, SchemaError)
                    else (Reason.UNPROCESSABLE),
                    reason=f"{type(exc).__name__}: {exc}",
                    raw=json.dumps(row, default=str, sort_keys=True),
                    stage="replay",
                    ts_dead=time.time_ns(),
                )
            )
    return out, dead


def _stable(stream: Stream, row: dict[str, Any]) -> str:
    return json.dumps({c: row[c] for c in stream.columns}, sort_keys=True, separators=(",", ":"))


def _check_history_complete(catalog: Catalog, cfg: Config, rng: ReplayRange) -> None:
    """A run's history must be stored up to the run's end before it can be replayed."""
    if rng.offsets_from is None or rng.offsets_to is None:  # a time range (as filter_for)
        return
    for stream in history_streams(cfg):
        topic = getattr(cfg.topics, stream.topic_field)
        if stream.name not in ("events", "orders", "executions", "control"):
            continue
        stored = committed_offsets(catalog.load_table(f"{cfg.lake.namespace}.{stream.name}")).get(
            topic, {}
        )
        for p, end in rng.offsets_to.get(topic, {}).items():
            if end > rng.offsets_from.get(topic, {}).get(p, 0) and stored.get(p, 0) < end:
                raise RuntimeError(
                    f"{stream.name}: history holds {topic}[{p}] up to offset "
                    f"{stored.get(p, 0)}, the run ends at {end}: run "
                    "`bookstream history-sink --bounded` first"
                )


def _compare(
    stream: Stream, live: list[dict], replayed: list[dict], key_field: str = "instrument"
) -> tuple[int, dict | None]:
    """(records identical, first divergence or None): per key, position by position."""
    by_key_live: dict[str, list[dict]] = defaultdict(list)
    by_key_replay: dict[str, list[dict]] = defaultdict(list)
    for r in live:
        by_key_live[r[key_field]].append(r)
    for r in replayed:
        by_key_replay[r[key_field]].append(r)
    identical = 0
    first: dict | None = None
    for key in sorted(set(by_key_live) | set(by_key_replay)):
        a, b = by_key_live.get(key, []), by_key_replay.get(key, [])
        for pos in range(max(len(a), len(b))):
            left = _stable(stream, a[pos]) if pos < len(a) else None
            right = _stable(stream, b[pos]) if pos < len(b) else None
            if left == right:
                identical += 1
            elif first is None:
                first = {
                    "stream": stream.name,
                    "key": key,
                    "position": pos,
                    "live": json.loads(left) if left else None,
                    "replayed": json.loads(right) if right else None,
                }
    return identical, first


def replay(
    cfg: Config,
    rng: ReplayRange,
    *,
    speed: float | None = None,
    progress: bool | None = None,
    verify: bool = False,
    keep_topics: bool = False,
    replay_id: str | None = None,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    replay_id = replay_id or uuid.uuid4().hex[:8]
    streams = {s.name: s for s in history_streams(cfg)}
    catalog = open_catalog(cfg)
    _check_history_complete(catalog, cfg, rng)
    live_topics = cfg.topics
    rcfg = cfg.for_run(replay_run(replay_id))
    create_topics(rcfg)
    try:
        # 1. the recorded inputs, in their partition order, to the replay's own topics
        t_read = time.perf_counter()
        event_rows = _read(catalog, cfg, streams["events"], live_topics.events, rng)
        control_rows = [
            r
            for r in _read(catalog, cfg, streams["control"], live_topics.control, rng)
            if r.get("command") != ControlCommand.KILL_TRIPPED.value
        ]
        events, dead = rows_to_inputs(streams["events"], event_rows, live_topics.events, _event_of)
        controls, dead_controls = rows_to_inputs(
            streams["control"], control_rows, live_topics.control, _control_value
        )
        dead += dead_controls
        read_s = time.perf_counter() - t_read
        # each stage as the principal it has when it runs alone (kafka.security=sasl); the
        # recorded kill commands go back to control as the desk's operator would send them
        with as_role("publisher"):
            producer = make_producer(rcfg)
        with as_role("operator"):
            control_producer = make_producer(rcfg)
        on_delivery = DeliveryErrors()
        t_pub = time.perf_counter()
        for letter in dead:
            logger.warning("replay: stored row refused: %s", letter.reason)
            producer.produce(
                rcfg.topics.dead_letter, value=letter.to_json().encode(), on_delivery=on_delivery
            )
        published = produce_events(
            producer,
            rcfg.topics.events,
            events,
            on_delivery,
            speed=speed,
            progress=progress,
            desc="replay",
        )
        for value in controls:
            ctrl = decode_record(Control, value)
            control_producer.produce(
                rcfg.topics.control,
                key=ctrl.instrument or None,
                value=value,
                timestamp=max(ctrl.ts_event // 1_000_000, 0),
                on_delivery=on_delivery,
            )
        on_delivery.check(rcfg, producer.flush(60) + control_producer.flush(60))
        publish_s = time.perf_counter() - t_pub

        # 2. the same job and the same execution sink, bounded
        t_job = time.perf_counter()
        with as_role("job"):
            build_stream_job(rcfg, bounded=True, group_id=f"bookstream-replay-{replay_id}").execute(
                f"bookstream-replay-{replay_id}"
            )
        job_s = time.perf_counter() - t_job
        t_sink = time.perf_counter()
        with as_role("exec-sink"):
            sink = run_sink(rcfg, group=f"bookstream-replay-sink-{replay_id}", bounded=True)
        sink_s = time.perf_counter() - t_sink
        (cfg.state_dir / "exec-sink" / f"bookstream-replay-sink-{replay_id}.json").unlink(
            missing_ok=True
        )

        summary: dict[str, Any] = {
            "replay_id": replay_id,
            "run_id": rng.run_id,
            "events_replayed": published,
            "control_replayed": len(controls),
            "rows_dead_lettered": len(dead),
            "fills_replayed": sink.stats.get("fills", 0),
            "read_s": round(read_s, 3),
            "publish_s": round(publish_s, 3),
            "job_s": round(job_s, 3),
            "sink_s": round(sink_s, 3),
            "events_per_s": round(published / (read_s + publish_s + job_s), 1)
            if published
            else 0.0,
        }
        if verify:
            summary.update(_verify(catalog, cfg, rcfg, rng, streams, event_rows))
            if rng.run_id is not None:
                record_verdict(cfg, rng.run_id, summary)
        summary["wall_s"] = round(time.perf_counter() - t0, 3)
        summary["replay_topics"] = None if not keep_topics else replay_run(replay_id) + ".*"
        return summary
    finally:
        if not keep_topics:
            delete_topics(rcfg, [s.name for s in rcfg.topics.specs()])


def record_verdict(cfg: Config, run_id: str, summary: dict[str, Any]) -> Path:
    """Keep a run's newest replay verdict beside its offsets (``<run_id>.replay.json``), for
    ``bookstream report``: it shows the last verdict instead of replaying again."""
    keys = (
        "replay_id",
        "identical",
        "orders_live",
        "orders_replayed",
        "orders_identical",
        "fills_live",
        "fills_replayed",
        "fills_identical",
        "executions_live",
        "executions_replayed",
        "executions_identical",
        "determinism",
    )
    first = summary.get("first_divergence")
    doc = {
        **{k: summary.get(k) for k in keys},
        "verified_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "first_divergence": None
        if not first
        else {k: first.get(k) for k in ("stream", "key", "position")},
    }
    path = cfg.lake_dir / "runs" / f"{run_id}.replay.json"
    path.write_text(json.dumps(doc, sort_keys=True, default=str))
    return path


def _verify(
    catalog: Catalog,
    cfg: Config,
    rcfg: Config,
    rng: ReplayRange,
    streams: dict[str, Stream],
    event_rows: list[dict[str, Any]],
) -> dict[str, Any]:
    orders_s, exec_s = streams["orders"], streams["executions"]

    def replayed(stream: Stream, topic: str, read_committed: bool) -> list[dict]:
        return [
            stream.decode(record_value(r))
            for r in drain_topic(rcfg, topic, read_committed=read_committed, idle_timeout_s=15)
        ]

    def real_orders(rows: list[dict]) -> list[dict]:
        return [r for r in rows if r["action"] != OrderAction.HEARTBEAT.value]

    live_orders = real_orders(_read(catalog, cfg, orders_s, cfg.topics.orders, rng))
    replay_orders = real_orders(replayed(orders_s, rcfg.topics.orders, False))
    live_exec = _read(catalog, cfg, exec_s, cfg.topics.executions, rng)
    replay_exec = replayed(exec_s, rcfg.topics.executions, True)
    live_fills = [r for r in live_exec if r["kind"] == "fill"]
    replay_fills = [r for r in replay_exec if r["kind"] == "fill"]

    orders_identical, orders_diff = _compare(orders_s, live_orders, replay_orders)
    fills_identical, fills_diff = _compare(exec_s, live_fills, replay_fills)
    exec_identical, exec_diff = _compare(exec_s, live_exec, replay_exec)
    first = orders_diff or exec_diff or fills_diff
    if first is not None:
        first["input_event"] = _input_event(first, live_orders, event_rows)
    live_n, fills_n = len(live_orders), len(live_fills)
    return {
        "orders_live": live_n,
        "orders_replayed": len(replay_orders),
        "orders_identical": orders_identical,
        "fills_live": fills_n,
        "fills_replayed": len(replay_fills),
        "fills_identical": fills_identical,
        "executions_live": len(live_exec),
        "executions_replayed": len(replay_exec),
        "executions_identical": exec_identical,
        "determinism": round(
            (orders_identical + exec_identical)
            / max(1, max(live_n, len(replay_orders)) + max(len(live_exec), len(replay_exec))),
            6,
        ),
        "identical": first is None,
        "first_divergence": first,
    }


def _input_event(
    diff: dict, live_orders: list[dict], event_rows: list[dict[str, Any]]
) -> dict | None:
    """The recorded event that led to a divergent record: the order's source event (for an
    execution report, the source event of its order)."""
    record = diff["live"] or diff["replayed"] or {}
    seq = record.get("source_seq")
    if seq is None and record.get("order_id"):
        order = next((o for o in live_orders if o["order_id"] == record["order_id"]), None)
        seq = order["source_seq"] if order else None
    if seq is None:
        return None
    for row in event_rows:
        if row["instrument"] == diff["key"] and row["seq"] == seq:
            return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
    return None


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    cfg = load_config()
    if args.time_from is not None or args.time_to is not None:  # ns (the CLI parses them)
        if args.run:
            raise SystemExit("bookstream replay: give --run or --from/--to, not both")
        rng = ReplayRange(time_from_ns=args.time_from, time_to_ns=args.time_to)
    else:
        run = load_run(cfg, args.run or "latest")
        rng = ReplayRange(run_id=run["run_id"], offsets_from=run["from"], offsets_to=run["to"])
    if not args.no_history_sink:
        with as_role("history-sink"):
            run_history_sink(cfg, bounded=True)
    return replay(
        cfg,
        rng,
        speed=args.speed,
        progress=False if args.no_progress else None,
        verify=args.verify,
        keep_topics=args.keep_topics,
    )
