"""The execution sink: orders (Kafka) -> pre-trade risk -> paper venue -> execution reports.

A small service of its own (not a Flink job): it consumes the market events, the orders of the
trading stage and the control topic; :class:`~udfs.execution.sequencer.Sequencer` puts them in one
deterministic order and :class:`~udfs.execution.engine.ExecutionEngine` decides (risk, kill switch,
cancel-all, drawdown guard, paper fills). Acks, rejects, cancels and fills go to the executions
topic, kill trips to the control topic, VaR/ES/drawdown to the risk topic.

Exactly once, by Kafka transactions: the outputs of a batch of inputs and the consumer offsets
of those inputs are committed in one transaction, so a sink killed at any point leaves either
both or neither. On a cold start the sink first rebuilds its state from its history: it feeds
the inputs from the offsets where its history began (``$STATE/exec-sink/<group>.json``) up to
the committed offsets through the same engine without publishing, and checks the positions and
resting orders that gives against its own output log (the executions topic, read committed);
only then does it accept new input. The engine is deterministic, so the rebuilt state is the
state the killed sink had at its last commit.

No poison pill: an input that does not decode (the schema bounds every field: an order with
quantity ``"10"``, ``inf`` or ``1e30``, a NaN price, a control with a string ``ts_event``), or
that makes the engine raise, is published to the dead-letter topic with stage ``execution``,
its topic, partition, offset and reason -- in the same transaction as the batch it belongs to
-- and the sink goes on. ``inputs == fed + late_skipped + heartbeats + dead_lettered``; a
restart rebuilding its state meets those records again and sets them aside again without
publishing anything twice.
"""

from __future__ import annotations

import copy
import json
import logging
import pickle
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from confluent_kafka import Producer, TopicPartition

from jobs import metrics
from jobs.audit import publish_config
from jobs.kafka_io import (
    KafkaRecord,
    PartitionReader,
    client_config,
    committed_offsets,
    drain_topic,
    end_offsets,
    first_offsets,
    make_consumer,
    topic_end_offsets,
    wait_stable,
)
from jobs.status import StatusLine
from jobs.stopping import StopFlag
from udfs.config import Config
from udfs.execution.engine import ExecutionEngine, Output
from udfs.execution.portfolio import Portfolio
from udfs.execution.sequencer import Sequencer
from udfs.latency import HOPS, VenueHops, job_hops, parse_hops_trace
from udfs.schema import (
    Control,
    DeadLetter,
    ExecKind,
    ExecReport,
    L2Event,
    Order,
    OrderAction,
    Reason,
    RiskReport,
    SchemaError,
    decode_event,
    decode_record,
    encode_record,
)

__all__ = ["SinkResult", "SinkSnapshot", "SinkStateError", "run_sink"]

logger = logging.getLogger(__name__)


@dataclass
class SinkResult:
    inputs: int = 0
    outputs: int = 0
    skipped: int = 0
    """inputs refused (do not decode, or made the engine raise): each one is dead-lettered"""
    rebuilt_inputs: int = 0
    read_pauses: int = 0
    """input partitions paused for reading too far ahead of the safe time
    (``execution.read_ahead_ms``)"""
    stats: dict = field(default_factory=dict)
    positions: dict = field(default_factory=dict)
    pnl: dict = field(default_factory=dict)
    reports: int = 0
    """execution reports published (acks, fills, rejects, cancels): part of ``outputs``"""
    commits: int = 0
    """Kafka transactions committed"""
    commit_s: float = 0.0
    """wall seconds inside the commits (produce, offsets, commit_transaction)"""
    visible_wait_s: float = 0.0
    visible_wait_max_s: float = 0.0
    """sum and max over the commits of the time from the batch's first input read to its
    commit: how long the batch's first input waited before its outputs became readable
    (read_committed); the sum over ``commits`` is the mean"""


def _state_file(cfg: Config, group: str) -> Path:
    return cfg.state_dir / "exec-sink" / f"{group}.json"


def _history_start(
    cfg: Config, group: str, topics: list[str], start_offsets: dict[str, dict[int, int]] | None
) -> dict[str, dict[int, int]]:
    """Where this sink's history begins: remembered from its first start."""
    path = _state_file(cfg, group)
    if path.is_file():
        saved = json.loads(path.read_text())
        return {t: {int(p): o for p, o in saved[t].items()} for t in topics}
    if start_offsets is None:
        start_offsets = {t: first_offsets(cfg, t) for t in topics}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(start_offsets))
    return start_offsets


