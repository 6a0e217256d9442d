"""Thin wrappers around confluent-kafka (librdkafka): topic admin, a producer, and a reader that
drains a topic to its current end. Clients are created on demand; nothing connects at import.

confluent-kafka (librdkafka) rather than kafka-python: the idempotent producer and
``read_committed`` consumers the stages rely on, and an order of magnitude above kafka-python's
produce rate with the same guarantees (``make bench`` measures both: ``jobs/bench_clients.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from udfs.config import Config, TopicSpec

__all__ = [
    "BrokerUnavailableError",
    "DeliveryErrors",
    "KafkaRecord",
    "create_topics",
    "drain_topic",
    "end_offsets",
    "first_offsets",
    "make_producer",
    "reached_end",
    "topic_end_offsets",
    "wait_stable",
]

logger = logging.getLogger(__name__)


class BrokerUnavailableError(RuntimeError):
    """The broker did not answer; the message says where we looked and how to start it."""


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    """``b""`` for a tombstone (bookstream writes none): every decoder refuses it as malformed."""
    timestamp_ms: int


def _admin(cfg: Config) -> AdminClient:
    return AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers})


def check_broker(cfg: Config, timeout_s: float = 5.0) -> int:
    """Number of brokers answering, or :class:`BrokerUnavailableError`."""
    # a probe: its failure is reported once, by the error below, not by librdkafka's log too
    probe = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers, "log_level": 0})
    try:
        md = probe.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise BrokerUnavailableError(
            f"no Kafka broker answers at {cfg.kafka.bootstrap_servers} ({exc}); "
            "start it with `make up` (infra/kafka/start.sh)"
        ) from exc
    return len(md.brokers)


def existing_topics(cfg: Config) -> dict[str, int]:
    """topic -> partition count."""
    md = _admin(cfg).list_topics(timeout=10)
    return {name: len(t.partitions) for name, t in md.topics.items()}


def create_topics(cfg: Config, specs: list[TopicSpec] | None = None) -> list[str]:
    """Create the configured topics that do not exist yet (idempotent). Returns those created.
    An existing topic with another partition count is reported, not altered."""
    check_broker(cfg)
    specs = cfg.topics.specs() if specs is None else specs
    have = existing_topics(cfg)
    for spec in specs:
        if spec.name in have and have[spec.name] != spec.partitions:
            logger.warning(
                "topic %s has %d partitions, config says %d (left as is)",
                spec.name,
                have[spec.name],
                spec.partitions,
            )
    wanted = [
        NewTopic(
            s.name,
            num_partitions=s.partitions,
            replication_factor=1,
            config={"retention.ms": str(s.retention_ms), "retention.bytes": str(s.retention_bytes)},
        )
        for s in specs
        if s.name not in have
    ]
    if not wanted:
        return []
    admin = _admin(cfg)  # keep a reference: the futures die with the client
    futures = admin.create_topics(wanted, request_timeout=30)
    created = []
    for name, fut in futures.items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created


def delete_topics(cfg: Config, names: list[str]) -> None:
    admin = _admin(cfg)
    futures = admin.delete_topics(names, operation_timeout=30)
    for fut in futures.values():
        try:
            fut.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise


def make_producer(cfg: Config, **overrides: str | int) -> Producer:
    """An idempotent producer (no duplicates on retry, order kept per partition), batching
    for throughput; flush() before exit."""
    conf: dict[str, str | int] = {
        "bootstrap.servers": cfg.kafka.bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "compression.type": "lz4",
        # the Java client's key hashing, so a key lands on the same partition number whether
        # Python (publisher) or Flink's Java sink wrote it: co-partitioned topics join locally
        "partitioner": "murmur2_random",
    }
    conf.update(overrides)
    return Producer(conf)


class DeliveryErrors:
    """A producer's ``on_delivery`` callback that keeps the errors, and the check after
    ``flush``: nothing undelivered, no error, or an exception naming how many and the first."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self.errors.append(str(err))

    def check(self, cfg: Config, undelivered: int) -> None:
        if undelivered or self.errors:
            raise KafkaException(
                f"{undelivered} records undelivered, {len(self.errors)} "
                f"delivery errors (first: {self.errors[:1]}) to "
                f"{cfg.kafka.bootstrap_servers}"
            )


def topic_end_offsets(
    cfg: Config, topic: str, *, committed: bool = True
) -> dict[int, tuple[int, int]]:
    """partition -> (low, high) watermark offsets. ``committed``: the high mark is the last
    stable offset (records of open transactions excluded, librdkafka's default); otherwise the
    log end. Right after a transaction commits, its markers may still be on their way, so the
    stable offset can lag the log end for a moment."""
    consumer = Consumer(
        {
            "bootstrap.servers": cfg.kafka.bootstrap_servers,
            "group.id": "bookstream-offsets",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if committed else "read_uncommitted",
        }
    )
    try:
        md = consumer.list_topics(topic, timeout=10)
        if topic not in md.topics or md.topics[topic].error is not None:
            return {}
        return {
            p: _watermarks(consumer, TopicPartition(topic, p)) for p in md.topics[topic].partitions
        }
    finally:
        consumer.close()


