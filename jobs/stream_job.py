"""Flink job: L2 events (Kafka) -> book in keyed state -> features (Kafka), bad input to the
dead-letter topic, per-instrument counters to the stats topic, data-quality rows to the quality
topic, and (trading) signals, orders and the live model's feature drift.

    events topic --(Kafka source, EventDeserializer.java: key=instrument, partition, offset;
    event time = record timestamp = exchange time, bounded out-of-orderness watermarks that one
    far-future record cannot move (PlausibleWatermarks.java), idle partitions released)
    --> MicroBatcher.java (all queued records of one instrument -> one batch; flushed on a size
        bound, a short timer, every watermark, every checkpoint barrier, end of input)
    --> keyed by instrument on the JVM (no shuffle at parallelism 1)
    --> StreamJobFunction: udfs.pipeline.process_record per record of the batch, in order, on
        keyed state; one string of routed records out per batch
    --> RoutedSplitter.java --> one Kafka sink, RoutedSerializer.java choosing per record:
        features / dead letters (malformed, late, gap, crossed ... + reason) / stats (event-time
        timer: counters per instrument and minute) / quality (udfs.market.quality) / signals /
        orders / drift (udfs.strategy.drift); every record stamped with the exchange time of the
        event that produced it

Why this shape (measured by ``make bench``'s ablation ladder): PyFlink's thread mode makes one
synchronous Java-to-Python call per record and per yielded row, and each side output adds a
Python identity map; those crossings, not the per-record logic, bounded the job. Records cross
as plain strings, the cheapest crossing PyFlink has; the small Java classes live in
``jobs/java`` (compiled by ``infra/install.sh``).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from confluent_kafka import TopicPartition
from pyflink.common import Configuration, Duration, Types, WatermarkStrategy
from pyflink.datastream import (
    CheckpointingMode,
    DataStream,
    KeyedProcessFunction,
    KeyedStream,
    RuntimeContext,
    StreamExecutionEnvironment,
)
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import (
    KafkaOffsetResetStrategy,
    KafkaOffsetsInitializer,
    KafkaSink,
    KafkaSource,
    KafkaTopicPartition,
)
from pyflink.datastream.state import (
    ListState,
    ListStateDescriptor,
    ValueState,
    ValueStateDescriptor,
)
from pyflink.java_gateway import get_gateway

from jobs.audit import publish_config
from jobs.kafka_io import committed_offsets, make_consumer, topic_end_offsets
from jobs.status import JobCounts, JobStatus, job_timeline
from udfs.config import PROJECT_ROOT, Config, java_properties
from udfs.latency import AvailabilityModel, hops_trace
from udfs.market.quality import QualityState, flush
from udfs.pipeline import InstrumentState, ProcessResult, RecordSource, process_record
from udfs.schema import Reason, StatsRow, compact_json, encode_record, encode_row
from udfs.strategy.trading import RecordedTraders, Trader, heartbeat

__all__ = [
    "CONFIG_PROCESS",
    "StartRefusedError",
    "build_stream_job",
    "check_start",
    "checkpoint_dir",
    "latest_checkpoint",
    "main",
    "run_stream_job",
]

logger = logging.getLogger(__name__)

STATS_INTERVAL_MS = 60_000
"""Event-time period of the per-instrument counters on the stats topic."""
END_OF_INPUT_MS = 2**63 - 1
"""Flink's final watermark (Long.MAX_VALUE), sent when a bounded input ends (or a job is
stopped with drain). An event-time timer at this time fires exactly then, for every key that
registered one, whatever the watermark did before: the per-minute stats timers of a key can all
have fired long before the end (another instrument's newer exchange times move the watermark)."""


ROUTES = ("features", "dead_letter", "stats", "quality", "signals", "orders", "drift")
"""Output topics of the job, by route number: the Java sink (RoutedSerializer.java) sends a
routed record to ``topics[route]``."""
(FEATURES, DEAD_LETTER, STATS, QUALITY, SIGNALS, ORDERS, DRIFT) = (
    str(i) for i in range(len(ROUTES))
)
FIELD = "\x1f"
"""Separates the fields of a routed record: route, key, timestamp (ms), hops, value."""
TRADING_ROUTES = frozenset({"signals", "orders", "drift"})
"""Routes only the trading stage writes."""
SINK_NAME_PREFIX = "kafka-sink:"
"""Name of the Kafka sink operator: this prefix and the topics it writes, comma-separated
(visible in Flink's execution plan and web UI)."""
RECORD = "\x1e"
"""Separates the routed records of one batch (RoutedSplitter.java). Values are JSON, which
escapes every control character, so neither separator occurs inside one."""


def parse_batch(batch: str) -> Iterator[tuple[int, int, int | None, int, str]]:
    """A MicroBatcher.java batch -> (partition, offset, timestamp ms or None, read ns, value) per
    record, in arrival order. Values are sliced by their code-point lengths from the header, so a
    value may hold any character, separators included."""
    head, _, body = batch.partition("\n")
    # the header's fields in one split, taken five at a time (one split per record costs more)
    fields = iter(head.replace(" ", ":").split(":"))
    pos = 0
    for partition, offset, ts, read_ns, length in zip(
        fields, fields, fields, fields, fields, strict=True
    ):
        end = pos + int(length)
        yield int(partition), int(offset), (int(ts) if ts else None), int(read_ns), body[pos:end]
        pos = end


def encode_batch(records: Iterable[tuple[int, int, int | None, int, str]]) -> str:
    """The inverse of :func:`parse_batch`, as MicroBatcher.java writes a batch (tests, bench)."""
    records = list(records)
    head = " ".join(
        f"{p}:{o}:{'' if ts is None else ts}:{read_ns}:{len(v)}" for p, o, ts, read_ns, v in records
    )
    return head + "\n" + "".join(v for *_, v in records)


def routed(route: str, key: str, ts_ms: int | None, value: str, hops: str = "") -> str:
    """One output record for the Java sink: its topic (route), key, Kafka timestamp (the
    exchange time of the event that produced it; None: the broker's), latency trace, value."""
    return f"{route}{FIELD}{key}{FIELD}{'' if ts_ms is None else ts_ms}{FIELD}{hops}{FIELD}{value}"


class StreamJobFunction(KeyedProcessFunction):
    """Keeps one :class:`InstrumentState` (book + feature windows + counters) per instrument.

    Input: one *batch* of records of one instrument per call (``MicroBatcher.java`` on the JVM
    side, see :func:`parse_batch`): PyFlink's thread mode crosses the JVM/Python boundary
    synchronously per call, and those crossings, not the per-record logic, bounded the job. The
    records of a batch go through the unchanged :func:`process_record` one by one, in order, so
    the output does not depend on how records were batched. Output: one string per batch holding
    every routed record it produced (:func:`routed`), split and sent to the right topic by one
    Java sink (no PyFlink side outputs: each would cross into Python once more).

    Keyed state is event-sourced, because PyFlink (thread mode) pickles a ValueState on every
    read and write, and a book of a few thousand levels costs ~1 ms to pickle:

    * ``snapshot`` (ValueState): the pickled :class:`InstrumentState` as of some record;
    * ``log`` (ListState): every raw record of the key since that snapshot (appended once per
      batch); every ``snapshot_every`` records the state is pickled and the log cleared.

    * ``traded_under`` (ValueState): the model assignment (:class:`Assignment` as JSON: live
      and canary model files with their hashes, the share) the log's records were traded
      under; written once per key and job start, never per record.

    The live state is a per-key cache in this function instance. After a restore from a
    checkpoint (a new instance, empty cache) a key's state is rebuilt on first touch: unpickle
    the snapshot and replay its log through the same pure :func:`process_record`, which is
    deterministic, under the recorded assignment, so the rebuilt state is exactly the one the
    checkpoint stood for even when the registry changed while the job was down (a promotion):
    that change applies from the next record on. The replayed state is then folded into a new
    snapshot, so a log never spans two assignments. The micro-batcher flushes before every
    checkpoint barrier, so no record is between the two.
    """

    def __init__(
        self, cfg: Config, trader: Trader | None = None, snapshot_every: int = 20_000
    ) -> None:
        self.trader = trader
        self.traders = RecordedTraders(cfg, trader)
        self.feature_cfg = cfg.features
        self.out_of_orderness_ms = cfg.flink.out_of_orderness_ms
        self.topic = cfg.topics.events  # a dead letter names where its record was read
        self.max_ahead_ms = cfg.flink.max_ahead_ms
        self.future_confirm = cfg.flink.future_confirm
        self.availability = AvailabilityModel.from_config(cfg)
        self.snapshot_every = snapshot_every
        # keyed state: set by open(), before any element or timer
        self.snapshot: ValueState | None = None
        self.log: ListState | None = None
        self.traded_under: ValueState | None = None
        self.cache: dict[str, InstrumentState | None] = {}
        self.log_len: dict[str, int] = {}
        self.stats_timer: dict[str, int] = {}
        self.quality_cfg = cfg.quality
        self.end_timer: set[str] = set()

    def open(self, runtime_context: RuntimeContext) -> None:
        self.snapshot = runtime_context.get_state(
            ValueStateDescriptor("instrument_snapshot", Types.PICKLED_BYTE_ARRAY())
        )
        self.log = runtime_context.get_list_state(
            ListStateDescriptor("records_since_snapshot", Types.STRING())
        )
        self.traded_under = runtime_context.get_state(
            ValueStateDescriptor("assignment_traded_under", Types.STRING())
        )
        self.cache.clear()
        self.log_len.clear()
        self.stats_timer.clear()
        self.end_timer.clear()

    def _state_of(self, key: str) -> InstrumentState | None:
        if key in self.cache:
            return self.cache[key]
        assert (
            self.snapshot is not None and self.log is not None and self.traded_under is not None
        ), "open() sets the keyed state"
        state = self.snapshot.value()
        if state is not None and not hasattr(state, "quality"):
            # a snapshot pickled before the quality stage existed: start its counters afresh
            state.quality = QualityState(state.instrument)
        recorded: str | None = self.traded_under.value()
        current = self.traders.current_text
        # None: a new key, or state from before assignments were recorded (replayed under
        # the current registry, as it always was then)
        trader = self.trader if recorded is None else self.traders.of(recorded, key)
        replayed = 0
        src = RecordSource(self.topic, -1, -1)
        for raw in self.log.get() or []:
            state, _ = process_record(
                state,
                key,
                raw,
                src,
                self.feature_cfg,
                self.out_of_orderness_ms,
                trader,
                self.quality_cfg,
                self.max_ahead_ms,
                self.future_confirm,
                self.availability,
            )
            replayed += 1
        if state is not None or replayed:
            logger.info("restored %s from keyed state: snapshot + %d logged records", key, replayed)
        if recorded != current:
            if recorded is not None and replayed:
                # the registry changed while the job was down: what was replayed stays as
                # traded; fold it into a snapshot so the log holds only records traded
                # under the current assignment from here on
                logger.info(
                    "%s: %d logged records replayed under the recorded assignment, trading "
                    "under the current one from now on",
                    key,
                    replayed,
                )
                if state is not None:
                    self.snapshot.update(state)
                self.log.clear()
                replayed = 0
            elif recorded is None and (state is not None or replayed):
                logger.warning(
                    "%s: keyed state records no model assignment (checkpoint from before it "
                    "was recorded): replayed under the current registry",
                    key,
                )
            self.traded_under.update(current)
        self.cache[key] = state
        self.log_len[key] = replayed
        return state

    def process_element(self, value: str, ctx: KeyedProcessFunction.Context) -> Iterator[str]:  # noqa: C901 - the batch loop routes every output kind
        assert self.snapshot is not None and self.log is not None, "open() sets the keyed state"
        key = ctx.get_current_key()
        py_in_ns = time.time_ns()
        out: list[str] = []
        state = self._state_of(key)
        n = self.log_len[key]
        to_log: list[str] = []
        timers = ctx.timer_service()
        # per record below: locals, not attribute look-ups (this loop is the job's hot path)
        topic, snapshot_every = self.topic, self.snapshot_every
        feature_cfg, out_of_orderness_ms = self.feature_cfg, self.out_of_orderness_ms
        trader, quality_cfg = self.trader, self.quality_cfg
        max_ahead_ms, future_confirm = self.max_ahead_ms, self.future_confirm
        availability = self.availability
        stats_at = self.stats_timer.get(key, -1)  # on_timer, which moves it, is not called here
        end_timer_set = key in self.end_timer
        result = ProcessResult()  # one per batch, emptied per record (routed before the next)
        for partition, offset, ts, read_ns, raw in parse_batch(value):
            state, result = process_record(
                state,
                key,
                raw,
                RecordSource(topic, partition, offset),
                feature_cfg,
                out_of_orderness_ms,
                trader,
                quality_cfg,
                max_ahead_ms,
                future_confirm,
                availability,
                result,
            )
            # persist: log the record, or fold everything into a new snapshot
            n += 1
            if n >= snapshot_every and state is not None:
                self.snapshot.update(state)
                self.log.clear()
                to_log.clear()
                n = 0
            else:
                to_log.append(raw)
            if state is not None:
                if (
                    ts is not None
                    # stats_at is a minute's end: a record before it has its timer already
                    and (stats_at < 0 or ts >= stats_at)
                    and not (result.dead_letters and _refused_as_future(result))
                ):
                    # counters to the stats topic at the next event-time minute (not after a
                    # record whose exchange time is not trusted: its minute may be years ahead)
                    fire_at = (ts // STATS_INTERVAL_MS + 1) * STATS_INTERVAL_MS
                    if stats_at < fire_at:
                        timers.register_event_time_timer(fire_at)
                        self.stats_timer[key] = stats_at = fire_at
                if not end_timer_set:
                    # the quality minutes still open at the end of input are flushed by this
                    # timer (registering it again after a restore is a no-op for Flink)
                    timers.register_event_time_timer(END_OF_INPUT_MS)
                    self.end_timer.add(key)
                    end_timer_set = True
            if not (
                result.features
                or result.signals
                or result.orders
                or result.dead_letters
                or result.quality
                or result.drift
            ):
                continue  # most records: nothing to write
            for row in result.features:
                out.append(routed(FEATURES, key, ts, compact_json(row)))
            for signal in result.signals:
                out.append(routed(SIGNALS, key, ts, encode_record(signal).decode()))
            if result.orders:
                # the latency trace (udfs.latency): read by the source, batch into Python,
                # features, traded signal, order made; orders come only from a trader
                # (0 when no traded signal of this record made them: a POV child on a trade)
                signal_ns = trader.signal_ns if trader is not None else 0
                signal_ns = signal_ns if signal_ns >= result.feature_ns else 0
                hops = hops_trace(read_ns, py_in_ns, result.feature_ns, signal_ns, time.time_ns())
                for order in result.orders:
                    out.append(routed(ORDERS, key, ts, encode_record(order).decode(), hops))
            for dead in result.dead_letters:
                out.append(routed(DEAD_LETTER, key, ts, dead.to_json()))
            for quality_row in result.quality:
                out.append(routed(QUALITY, key, ts, encode_row(quality_row)))
            for drift_row in result.drift:
                out.append(routed(DRIFT, key, ts, encode_row(drift_row)))
            if state is None and result.dead_letters:
                # a refused record of a key that has no book yet: still count it
                stats = encode_row(StatsRow(instrument=key, unkeyed_dead=1))
                out.append(routed(STATS, key, ts, stats))
            if result.orders:
                # an order goes out now, not after the rest of the batch (tick-to-order)
                yield RECORD.join(out)
                out = []
        self.cache[key] = state
        self.log_len[key] = n
        if to_log:
            self.log.add_all(to_log)
        if out:
            yield RECORD.join(out)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[str]:
        key = ctx.get_current_key()
        state = self._state_of(key)
        if timestamp == END_OF_INPUT_MS:
            # end of input: the key's last stats timer has fired already (timers fire in time
            # order, this one last); emit the quality minutes no later record will close,
            # stamped with the newest exchange time they cover
            if state is not None:
                ts = state.max_ts_event // 1_000_000 if state.max_ts_event else None
                rows = flush(state.quality)
                if rows:
                    yield RECORD.join(routed(QUALITY, key, ts, encode_row(row)) for row in rows)
            return
        if self.stats_timer.get(key) == timestamp:
            del self.stats_timer[key]
        if state is None:
            return
        out = []
        if self.trader is not None and state.max_ts_event:
            # every order of this key up to its newest event is out: tell the execution sink
            beat = heartbeat(
                key, state.max_ts_event + self.trader.min_feed_latency_ns, state.book.last_seq
            )
            ts = state.max_ts_event // 1_000_000
            out.append(routed(ORDERS, key, ts, encode_record(beat).decode()))
        stats = encode_row(
            StatsRow(
                instrument=state.instrument,
                watermark_ms=timestamp,
                events_in=state.events_in,
                events_processed=state.events_processed,
                dead_lettered=state.dead_lettered,
                signals=state.trading.signals,
                orders=state.trading.orders,
                book_levels=len(state.book.bids) + len(state.book.asks),
                ts_proc=time.time_ns(),
            )
        )
        # the minute's end in exchange time: the counters cover the events before it
        out.append(routed(STATS, key, timestamp, stats))
        yield RECORD.join(out)


def _refused_as_future(result: ProcessResult) -> bool:
    return any(d.reason_code == Reason.FUTURE for d in result.dead_letters)


def keyed_by_field0(ds: DataStream, *, shuffle: bool) -> KeyedStream:
    """Key a stream of rows ``(key, value, ...)`` by their first field on the JVM side.

    PyFlink's ``key_by`` always runs a Python function that builds that very row; the source
    already emits it, so we hand Flink the same key selector PyFlink would use after its Python
    step, and a keyed Python operator receives ``value``. Saves a Python call per record.

    ``shuffle=False``: no network shuffle (``DataStreamUtils.reinterpretAsKeyedStream``): the
    keyed operator chains to the source and records are handed over in memory. Only right when
    every key is read by the subtask that owns its key group, which holds at parallelism 1 (all
    key groups are subtask 0's); Kafka's partitioner does not follow Flink's key groups, so at
    a higher parallelism the job shuffles (``build_stream_job``).
    """
    gateway = get_gateway()
    selector = gateway.jvm.KeyByKeySelector()
    key_type = Types.ROW([Types.STRING()]).get_java_type_info()
    if shuffle:
        j_keyed = ds._j_data_stream.keyBy(selector, key_type)
    else:
        utils = gateway.jvm.org.apache.flink.streaming.api.datastream.DataStreamUtils
        j_keyed = utils.reinterpretAsKeyedStream(ds._j_data_stream, selector, key_type)
    return KeyedStream(j_keyed, Types.STRING(), ds)


def micro_batched(ds: DataStream, max_records: int, max_delay_ms: int) -> DataStream:
    """EventDeserializer rows -> MicroBatcher.java rows ``(key, batch)`` (chained, same task)."""
    gateway = get_gateway()
    j_batched = ds._j_data_stream.transform(
        "micro-batcher",
        gateway.jvm.io.bookstream.flink.MicroBatcher.outputType(),
        gateway.jvm.io.bookstream.flink.MicroBatcher(max_records, max_delay_ms),
    )
    return DataStream(j_batched).uid("micro-batcher")


def routed_records(ds: DataStream) -> DataStream:
    """The Python operator's one string per batch -> one string per routed record (Java)."""
    gateway = get_gateway()
    return (
        DataStream(
            ds._j_data_stream.flatMap(
                gateway.jvm.io.bookstream.flink.RoutedSplitter(),
                Types.STRING().get_java_type_info(),
            )
        )
        .name("routed-splitter")
        .uid("routed-splitter")
    )


def flink_client_properties(cfg: Config, role: str = "job") -> dict[str, str]:
    """The client properties of the Flink Kafka source and sinks: the credential of ``role``
    (``kafka.security = "sasl"``; the job's by default) and the passthrough (``kafka.client``),
    in Java names (:func:`udfs.config.java_properties`), class names relocated into the SQL
    connector's shaded package."""
    return java_properties(cfg.kafka_client_properties(role), shaded=True)


def kafka_source(
    cfg: Config,
    topic: str,
    group_id: str,
    *,
    bounded: bool,
    start_offsets: dict[int, int] | None,
    stop_offsets: dict[int, int] | None = None,
    deserializer: str = "EventDeserializer",
) -> KafkaSource:
    gateway = get_gateway()
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(cfg.kafka.bootstrap_servers)
        .set_topics(topic)
        .set_group_id(group_id)
        .set_property("commit.offsets.on.checkpoint", "true")
        .set_property("partition.discovery.interval.ms", "10000")
    )
    for key, value in flink_client_properties(cfg).items():
        builder.set_property(key, value)
    if start_offsets:
        builder.set_starting_offsets(
            KafkaOffsetsInitializer.offsets(
                {KafkaTopicPartition(topic, p): o for p, o in start_offsets.items()}
            )
        )
    else:
        builder.set_starting_offsets(
            KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST)
        )
    if bounded and stop_offsets:
        builder.set_bounded(
            KafkaOffsetsInitializer.offsets(
                {KafkaTopicPartition(topic, p): o for p, o in stop_offsets.items()}
            )
        )
    elif bounded:
        builder.set_bounded(KafkaOffsetsInitializer.latest())
    # PyFlink only wraps value-only deserialisers: set ours on the Java builder
    builder._j_builder.setDeserializer(getattr(gateway.jvm.io.bookstream.flink, deserializer)())
    return builder.build()