def decode_input(cfg: Config, topic: str, value: bytes | None) -> L2Event | Order | Control:
    """One input record of the sink, by topic; :class:`SchemaError` names the field."""
    if value is None:
        raise SchemaError("record", "empty value (tombstone)")
    if topic == cfg.topics.events:
        return decode_event(value)
    if topic == cfg.topics.orders:
        return decode_record(Order, value)
    return decode_record(Control, value)


def refusal(
    topic: str, partition: int, offset: int, key: str, value: bytes | None, code: Reason, why: str
) -> DeadLetter:
    """The dead letter of an input the sink could not use (stage ``execution``)."""
    return DeadLetter(
        source=f"kafka:{topic}",
        partition=partition,
        offset=offset,
        key=key,
        reason_code=code,
        reason=why,
        raw=(value or b"").decode("utf-8", "replace"),
        stage="execution",
        ts_dead=time.time_ns(),
    )


_Origin = tuple[str, int, int, bytes | None, bytes | None]
"""where a sink input came from (topic, partition, offset, Kafka key, value): its dead letter"""


def _decode(
    sequencer: Sequencer,
    cfg: Config,
    rec: KafkaRecord,
    dead: list[DeadLetter] | None = None,
    on_order: Callable[[Order, KafkaRecord], None] | None = None,
) -> bool:
    """Decode one input and hand it to the sequencer; a refusal goes to ``dead`` (None: the
    cold-start rebuild, which publishes nothing) and returns False. ``on_order`` sees every
    decoded order (its latency trace)."""
    topic, partition, value = rec.topic, rec.partition, rec.value
    try:
        record = decode_input(cfg, topic, value)
    except SchemaError as exc:
        if dead is not None:
            code = {"record": Reason.MALFORMED, "v": Reason.UNKNOWN_VERSION}.get(
                exc.field, Reason.SCHEMA
            )
            key = rec.key.decode("utf-8", "replace") if rec.key else ""
            dead.append(refusal(topic, partition, rec.offset, key, value, code, str(exc)))
        return False
    origin: _Origin = (topic, partition, rec.offset, rec.key, value)
    if isinstance(record, L2Event):
        # the Kafka key: an event keyed to another instrument is one the job never keys
        kafka_key = rec.key.decode("utf-8", "replace") if rec.key else None
        sequencer.add_market(record, partition, origin, kafka_key)
    elif isinstance(record, Order):
        if on_order is not None:
            on_order(record, rec)
        sequencer.add_order(record, partition, origin)
    else:
        sequencer.add_control(record, origin)
    return True


def _take_refused(sequencer: Sequencer, dead: list[DeadLetter] | None) -> int:
    """Dead letters for the inputs the engine raised on (None: rebuild, nothing published)."""
    refused, sequencer.refused = sequencer.refused, []
    for origin, _item, why in refused:
        # the sequencer keeps origins opaque; this sink's are _decode's (or None)
        where = cast("_Origin | None", origin)
        logger.error("execution sink: input set aside: %s (%s)", why, where and where[:3])
        if dead is not None:
            topic, partition, offset, key, value = where or ("", -1, -1, None, None)
            dead.append(
                refusal(
                    topic,
                    partition,
                    offset,
                    key.decode("utf-8", "replace") if key else "",
                    value,
                    Reason.UNPROCESSABLE,
                    why,
                )
            )
    return len(refused)


def _complete(sequencer: Sequencer, cfg: Config, key: tuple[str, int]) -> None:
    """A bounded run has read ``(topic, partition)`` to its end."""
    topic, partition = key
    if topic == cfg.topics.events:
        sequencer.market_complete(partition)
    elif topic == cfg.topics.orders:
        sequencer.orders_complete(partition)


def _hold_read_ahead(reader: PartitionReader, sequencer: Sequencer, cfg: Config) -> None:
    """Pause the input partitions read too far past the sequencer's safe time (their records
    would only queue: memory grew with a backlog), resume them once it has caught up
    (``execution.read_ahead_ms``)."""
    events, orders = sequencer.read_ahead(cfg.execution.read_ahead_ms * 1_000_000)
    reader.hold({(cfg.topics.events, p) for p in events} | {(cfg.topics.orders, p) for p in orders})


