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
from contextlib import contextmanager
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from udfs.config import Config, TopicSpec, librdkafka_properties
from udfs.kafka_acl import ADMIN, ROLES, AclEntry, acl_plan, principal
from udfs.latency import HOPS_HEADER
from udfs.schema import SchemaError

__all__ = [
    "BrokerUnavailableError",
    "DeliveryErrors",
    "KafkaRecord",
    "PartitionReader",
    "Poll",
    "apply_acls",
    "as_role",
    "client_config",
    "create_topics",
    "drain_topic",
    "end_offsets",
    "first_offsets",
    "make_consumer",
    "make_producer",
    "process_role",
    "reached_end",
    "record_value",
    "set_process_role",
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
    value: bytes | None
    timestamp_ms: int
    hops: bytes | None = None
    """the latency trace header of an order (``udfs.latency.HOPS_HEADER``), when it has one"""
    read_ns: int = 0
    """wall clock when this process read it (PartitionReader)"""


def record_value(rec: KafkaRecord) -> bytes:
    """``rec``'s value to decode; a tombstone (no value) is no record of any of our streams:
    refused like a malformed one (:class:`SchemaError`)."""
    if rec.value is None:
        raise SchemaError(
            "record", f"{rec.topic}[{rec.partition}]@{rec.offset}: empty value (tombstone)"
        )
    return rec.value


_process_role = ADMIN


def set_process_role(role: str) -> None:
    """The principal this process's clients connect as when they name none
    (``kafka.security = "sasl"``): set by the command being run (jobs/cli.py)."""
    global _process_role
    if role not in ROLES:
        raise ValueError(f"kafka role {role!r}: not one of {', '.join(ROLES)}")
    _process_role = role


def process_role() -> str:
    return _process_role


@contextmanager
def as_role(role: str) -> Iterator[None]:
    """Clients built inside connect as ``role``: one stage of a process that runs several
    (``bookstream demo``), each under the principal the stage has when it runs alone."""
    before = _process_role
    set_process_role(role)
    try:
        yield
    finally:
        set_process_role(before)


def client_config(
    cfg: Config, conf: dict[str, str | int | bool], role: str | None = None
) -> dict[str, str | int | bool]:
    """The configuration of every confluent-kafka client of the project: ``conf`` (the client's
    own settings), the bootstrap list (``kafka.bootstrap``), the credential of ``role`` (default:
    the process's, :func:`set_process_role`) when ``kafka.security = "sasl"``, and the
    passthrough (``kafka.client``, ``kafka.client_properties_file``: SASL/SSL and any
    librdkafka property), which wins over the client's own tuning (bookstream's guarantees
    cannot be in it)."""
    return {
        **conf,
        "bootstrap.servers": cfg.kafka.bootstrap_servers,
        **librdkafka_properties(cfg.kafka_client_properties(role or _process_role)),
    }


def _admin(cfg: Config, role: str | None = None) -> AdminClient:
    return AdminClient(client_config(cfg, {}, role))


def check_broker(cfg: Config, timeout_s: float = 5.0) -> int:
    """Number of brokers answering, or :class:`BrokerUnavailableError`."""
    # a probe: its failure is reported once, by the error below, not by librdkafka's log too
    probe = AdminClient(client_config(cfg, {"log_level": 0}))
    try:
        md = probe.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise BrokerUnavailableError(
            f"no Kafka broker answers at {cfg.kafka.bootstrap_servers} ({exc}); "
            "start it with `make up` (infra/kafka/start.sh)"
        ) from exc
    return len(md.brokers)


def broker_list(cfg: Config, timeout_s: float = 5.0) -> list[str]:
    """``id@host:port`` of each broker the cluster reports (sorted by id), or
    :class:`BrokerUnavailableError`."""
    check_broker(cfg, timeout_s)
    md = _admin(cfg).list_topics(timeout=timeout_s)
    return [f"{b.id}@{b.host}:{b.port}" for b in sorted(md.brokers.values(), key=lambda b: b.id)]


def existing_topics(cfg: Config, role: str | None = None) -> dict[str, int]:
    """topic -> partition count (of the topics ``role`` may see)."""
    md = _admin(cfg, role).list_topics(timeout=10)
    return {name: len(t.partitions) for name, t in md.topics.items()}


def topic_replicas(cfg: Config, role: str | None = None) -> dict[str, int]:
    """topic -> replicas of its first partition."""
    md = _admin(cfg, role).list_topics(timeout=10)
    return {
        name: len(t.partitions[0].replicas) for name, t in md.topics.items() if 0 in t.partitions
    }


def create_topics(cfg: Config, specs: list[TopicSpec] | None = None) -> list[str]:
    """Create the configured topics that do not exist yet (idempotent). Returns those created.
    An existing topic with another partition count is reported, not altered. With
    ``kafka.security = "sasl"`` as the super user, and the roles' ACLs over the whole topic set
    ``cfg.topics`` are (re)applied (udfs/kafka_acl.py), so a run's own topics get them too;
    a process of another role whose own topics all exist (the usual case: ``make up`` created
    them) stops there, never using the super user's credential."""
    check_broker(cfg)
    specs = cfg.topics.specs() if specs is None else specs
    if _own_topics_exist(cfg, specs):
        return []
    have = existing_topics(cfg, ADMIN)
    replicas = topic_replicas(cfg, ADMIN)
    for spec in specs:
        if spec.name in have and have[spec.name] != spec.partitions:
            logger.warning(
                "topic %s has %d partitions, config says %d (left as is)",
                spec.name,
                have[spec.name],
                spec.partitions,
            )
        if spec.name in replicas and replicas[spec.name] != cfg.replication(spec)[0]:
            logger.warning(
                "topic %s has %d replicas, config says %d (left as is)",
                spec.name,
                replicas[spec.name],
                cfg.replication(spec)[0],
            )
    wanted = [
        NewTopic(
            s.name,
            num_partitions=s.partitions,
            replication_factor=cfg.replication(s)[0],
            config={
                "min.insync.replicas": str(cfg.replication(s)[1]),
                "retention.ms": str(s.retention_ms),
                "retention.bytes": str(s.retention_bytes),
                # record timestamps are exchange times: see TopicSpec.timestamp_after_max_ms
                "message.timestamp.after.max.ms": str(s.timestamp_after_max_ms),
            },
        )
        for s in specs
        if s.name not in have
    ]
    if cfg.kafka.role_credentials:
        apply_acls(cfg, acl_plan(cfg.topics.names()))
    if not wanted:
        return []
    admin = _admin(cfg, ADMIN)  # keep a reference: the futures die with the client
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


def _own_topics_exist(cfg: Config, specs: list[TopicSpec]) -> bool:
    """With the roles' credentials (``kafka.security = "sasl"``, the project's own broker), in
    a process that is not the super user's: whether every topic of ``specs`` its role has a
    rule on is there (it cannot see the others, nor use them), asked as that role."""
    role = _process_role
    if not cfg.kafka.role_credentials or role == ADMIN:
        return False
    who = principal(role)
    mine = {e.name for e in acl_plan(cfg.topics.names()) if e.principal == who}
    needed = {s.name for s in specs} & mine
    return needed <= set(existing_topics(cfg, role))


def apply_acls(cfg: Config, plan: list[AclEntry]) -> None:
    """Create the ALLOW rules of ``plan`` as the super user (an existing rule is kept as is)."""
    bindings = [
        AclBinding(
            ResourceType[e.resource],
            e.name,
            ResourcePatternType[e.pattern],
            e.principal,
            "*",
            AclOperation[e.operation],
            AclPermissionType.ALLOW,
        )
        for e in plan
    ]
    admin = _admin(cfg, ADMIN)
    for fut in admin.create_acls(bindings, request_timeout=30).values():
        fut.result()


def delete_topics(cfg: Config, names: list[str]) -> None:
    admin = _admin(cfg, ADMIN)
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
    conf: dict[str, str | int | bool] = {
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
    return Producer(client_config(cfg, conf))


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
        client_config(
            cfg,
            {
                "group.id": "bookstream-offsets",
                "enable.auto.commit": False,
                "isolation.level": "read_committed" if committed else "read_uncommitted",
            },
        )
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


def make_consumer(cfg: Config, group: str, *, read_committed: bool = True) -> Consumer:
    """A consumer for :class:`PartitionReader`: no auto commit (each reader's owner decides
    what is stored where), large fetches."""
    return Consumer(
        client_config(
            cfg,
            {
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed" if read_committed else "read_uncommitted",
                "fetch.max.bytes": 52428800,
            },
        )
    )


# a group's coordinator is elected on first use and moves when the broker restarts: until then
# the broker answers these; librdkafka does not retry them for committed()
_NO_COORDINATOR_YET = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError._WAIT_COORD,
        KafkaError._TIMED_OUT,
    }
)


