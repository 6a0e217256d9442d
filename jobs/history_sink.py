"""The history sink: every topic -> its Apache Iceberg table, exactly once.

A small service (confluent-kafka consumer + pyiceberg), not a Flink job: it is I/O bound and a
commit per table every few seconds is all it does. For each stream of ``udfs/history.py``:

1. on start, read the offsets the table recorded (``jobs/lake.py``) and seek there (a table
   never written starts at the topic's first offset); offsets retention deleted before they
   were stored are reported (log and ``lost_to_retention`` in the summary), never skipped
   quietly;
2. buffer records; every ``lake.commit_rows`` rows or ``lake.commit_interval_ms`` (and at the
   end of a bounded run) decode them, sort them for time-range reads and append them to the
   table with the offsets they reach in the same snapshot.

A sink killed at any point therefore restarts exactly after the last committed row: nothing is
lost (the uncommitted rows are read again) and nothing is duplicated (the committed ones are
not). Consumer-group offsets are not used at all; the table is the only truth.

Records are read ``read_committed``, so the execution sink's aborted transactions never reach
history. A record that does not decode is not stored in its table: it is published to the
dead-letter topic with stage ``history`` and its reason (a malformed record of the dead-letter
topic itself is stored in ``dead_letters`` as such, so it cannot loop). Nor is a record that
decodes but does not fit its table's columns (an integer beyond int64 in a features column, a
time whose ``event_time`` cannot be represented, a value of the wrong kind): the batch is
checked row by row only when it does not convert as a whole, so the common case costs nothing.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import Producer

from jobs import metrics
from jobs.kafka_io import (
    PartitionReader,
    create_topics,
    make_consumer,
    make_producer,
    topic_end_offsets,
)
from jobs.lake import (
    append_with_offsets,
    committed_offsets,
    ensure_table,
    history_streams,
    open_catalog,
)
from jobs.status import StatusLine
from jobs.stopping import StopFlag
from udfs.config import Config
from udfs.history import Stream, fit_rows, rows_to_table
from udfs.schema import DeadLetter, Reason, SchemaError

__all__ = ["HistoryResult", "run_history_sink"]

logger = logging.getLogger(__name__)

_DECODE_ERRORS = (SchemaError, ValueError, TypeError, KeyError, UnicodeDecodeError)
_FIT_ERRORS = (ValueError, TypeError, OverflowError, KeyError, ArithmeticError)
"""what pyarrow raises for a value that does not fit a column (ArrowInvalid, ArrowTypeError
are ValueError/TypeError subclasses)"""


@dataclass
class HistoryResult:
    rows: dict[str, int] = field(default_factory=dict)
    """rows appended per table by this run"""
    dead_lettered: int = 0
    commits: int = 0
    lost_to_retention: dict[str, dict[int, tuple[int, int]]] = field(default_factory=dict)
    """table -> partition -> (first offset not stored, first offset Kafka still has): records
    retention deleted before the table stored them"""
    wall_s: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


@dataclass
class _Pending:
    values: list[bytes] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    next_offsets: dict[int, int] = field(default_factory=dict)
    since: float = 0.0


METRICS_PROCESS = "history-sink"


def run_history_sink(  # noqa: C901 - read / buffer / commit loop with its offsets
    cfg: Config, *, bounded: bool = False, only: list[str] | None = None
) -> HistoryResult:
    """Run the sink over every stream (or the tables named in ``only``) until stopped by
    SIGTERM/SIGINT, or, ``bounded``, once every topic is stored up to its end as of the
    start."""
    t0 = time.perf_counter()
    create_topics(cfg)
    catalog = open_catalog(cfg)
    chosen = [s for s in history_streams(cfg) if only is None or s.name in only]
    if only is not None and len(chosen) != len(set(only)):
        known = [s.name for s in history_streams(cfg)]
        raise ValueError(f"unknown table(s) in {only}; known: {known}")
    by_topic: dict[str, Stream] = {getattr(cfg.topics, s.topic_field): s for s in chosen}
    tables = {s.name: ensure_table(catalog, cfg, s) for s in chosen}

    result = HistoryResult(rows={s.name: 0 for s in chosen})
    starts: dict[tuple[str, int], int] = {}
    ends: dict[tuple[str, int], int] = {}
    stored: dict[str, dict[int, int]] = {}
    for topic, stream in by_topic.items():
        stored[topic] = committed_offsets(tables[stream.name]).get(topic, {})
        for p, (low, high) in topic_end_offsets(cfg, topic).items():
            have = stored[topic].get(p, 0)
            if have < low:
                # deleted by retention before this table stored them: said, never skipped quietly
                result.lost_to_retention.setdefault(stream.name, {})[p] = (have, low)
                logger.error(
                    "%s <- %s partition %d: offsets [%d, %d) were deleted by retention before "
                    "they were stored; the table has a hole there",
                    stream.name,
                    topic,
                    p,
                    have,
                    low,
                )
            starts[(topic, p)] = max(low, have)
            ends[(topic, p)] = high
        logger.info("%s <- %s from %s", stream.name, topic, stored[topic] or "the first offset")
    consumer = make_consumer(cfg, "bookstream-history")
    producer = make_producer(cfg)
    pending = {topic: _Pending() for topic in by_topic}
    stop = StopFlag("history-sink")
    restore_signals = stop.install()
    status = StatusLine(METRICS_PROCESS)
    interval_s = cfg.lake.commit_interval_ms / 1000
    batch = max(1, min(20_000, cfg.lake.commit_rows))

    def flush(topic: str) -> None:
        buf = pending[topic]
        if not buf.next_offsets:
            return
        stream = by_topic[topic]
        rows, parts, offs = [], [], []
        for value, p, o in zip(buf.values, buf.partitions, buf.offsets, strict=True):
            try:
                rows.append(stream.decode(value))
            except _DECODE_ERRORS as exc:
                result.dead_lettered += 1
                own_row = _refuse(cfg, producer, stream, topic, p, o, value, exc)
                if own_row is None:
                    continue
                rows.append(own_row)
            parts.append(p)
            offs.append(o)
        try:
            arrow = rows_to_table(stream, rows, parts, offs)
        except _FIT_ERRORS:
            # some row does not fit its columns: find it (them), refuse it, keep the rest
            rows, parts, offs, misfits = fit_rows(stream, rows, parts, offs)
            raw_at = dict(
                zip(zip(buf.partitions, buf.offsets, strict=True), buf.values, strict=True)
            )
            for p, o, why in misfits:
                result.dead_lettered += 1
                value = raw_at.get((p, o), b"")
                own_row = _refuse(cfg, producer, stream, topic, p, o, value, ValueError(why))
                if own_row is not None:
                    rows.append(own_row)
                    parts.append(p)
                    offs.append(o)
            arrow = rows_to_table(stream, rows, parts, offs)
        producer.flush(30)  # the refusals are on the dead-letter topic before the commit
        table = tables[stream.name]
        t_commit = time.perf_counter()
        tables[stream.name] = append_with_offsets(table, arrow, topic, buf.next_offsets)
        metrics.ICEBERG_COMMIT.labels(stream.name).observe(time.perf_counter() - t_commit)
        metrics.count_out(METRICS_PROCESS, stream.name, len(rows))
        stored[topic].update(buf.next_offsets)
        result.rows[stream.name] += len(rows)
        result.commits += 1
        pending[topic] = _Pending()

    reader = PartitionReader(consumer, starts, ends if bounded else None, batch_size=batch)
    metrics.serve(cfg, METRICS_PROCESS, cfg.metrics.history_sink_port)
    try:
        for poll in reader.polls():
            now = time.monotonic()
            for topic, n in Counter(rec.topic for rec in poll.records).items():
                metrics.count_in(METRICS_PROCESS, topic, n)
            for topic, lag in reader.lag().items():
                metrics.CONSUMER_LAG.labels(METRICS_PROCESS, topic).set(lag)
            for rec in poll.records:
                buf = pending[rec.topic]
                if not buf.next_offsets:
                    buf.since = now
                buf.values.append(rec.value or b"")
                buf.partitions.append(rec.partition)
                buf.offsets.append(rec.offset)
                buf.next_offsets[rec.partition] = rec.offset + 1
            for topic, p in poll.completed:
                # a partition read to its end (through commit markers, too): the table records
                # that it holds everything up to there (so "stored up to the end" is checkable)
                end = reader.next_offsets[(topic, p)]
                if end > max(starts[(topic, p)], stored[topic].get(p, -1)):
                    buf = pending[topic]
                    if not buf.next_offsets:
                        buf.since = now
                    buf.next_offsets[p] = max(end, buf.next_offsets.get(p, -1))
            for topic, buf in pending.items():
                if buf.next_offsets and (
                    poll.done
                    or len(buf.values) >= cfg.lake.commit_rows
                    or now - buf.since >= interval_s
                    or not poll.records
                ):
                    flush(topic)
            if status.due():
                status.emit(
                    rows=result.total_rows,
                    commits=result.commits,
                    dead_lettered=result.dead_lettered,
                    lag=sum(reader.lag().values()),
                )
            if stop.stop:
                break
        for topic in pending:
            flush(topic)
    finally:
        consumer.close()
        producer.flush(30)
        restore_signals()
        result.wall_s = time.perf_counter() - t0
    return result


def _refuse(
    cfg: Config,
    producer: Producer,
    stream: Stream,
    topic: str,
    partition: int,
    offset: int,
    value: bytes,
    exc: Exception,
) -> dict | None:
    """A record that does not decode: dead-lettered with its reason (``history`` stage). For
    the dead-letter topic itself, the row to store instead (publishing it again would loop)."""
    text = value.decode("utf-8", "replace")
    reason = f"{stream.name}: {exc}"
    logger.warning("%s partition %d offset %d not stored: %s", topic, partition, offset, reason)
    dead = DeadLetter(
        source=f"kafka:{topic}",
        partition=partition,
        offset=offset,
        key="",
        reason_code=Reason.MALFORMED,
        reason=reason,
        raw=text,
        stage="history",
        ts_dead=time.time_ns(),
    )
    metrics.count_dead(METRICS_PROCESS, [dead])
    if stream.name == "dead_letters":
        return stream.decode(dead.to_json().encode())
    producer.produce(cfg.topics.dead_letter, key=None, value=dead.to_json().encode())
    return None


def main(argv: list[str] | None = None) -> int:
    """``python -m jobs.history_sink ARGS`` = ``bookstream history-sink ARGS``."""
    from jobs.cli import main as cli_main

    return cli_main(["history-sink", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
