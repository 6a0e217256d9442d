"""Flink job: L2 events (Kafka) -> book in keyed state -> features (Kafka), bad input to the
dead-letter topic, per-instrument counters to the stats topic, data-quality rows to the quality
topic.

    events topic --(Kafka source, key=instrument, event time = record timestamp = exchange
    time, bounded out-of-orderness watermarks, idle partitions released)--> key_by instrument
    --> StreamJobFunction (udfs.pipeline.process_record on keyed state)
        --> features topic          (main output)
        --> dead-letter topic       (side output: malformed, late, gap, crossed ... + reason)
        --> stats topic             (event-time timer: counters per instrument and minute)
        --> quality topic           (side output: gaps, re-syncs, crossed/locked books, stale
                                     feed, out-of-order, late, duplicates per instrument and
                                     exchange-time minute; udfs.market.quality)

Records cross the JVM/Python boundary as plain strings, the cheapest crossing PyFlink has: two
small Java classes (``jobs/java``, compiled by ``infra/install.sh``) prefix each record with its
partition, offset and key on the way in (a dead letter must name them; PyFlink's KafkaSource has
only value-only deserialisers) and write ``key \x1f value`` strings as keyed records on the way
out. Measured: the SQL connector's metadata rows cost twice the whole per-record budget.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pyflink.common import Configuration, Duration, Types, WatermarkStrategy
from pyflink.datastream import (
    CheckpointingMode,
    DataStream,
    KeyedProcessFunction,
    KeyedStream,
    OutputTag,
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

from udfs.config import PROJECT_ROOT, Config
from udfs.market.quality import QualityState, flush
from udfs.pipeline import InstrumentState, RecordSource, process_record
from udfs.schema import StatsRow, encode_record, encode_row
from udfs.strategy.trading import Trader, heartbeat

__all__ = ["build_stream_job", "latest_checkpoint", "main", "run_stream_job"]

logger = logging.getLogger(__name__)

DEAD_LETTER_TAG = OutputTag("dead-letters", Types.STRING())
STATS_TAG = OutputTag("stats", Types.STRING())
SIGNALS_TAG = OutputTag("signals", Types.STRING())
ORDERS_TAG = OutputTag("orders", Types.STRING())
QUALITY_TAG = OutputTag("quality", Types.STRING())
STATS_INTERVAL_MS = 60_000
"""Event-time period of the per-instrument counters on the stats topic."""
END_OF_INPUT_MS = 2**63 - 1
"""Flink's final watermark (Long.MAX_VALUE), sent when a bounded input ends (or a job is
stopped with drain). An event-time timer at this time fires exactly then, for every key that
registered one, whatever the watermark did before: the per-minute stats timers of a key can all
have fired long before the end (another instrument's newer exchange times move the watermark)."""


class StreamJobFunction(KeyedProcessFunction):
    """Keeps one :class:`InstrumentState` (book + feature windows + counters) per instrument.

    Keyed state is event-sourced, because PyFlink (thread mode) pickles a ValueState on every
    read and write, and a book of a few thousand levels costs ~1 ms to pickle:

    * ``snapshot`` (ValueState): the pickled :class:`InstrumentState` as of some record;
    * ``log`` (ListState): every raw record of the key since that snapshot (one cheap append
      per record); every ``snapshot_every`` records the state is pickled and the log cleared.

    The live state is a per-key cache in this function instance. After a restore from a
    checkpoint (a new instance, empty cache) a key's state is rebuilt on first touch: unpickle
    the snapshot and replay its log through the same pure :func:`process_record`, which is
    deterministic, so the rebuilt state is exactly the one the checkpoint stood for.
    """

    def __init__(
        self, cfg: Config, trader: Trader | None = None, snapshot_every: int = 20_000
    ) -> None:
        self.trader = trader
        self.feature_cfg = cfg.features
        self.out_of_orderness_ms = cfg.flink.out_of_orderness_ms
        self.topic = cfg.topics.events  # a dead letter names where its record was read
        self.snapshot_every = snapshot_every
        self.snapshot: ValueState  # both set in open()
        self.log: ListState
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
        self.cache.clear()
        self.log_len.clear()
        self.stats_timer.clear()
        self.end_timer.clear()

    def _state_of(self, key: str) -> InstrumentState | None:
        if key in self.cache:
            return self.cache[key]
        state = self.snapshot.value()
        if state is not None and not hasattr(state, "quality"):
            # a snapshot pickled before the quality stage existed: start its counters afresh
            state.quality = QualityState(state.instrument)
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
                self.trader,
                self.quality_cfg,
            )
            replayed += 1
        if state is not None or replayed:
            logger.info("restored %s from keyed state: snapshot + %d logged records", key, replayed)
        self.cache[key] = state
        self.log_len[key] = replayed
        return state

    def process_element(
        self, value: str, ctx: KeyedProcessFunction.Context
    ) -> Iterator[str | tuple[OutputTag, str]]:
        key = ctx.get_current_key()
        partition, offset, raw = split_provenance(value)
        src = RecordSource(self.topic, partition, offset)
        state, result = process_record(
            self._state_of(key),
            key,
            raw,
            src,
            self.feature_cfg,
            self.out_of_orderness_ms,
            self.trader,
            self.quality_cfg,
        )
        self.cache[key] = state
        # persist: append the record, or fold everything into a new snapshot
        n = self.log_len[key] + 1
        if n >= self.snapshot_every and state is not None:
            self.snapshot.update(state)
            self.log.clear()
            n = 0
        else:
            self.log.add(raw)
        self.log_len[key] = n
        # counters to the stats topic at the next event-time minute
        ts = ctx.timestamp()
        if state is not None and ts is not None:
            fire_at = (ts // STATS_INTERVAL_MS + 1) * STATS_INTERVAL_MS
            if self.stats_timer.get(key, -1) < fire_at:
                ctx.timer_service().register_event_time_timer(fire_at)
                self.stats_timer[key] = fire_at
        if state is not None and key not in self.end_timer:
            # the quality minutes still open at the end of input are flushed by this timer
            # (registering it again after a restore is a no-op for Flink)
            ctx.timer_service().register_event_time_timer(END_OF_INPUT_MS)
            self.end_timer.add(key)
        for row in result.features:
            yield key + SEP + json.dumps(row, separators=(",", ":"))
        for signal in result.signals:
            yield SIGNALS_TAG, key + SEP + encode_record(signal).decode()
        for order in result.orders:
            yield ORDERS_TAG, key + SEP + encode_record(order).decode()
        for dead in result.dead_letters:
            yield DEAD_LETTER_TAG, key + SEP + dead.to_json()
        for quality_row in result.quality:
            yield QUALITY_TAG, key + SEP + encode_row(quality_row)
        if state is None and result.dead_letters:
            # a refused record of a key that has no book yet: still count it
            yield STATS_TAG, key + SEP + encode_row(StatsRow(instrument=key, unkeyed_dead=1))

    def on_timer(
        self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext
    ) -> Iterator[str | tuple[OutputTag, str]]:
        key = ctx.get_current_key()
        state = self._state_of(key)
        if timestamp == END_OF_INPUT_MS:
            # end of input: the key's last stats timer has fired already (timers fire in time
            # order, this one last); emit the quality minutes no later record will close
            if state is not None:
                for row in flush(state.quality):
                    yield QUALITY_TAG, key + SEP + encode_row(row)
            return
        if self.stats_timer.get(key) == timestamp:
            del self.stats_timer[key]
        if state is None:
            return
        if self.trader is not None and state.max_ts_event:
            # every order of this key up to its newest event is out: tell the execution sink
            beat = heartbeat(
                key, state.max_ts_event + self.trader.min_feed_latency_ns, state.book.last_seq
            )
            yield ORDERS_TAG, key + SEP + encode_record(beat).decode()
        stats = StatsRow(
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
        yield STATS_TAG, key + SEP + encode_row(stats)


SINK_NAME_PREFIX = "kafka-sink:"
"""Name of each Kafka sink operator: this prefix and the topic it writes (visible in Flink's
execution plan and web UI)."""
SEP = "\x1f"
"""Key/value separator of the strings the Java serialiser writes as keyed records."""


def split_provenance(record: str) -> tuple[int, int, str]:
    """``"<partition>:<offset>:<value>"`` (ProvenanceDeserializer.java) ->
    (partition, offset, value)."""
    a = record.index(":")
    b = record.index(":", a + 1)
    return int(record[:a]), int(record[a + 1 : b]), record[b + 1 :]


def _key_by_field0(ds: DataStream) -> KeyedStream:
    """Key a stream of ``Row(key, value)`` by its first field on the JVM side.

    PyFlink's ``key_by`` always runs a Python function that builds that very row; the source
    already emits it, so we hand Flink the same key selector PyFlink would use after its Python
    step, and the keyed Python operator receives ``value``. Saves a Python call per record.
    """
    gateway = get_gateway()
    j_keyed = ds._j_data_stream.keyBy(
        gateway.jvm.KeyByKeySelector(), Types.ROW([Types.STRING()]).get_java_type_info()
    )
    return KeyedStream(j_keyed, Types.STRING(), ds)


def _kafka_source(
    cfg: Config, topic: str, group_id: str, *, bounded: bool, start_offsets: dict[int, int] | None
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
    if bounded:
        builder.set_bounded(KafkaOffsetsInitializer.latest())
    # PyFlink only wraps value-only deserialisers: set ours on the Java builder
    builder._j_builder.setDeserializer(gateway.jvm.io.bookstream.flink.ProvenanceDeserializer())
    return builder.build()


def _kafka_sink(cfg: Config, topic: str) -> KafkaSink:
    gateway = get_gateway()
    builder = (
        KafkaSink.builder()
        .set_bootstrap_servers(cfg.kafka.bootstrap_servers)
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        .set_property("linger.ms", "20")
        .set_property("compression.type", "lz4")
        # idempotent producer: a retried send never writes a record twice
        .set_property("enable.idempotence", "true")
        .set_property("acks", "all")
    )
    builder._j_builder.setRecordSerializer(
        gateway.jvm.io.bookstream.flink.KeyedStringSerializer(topic)
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
    the same server bound to loopback (idempotent)."""
    from pyflink.fn_execution.beam.beam_worker_pool_service import (
        BeamFnLoopbackWorkerPoolServicer,
    )

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


def build_stream_job(
    cfg: Config,
    *,
    bounded: bool,
    group_id: str = "bookstream-features",
    restore_from: Path | None = None,
    start_offsets: dict[int, int] | None = None,
    trading: bool = True,
) -> StreamExecutionEnvironment:
    """The whole pipeline on a StreamExecutionEnvironment (not yet executed: ``env.execute``).

    ``bounded``: stop at the events topic's end offsets as of the start (demo, tests, replay);
    otherwise run until cancelled. ``trading``: also run the signal/order stage (signals and
    orders topics); without it the job computes features only. The job starts from the group's
    committed offsets (committed on checkpoints), or the earliest when the group has none;
    ``start_offsets`` (partition -> offset) overrides that. A job restored from a checkpoint
    resumes at the checkpoint's offsets.

    Every topic the job reads or writes is ``cfg.topics``: a run of its own (test, benchmark,
    replay) passes a config whose topic set is replaced as a whole (``cfg.for_run(...)``).
    """
    topics = cfg.topics

    _export_python_path()
    _export_flink_log_dir(cfg)
    worker_pool_on_loopback()
    conf = Configuration()
    for option in LOOPBACK_BIND_OPTIONS:  # every listener on loopback, like Kafka and PostgreSQL
        conf.set_string(option, "127.0.0.1")
    # the workers must run this venv's interpreter (pemja, udfs, numpy live there)
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.client.executable", sys.executable)
    # auto: thread mode, with or without models (udfs.strategy.model keeps onnxruntime working in
    # it)
    mode = "thread" if cfg.flink.execution_mode == "auto" else cfg.flink.execution_mode
    conf.set_string("python.execution-mode", mode)
    conf.set_string("python.fn-execution.bundle.size", str(cfg.flink.bundle_size))
    conf.set_string("python.fn-execution.bundle.time", str(cfg.flink.bundle_time_ms))
    conf.set_string("execution.buffer-timeout.interval", f"{cfg.flink.buffer_timeout_ms} ms")
    conf.set_string(
        "pipeline.jars", ";".join(jar.as_uri() for jar in (cfg.kafka_connector_jar, cfg.glue_jar))
    )
    conf.set_string("execution.checkpointing.dir", cfg.checkpoint_dir.as_uri())
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
        conf.set_string("execution.state-recovery.path", restore_from.as_uri())
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(cfg.flink.parallelism)
    env.enable_checkpointing(cfg.flink.checkpoint_interval_ms, CheckpointingMode.EXACTLY_ONCE)

    # source: event time = Kafka record timestamp = exchange time (set by the publisher)
    watermark_strategy = WatermarkStrategy.for_bounded_out_of_orderness(
        Duration.of_millis(cfg.flink.out_of_orderness_ms)
    ).with_idleness(Duration.of_millis(cfg.flink.idle_timeout_ms))
    kafka_source = _kafka_source(
        cfg, topics.events, group_id, bounded=bounded, start_offsets=start_offsets
    )
    ds = env.from_source(kafka_source, watermark_strategy, "events").uid("events-source")

    # transformations
    trader = Trader.load(cfg) if trading else None
    features = (
        _key_by_field0(ds)
        .process(StreamJobFunction(cfg, trader), output_type=Types.STRING())
        .name("book-features")
        .uid("book-features")
    )

    # sinks: one per output, each to its topic of cfg.topics (the sink's name says which)
    outputs: list[tuple[str, DataStream]] = [
        ("features", features),
        ("dead_letter", features.get_side_output(DEAD_LETTER_TAG)),
        ("stats", features.get_side_output(STATS_TAG)),
        ("quality", features.get_side_output(QUALITY_TAG)),
    ]
    if trading:
        outputs += [
            ("signals", features.get_side_output(SIGNALS_TAG)),
            ("orders", features.get_side_output(ORDERS_TAG)),
        ]
    for topic_field, stream in outputs:
        topic = getattr(topics, topic_field)
        stream.sink_to(_kafka_sink(cfg, topic)).name(f"{SINK_NAME_PREFIX}{topic}")
    return env


def latest_checkpoint(cfg: Config) -> Path | None:
    """The newest completed checkpoint (a ``chk-N`` directory with ``_metadata``) of any job."""
    done = [p.parent for p in cfg.checkpoint_dir.glob("*/chk-*/_metadata")]
    return max(done, key=lambda p: p.stat().st_mtime) if done else None


def run_stream_job(
    cfg: Config,
    *,
    bounded: bool,
    group_id: str = "bookstream-features",
    restore: Path | None = None,
    restore_latest: bool = False,
) -> None:
    """``bookstream stream-job``: build the job and execute it (until the bounded input ends,
    or until killed); ``restore_latest`` resumes from the newest retained checkpoint."""
    restore = restore or (latest_checkpoint(cfg) if restore_latest else None)
    if restore is not None:
        logger.info("restoring from %s", restore)
    env = build_stream_job(cfg, bounded=bounded, group_id=group_id, restore_from=restore)
    env.execute("bookstream-stream-job")


def main(argv: list[str] | None = None) -> int:
    """``python -m jobs.stream_job ARGS`` = ``bookstream stream-job ARGS``."""
    from jobs.cli import main as cli_main

    return cli_main(["stream-job", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