def plausible_watermarks(cfg: Config) -> WatermarkStrategy:
    """Bounded out-of-orderness watermarks on the record timestamp (= exchange time) that one
    record far ahead cannot move (PlausibleWatermarks.java: the ``future`` rule of
    :mod:`udfs.pipeline`, same ``flink.max_ahead_ms`` and ``flink.future_confirm``, per source
    partition), and idleness: a partition silent for ``flink.idle_timeout_ms`` stops holding the
    watermark back."""
    flink = cfg.flink
    j_strategy = get_gateway().jvm.io.bookstream.flink.PlausibleWatermarks.strategy(
        flink.out_of_orderness_ms, flink.max_ahead_ms, flink.future_confirm
    )
    return WatermarkStrategy(j_strategy).with_idleness(Duration.of_millis(flink.idle_timeout_ms))


def kafka_sink(cfg: Config, topics: Sequence[str], *, linger_ms: int | None = None) -> KafkaSink:
    """One Kafka sink for every output topic: RoutedSerializer.java sends each routed record to
    ``topics[route]`` with its key and exchange-time timestamp. ``linger.ms`` 0 (the orders
    path's latency) by default; the producer stays idempotent (acks=all)."""
    gateway = get_gateway()
    linger = cfg.flink.orders_linger_ms if linger_ms is None else linger_ms
    builder = (
        KafkaSink.builder()
        .set_bootstrap_servers(cfg.kafka.bootstrap_servers)
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        .set_property("linger.ms", str(linger))
        .set_property("compression.type", "lz4")
        # idempotent producer: a retried send never writes a record twice
        .set_property("enable.idempotence", "true")
        .set_property("acks", "all")
    )
    for key, value in flink_client_properties(cfg).items():
        builder.set_property(key, value)
    j_topics = gateway.new_array(gateway.jvm.String, len(topics))
    for i, topic in enumerate(topics):
        j_topics[i] = topic
    builder._j_builder.setRecordSerializer(
        gateway.jvm.io.bookstream.flink.RoutedSerializer(j_topics)
    )
    return builder.build()