_NO_LEADER_YET = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
)


def _watermarks(consumer: Consumer, tp: TopicPartition, timeout_s: float = 30.0) -> tuple[int, int]:
    """(low, high) of one partition. A partition just created has no leader for a moment
    (NOT_LEADER_FOR_PARTITION / LEADER_NOT_AVAILABLE): retry those until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=10)
        except KafkaException as exc:
            if exc.args[0].code() not in _NO_LEADER_YET or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def wait_stable(cfg: Config, topics: list[str], timeout_s: float = 30.0) -> None:
    """Wait until every committed transaction on ``topics`` is readable ``read_committed``:
    a commit returns before its markers are written to the partitions, and until then the
    last stable offset lags the log end."""
    deadline = time.monotonic() + timeout_s
    for topic in topics:
        while True:
            stable = topic_end_offsets(cfg, topic, committed=True)
            if stable == topic_end_offsets(cfg, topic, committed=False):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{topic}: last stable offsets {stable} still behind the log "
                    f"end after {timeout_s}s (an open transaction?)"
                )
            time.sleep(0.05)


def first_offsets(cfg: Config, topic: str) -> dict[int, int]:
    """partition -> first (low watermark) offset."""
    return {p: low for p, (low, _high) in topic_end_offsets(cfg, topic).items()}


def end_offsets(cfg: Config, topic: str) -> dict[int, int]:
    """partition -> end (high watermark) offset: where the next record will land."""
    return {p: high for p, (_low, high) in topic_end_offsets(cfg, topic).items()}


def count_records(cfg: Config, topic: str) -> int:
    return sum(high - low for low, high in topic_end_offsets(cfg, topic).values())


def reached_end(consumer: Consumer, remaining: dict[tuple[str, int], int]) -> list[TopicPartition]:
    """The partitions of ``remaining`` (``(topic, partition) -> end offset``) whose position has
    reached their end, removed from ``remaining`` and returned with that position. Call it when a
    consume returned nothing: a transactional topic ends in commit markers, which take offsets
    but are never delivered, so only the position tells that such a partition is read."""
    if not remaining:
        return []
    done = [
        tp
        for tp in consumer.position([TopicPartition(t, p) for t, p in remaining])
        if tp.offset >= remaining[(tp.topic, tp.partition)]
    ]
    for tp in done:
        del remaining[(tp.topic, tp.partition)]
    return done


def drain_topic(
    cfg: Config,
    topic: str,
    *,
    from_offsets: dict[int, int] | None = None,
    idle_timeout_s: float = 5.0,
    read_committed: bool = False,
) -> Iterator[KafkaRecord]:
    """Read ``topic`` from the start (or ``from_offsets``) up to its end offsets as of the call,
    in partition order. No consumer group offsets are committed. ``read_committed``: skip
    records of aborted transactions (the execution sink's output log)."""
    ends = topic_end_offsets(cfg, topic, committed=read_committed)
    consumer = Consumer(
        {
            "bootstrap.servers": cfg.kafka.bootstrap_servers,
            "group.id": f"bookstream-drain-{time.time_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        }
    )
    try:
        assignments = []
        remaining: dict[tuple[str, int], int] = {}
        for p, (low, high) in ends.items():
            start = max(low, (from_offsets or {}).get(p, low))
            if start < high:
                assignments.append(TopicPartition(topic, p, start))
                remaining[(topic, p)] = high
        if not assignments:
            return
        consumer.assign(assignments)
        last_progress = time.monotonic()
        while remaining:
            msgs = consumer.consume(num_messages=10000, timeout=0.5)
            if not msgs:
                reached_end(consumer, remaining)
                if not remaining:
                    break
                if time.monotonic() - last_progress > idle_timeout_s:
                    raise TimeoutError(
                        f"{topic}: no records for {idle_timeout_s}s, still "
                        f"expecting partitions {remaining}"
                    )
                continue
            last_progress = time.monotonic()
            for m in msgs:
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(m.error())
                p = m.partition()
                if (topic, p) not in remaining:
                    continue
                rec = KafkaRecord(topic, p, m.offset(), m.key(), m.value() or b"", m.timestamp()[1])
                yield rec
                if m.offset() + 1 >= remaining[(topic, p)]:
                    del remaining[(topic, p)]
    finally:
        consumer.close()
