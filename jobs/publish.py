"""Publish a source's L2 events to the events topic, keyed by instrument.

The Kafka record timestamp is the event's exchange time (ms): the stream job's watermarks are
exchange time, not the time of publishing, so a replay at any speed gives the same result.
``speed`` paces the publishing at N x the recorded pace (``None``: as fast as possible).
Lines a source cannot read go to the dead-letter topic (stage ``ingest``) with file, line and
reason, so ``events_in == published + dead_lettered`` always holds here. A bad line that stops a
LOBSTER file, a truncated gzip and a Binance chain break that drops the rest of a capture are
reported in :attr:`PublishResult.problems` (what was read before them is published and
counted); ``bookstream publish`` then exits with status 1.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from confluent_kafka import Producer
from tqdm import tqdm

from jobs import metrics
from jobs.audit import publish_config
from jobs.kafka_io import DeliveryErrors, make_producer
from jobs.status import StatusLine
from udfs.config import Config
from udfs.latency import exchange_receive_ns
from udfs.market.adapters.sources import Source, looped, paced_due_ns
from udfs.schema import DeadLetter, L2Event, Reason, encode_event

__all__ = ["PublishResult", "produce_events", "publish"]

logger = logging.getLogger(__name__)


@dataclass
class PublishResult:
    events_in: int
    published: int
    dead_lettered: int
    wall_s: float
    problems: dict[str, object] = field(default_factory=dict)
    """inputs stopped early and chain breaks (:meth:`Source.problems`); empty when none"""

    @property
    def rate(self) -> float:
        return self.published / self.wall_s if self.wall_s else 0.0


METRICS_PROCESS = "publisher"


def publish(
    cfg: Config,
    source: Source,
    *,
    speed: float | None = None,
    progress: bool | None = None,
    loops: int = 1,
) -> PublishResult:
    """``source`` to the events topic (its unreadable lines to the dead-letter topic), paced
    at ``speed`` x the recorded pace (gaps cut to ``feed.pace_max_gap_ms``) or as fast as
    possible; ``loops`` passes over it (0: until stopped; :func:`looped`)."""
    source.check_files()
    publish_config(cfg, METRICS_PROCESS)
    metrics.serve(cfg, METRICS_PROCESS, cfg.metrics.publisher_port)
    producer = make_producer(cfg)
    on_delivery = DeliveryErrors()
    start = time.perf_counter()
    dead = 0

    def events_then_bad_lines() -> Iterator[L2Event]:
        # bad lines go out as they are found, not kept to the end: memory stays bounded
        nonlocal dead
        for ev in looped(lambda: source.events(cfg.feed.refresh_interval_ms), loops):
            if source.bad_lines:
                dead += _dead_letter_bad_lines(cfg, producer, source, on_delivery)
            yield ev

    published = produce_events(
        producer,
        cfg.topics.events,
        events_then_bad_lines(),
        on_delivery,
        speed=speed,
        max_gap_ms=cfg.feed.pace_max_gap_ms,
        progress=progress,
    )
    dead += _dead_letter_bad_lines(cfg, producer, source, on_delivery)
    remaining = producer.flush(60)
    wall = time.perf_counter() - start
    on_delivery.check(cfg, remaining)
    problems = source.problems()
    if problems:
        logger.warning("inputs not read in full: %s", problems)
    return PublishResult(
        events_in=published + dead,
        published=published,
        dead_lettered=dead,
        wall_s=wall,
        problems=problems,
    )


def _dead_letter_bad_lines(
    cfg: Config, producer: Producer, source: Source, on_delivery: DeliveryErrors
) -> int:
    for bad in source.bad_lines:
        dead = DeadLetter(
            source=f"file:{bad.file}",
            partition=-1,
            offset=bad.line,
            key="",
            reason_code=Reason.MALFORMED,
            reason=bad.reason,
            raw=bad.raw.decode("utf-8", "replace").rstrip("\n"),
            stage="ingest",
            ts_dead=time.time_ns(),
        )
        producer.produce(
            cfg.topics.dead_letter, value=dead.to_json().encode(), on_delivery=on_delivery
        )
        logger.warning("dead-lettered %s:%d: %s", bad.file, bad.line, bad.reason)
        metrics.count_dead(METRICS_PROCESS, [dead])
    n = len(source.bad_lines)
    source.bad_lines.clear()
    return n


def produce_events(
    producer: Producer,
    topic: str,
    events: Iterable[L2Event],
    on_delivery: Callable[..., None],
    *,
    speed: float | None = None,
    max_gap_ms: int | None = None,
    progress: bool | None = None,
    desc: str = "publish",
) -> int:
    """Send ``events`` in order, key = instrument, record timestamp = exchange time (ms);
    ``speed``: N x the recorded pace (exchange-time gaps / N, each gap cut to ``max_gap_ms``
    when given: :func:`~udfs.market.adapters.sources.paced_due_ns`), ``None``: as fast as
    possible.
    A progress bar on a terminal (or when ``progress``). Returns how many were sent (call
    ``producer.flush`` afterwards)."""
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(
        desc=desc, unit=" ev", unit_scale=True, disable=not show, file=sys.stderr, mininterval=0.5
    )
    start = time.perf_counter()
    status = StatusLine(desc)
    pace: list[int] = []
    max_gap_ns = (1 << 62) if max_gap_ms is None else max_gap_ms * 1_000_000
    published = 0
    produce = producer.produce
    exchange_receive = metrics.HOP_LATENCY.labels("exchange_receive")
    for ev in events:
        if speed is not None:
            due = paced_due_ns(ev.ts_event, pace, max_gap_ns) / 1e9 / speed
            ahead = due - (time.perf_counter() - start)
            if ahead > 0.001:
                producer.poll(0)
                time.sleep(ahead)
        if ev.ts_recv != ev.ts_event:  # the feed's latency, when the record has a receive time
            feed_ns = exchange_receive_ns(ev.ts_event, ev.ts_recv)
            if feed_ns is not None:
                exchange_receive.observe(feed_ns / 1e9)
        value = encode_event(ev)
        while True:
            try:
                produce(
                    topic,
                    value=value,
                    key=ev.instrument,
                    timestamp=ev.ts_event // 1_000_000,
                    on_delivery=on_delivery,
                )
                break
            except BufferError:  # local queue full: let librdkafka drain it
                producer.poll(0.05)
        published += 1
        if published % 1000 == 0:
            metrics.count_out(METRICS_PROCESS, topic, 1000)
            if not show and status.due():
                status.emit(
                    published=published, rate=f"{published / (time.perf_counter() - start):.0f}/s"
                )
            if published % 10_000 == 0:
                producer.poll(0)
                bar.update(10_000)
    metrics.count_out(METRICS_PROCESS, topic, published % 1000)
    bar.update(published % 10_000)
    bar.close()
    return published