def _export_python_path() -> None:
    """Thread mode runs Python inside the JVM through PEMJA, whose interpreter starts from the
    base installation and does not see a venv's site-packages: hand them over explicitly
    (before the JVM gateway is launched, which inherits the environment)."""
    import site

    paths = [*site.getsitepackages(), str(PROJECT_ROOT)]
    current = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *([current] if current else [])])


FLINK_LOGS_KEPT = 20
"""Flink log files kept under ``<state>/logs/flink`` (the oldest are removed at a job start)."""


def _export_flink_log_dir(cfg: Config) -> None:
    """Flink's own log (the local MiniCluster's: JobManager, TaskManager, the Python functions'
    logging in thread mode) goes to ``<state>/logs/flink/flink-bookstream-<pid>-python-<host>.log``
    instead of PyFlink's ``site-packages/pyflink/log``. PyFlink's local gateway
    (``pyflink_gateway_server.construct_log_settings``) takes ``FLINK_LOG_DIR`` and
    ``FLINK_IDENT_STRING`` from the environment when it launches the JVM (``-Dlog.file=``), so
    both are set before the gateway starts; its log4j file appender truncates, hence one file
    per process."""
    if "FLINK_LOG_DIR" in os.environ:
        return  # the gateway is (or will be) launched with a log dir already chosen
    cfg.flink_logs_dir.mkdir(parents=True, exist_ok=True)
    old = sorted(cfg.flink_logs_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)
    for path in old[: max(len(old) - FLINK_LOGS_KEPT + 1, 0)]:
        path.unlink(missing_ok=True)
    os.environ["FLINK_LOG_DIR"] = str(cfg.flink_logs_dir)
    os.environ.setdefault("FLINK_IDENT_STRING", f"bookstream-{os.getpid()}")