def _topic_for(cfg: Config, out: Output) -> tuple[str, str]:
    if isinstance(out, ExecReport):
        return cfg.topics.executions, out.instrument
    if isinstance(out, Control):
        return cfg.topics.control, out.instrument
    assert isinstance(out, RiskReport)
    return cfg.topics.risk, ""


def _state_from_log(
    reports: Iterable[ExecReport],
    portfolio: Portfolio | None = None,
    resting: dict[str, set[str]] | None = None,
) -> tuple[Portfolio, dict[str, set[str]]]:
    """Positions and resting orders as the executions log tells them (on top of ``portfolio``
    and ``resting``, a snapshot's): an order rests from its ACK until a CANCELED or its last
    FILL (``leaves_qty == 0``); per instrument."""
    portfolio = Portfolio() if portfolio is None else portfolio
    resting = {} if resting is None else resting
    for rep in reports:
        if rep.kind is ExecKind.FILL:
            portfolio.apply_fill(rep)
        live = resting.setdefault(rep.instrument, set())
        if rep.kind is ExecKind.ACK:
            live.add(rep.order_id)
        elif rep.kind is ExecKind.CANCELED or (rep.kind is ExecKind.FILL and rep.leaves_qty == 0):
            live.discard(rep.order_id)
    return portfolio, resting


def _few(ids: Iterable[str], n: int = 5) -> str:
    ids = sorted(ids)
    return ", ".join(ids[:n]) + (f" and {len(ids) - n} more" if len(ids) > n else "")


def _log_reports(
    cfg: Config, group_prefix: str, from_offsets: dict[int, int] | None = None
) -> Iterator[ExecReport]:
    """The executions log, read committed (from ``from_offsets``); a record that is no execution
    report is not this sink's output and cannot hold its start back (no poison pill): ignored
    with a warning."""
    for rec in drain_topic(
        cfg, cfg.topics.executions, from_offsets=from_offsets, read_committed=True
    ):
        try:
            if rec.value is None:
                raise SchemaError("record", "empty value (tombstone)")
            yield decode_record(ExecReport, rec.value)
        except SchemaError as exc:
            logger.warning(
                "%s: executions[%d]@%d is no execution report (%s): ignored",
                group_prefix,
                rec.partition,
                rec.offset,
                exc,
            )


def _check_against_log(
    cfg: Config, engine: ExecutionEngine, group_prefix: str, start: LogStart | None = None
) -> None:
    """Positions and resting orders from the executions log (read committed) must equal the
    rebuilt engine's; a sink that cannot agree with its own history refuses to start, naming
    what differs (e.g. a working order the rebuild lost after a risk limit was changed). From
    a snapshot (``start``), the log is read from where it stood then, on top of the positions
    and resting orders the snapshot held."""
    from_offsets = start.log_offsets if start else None
    lows = first_offsets(cfg, cfg.topics.executions)
    lost = {p: low for p, low in lows.items() if low > (from_offsets or {}).get(p, 0)}
    if lost:
        raise SinkStateError(
            f"{group_prefix}: the executions log has lost records to retention (partition -> "
            f"first offset {lost}, needed from {from_offsets or 0}): cannot check the "
            "rebuilt state; refusing to accept orders"
        )
    portfolio, log_resting = _state_from_log(
        _log_reports(cfg, group_prefix, from_offsets),
        copy.deepcopy(start.portfolio) if start else None,
        {k: set(v) for k, v in start.resting.items()} if start else None,
    )
    log_positions = {i: portfolio.position(i) for i in engine.positions()}
    if {k: v for k, v in log_positions.items() if v} != {
        k: v for k, v in engine.positions().items() if v
    }:
        raise SinkStateError(
            f"{group_prefix}: positions from the executions log "
            f"{log_positions} differ from the rebuilt state "
            f"{engine.positions()}: refusing to accept orders"
        )
    rebuilt = {name: set(ids) for name, ids in engine.open_orders().items()}
    problems = []
    for name in sorted(set(log_resting) | set(rebuilt)):
        not_rebuilt = log_resting.get(name, set()) - rebuilt.get(name, set())
        not_logged = rebuilt.get(name, set()) - log_resting.get(name, set())
        if not_rebuilt:
            problems.append(
                f"{name}: {len(not_rebuilt)} resting in the log, not rebuilt ({_few(not_rebuilt)})"
            )
        if not_logged:
            problems.append(
                f"{name}: {len(not_logged)} rebuilt, not in the log ({_few(not_logged)})"
            )
    if problems:
        raise RuntimeError(
            f"{group_prefix}: resting orders from the executions log differ from the rebuilt "
            f"state: {'; '.join(problems)}: refusing to accept orders"
        )
    logger.info(
        "%s: state rebuilt and checked against the output log: positions %s",
        group_prefix,
        engine.positions(),
    )


