"""``bookstream tail TOPIC``: a topic's records decoded, one JSON object per line -- what
``kafka-console-consumer`` shows, in the project's record types.

TOPIC is a topic name or the name of its ``[topics]`` field (``orders``, ``events``, ...).
Each line: ``partition``, ``offset``, ``timestamp_ms`` (the record's Kafka timestamp: the
exchange time of the event behind it), ``key`` and ``record`` (the decoded columns, as the lake
stores them) -- or ``error`` and ``raw`` for a record that does not decode, so a bad record is
seen with its reason instead of stopping the tail.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from jobs.kafka_io import KafkaRecord, PartitionReader, make_consumer, topic_end_offsets
from udfs.config import Config
from udfs.history import Stream, streams

__all__ = ["tail"]


class TopicNotFoundError(LookupError):
    """The broker has no such topic."""


def resolve(cfg: Config, topic: str) -> tuple[str, Stream | None]:
    """(topic name, the stream that decodes it, if it is one of the project's)."""
    names = cfg.topics.names()
    name = names.get(topic, topic)
    by_field = {s.topic_field: s for s in streams(cfg.features.depth_levels)}
    field = next((f for f, n in names.items() if n == name), None)
    if field is None:  # a run's topic set (a test, a bench, a live session): <run>.<field>
        last = name.rsplit(".", 1)[-1]
        field = last if last in names else None
    return name, by_field.get(field) if field is not None else None


def render(rec: KafkaRecord, stream: Stream | None) -> dict[str, Any]:
    line: dict[str, Any] = {
        "partition": rec.partition,
        "offset": rec.offset,
        "timestamp_ms": rec.timestamp_ms,
        "key": rec.key.decode("utf-8", "replace") if rec.key is not None else None,
    }
    raw = rec.value or b""
    if stream is None:
        line["raw"] = raw.decode("utf-8", "replace")
        return line
    try:
        line["record"] = stream.decode(raw)
    except Exception as exc:  # any refusal is shown, never raised: a tail must go on
        line["error"] = f"{type(exc).__name__}: {exc}"
        line["raw"] = raw.decode("utf-8", "replace")
    return line


def records(cfg: Config, topic: str, *, last: int | None, follow: bool) -> Iterator[KafkaRecord]:
    """``last`` records of each partition (None: from the first), then, with ``follow``,
    every new one until interrupted."""
    marks = topic_end_offsets(cfg, topic, committed=False)
    if not marks:
        raise TopicNotFoundError(
            f"no topic {topic!r} on {cfg.kafka.bootstrap_servers} "
            "(`bookstream doctor` lists the configured ones)"
        )
    starts = {
        (topic, p): lo if last is None else max(lo, hi - last) for p, (lo, hi) in marks.items()
    }
    ends = None if follow else {(topic, p): hi for p, (_lo, hi) in marks.items()}
    consumer = make_consumer(cfg, "bookstream-tail", read_committed=False)
    try:
        yield from PartitionReader(consumer, starts, ends)
    finally:
        consumer.close()


def tail(
    cfg: Config,
    topic: str,
    *,
    last: int | None = 10,
    follow: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    """Print the records; how many were printed."""
    name, stream = resolve(cfg, topic)
    n = 0
    try:
        for rec in records(cfg, name, last=last, follow=follow):
            out.write(json.dumps(render(rec, stream), default=str) + "\n")
            n += 1
            if follow:
                out.flush()
    except KeyboardInterrupt:
        pass
    return n