PROMETHEUS_REPORTER = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"


def _export_reporter_classpath(cfg: Config) -> None:
    """Flink's Prometheus reporter on the local JVM's class path. A MiniCluster loads metric
    reporters from the class path only (no plugin manager: the wheel's ``plugins/`` is not
    searched, "Available factories: []"), and PyFlink's local gateway builds that class path
    from ``lib/`` plus ``HADOOP_CLASSPATH`` (``pyflink_gateway_server``): the one hook to
    extend it, set before the gateway starts."""
    if not (cfg.metrics.enabled and cfg.metrics.flink_reporter):
        return
    import pyflink

    jars = sorted((Path(pyflink.__file__).parent / "plugins" / "metrics-prometheus").glob("*.jar"))
    if not jars:
        logger.warning("metrics.flink_reporter: no Prometheus reporter jar in the PyFlink wheel")
        return
    current = os.environ.get("HADOOP_CLASSPATH", "")
    if str(jars[0]) not in current.split(os.pathsep):
        os.environ["HADOOP_CLASSPATH"] = os.pathsep.join(
            [*([current] if current else []), str(jars[0])]
        )


PROCESS_KEY = "bookstream.process"
"""A configuration entry of the local MiniCluster naming the process that runs it (its pid):
the status thread finds its own cluster's REST API by it (``GET /jobmanager/config``), even
when another local job starting at the same moment took the port it was offered."""


