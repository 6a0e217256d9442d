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

import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from jobs.kafka_io import drain_topic, end_offsets, first_offsets, reached_end, wait_stable
from udfs.config import Config
from udfs.execution.engine import ExecutionEngine, Output
from udfs.execution.portfolio import Portfolio
from udfs.execution.sequencer import Sequencer
from udfs.schema import (
    Control,
    DeadLetter,
    ExecKind,
    ExecReport,
    L2Event,
    Order,
    Reason,
    RiskReport,
    SchemaError,
    decode_event,
    decode_record,
    encode_record,
)

__all__ = ["SinkResult", "run_sink"]

logger = logging.getLogger(__name__)


@dataclass
class SinkResult:
    inputs: int = 0
    outputs: int = 0
    skipped: int = 0
    """inputs refused (do not decode, or made the engine raise): each one is dead-lettered"""
    rebuilt_inputs: int = 0
    stats: dict = field(default_factory=dict)
    positions: dict = field(default_factory=dict)
    pnl: dict = field(default_factory=dict)


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


def _decode(
    sequencer: Sequencer, cfg: Config, msg: Message, dead: list[DeadLetter] | None = None
) -> bool:
    """Decode one input and hand it to the sequencer; a refusal goes to ``dead`` (None: the
    cold-start rebuild, which publishes nothing) and returns False."""
    topic, partition, value = msg.topic(), msg.partition(), msg.value()
    try:
        record = decode_input(cfg, topic, value)
    except SchemaError as exc:
        if dead is not None:
            code = {"record": Reason.MALFORMED, "v": Reason.UNKNOWN_VERSION}.get(
                exc.field, Reason.SCHEMA
            )
            key = msg.key().decode("utf-8", "replace") if msg.key() else ""
            dead.append(refusal(topic, partition, msg.offset(), key, value, code, str(exc)))
        return False
    origin = (topic, partition, msg.offset(), msg.key(), value)
    if isinstance(record, L2Event):
        sequencer.add_market(record, partition, origin)
    elif isinstance(record, Order):
        sequencer.add_order(record, partition, origin)
    else:
        sequencer.add_control(record, origin)
    return True


def _take_refused(sequencer: Sequencer, dead: list[DeadLetter] | None) -> int:
    """Dead letters for the inputs the engine raised on (None: rebuild, nothing published)."""
    refused, sequencer.refused = sequencer.refused, []
    for origin, _item, why in refused:
        # origin: (topic, partition, offset, key, value) as _decode gave it, or None
        where = origin if isinstance(origin, tuple) else ("", -1, -1, None, None)
        logger.error("execution sink: input set aside: %s (%s)", why, origin and where[:3])
        if dead is not None:
            topic, partition, offset, key, value = where
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


def _topic_for(cfg: Config, out: Output) -> tuple[str, str]:
    if isinstance(out, ExecReport):
        return cfg.topics.executions, out.instrument
    if isinstance(out, Control):
        return cfg.topics.control, out.instrument
    assert isinstance(out, RiskReport)
    return cfg.topics.risk, ""


def _state_from_log(reports: Iterable[ExecReport]) -> tuple[Portfolio, dict[str, set[str]]]:
    """Positions and resting orders as the executions log tells them: an order rests from its
    ACK until a CANCELED or its last FILL (``leaves_qty == 0``); per instrument."""
    portfolio = Portfolio()
    resting: dict[str, set[str]] = {}
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


def _log_reports(cfg: Config, group_prefix: str) -> Iterator[ExecReport]:
    """The executions log, read committed; a record that is no execution report is not this
    sink's output and cannot hold its start back (no poison pill): ignored with a warning."""
    for rec in drain_topic(cfg, cfg.topics.executions, read_committed=True):
        try:
            yield decode_record(ExecReport, rec.value)
        except SchemaError as exc:
            logger.warning(
                "%s: executions[%d]@%d is no execution report (%s): ignored",
                group_prefix,
                rec.partition,
                rec.offset,
                exc,
            )


def _check_against_log(cfg: Config, engine: ExecutionEngine, group_prefix: str) -> None:
    """Positions and resting orders from the executions log (read committed) must equal the
    rebuilt engine's; a sink that cannot agree with its own history refuses to start, naming
    what differs (e.g. a working order the rebuild lost after a risk limit was changed)."""
    portfolio, log_resting = _state_from_log(_log_reports(cfg, group_prefix))
    log_positions = {i: portfolio.position(i) for i in engine.positions()}
    if {k: v for k, v in log_positions.items() if v} != {
        k: v for k, v in engine.positions().items() if v
    }:
        raise RuntimeError(
            f"{group_prefix}: positions from the executions log "
            f"{log_positions} differ from the rebuilt state "
            f"{engine.positions()}: refusing to accept orders"
        )
    rebuilt = {name: set(ids) for name, ids in engine.open_orders().items()}
    problems = []
    for name in sorted(set(log_resting) | set(rebuilt)):
        lost = log_resting.get(name, set()) - rebuilt.get(name, set())
        extra = rebuilt.get(name, set()) - log_resting.get(name, set())
        if lost:
            problems.append(f"{name}: {len(lost)} resting in the log, not rebuilt ({_few(lost)})")
        if extra:
            problems.append(f"{name}: {len(extra)} rebuilt, not in the log ({_few(extra)})")
    if problems:
        raise RuntimeError(
            f"{group_prefix}: resting orders from the executions log differ from the rebuilt "
            f"state: {'; '.join(problems)}: refusing to accept orders"
        )
    logger.info(
        "%s: state rebuilt and checked against the output log: positions %s, %d resting orders",
        group_prefix,
        engine.positions(),
        sum(len(v) for v in log_resting.values()),
    )