class SinkStateError(RuntimeError):
    """The sink cannot rebuild a state it can vouch for; the message says why."""


class TransactionStuckError(RuntimeError):
    """A transactional call did not return: librdkafka can wait forever for a group
    coordinator, past the call's own timeout (confluentinc/librdkafka#5456, #5511). Nothing
    of the open transaction is visible to read_committed readers, so a restart resumes exactly
    from the last committed one."""


TXN_WATCHDOG_S = 120.0
"""How long a transactional call may take before the sink gives up on it (its own timeout is
30-60 s; past this it is the librdkafka hang above)."""


def _within(what: str, call: Callable[[], object], timeout_s: float = TXN_WATCHDOG_S) -> None:
    """Run ``call`` on a watchdog thread: its exception is raised here; if it has not returned
    after ``timeout_s``, :class:`TransactionStuckError` (the stuck thread is left behind: the
    process must end, which the CLI does)."""
    done = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name=f"txn-{what}", daemon=True).start()
    if not done.wait(timeout_s):
        raise TransactionStuckError(
            f"{what} did not return in {timeout_s:.0f} s (a librdkafka coordinator hang, "
            "confluentinc/librdkafka#5456): exiting; a restart resumes from the last committed "
            "transaction"
        )
    if failure:
        raise failure[0]


@dataclass
class SinkSnapshot:
    """The sink's whole state (sequencer with its engine) as of committed input offsets, and
    where its output log stood then: a cold start replays only what came after ``offsets``, so
    the inputs' retention needs to keep just that (one snapshot every ``snapshot_every``
    inputs and at the end of every bounded run). Written after the transaction that committed
    ``offsets``, so it never stands for a state that was not committed."""

    offsets: dict[tuple[str, int], int]
    sequencer: Sequencer
    log_offsets: dict[int, int]
    """executions partition -> log end right after the commit"""


@dataclass
class LogStart:
    """Where a cold start from a snapshot checks its executions log from: the snapshot's
    positions and resting orders (taken before the replay) and the log's end then."""

    portfolio: Portfolio
    resting: dict[str, set[str]]
    log_offsets: dict[int, int]


def _snapshot_file(cfg: Config, group: str) -> Path:
    return cfg.state_dir / "exec-sink" / f"{group}.snapshot.pkl"


def _load_snapshot(
    cfg: Config, group: str, committed: dict[tuple[str, int], int]
) -> SinkSnapshot | None:
    """The group's snapshot, if it stands for offsets the group has committed (a snapshot
    ahead of the commits -- group offsets reset by hand -- is set aside, not used)."""
    path = _snapshot_file(cfg, group)
    if not path.is_file():
        return None
    # the state dir is the sink's own (0700): the pickle is its own writing
    with path.open("rb") as fh:
        snap: SinkSnapshot = pickle.load(fh)
    ahead = {k: o for k, o in snap.offsets.items() if o > committed.get(k, -1)}
    if ahead:
        logger.warning(
            "%s: snapshot %s is ahead of the committed offsets at %s: not used", group, path, ahead
        )
        return None
    return snap


def _save_snapshot(cfg: Config, group: str, snap: SinkSnapshot) -> None:
    path = _snapshot_file(cfg, group)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        pickle.dump(snap, fh, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)


METRICS_PROCESS = "exec-sink"
MEASURED_HOPS = tuple(h for h in HOPS if h != "exchange_receive")
"""The hops this sink measures (udfs.latency): every one but the feed's (the publisher's)."""