def local_rest_urls(env: StreamExecutionEnvironment) -> list[str]:
    """Where the REST API of the local MiniCluster ``env`` will run may be: every port of its
    bind range (empty: submitted to a cluster, whose own UI tells)."""
    if submitted_to_cluster():
        return []
    conf = env._j_stream_execution_environment.getConfiguration().toMap()
    ports = str(conf.get("rest.bind-port") or conf.get("rest.port") or "")
    if not ports:
        return []
    first, _, last = ports.partition("-")
    return [f"http://127.0.0.1:{p}" for p in range(int(first), int(last or first) + 1)]


def execute_with_status(
    env: StreamExecutionEnvironment,
    name: str,
    on_counts: Callable[[JobCounts], None] | None = None,
    *,
    lines: bool = True,
) -> dict[str, float]:
    """``env.execute(name)`` with a status line every few seconds from the job's own metrics
    (jobs/status.py: inputs, outputs, lag; not with ``lines`` off), and ``on_counts`` on each
    poll (a progress bar). Returns the job's timeline as last polled (epoch s:
    :func:`jobs.status.job_timeline`), empty when there was none."""
    urls = local_rest_urls(env)
    if not urls:
        env.execute(name)
        return {}
    with JobStatus(urls, (PROCESS_KEY, str(os.getpid())), on_counts=on_counts, lines=lines) as st:
        result = env.execute(name)
    timeline = job_timeline(st.details[-1]) if st.details else {}
    if "submitted" in timeline and "finished" not in timeline:
        # the cluster shut down before a poll saw the end: the job's own net runtime
        timeline["finished"] = timeline["submitted"] + result.get_net_runtime() / 1000
    return timeline