def run_sink(  # noqa: C901 - the sink's read / sequence / transact / commit loop
    cfg: Config,
    *,
    group: str = "bookstream-exec-sink",
    bounded: bool = False,
    start_offsets: dict[str, dict[int, int]] | None = None,
    commit_every: int = 20_000,
    idle_exit_s: float | None = None,
) -> SinkResult:
    """Run the sink. ``bounded``: process up to the inputs' end offsets as of the start, then
    resolve what is in flight and stop (demo, tests, replay). ``start_offsets`` (topic ->
    partition -> offset): where the sink's history begins on its first start."""
    topics = [cfg.topics.events, cfg.topics.orders, cfg.topics.control]
    history = _history_start(cfg, group, topics, start_offsets)
    consumer = Consumer(
        {
            "bootstrap.servers": cfg.kafka.bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 52428800,
        }
    )
    ends = {t: end_offsets(cfg, t) for t in topics}

    engine = ExecutionEngine(cfg.risk, cfg.venue)
    # the partitions with data in this sink's history, as of its start: each must deliver
    # before the sequencer releases anything, so a partition read faster never overtakes them
    sequencer = Sequencer(
        engine,
        lateness_ns=cfg.flink.out_of_orderness_ms * 1_000_000,
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
        {
            "bootstrap.servers": cfg.kafka.bootstrap_servers,
            "transactional.id": f"{group}-tx",
            "linger.ms": 20,
            "partitioner": "murmur2_random",
        }
    )
    producer.init_transactions(30)
    committed = {
        (tp.topic, tp.partition): tp.offset
        for tp in consumer.committed(
            [TopicPartition(t, p) for t in topics for p in history[t]], timeout=30
        )
    }

    # 1. cold start: rebuild from history [start, committed) without publishing
    resume_at = {
        (t, p): max(history[t][p], committed.get((t, p), -1)) for t in topics for p in history[t]
    }
    replay = {k: v for k, v in resume_at.items() if v > history[k[0]][k[1]]}
    if replay:
        consumer.assign([TopicPartition(t, p, history[t][p]) for t, p in replay])
        remaining = dict(replay)
        while remaining:
            msgs = consumer.consume(num_messages=10_000, timeout=1.0)
            if not msgs:  # the committed offset may lie past commit markers (control topic)
                reached_end(consumer, remaining)
            for msg in msgs:
                if msg.error():
                    continue
                k = (msg.topic(), msg.partition())
                if k not in remaining or msg.offset() >= remaining[k]:
                    continue
                _decode(sequencer, cfg, msg)
                result.rebuilt_inputs += 1
                if msg.offset() + 1 >= remaining[k]:
                    del remaining[k]
            sequencer.drain()
            _take_refused(sequencer, None)
        logger.info("%s: replayed %d inputs of its history", group, result.rebuilt_inputs)
        _check_against_log(cfg, engine, group)

    # 2. live (or bounded) processing, outputs and offsets in one transaction per batch
    consumer.assign([TopicPartition(t, p, o) for (t, p), o in resume_at.items()])
    remaining = (
        {k: ends[k[0]][k[1]] for k, o in resume_at.items() if o < ends[k[0]][k[1]]}
        if bounded
        else {}
    )
    if bounded:
        for k in resume_at:
            if k not in remaining:  # nothing (more) to read there
                _complete(sequencer, cfg, k)
    pending_inputs = 0
    last_input = time.monotonic()
    dead: list[DeadLetter] = []

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

    def commit(outputs: list[Output]) -> None:
        result.skipped += _take_refused(sequencer, dead)
        producer.begin_transaction()
        publish(outputs)
        for letter in dead:  # with the outputs and offsets of the batch: exactly once
            producer.produce(
                cfg.topics.dead_letter, key=letter.key or None, value=letter.to_json().encode()
            )
        dead.clear()
        positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
        if positions:
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(60)

    while True:
        msgs = consumer.consume(num_messages=10_000, timeout=0.5)
        for msg in msgs:
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    logger.warning("consume error: %s", msg.error())
                continue
            k = (msg.topic(), msg.partition())
            if bounded and (k not in remaining or msg.offset() >= remaining[k]):
                continue
            if not _decode(sequencer, cfg, msg, dead):
                result.skipped += 1
            result.inputs += 1
            pending_inputs += 1
            if bounded and msg.offset() + 1 >= remaining[k]:
                del remaining[k]
                _complete(sequencer, cfg, k)
        if msgs:
            last_input = time.monotonic()
        elif bounded:
            for tp in reached_end(consumer, remaining):
                _complete(sequencer, cfg, (tp.topic, tp.partition))
        done = bounded and not remaining
        if done:
            commit(sequencer.drain(final=True))
            break
        if pending_inputs >= commit_every or (pending_inputs and not msgs):
            commit(sequencer.drain())
            pending_inputs = 0
        if idle_exit_s is not None and time.monotonic() - last_input > idle_exit_s:
            break
    producer.flush(30)
    consumer.close()
    if bounded:  # what this run committed is readable read_committed when it returns
        wait_stable(cfg, [cfg.topics.executions, cfg.topics.control, cfg.topics.risk])
    in_flight = sum(engine.pending().values())
    if in_flight:  # sent to a venue, not arrived by the last market time seen
        logger.info("%s: %d requests still in flight at exit", group, in_flight)
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
