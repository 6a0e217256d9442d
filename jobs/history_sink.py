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
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Producer

from jobs import metrics
from jobs.audit import audit_anchor_path, publish_config, write_audit_anchor
from jobs.kafka_io import (
    PartitionReader,
    create_topics,
    make_consumer,
    make_producer,
    topic_end_offsets,
)
from jobs.lake import (
    append_audit,
    append_with_offsets,
    committed_offsets,
    ensure_table,
    history_streams,
    open_catalog,
)
from jobs.status import StatusLine
from jobs.stopping import StopFlag
from udfs.audit import AUDIT_STREAM, AUDITED_TOPICS
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
    audit_rows: int = 0
    """rows appended to the audit table by this run (not in ``rows``: they restate records
    the other tables hold)"""
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
    cfg: Config,
    *,
    bounded: bool = False,
    only: list[str] | None = None,
    final_ends: Callable[[], dict[str, dict[int, int]] | None] | None = None,
) -> HistoryResult:
    """Run the sink over every stream (or the tables named in ``only``) until stopped by
    SIGTERM/SIGINT, or, ``bounded``, once every topic is stored up to its end as of the
    start. ``final_ends`` (bounded): the ends are not known at the start (the demo runs the
    sink beside the job and the execution sink): every topic is followed until
    ``final_ends()`` (called on every poll) returns them (topic -> partition -> offset), then
    stored up to there; it may hand the ends of some topics first (those whose writers are
    done), and a topic read to its end is committed at once. Meanwhile a table is committed
    only when ``lake.commit_rows`` are waiting (not one commit per idle poll)."""
    if final_ends is not None and not bounded:
        raise ValueError("final_ends needs a bounded run")
    t0 = time.perf_counter()
    create_topics(cfg)
    publish_config(cfg, METRICS_PROCESS)
    catalog = open_catalog(cfg)
    known = [s.name for s in history_streams(cfg)]
    chosen = [s for s in history_streams(cfg) if only is None or s.name in only]
    audit_on = only is None or AUDIT_STREAM.name in only
    if only is not None and len(chosen) + audit_on != len(set(only)):
        raise ValueError(f"unknown table(s) in {only}; known: {[*known, AUDIT_STREAM.name]}")
    by_topic: dict[str, Stream] = {getattr(cfg.topics, s.topic_field): s for s in chosen}
    # the audit table chains the records of its topics (udfs/audit.py), read with the rest
    audited: dict[str, str] = (
        {getattr(cfg.topics, f): f for f in AUDITED_TOPICS} if audit_on else {}
    )
    tables = {s.name: ensure_table(catalog, cfg, s) for s in chosen}
    if audit_on:
        tables[AUDIT_STREAM.name] = ensure_table(catalog, cfg, AUDIT_STREAM)
    anchor_file = audit_anchor_path(cfg)

    result = HistoryResult(rows={s.name: 0 for s in chosen})
    starts: dict[tuple[str, int], int] = {}
    ends: dict[tuple[str, int], int] = {}
    # topic -> partition -> next offset each sink holds; a topic read for the audit alone (or
    # for its table alone) has no entry in the other
    stored: dict[str, dict[int, int]] = {}
    audit_stored: dict[str, dict[int, int]] = {}
    for topic in [*by_topic, *(t for t in audited if t not in by_topic)]:
        holders: list[tuple[str, dict[int, int]]] = []
        if topic in by_topic:
            stream = by_topic[topic]
            stored[topic] = committed_offsets(tables[stream.name]).get(topic, {})
            holders.append((stream.name, stored[topic]))
        if topic in audited:
            audit_stored[topic] = committed_offsets(tables[AUDIT_STREAM.name]).get(topic, {})
            holders.append((AUDIT_STREAM.name, audit_stored[topic]))
        for p, (low, high) in topic_end_offsets(cfg, topic).items():
            for name, have_by_p in holders:
                have = have_by_p.get(p, 0)
                if have < low:
                    # deleted by retention before this table stored them: said, never skipped
                    result.lost_to_retention.setdefault(name, {})[p] = (have, low)
                    logger.error(
                        "%s <- %s partition %d: offsets [%d, %d) were deleted by retention "
                        "before they were stored; the table has a hole there",
                        name,
                        topic,
                        p,
                        have,
                        low,
                    )
            # from the first offset a sink of this topic has not stored
            starts[(topic, p)] = max(low, min(h.get(p, 0) for _, h in holders))
            ends[(topic, p)] = high
        for name, have_by_p in holders:
            logger.info("%s <- %s from %s", name, topic, have_by_p or "the first offset")
    consumer = make_consumer(cfg, "bookstream-history")
    producer = make_producer(cfg)
    pending = {topic: _Pending() for topic in (*by_topic, *audited)}
    stop = StopFlag("history-sink")
    restore_signals = stop.install()
    status = StatusLine(METRICS_PROCESS)
    interval_s = cfg.lake.commit_interval_ms / 1000
    batch = max(1, min(20_000, cfg.lake.commit_rows))

    def flush(topic: str) -> None:
        buf = pending[topic]
        if not buf.next_offsets:
            return
        if topic in audited:
            flush_audit(topic, buf)
        if topic in by_topic:
            flush_table(topic, buf)
        pending[topic] = _Pending()

    def flush_audit(topic: str, buf: _Pending) -> None:
        have = audit_stored[topic]
        offsets = {p: o for p, o in buf.next_offsets.items() if o > have.get(p, 0)}
        if not offsets:
            return
        records = [
            (p, o, v)
            for v, p, o in zip(buf.values, buf.partitions, buf.offsets, strict=True)
            if o >= have.get(p, 0)
        ]
        t_commit = time.perf_counter()
        table, n, heads = append_audit(
            tables[AUDIT_STREAM.name], audited[topic], topic, records, offsets
        )
        tables[AUDIT_STREAM.name] = table
        metrics.ICEBERG_COMMIT.labels(AUDIT_STREAM.name).observe(time.perf_counter() - t_commit)
        metrics.count_out(METRICS_PROCESS, AUDIT_STREAM.name, n)
        # a copy of the heads outside the table (after the commit: it may lag, never lead)
        write_audit_anchor(anchor_file, heads)
        have.update(offsets)
        result.audit_rows += n
        result.commits += 1

    def flush_table(topic: str, buf: _Pending) -> None:
        have = stored[topic]
        next_offsets = {p: o for p, o in buf.next_offsets.items() if o > have.get(p, 0)}
        if not next_offsets:
            return
        stream = by_topic[topic]
        rows, parts, offs = [], [], []
        for value, p, o in zip(buf.values, buf.partitions, buf.offsets, strict=True):
            if o < have.get(p, 0):  # read again for the audit table: this one is stored
                continue
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
        tables[stream.name] = append_with_offsets(table, arrow, topic, next_offsets)
        metrics.ICEBERG_COMMIT.labels(stream.name).observe(time.perf_counter() - t_commit)
        metrics.count_out(METRICS_PROCESS, stream.name, len(rows))
        have.update(next_offsets)
        result.rows[stream.name] += len(rows)
        result.commits += 1

    following = final_ends is not None
    reader = PartitionReader(
        consumer,
        starts,
        None if following or not bounded else ends,
        batch_size=batch,
        open_ends=set(starts) if following else None,
    )
    metrics.serve(cfg, METRICS_PROCESS, cfg.metrics.history_sink_port)
    try:
        for poll in reader.polls():
            while reader.open_ends and final_ends is not None and (got := final_ends()):
                # the ends of the topics whose writers are done (the events after publishing,
                # the job's topics after the job, the rest at the run's end)
                reader.close(
                    {(t, p): got[t][p] for t, p in reader.open_ends if t in got and p in got[t]}
                )
                following = bool(reader.open_ends)
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
                held = [h[topic].get(p, -1) for h in (stored, audit_stored) if topic in h]
                if end > max(starts[(topic, p)], min(held)):
                    buf = pending[topic]
                    if not buf.next_offsets:
                        buf.since = now
                    buf.next_offsets[p] = max(end, buf.next_offsets.get(p, -1))
            open_topics = {t for t, _p in reader.open_ends} | {t for t, _p in reader.remaining}
            for topic, buf in pending.items():
                if buf.next_offsets and (
                    poll.done
                    or len(buf.values) >= cfg.lake.commit_rows
                    or (following and topic not in open_topics)  # read to its final end
                    or (not following and (now - buf.since >= interval_s or not poll.records))
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