LOOPBACK_BIND_OPTIONS = (
    "rest.bind-address",
    "rest.address",
    "jobmanager.bind-host",
    "jobmanager.rpc.address",
    "taskmanager.bind-host",
    "taskmanager.host",
)
"""Flink options naming where the MiniCluster's endpoints listen: all set to 127.0.0.1."""


def worker_pool_on_loopback() -> None:
    """Make PyFlink serve its Python worker pool on 127.0.0.1 only.

    In local execution PyFlink serves that pool (gRPC, unauthenticated, and it starts Python
    workers on request) on every interface: ``add_insecure_port('[::]:0')`` in
    ``BeamFnLoopbackWorkerPoolServicer.start`` (pyflink/fn_execution/beam/
    beam_worker_pool_service.py), called by every ``env.execute``. That method is replaced by
    the same server bound to loopback (idempotent).

    That module also sets the root logger to WARNING when imported, which silenced every
    INFO line of this process after it (the status lines of the job, and of the sinks the demo
    runs after it): the level is put back."""
    root = logging.getLogger()
    level = root.level
    from pyflink.fn_execution.beam.beam_worker_pool_service import (
        BeamFnLoopbackWorkerPoolServicer,
    )

    root.setLevel(level)

    if getattr(BeamFnLoopbackWorkerPoolServicer.start, "bookstream_loopback", False):
        return

    def start_on_loopback(self: BeamFnLoopbackWorkerPoolServicer) -> str:
        import atexit
        import functools

        import grpc
        from apache_beam.portability.api import beam_fn_api_pb2_grpc
        from apache_beam.utils import thread_pool_executor

        if not self._worker_address:
            server = grpc.server(thread_pool_executor.shared_unbounded_instance())
            port = server.add_insecure_port("127.0.0.1:0")
            beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(self, server)
            server.start()
            self._worker_address = f"127.0.0.1:{port}"
            atexit.register(functools.partial(server.stop, 1))
        return self._worker_address

    start_on_loopback.bookstream_loopback = True  # type: ignore[attr-defined]
    BeamFnLoopbackWorkerPoolServicer.start = start_on_loopback


MAX_PARALLELISM = 128
"""Key groups of the keyed state: fixed, so a savepoint restores at any parallelism up to it
(Flink derives it from the first run's parallelism otherwise)."""


def submitted_to_cluster() -> bool:
    """True when this process is the Python driver of ``flink run -py`` (the client JVM hands
    it its gateway through ``PYFLINK_GATEWAY_PORT``): the cluster's configuration and ``flink
    run``'s options then decide parallelism, checkpoint storage, restart strategy, memory,
    the Python executable, the jars and the savepoint to restore."""
    return "PYFLINK_GATEWAY_PORT" in os.environ


def submitted_restore_path() -> str | None:
    """The savepoint or checkpoint ``flink run -s`` restores (None: none), read from the
    client's configuration."""
    gateway = get_gateway()
    j_env = gateway.jvm.org.apache.flink.streaming.api.environment.StreamExecutionEnvironment
    conf = j_env.getExecutionEnvironment().getConfiguration().toMap()
    path = conf.get("execution.state-recovery.path")
    return str(path) if path else None


def free_local_rest_port(cfg: Config) -> int:
    """``flink.rest_port``, or the next free one of the nine above it (another local job on
    this machine holds it): the local MiniCluster's web UI."""
    import socket

    for port in range(cfg.flink.rest_port, cfg.flink.rest_port + 10):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(
        f"no free port in 127.0.0.1:{cfg.flink.rest_port}-{cfg.flink.rest_port + 9} for the "
        "local Flink web UI: set flink.rest_port (BOOKSTREAM_FLINK_REST_PORT)"
    )


def _pipeline_settings(conf: Configuration, cfg: Config) -> None:
    """The job's own settings, the same on a MiniCluster and on a cluster."""
    # auto: thread mode, with or without models (udfs.strategy.model keeps onnxruntime working in
    # it)
    mode = "thread" if cfg.flink.execution_mode == "auto" else cfg.flink.execution_mode
    conf.set_string("python.execution-mode", mode)
    conf.set_string("python.fn-execution.bundle.size", str(cfg.flink.bundle_size))
    conf.set_string("python.fn-execution.bundle.time", str(cfg.flink.bundle_time_ms))
    conf.set_string("execution.buffer-timeout.interval", f"{cfg.flink.buffer_timeout_ms} ms")