class OrderLatency:
    """The latency histograms of the orders this sink reads (jobs/metrics.py): the stream
    job's trace and tick-to-order as each new order arrives, the venue's hops as its reports
    are committed. ``live``: the job's send to this read is a latency (not in a bounded run,
    which reads a finished job's orders)."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self.venue = VenueHops()
        metrics.announce_hops(MEASURED_HOPS)

    def on_order(self, order: Order, rec: KafkaRecord) -> None:
        if order.action is not OrderAction.NEW:
            return
        self.venue.order(order.order_id, order.ts_event)
        trace = parse_hops_trace(rec.hops)
        if trace is None:
            return
        hops, tick_to_order_ns = job_hops(
            order.trigger_ts_recv, trace, rec.read_ns if self.live else None
        )
        metrics.observe_hops(hops)
        metrics.TICK_TO_ORDER.observe(tick_to_order_ns / 1e9)

    def on_reports(self, reports: Iterable[ExecReport]) -> None:
        for rep in reports:
            metrics.observe_hops(
                self.venue.report(rep.order_id, rep.kind.value, rep.ts_event, rep.leaves_qty)
            )


def _observe_commit(
    cfg: Config,
    engine: ExecutionEngine,
    reader: PartitionReader,
    outputs: list[Output],
    letters: list[DeadLetter],
    latency: OrderLatency,
) -> None:
    """Prometheus figures of one committed transaction (jobs/metrics.py)."""
    for topic, n in Counter(_topic_for(cfg, out)[0] for out in outputs).items():
        metrics.count_out(METRICS_PROCESS, topic, n)
    metrics.count_out(METRICS_PROCESS, cfg.topics.dead_letter, len(letters))
    metrics.count_dead(METRICS_PROCESS, letters)
    reports = [out for out in outputs if isinstance(out, ExecReport)]
    metrics.count_reports(reports)
    latency.on_reports(reports)
    metrics.set_book(engine.pnl(), engine.positions(), engine.risk.mode.value)
    for topic, lag in reader.lag().items():
        metrics.CONSUMER_LAG.labels(METRICS_PROCESS, topic).set(lag)


def run_sink(  # noqa: C901 - the sink's read / sequence / transact / commit loop
    cfg: Config,
    *,
    group: str = "bookstream-exec-sink",
    bounded: bool = False,
    start_offsets: dict[str, dict[int, int]] | None = None,
    commit_every: int | None = None,
    snapshot_every: int = 200_000,
    idle_exit_s: float | None = None,
    open_topics: Sequence[str] = (),
    final_ends: Callable[[], dict[str, dict[int, int]] | None] | None = None,
) -> SinkResult:
    """Run the sink. ``bounded``: process up to the inputs' end offsets as of the start, then
    resolve what is in flight and stop (demo, tests, replay). ``start_offsets`` (topic ->
    partition -> offset): where the sink's history begins on its first start.
    ``commit_every``: inputs per transaction at most (None: ``execution.commit_every``).
    ``snapshot_every``: inputs between two snapshots of the state (and one at the end of a
    bounded run), so a cold start replays at most that many.

    ``open_topics`` (bounded; the orders, or the control topic): inputs whose end is not known
    at the start because the stream job is still writing them (the demo runs the sink beside
    the job). They are followed until ``final_ends()`` (called on every poll) returns the end
    offsets (topic -> partition -> offset); then the run ends there as if it had known them
    from the start: the sequencer's order depends on the records only, and the partitions it
    must wait for are set from those ends. The events topic's end must be known at the start
    (which partitions hold back the rest depends on it from the first record)."""
    if open_topics and not (bounded and final_ends is not None):
        raise ValueError("open_topics needs a bounded run and final_ends")
    if cfg.topics.events in open_topics:
        raise ValueError("the events topic's end must be known at the sink's start")
    publish_config(cfg, METRICS_PROCESS)  # the risk limits and venue this run decides under
    if commit_every is None:
        commit_every = cfg.execution.commit_every
    topics = [cfg.topics.events, cfg.topics.orders, cfg.topics.control]
    history = _history_start(cfg, group, topics, start_offsets)
    consumer = make_consumer(cfg, group)
    ends = {t: end_offsets(cfg, t) for t in topics}

    engine = ExecutionEngine(cfg.risk, cfg.venue)
    # the partitions with data in this sink's history, as of its start: each must deliver
    # before the sequencer releases anything, so a partition read faster never overtakes them
    sequencer = Sequencer(
        engine,
        lateness_ns=cfg.flink.out_of_orderness_ms * 1_000_000,
        max_ahead_ns=cfg.flink.max_ahead_ms * 1_000_000,
        future_confirm=cfg.flink.future_confirm,
        expected_partitions={
            p
            for p, end in ends[cfg.topics.events].items()
            if end > history[cfg.topics.events].get(p, 0)
        },
        expected_order_partitions={
            p
            for p, end in ends[cfg.topics.orders].items()
            if end > history[cfg.topics.orders].get(p, 0)
        },
    )
    result = SinkResult()
    # first of all, fence a killed predecessor: init_transactions aborts its open transaction,
    # so the log we check below and the offsets we resume from are final
    producer = Producer(
        client_config(
            cfg,
            {
                "transactional.id": f"{group}-tx",
                "linger.ms": 20,
                "partitioner": "murmur2_random",
            },
        )
    )
    producer.init_transactions(30)
    committed = {
        (tp.topic, tp.partition): tp.offset
        for tp in committed_offsets(
            consumer, [TopicPartition(t, p) for t in topics for p in history[t]]
        )
    }

    # 1. cold start: the newest snapshot, then replay [snapshot or start, committed) without
    # publishing
    resume_at = {
        (t, p): max(history[t][p], committed.get((t, p), -1)) for t in topics for p in history[t]
    }
    snapshot = _load_snapshot(cfg, group, resume_at)
    log_start: LogStart | None = None
    if snapshot is not None:
        # the snapshot's engine and queues; this run's partitions and completion are its own
        fresh = sequencer
        sequencer = snapshot.sequencer
        sequencer.expected_partitions = fresh.expected_partitions
        sequencer.expected_order_partitions = fresh.expected_order_partitions
        sequencer.market_done, sequencer.orders_done = set(), set()
        engine = sequencer.engine
        log_start = LogStart(
            copy.deepcopy(engine.portfolio),
            {name: set(ids) for name, ids in engine.open_orders().items()},
            snapshot.log_offsets,
        )
        logger.info("%s: state from snapshot at %s", group, snapshot.offsets)
    replay_from = {
        (t, p): snapshot.offsets.get((t, p), history[t][p]) if snapshot else history[t][p]
        for t in topics
        for p in history[t]
    }
    replay = {k: v for k, v in resume_at.items() if v > replay_from[k]}
    if replay:
        lows = {t: first_offsets(cfg, t) for t in topics}
        lost = {
            k: lows[k[0]].get(k[1], 0) for k in replay if lows[k[0]].get(k[1], 0) > replay_from[k]
        }
        if lost:
            raise SinkStateError(
                f"{group}: inputs needed to rebuild the state from {replay_from} were deleted "
                f"by retention (first offsets now {lost}); restore the snapshot "
                f"{_snapshot_file(cfg, group)} or start a new group"
            )
        # the committed offset may lie past commit markers (control topic): the reader counts
        # such a partition read once its position gets there
        rebuild = PartitionReader(consumer, {k: replay_from[k] for k in replay}, replay)
        for poll in rebuild.polls():
            for rec in poll.records:
                _decode(sequencer, cfg, rec)
                result.rebuilt_inputs += 1
            sequencer.drain()
            _take_refused(sequencer, None)
            _hold_read_ahead(rebuild, sequencer, cfg)
        rebuild.hold(set())
        logger.info("%s: replayed %d inputs of its history", group, result.rebuilt_inputs)
    if replay or snapshot is not None:
        _check_against_log(cfg, engine, group, log_start)

    # 2. live (or bounded) processing, outputs and offsets in one transaction per batch
    # a poll never takes more than one transaction's inputs: commit_every binds below the
    # reader's default batch too (measured: 1,000 gave ~10,000 inputs per transaction)
    reader = PartitionReader(
        consumer,
        resume_at,
        {(t, p): ends[t][p] for t, p in resume_at if t not in open_topics} if bounded else None,
        batch_size=min(10_000, commit_every),
        open_ends={k for k in resume_at if k[0] in open_topics},
    )
    pending_inputs = 0
    since_snapshot = 0
    last_input = time.monotonic()
    batch_start = last_input  # when the first input of the batch not yet committed was read
    dead: list[DeadLetter] = []

    metrics.serve(cfg, METRICS_PROCESS, cfg.metrics.exec_sink_port)
    latency = OrderLatency(live=not bounded)
    for limit in ("max_drawdown", "max_position_notional", "max_order_notional"):
        metrics.RISK_LIMIT.labels(limit).set(getattr(cfg.risk, limit))

    def publish(outputs: list[Output]) -> None:
        for out in outputs:
            topic, key = _topic_for(cfg, out)
            producer.produce(
                topic,
                key=key or None,
                value=encode_record(out),
                timestamp=max(out.ts_event // 1_000_000, 0),
            )
        result.outputs += len(outputs)
        result.reports += sum(1 for out in outputs if isinstance(out, ExecReport))

    def commit(outputs: list[Output], *, snapshot: bool = False) -> None:
        started = time.monotonic()
        result.skipped += _take_refused(sequencer, dead)
        producer.begin_transaction()
        publish(outputs)
        for letter in dead:  # with the outputs and offsets of the batch: exactly once
            producer.produce(
                cfg.topics.dead_letter, key=letter.key or None, value=letter.to_json().encode()
            )
        letters = list(dead)
        dead.clear()
        # what was fed, never the consumer's position (it may lie past records not yet read)
        positions = reader.positions()
        group_metadata = consumer.consumer_group_metadata()
        _within(
            "send_offsets_to_transaction",
            lambda: producer.send_offsets_to_transaction(positions, group_metadata, 30),
        )
        _within("commit_transaction", lambda: producer.commit_transaction(60))
        done = time.monotonic()
        result.commits += 1
        result.commit_s += done - started
        if pending_inputs:
            wait = done - batch_start
            result.visible_wait_s += wait
            result.visible_wait_max_s = max(result.visible_wait_max_s, wait)
        _observe_commit(cfg, engine, reader, outputs, letters, latency)
        if snapshot:
            log_end = {
                p: high
                for p, (_low, high) in topic_end_offsets(
                    cfg, cfg.topics.executions, committed=False
                ).items()
            }
            offsets = {(tp.topic, tp.partition): tp.offset for tp in positions}
            _save_snapshot(cfg, group, SinkSnapshot(offsets, sequencer, log_end))

    stop = StopFlag("exec-sink")
    restore_signals = stop.install()
    status = StatusLine(METRICS_PROCESS)
    for poll in reader.polls():
        if reader.open_ends and final_ends is not None and (got := final_ends()) is not None:
            reader.close({(t, p): got[t][p] for t, p in reader.open_ends})
            # what the sequencer waits for, as a run that knew these ends at its start
            sequencer.expected_order_partitions = {
                p
                for p, end in got.get(cfg.topics.orders, ends[cfg.topics.orders]).items()
                if end > history[cfg.topics.orders].get(p, 0)
            }
        for topic, n in Counter(rec.topic for rec in poll.records).items():
            metrics.count_in(METRICS_PROCESS, topic, n)
        if poll.records and not pending_inputs:
            batch_start = time.monotonic()
        for rec in poll.records:
            if not _decode(sequencer, cfg, rec, dead, latency.on_order):
                result.skipped += 1
            result.inputs += 1
            pending_inputs += 1
            since_snapshot += 1
        for k in poll.completed:
            _complete(sequencer, cfg, k)
        _hold_read_ahead(reader, sequencer, cfg)
        if poll.records:
            last_input = time.monotonic()
        if poll.done:
            # the final drain resolves what is in flight: a restart must start from this very
            # state (replaying the inputs would leave those in flight and resolve them again)
            commit(sequencer.drain(final=True), snapshot=True)
            break
        if pending_inputs >= commit_every or (pending_inputs and not poll.records):
            take = since_snapshot >= snapshot_every
            commit(sequencer.drain(), snapshot=take)
            pending_inputs = 0
            since_snapshot = 0 if take else since_snapshot
        if status.due():
            status.emit(
                inputs=result.inputs,
                outputs=result.outputs,
                refused=result.skipped,
                lag=sum(reader.lag().values()),
                mode=engine.risk.mode.value,
            )
        if stop.stop:
            # what was fed is committed with its outputs and a snapshot; what is in flight
            # stays in the snapshot's sequencer, resolved by the next run
            commit(sequencer.drain(), snapshot=True)
            break
        if idle_exit_s is not None and time.monotonic() - last_input > idle_exit_s:
            break
    restore_signals()
    producer.flush(30)
    consumer.close()
    if bounded:  # what this run committed is readable read_committed when it returns
        wait_stable(cfg, [cfg.topics.executions, cfg.topics.control, cfg.topics.risk])
    in_flight = sum(engine.pending().values())
    if in_flight:  # sent to a venue, not arrived by the last market time seen
        logger.info("%s: %d requests still in flight at exit", group, in_flight)
    result.read_pauses = reader.pauses
    result.stats = dict(engine.stats)
    result.positions = engine.positions()
    result.pnl = engine.pnl()
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m jobs.execution_sink ARGS`` = ``bookstream exec-sink ARGS``."""
    from jobs.cli import main as cli_main

    return cli_main(["exec-sink", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