def committed_offsets(
    consumer: Consumer, partitions: list[TopicPartition], timeout_s: float = 60.0
) -> list[TopicPartition]:
    """The group's committed offsets of ``partitions`` (offset < 0: none committed). Retries
    while the group has no coordinator yet, until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return list(consumer.committed(partitions, timeout=10))
        except KafkaException as exc:
            if exc.args[0].code() not in _NO_COORDINATOR_YET or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


PartitionKey = tuple[str, int]
"""(topic, partition)"""


@dataclass(frozen=True, slots=True)
class Poll:
    """What one consume of a :class:`PartitionReader` gave."""

    records: list[KafkaRecord]
    completed: list[PartitionKey]
    """bounded: partitions read to their end by this poll (in record or through commit markers;
    on the first poll also those that had nothing to read)"""
    done: bool
    """bounded: every partition is read to its end (the last poll)"""


class PartitionReader:
    """The one Kafka reading loop of the project (``drain_topic``, the history sink, the
    execution sink's rebuild and live loop): assign partitions at given offsets and poll them,
    bounded (up to end offsets, then stop) or not (until the owner stops iterating).

    Bounded, a record at or past its partition's end is never yielded, and a partition whose
    position reaches its end through commit markers (which take offsets but are never
    delivered) counts as read. :meth:`positions` is the next offset after what was yielded (or
    the end, once a partition is read through its markers): what an owner may commit as
    consumed. Never the consumer's own position, which can lie past records fetched but not
    yielded. Each owner keeps only what is its own (a transaction, an Iceberg commit) and
    handles records one by one, so it can dead-letter one without stopping the loop.
    """

    def __init__(
        self,
        consumer: Consumer,
        starts: dict[PartitionKey, int],
        ends: dict[PartitionKey, int] | None = None,
        *,
        batch_size: int = 10_000,
        poll_timeout_s: float = 0.5,
        idle_timeout_s: float | None = None,
        strict: bool = False,
        open_ends: set[PartitionKey] | None = None,
    ) -> None:
        """``ends`` (bounded): partition -> end offset; a partition of ``starts`` absent from
        it has nothing to read. ``open_ends`` (bounded): partitions of ``starts`` whose end is
        not known yet: followed as they grow until :meth:`close` gives it (a sink running
        beside the job that writes them). ``idle_timeout_s`` (bounded): raise
        ``TimeoutError`` after so long without progress (not while an end is open).
        ``strict``: a consume error raises (otherwise it is logged; librdkafka retries
        transient ones itself)."""
        self.consumer = consumer
        self.bounded = ends is not None or bool(open_ends)
        ends = {} if ends is None and open_ends else ends
        self.open_ends: set[PartitionKey] = set(open_ends or ()) & set(starts)
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.strict = strict
        self.next_offsets: dict[PartitionKey, int] = dict(starts)
        self.remaining: dict[PartitionKey, int] = (
            {k: ends[k] for k, start in starts.items() if k in ends and start < ends[k]}
            if ends is not None
            else {}
        )
        self._untouched = [
            k
            for k in starts
            if self.bounded and k not in self.remaining and k not in self.open_ends
        ]
        self.paused: set[PartitionKey] = set()
        self.pauses = 0
        """how many times a partition was paused (:meth:`hold`)"""
        consumer.assign([TopicPartition(t, p, o) for (t, p), o in starts.items()])

    def hold(self, partitions: set[PartitionKey]) -> None:
        """Read none of ``partitions`` until a later call leaves them out (Kafka pause/resume:
        the broker keeps what the owner is not ready for, not this process's memory). A
        resumed partition goes on after the last record yielded."""
        if partitions == self.paused:
            return
        if stop := partitions - self.paused:
            self.consumer.pause([TopicPartition(t, p) for t, p in stop])
            self.pauses += len(stop)
        if go := self.paused - partitions:
            self.consumer.resume([TopicPartition(t, p) for t, p in go])
        self.paused = set(partitions)

    def close(self, ends: dict[PartitionKey, int]) -> None:
        """The ends of some :attr:`open_ends` partitions, now known: read up to them, then
        stop like any bounded read (once no end is open). A partition already read past its end
        was fed records that are not this run's (another writer on the topic): an error, never
        a silent difference from a reader that knew the end from the start."""
        stray = set(ends) - self.open_ends
        if stray:
            raise ValueError(f"end offsets given for partitions not open: {sorted(stray)}")
        over = {
            k: (self.next_offsets[k], end) for k, end in ends.items() if self.next_offsets[k] > end
        }
        if over:
            raise RuntimeError(
                f"partitions read past the end offsets given later (next, end): {over}; "
                "another process wrote to this run's topics"
            )
        for k, end in ends.items():
            if self.next_offsets[k] < end:
                self.remaining[k] = end
            else:
                self._untouched.append(k)  # completed on the next poll
        self.open_ends -= set(ends)

    def positions(self) -> list[TopicPartition]:
        """Next offset per partition after what this reader has yielded."""
        return [TopicPartition(t, p, o) for (t, p), o in self.next_offsets.items()]

    def lag(self) -> dict[str, int]:
        """topic -> records not yet yielded (the high watermark last seen by the client's
        fetches, no broker round trip, minus :meth:`positions`); a partition not fetched
        yet counts 0."""
        lag: dict[str, int] = {}
        for (topic, partition), offset in self.next_offsets.items():
            try:
                _low, high = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), cached=True
                )
            except KafkaException:
                high = -1
            lag[topic] = lag.get(topic, 0) + (max(0, high - offset) if high >= 0 else 0)
        return lag

    def polls(self) -> Iterator[Poll]:  # noqa: C901 - bounded, followed and open reads
        """One :class:`Poll` per consume (empty ones included, so the owner can flush on time
        and check its stop flag); bounded, it ends after the poll with ``done``."""
        if self.bounded and not self.remaining and not self.open_ends:
            yield Poll([], self._untouched, True)
            return
        first, self._untouched = self._untouched, []
        last_progress = time.monotonic()
        while True:
            if self._untouched:  # closed with nothing left to read (:meth:`close`)
                first, self._untouched = first + self._untouched, []
            msgs = self.consumer.consume(num_messages=self.batch_size, timeout=self.poll_timeout_s)
            read_ns = time.time_ns()
            records: list[KafkaRecord] = []
            completed: list[PartitionKey] = first
            first = []
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    if self.strict:
                        raise KafkaException(err)
                    logger.warning("consume error: %s", err)
                    continue
                k = (m.topic(), m.partition())
                offset = m.offset()
                if (
                    self.bounded
                    and k not in self.open_ends
                    and (k not in self.remaining or offset >= self.remaining[k])
                ):
                    continue
                if offset < self.next_offsets[k]:
                    continue  # yielded already (a fetch from before a pause), never twice
                headers = m.headers()
                records.append(
                    KafkaRecord(
                        k[0],
                        k[1],
                        offset,
                        m.key(),
                        m.value(),
                        m.timestamp()[1],
                        dict(headers).get(HOPS_HEADER) if headers else None,
                        read_ns,
                    )
                )
                self.next_offsets[k] = offset + 1
                if self.bounded and k in self.remaining and offset + 1 >= self.remaining[k]:
                    del self.remaining[k]
                    completed.append(k)
            if self.bounded and not msgs:
                ends = dict(self.remaining)
                for tp in reached_end(self.consumer, self.remaining):
                    k = (tp.topic, tp.partition)
                    # read through its markers: consumed up to the end (not the position, which
                    # may lie past records that arrived after the end was taken)
                    self.next_offsets[k] = max(self.next_offsets[k], ends[k])
                    completed.append(k)
            if records or completed:
                last_progress = time.monotonic()
            done = self.bounded and not self.remaining and not self.open_ends
            yield Poll(records, completed, done)
            if done:
                return
            if (
                self.bounded
                and not self.open_ends
                and self.idle_timeout_s is not None
                and time.monotonic() - last_progress > self.idle_timeout_s
            ):
                raise TimeoutError(
                    f"no records for {self.idle_timeout_s}s, still expecting "
                    f"partitions {self.remaining}"
                )

    def __iter__(self) -> Iterator[KafkaRecord]:
        """Just the records."""
        for poll in self.polls():
            yield from poll.records


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
    marks = topic_end_offsets(cfg, topic, committed=read_committed)
    starts = {
        (topic, p): max(low, (from_offsets or {}).get(p, low)) for p, (low, _high) in marks.items()
    }
    ends = {(topic, p): high for p, (_low, high) in marks.items()}
    if all(starts[k] >= ends[k] for k in starts):
        return
    consumer = make_consumer(
        cfg, f"bookstream-drain-{time.time_ns()}", read_committed=read_committed
    )
    try:
        yield from PartitionReader(
            consumer, starts, ends, idle_timeout_s=idle_timeout_s, strict=True
        )
    finally:
        consumer.close()