def _local_deployment(
    conf: Configuration, cfg: Config, restore_from: Path | str | None, group_id: str
) -> None:
    """What a cluster's configuration decides, set for the local MiniCluster."""
    for option in LOOPBACK_BIND_OPTIONS:  # every listener on loopback, like Kafka and PostgreSQL
        conf.set_string(option, "127.0.0.1")
    conf.set_string(PROCESS_KEY, str(os.getpid()))  # the status thread finds its cluster by it
    port = free_local_rest_port(cfg)
    last = cfg.flink.rest_port + 9
    # a range: another job starting at the same moment may take the port found free just now;
    # Flink then binds the next free one
    conf.set_string("rest.bind-port", f"{port}-{last}" if port < last else str(port))
    conf.set_string("rest.port", str(port))
    logger.info("Flink web UI (local MiniCluster): http://127.0.0.1:%d/", port)
    # the workers must run this venv's interpreter (pemja, udfs, numpy live there)
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    conf.set_string(
        "pipeline.jars", ";".join(jar.as_uri() for jar in (cfg.kafka_connector_jar, cfg.glue_jar))
    )
    # one directory per consumer group: --restore-latest picks among this job's checkpoints
    conf.set_string("execution.checkpointing.dir", checkpoint_uri(cfg, group_id))
    conf.set_string("execution.checkpointing.savepoint-dir", cfg.savepoint_uri)
    conf.set_string(
        "execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION"
    )
    conf.set_string("execution.checkpointing.num-retained", "3")
    conf.set_string("taskmanager.memory.managed.size", "256m")
    # fail fast instead of Flink's endless restarts under checkpointing
    conf.set_string("restart-strategy.type", "fixed-delay")
    conf.set_string("restart-strategy.fixed-delay.attempts", str(cfg.flink.restart_attempts))
    conf.set_string("restart-strategy.fixed-delay.delay", "2 s")
    if restore_from is not None:
        conf.set_string("execution.state-recovery.path", _as_uri(restore_from))
    if cfg.metrics.enabled and cfg.metrics.flink_reporter:
        # the reporter's plugin ships in the wheel (pyflink/plugins/metrics-prometheus), which
        # PyFlink's gateway passes on as FLINK_PLUGINS_DIR
        conf.set_string("metrics.reporter.prom.factory.class", PROMETHEUS_REPORTER)
        conf.set_string("metrics.reporter.prom.port", cfg.metrics.flink_ports)


def _as_uri(location: Path | str) -> str:
    text = str(location)
    return text if "://" in text else Path(text).resolve().as_uri()


def launch_local_gateway(cfg: Config) -> None:
    """Launch the local JVM gateway now (what :func:`job_environment` would do first), with the
    environment it must inherit: the demo starts it while it publishes, as it needs nothing
    of the job."""
    from pyflink.java_gateway import get_gateway

    _export_python_path()
    _export_flink_log_dir(cfg)
    _export_reporter_classpath(cfg)
    get_gateway()


def job_environment(
    cfg: Config, restore_from: Path | str | None = None, group_id: str = "bookstream-features"
) -> StreamExecutionEnvironment:
    """A StreamExecutionEnvironment configured for the stream job, with no job on it yet.

    Local (a MiniCluster in this process): thread mode, jars, checkpoints of ``group_id``'s own
    directory, restarts, memory, web UI port, all set here. Submitted with ``flink run``
    (:func:`submitted_to_cluster`): only the job's pipeline settings; the deployment's keys
    come from the cluster's configuration and ``flink run``'s options."""
    submitted = submitted_to_cluster()
    if not submitted:
        _export_python_path()
        _export_flink_log_dir(cfg)
        _export_reporter_classpath(cfg)
        worker_pool_on_loopback()
    conf = Configuration()
    _pipeline_settings(conf, cfg)
    if not submitted:
        _local_deployment(conf, cfg, restore_from, group_id)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    if not submitted:
        env.set_parallelism(cfg.flink.parallelism)
    env.set_max_parallelism(MAX_PARALLELISM)
    env.enable_checkpointing(cfg.flink.checkpoint_interval_ms, CheckpointingMode.EXACTLY_ONCE)

    return env


def build_stream_job(
    cfg: Config,
    *,
    bounded: bool,
    group_id: str = "bookstream-features",
    restore_from: Path | None = None,
    start_offsets: dict[int, int] | None = None,
    stop_offsets: dict[int, int] | None = None,
    trading: bool = True,
    shuffle: bool | None = None,
) -> StreamExecutionEnvironment:
    """The whole pipeline on a StreamExecutionEnvironment (not yet executed: ``env.execute``).

    ``bounded``: stop at the events topic's end offsets as of the start (demo, tests, replay),
    or at ``stop_offsets`` (partition -> offset, every partition) when given; otherwise run
    until cancelled. ``trading``: also run the signal/order stage (signals and
    orders topics); without it the job computes features only. The job starts from the group's
    committed offsets (committed on checkpoints), or the earliest when the group has none;
    ``start_offsets`` (partition -> offset) overrides that. A job restored from a checkpoint
    resumes at the checkpoint's offsets. Every topic the job reads or writes is ``cfg.topics``: a
    run of its own (test, benchmark, replay) passes a config whose topic set is replaced as a
    whole (``cfg.for_run(...)``). ``shuffle``: key behind a network shuffle (default: only
    at parallelism > 1, see :func:`keyed_by_field0`).
    """
    topics = cfg.topics
    env = job_environment(cfg, restore_from, group_id)
    # source: event time = Kafka record timestamp = exchange time (set by the publisher)
    watermark_strategy = plausible_watermarks(cfg)
    source = kafka_source(
        cfg,
        topics.events,
        group_id,
        bounded=bounded,
        start_offsets=start_offsets,
        stop_offsets=stop_offsets,
    )
    # every operator has a uid: its state (and a savepoint's) is matched by it, not by the
    # shape of the graph (see the README: "Upgrading the job's code")
    ds = env.from_source(source, watermark_strategy, "events").uid("events-source")

    # transformations: records of one instrument in batches to one Python call each
    batches = micro_batched(ds, cfg.flink.batch_max_records, cfg.flink.batch_max_delay_ms)
    trader = Trader.load(cfg) if trading else None
    parallelism = env.get_parallelism()  # submitted: flink run -p, or the cluster's default
    outputs = (
        keyed_by_field0(batches, shuffle=parallelism > 1 if shuffle is None else shuffle)
        .process(StreamJobFunction(cfg, trader), output_type=Types.STRING())
        .name("book-features")
        .uid("book-features")
    )

    # sinks: one producer, the topic chosen per record (route numbers: ROUTES); its name lists
    # the topics it writes
    routes = [getattr(topics, r) for r in ROUTES]
    written = [t for r, t in zip(ROUTES, routes, strict=True) if trading or r not in TRADING_ROUTES]
    routed_records(outputs).sink_to(kafka_sink(cfg, routes)).name(
        f"{SINK_NAME_PREFIX}{','.join(written)}"
    ).uid("kafka-sink")
    return env


