"""``make bench``'s ablation ladder: the same events through Kafka -> Flink -> Kafka pipelines
that add one part at a time, so what bounds the stream job is a number, not a guess.

    java            Java only: source -> pass-through -> sink (the Flink ceiling here)
    java_keyed      + keyBy (network shuffle) + a Java keyed no-op
    python_noop     + a Python keyed no-op, one call per record (as the job was wired)
    legacy          the job as it was: one Python call per record, PyFlink side outputs (each a
                    Python identity map) and one sink per topic; trading on
    batched_noop    micro-batcher + a Python no-op per batch (one call per batch)
    batched_shuffle the job as it is, but behind a keyBy shuffle
    batched         the job as it is (build_stream_job; trading on, as the demo runs it)

Each rung is run in one process (one JVM), one after the other. Figures per rung: events/s
end to end (bounded job, incl. job start-up), steady events/s (Probe.java: first record read to
last record written, so start-up is out), CPU seconds of the Flink JVM (its embedded Python
included), of the broker JVM and of this client process, and the Flink JVM's CPU per thread
group (task thread, Kafka client threads, GC, JIT ...).
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from pyflink.common import Types
from pyflink.datastream import (
    DataStream,
    KeyedProcessFunction,
    OutputTag,
    StreamExecutionEnvironment,
)
from pyflink.datastream.connectors.base import DeliveryGuarantee
from pyflink.datastream.connectors.kafka import KafkaSink
from pyflink.java_gateway import get_gateway

from jobs.energy import descendant_pids, proc_cpu_s
from jobs.stream_job import (
    FIELD,
    RECORD,
    StreamJobFunction,
    build_stream_job,
    flink_client_properties,
    job_environment,
    kafka_sink,
    kafka_source,
    keyed_by_field0,
    micro_batched,
    parse_batch,
    routed_records,
)
from udfs.config import Config
from udfs.kafka_acl import ADMIN
from udfs.market.quality import flush
from udfs.pipeline import RecordSource, process_record
from udfs.schema import encode_record, encode_row
from udfs.strategy.trading import Trader, heartbeat

__all__ = ["RUNGS", "run_rung"]

RUNGS = (
    "java",
    "java_keyed",
    "python_noop",
    "legacy",
    "batched_noop",
    "batched_shuffle",
    "batched",
)


def thread_group(name: str) -> str:
    """A JVM thread's name without its numbers (``GC Thread#1`` and ``GC Thread#0`` are one
    group; the Flink task thread is named after its chained operators)."""
    import re

    return re.sub(r"[#\-_ ]?\d+$", "", re.sub(r"\s*\(\d+/\d+\)#?\d*", "", name)).strip()


class ThreadCpu:
    """CPU seconds per thread group of some processes while a rung runs: /proc/<pid>/task/*
    sampled every ``period`` s on a thread of this process (a thread that exits takes its
    figures with it, so the last sample before its end counts: figures are a lower bound by at
    most one period of each thread that ended)."""

    def __init__(self, pids: list[int], period: float = 0.2) -> None:
        import threading

        self.pids, self.period = pids, period
        self.first: dict[tuple[int, int], float] = {}
        self.last: dict[tuple[int, int], tuple[str, float]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="thread-cpu", daemon=True)

    def _sample(self) -> None:
        import os

        tick = os.sysconf("SC_CLK_TCK")
        for pid in self.pids:
            for task in Path(f"/proc/{pid}/task").glob("[0-9]*"):
                try:
                    stat = (task / "stat").read_text()
                    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
                    fields = stat.rsplit(")", 1)[1].split()
                    cpu = (int(fields[11]) + int(fields[12])) / tick
                except (OSError, ValueError, IndexError):
                    continue
                key = (pid, int(task.name))
                self.first.setdefault(key, cpu)
                self.last[key] = (comm, cpu)

    def _run(self) -> None:
        while not self.stop.wait(self.period):
            self._sample()

    def __enter__(self) -> ThreadCpu:
        self._sample()
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self._sample()

    def groups(self) -> dict[str, float]:
        """CPU seconds used during the run per thread group, largest first."""
        out: dict[str, float] = {}
        for key, (comm, cpu) in self.last.items():
            group = thread_group(comm)
            out[group] = out.get(group, 0.0) + cpu - self.first[key]
        return dict(sorted(((k, v) for k, v in out.items() if v > 0), key=lambda kv: -kv[1]))


class _PythonNoop(KeyedProcessFunction):
    """One call per record, one routed record out (ProvenanceDeserializer rows)."""

    def process_element(self, value: str, ctx: KeyedProcessFunction.Context) -> Iterator[str]:
        ts = ctx.timestamp()
        yield f"0{FIELD}{ctx.get_current_key()}{FIELD}{ts}{FIELD}{FIELD}{value}"


class _BatchedNoop(KeyedProcessFunction):
    """One call per batch, every record of it out as a routed record."""

    def process_element(self, value: str, ctx: KeyedProcessFunction.Context) -> Iterator[str]:
        key = ctx.get_current_key()
        yield RECORD.join(
            f"0{FIELD}{key}{FIELD}{'' if ts is None else ts}{FIELD}{FIELD}{raw}"
            for _p, _o, ts, _r, raw in parse_batch(value)
        )


_LEGACY_SEP = "\x1f"
_LEGACY_TAGS = {
    name: OutputTag(name, Types.STRING())
    for name in ("dead_letter", "stats", "signals", "orders", "quality")
}


class _Legacy(StreamJobFunction):
    """The stream function as it was before the micro-batcher: one call per record
    (``"<partition>:<offset>:<value>"``), every row yielded separately, all but features as
    PyFlink side outputs. Kept for the ladder's comparison only."""

    # the legacy function also yields PyFlink side outputs (tag, row), which the routed
    # StreamJobFunction it reuses the state of no longer does: a wider output, on purpose
    def process_element(  # type: ignore[override]
        self, value: str, ctx: KeyedProcessFunction.Context
    ) -> Iterator[str | tuple[OutputTag, str]]:
        assert self.snapshot is not None and self.log is not None, "open() sets the keyed state"
        key = ctx.get_current_key()
        a = value.index(":")
        b = value.index(":", a + 1)
        partition, offset, raw = int(value[:a]), int(value[a + 1 : b]), value[b + 1 :]
        state, result = process_record(
            self._state_of(key),
            key,
            raw,
            RecordSource(self.topic, partition, offset),
            self.feature_cfg,
            self.out_of_orderness_ms,
            self.trader,
            self.quality_cfg,
        )
        self.cache[key] = state
        n = self.log_len[key] + 1
        if n >= self.snapshot_every and state is not None:
            self.snapshot.update(state)
            self.log.clear()
            n = 0
        else:
            self.log.add(raw)
        self.log_len[key] = n
        ts = ctx.timestamp()
        if state is not None and ts is not None:
            fire_at = (ts // 60_000 + 1) * 60_000
            if self.stats_timer.get(key, -1) < fire_at:
                ctx.timer_service().register_event_time_timer(fire_at)
                self.stats_timer[key] = fire_at
        sep, tags = _LEGACY_SEP, _LEGACY_TAGS
        for row in result.features:
            yield key + sep + json.dumps(row, separators=(",", ":"))
        for signal in result.signals:
            yield tags["signals"], key + sep + encode_record(signal).decode()
        for order in result.orders:
            yield tags["orders"], key + sep + encode_record(order).decode()
        for dead in result.dead_letters:
            yield tags["dead_letter"], key + sep + dead.to_json()
        for quality_row in result.quality:
            yield tags["quality"], key + sep + encode_row(quality_row)

    def on_timer(  # type: ignore[override]  # side outputs, as process_element above
        self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext
    ) -> Iterator[tuple[OutputTag, str]]:
        key = ctx.get_current_key()
        state = self._state_of(key)
        if self.stats_timer.get(key) == timestamp:
            del self.stats_timer[key]
        if state is None:
            return
        if self.trader is not None and state.max_ts_event:
            beat = heartbeat(
                key, state.max_ts_event + self.trader.min_feed_latency_ns, state.book.last_seq
            )
            yield _LEGACY_TAGS["orders"], key + _LEGACY_SEP + encode_record(beat).decode()
        stats = {"instrument": state.instrument, "events_in": state.events_in}
        yield _LEGACY_TAGS["stats"], key + _LEGACY_SEP + json.dumps(stats)
        if timestamp >= 2**63 - 1:
            for row in flush(state.quality):
                yield _LEGACY_TAGS["quality"], key + _LEGACY_SEP + encode_row(row)


def _legacy_sink(cfg: Config, topic: str) -> KafkaSink:
    gateway = get_gateway()
    builder = (
        KafkaSink.builder()
        .set_bootstrap_servers(cfg.kafka.bootstrap_servers)
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        .set_property("linger.ms", "20")
        .set_property("compression.type", "lz4")
        .set_property("enable.idempotence", "true")
        .set_property("acks", "all")
    )
    for key, value in flink_client_properties(cfg, ADMIN).items():
        builder.set_property(key, value)
    builder._j_builder.setRecordSerializer(
        gateway.jvm.io.bookstream.flink.KeyedStringSerializer(topic)
    )
    return builder.build()


def rung_config(cfg: Config, prefix: str) -> Config:
    """A rung's config: ``cfg``'s events topic, every output topic its own (``prefix``)."""
    topics = dataclasses.replace(cfg.topics.for_run(prefix), events=cfg.topics.events)
    return dataclasses.replace(cfg, topics=topics)


def _build(cfg: Config, rung: str, prefix: str) -> StreamExecutionEnvironment:
    """The rung's job on an environment configured exactly like the stream job's."""
    from pyflink.common import Duration, WatermarkStrategy

    group = f"bench-{uuid.uuid4().hex[:6]}"
    cfg = rung_config(cfg, prefix)
    topic = cfg.topics.events
    outs = {
        name: getattr(cfg.topics, name) for name in ("features", "dead_letter", "stats", "quality")
    }
    if rung in ("batched", "batched_shuffle"):
        return build_stream_job(
            cfg,
            bounded=True,
            group_id=group,
            trading=True,
            shuffle=rung == "batched_shuffle",
        )
    env = job_environment(cfg)
    gateway = get_gateway()
    wm = WatermarkStrategy.for_bounded_out_of_orderness(
        Duration.of_millis(cfg.flink.out_of_orderness_ms)
    ).with_idleness(Duration.of_millis(cfg.flink.idle_timeout_ms))
    deser = "ProvenanceDeserializer" if rung in ("python_noop", "legacy") else "EventDeserializer"
    src = kafka_source(cfg, topic, group, bounded=True, start_offsets=None, deserializer=deser)
    ds = env.from_source(src, wm, "events")
    jt = Types.STRING().get_java_type_info()
    sink = kafka_sink(cfg, [outs["features"]])
    if rung == "java":
        out = DataStream(
            ds._j_data_stream.process(gateway.jvm.io.bookstream.flink.JavaPassThrough(), jt)
        )
        out.sink_to(sink)
    elif rung == "java_keyed":
        j_keyed = keyed_by_field0(ds, shuffle=True)._j_data_stream
        out = DataStream(j_keyed.process(gateway.jvm.io.bookstream.flink.JavaKeyedNoop(), jt))
        out.sink_to(sink)
    elif rung == "python_noop":
        out = keyed_by_field0(ds, shuffle=True).process(_PythonNoop(), output_type=Types.STRING())
        out.sink_to(sink)
    elif rung == "batched_noop":
        batches = micro_batched(ds, cfg.flink.batch_max_records, cfg.flink.batch_max_delay_ms)
        out = keyed_by_field0(batches, shuffle=False).process(
            _BatchedNoop(), output_type=Types.STRING()
        )
        routed_records(out).sink_to(sink)
    elif rung == "legacy":
        fn = _Legacy(cfg, Trader.load(cfg))
        out = keyed_by_field0(ds, shuffle=True).process(fn, output_type=Types.STRING())
        out.sink_to(_legacy_sink(cfg, outs["features"]))
        for name in ("dead_letter", "stats", "quality"):
            out.get_side_output(_LEGACY_TAGS[name]).sink_to(_legacy_sink(cfg, outs[name]))
        for name in ("signals", "orders"):
            out.get_side_output(_LEGACY_TAGS[name]).sink_to(
                _legacy_sink(cfg, getattr(cfg.topics, name))
            )
    else:
        raise ValueError(f"unknown rung {rung!r}; one of {RUNGS}")
    return env


def run_rung(cfg: Config, rung: str, prefix: str, total: int, broker_pid: int) -> dict:
    """Run one rung to the end of ``cfg``'s events topic (outputs to topics ``prefix.*``)."""
    import os

    env = _build(cfg, rung, prefix)
    probe = get_gateway().jvm.io.bookstream.flink.Probe
    probe.reset()
    me = os.getpid()
    jvms = descendant_pids(me)
    cpu0 = {"flink_jvm": sum(proc_cpu_s(p) for p in jvms), "broker_jvm": proc_cpu_s(broker_pid)}
    cpu0["client"] = proc_cpu_s(me)
    t = time.perf_counter()
    with ThreadCpu(jvms) as threads:
        env.execute(f"bench-{rung}")
    wall = time.perf_counter() - t
    cpu = {
        "flink_jvm": sum(proc_cpu_s(p) for p in jvms) - cpu0["flink_jvm"],
        "broker_jvm": proc_cpu_s(broker_pid) - cpu0["broker_jvm"],
        "client": proc_cpu_s(me) - cpu0["client"],
    }
    cells = probe.cells()
    read, first_read, last_write = cells.get(0), cells.get(1), cells.get(2)
    steady_s = (last_write - first_read) / 1e9 if last_write > first_read else None
    return {
        "rung": rung,
        "events": total,
        "read": read,
        "written": cells.get(3),
        "wall_s": wall,
        "events_per_s": total / wall,
        "steady_s": steady_s,
        "steady_events_per_s": read / steady_s if steady_s else None,
        "cpu_s": cpu,
        "cpu_s_per_1k_events": {k: 1000 * v / max(total, 1) for k, v in cpu.items()},
        # where the Flink JVM's CPU went: the task thread runs the chained source reader,
        # batcher, Python (thread mode), splitter and sink writer; the Kafka client threads,
        # GC and JIT beside it
        "flink_threads_cpu_s_per_1k_events": {
            k: 1000 * v / max(total, 1) for k, v in list(threads.groups().items())[:8]
        },
    }