def _group_dir_name(group_id: str) -> str:
    return group_id.replace("/", "_").replace(os.sep, "_")


def checkpoint_dir(cfg: Config, group_id: str) -> Path:
    """Where the local job of consumer group ``group_id`` keeps its checkpoints
    (``<job-id>/chk-N`` below it): a job's state belongs to its group, whose offsets it
    commits. A ``file://`` location only (:func:`checkpoint_uri` for any)."""
    return cfg.checkpoint_dir / _group_dir_name(group_id)


def checkpoint_uri(cfg: Config, group_id: str) -> str:
    """:func:`checkpoint_dir` as a URI, for any scheme (``file://``, ``s3://``, ``hdfs://``)."""
    return f"{cfg.checkpoint_uri}/{_group_dir_name(group_id)}"


def latest_checkpoint(cfg: Config, group_id: str) -> Path | None:
    """The newest completed checkpoint (a ``chk-N`` directory with ``_metadata``) of the job of
    ``group_id`` (any of its runs; never another group's, e.g. a replay's or a bench's)."""
    done = [p.parent for p in checkpoint_dir(cfg, group_id).glob("*/chk-*/_metadata")]
    return max(done, key=lambda p: p.stat().st_mtime) if done else None


class StartRefusedError(RuntimeError):
    """A start that would compute from a wrong state; the message says why and what to do."""


def check_start(cfg: Config, group_id: str, *, from_start: bool) -> dict[int, int] | None:
    """Start offsets for a job that restores no state. The job's books live in its state
    only: a group that has already consumed the events topic would resume at its committed
    offsets with empty books and build features from a wrong book mid-stream. Refused with the
    reason; ``from_start``: rebuild the books from the topic's first offset instead (the
    features of the range already done are emitted again; downstream keeps one row per
    ``(instrument, seq)``), possible only while the topic still holds its first records."""
    topic = cfg.topics.events
    marks = topic_end_offsets(cfg, topic)
    consumer = make_consumer(cfg, group_id)
    try:
        committed = {
            tp.partition: tp.offset
            for tp in committed_offsets(consumer, [TopicPartition(topic, p) for p in marks])
            if tp.offset >= 0
        }
    finally:
        consumer.close()
    if from_start:
        lost = {p: low for p, (low, _high) in marks.items() if low > 0}
        if lost:
            raise StartRefusedError(
                f"refused: {topic} no longer holds its first records "
                f"(partition -> first offset {lost}, deleted by retention): the books cannot be "
                "rebuilt from the start; restore a checkpoint (--restore / --restore-latest)"
            )
        return {p: low for p, (low, _high) in marks.items()}
    consumed = {p: o for p, o in committed.items() if o > marks.get(p, (0, 0))[0]}
    if consumed:
        raise StartRefusedError(
            f"refused: consumer group {group_id!r} has already consumed {topic} "
            f"(partition -> committed offset {consumed}) and no checkpoint is restored: the "
            "books would start empty mid-stream. Restore its state (--restore-latest; "
            f"checkpoints of this group live in {checkpoint_dir(cfg, group_id)}), rebuild "
            "from the first offset (--from-start), or use a new --group-id"
        )
    return None


CONFIG_PROCESS = "stream-job"
"""The job's name in the audit trail's configuration records (``udfs/audit.py``)."""


def run_stream_job(
    cfg: Config,
    *,
    bounded: bool,
    group_id: str = "bookstream-features",
    restore: Path | None = None,
    restore_latest: bool = False,
    from_start: bool = False,
    start_offsets: dict[int, int] | None = None,
) -> None:
    """``bookstream stream-job``: build the job and execute it (until the bounded input ends,
    or until killed); ``restore_latest`` resumes from the newest retained checkpoint of
    ``group_id``. Without a checkpoint, :func:`check_start` decides where to start (or refuses,
    :class:`StartRefusedError`); ``start_offsets`` (partition -> offset, no state restored)
    overrides it (the demo: exactly its own run's events)."""
    if start_offsets is not None:
        pass
    elif submitted_to_cluster():
        # flink run -s restores; --restore* name local directories of a MiniCluster's runs
        if restore is not None or restore_latest:
            raise StartRefusedError(
                "refused: --restore/--restore-latest are for a local run; a job submitted to "
                "a cluster restores with flink run -s PATH (bookstream submit --from-savepoint)"
            )
        restored = submitted_restore_path()
        if restored is not None:
            logger.info("restoring from %s (flink run -s)", restored)
        else:
            start_offsets = check_start(cfg, group_id, from_start=from_start)
    else:
        restore = restore or (latest_checkpoint(cfg, group_id) if restore_latest else None)
        if restore is not None:
            logger.info("restoring from %s", restore)
        else:
            start_offsets = check_start(cfg, group_id, from_start=from_start)
    env = build_stream_job(
        cfg,
        bounded=bounded,
        group_id=group_id,
        restore_from=restore,
        start_offsets=start_offsets,
    )
    # the settings (strategy, sizing, thresholds) the job decides orders under, for the audit
    publish_config(cfg, CONFIG_PROCESS)
    if not submitted_to_cluster():  # a local MiniCluster: its JVM is this process's child
        from jobs import metrics

        metrics.serve(cfg, CONFIG_PROCESS, cfg.metrics.stream_job_port)
    execute_with_status(env, "bookstream-stream-job")


def main(argv: list[str] | None = None) -> int:
    """``python -m jobs.stream_job ARGS`` = ``bookstream stream-job ARGS``."""
    from jobs.cli import main as cli_main

    return cli_main(["stream-job", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
