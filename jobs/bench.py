"""``make bench``: throughput and peak memory of each stage, measured in one run on the same
events, with the ratios that say where the time goes. Not a test: it prints figures.

    (a) core     the pure-Python book + features over decoded events, one process
    (a') record  the same plus decoding and validation of each serialised record
                 (udfs.pipeline.process_record: exactly what the Flink function runs per record)
    capture      (``jobs.bench_capture``) one Binance USD-M capture from its raw gzip lines to
                 the exact book + features (the adapter, the book, the features: no Kafka) in
                 level rows/s, and hftbacktest's own raw-capture converter on the same file in
                 the same process (warmed up: its numba compile is not counted); the CPU-time
                 ratio is ``core_over_hftbacktest``, the core's rate ``core_rows_per_s``
    (b) broker   Kafka -> Kafka copy of the same records with librdkafka (consume + produce):
                 the ceiling for any Kafka -> Kafka job on this machine
    (c) job      the Flink stream job, Kafka -> Flink -> Kafka, end to end (bounded run;
                 "steady" excludes JVM/job start-up, measured as the same job on an empty topic)
    latency      tick-to-order p50/p95/p99 of the trading job running live, at a stated input
                 rate (the shipped sample, paced; ``--latency-rate``)
    lake         a full LOBSTER day (AAPL, AMZN level 1 + GOOG level 10, 2012-06-21) through the
                 whole live path into Iceberg: rows/s of the history sink; replay events/s
                 from Iceberg through the same job compared with the live job's; the query
                 time of every ``sql/`` file on that history (``--no-lake`` skips it)
    feast        (``--feast``, on its own) the LOBSTER day into a lake of its own, then the
                 training-set build time over it; the trading job live with ``feast-push``
                 following its features: push rows/s while the job runs and freshness (tick
                 received -> readable through ``get_online_features``) p50/p99/max per hop
                 (job, sink, pusher wait, push, read) and end to end, and whether the job
                 kept up with the input; a bounded push of the whole topic (capacity);
                 online read of one instrument's vector p50/p99 with a profile of where the
                 time goes
    exec-sink    (``--exec-sink``, on its own; ``jobs.bench_exec``) the execution sink over the
                 full LOBSTER day's events and the orders the trading logic makes from them,
                 once per transaction cadence (``--exec-cadences``, ``execution.commit_every``):
                 orders and execution reports per second, CPU, how long a batch waits for its
                 commit; the smallest cadence within 90% of the best throughput is printed
    soak         (``--soak``, on its own) the full LOBSTER day once, then twice over (the
                 second copy a day later), through the stream job, the execution sink and the
                 history sink: peak RSS of each process at 1x and 2x (bounded state: flat)

Each stage runs in a subprocess of its own, so its peak RSS is its own (ru_maxrss of the child
plus, for (c), the VmHWM of the Flink JVM it started, whose embedded Python runs the function).
Targets from the issue are printed next to the figures; a missed target is reported, never
hidden.

Data: by default the sample (LOBSTER AAPL + Binance USD-M) plus, where ../shared/data exists, the
Binance USD-M 2024-08-08 capture (~600k events), so the job runs long enough to measure.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.bench_capture import print_capture, stage_capture
from jobs.bench_exec import (
    CADENCES,
    choose_cadence,
    print_exec_bench,
    stage_exec_publish,
    stage_exec_sink,
)
from udfs.config import PROJECT_ROOT, Config, TopicSpec, java_properties, load_config, topics_env
from udfs.kafka_acl import ADMIN

if TYPE_CHECKING:
    from pyflink.datastream import StreamExecutionEnvironment

    from udfs.config import FeatureConfig
    from udfs.market.adapters.sources import Source
    from udfs.schema import L2Event

__all__ = ["main"]

SHARED_USDM = PROJECT_ROOT.parent / "shared/data/binance/usdm/btcusdt_20240808.gz"
SHARED_LOBSTER = PROJECT_ROOT.parent / "shared/data/lobster"
LOBSTER_DAY = tuple(
    (
        SHARED_LOBSTER
        / f"LOBSTER_SampleFile_{sym}_2012-06-21_{lvl}"
        / f"{sym}_2012-06-21_34200000_57600000_message_{lvl}.csv",
        SHARED_LOBSTER
        / f"LOBSTER_SampleFile_{sym}_2012-06-21_{lvl}"
        / f"{sym}_2012-06-21_34200000_57600000_orderbook_{lvl}.csv",
    )
    for sym, lvl in (("AAPL", 1), ("AMZN", 1), ("GOOG", 10))
)
TARGETS = {
    "core": 1_000_000,
    "core/hftbacktest": 4.0,
    "job": 100_000,
    "job/broker": 0.5,
    "tick_to_order_p99_ms": 10.0,
}
LADDER = "java,java_keyed,python_noop,legacy,batched_noop,batched_shuffle,batched"


def _source_args(args: argparse.Namespace) -> list[str]:
    if args.binance or args.lobster:
        out = []
        for m, o in args.lobster or []:
            out += ["--lobster", m, o]
        for files in args.binance or []:
            out += ["--binance", *files]
        return out
    out = ["--sample"]
    if SHARED_USDM.is_file() and not args.sample_only:
        out += ["--binance", str(SHARED_USDM)]
    return out


def _source_from(argv: list[str]) -> Source:
    from udfs.market.adapters.sources import SAMPLE_BINANCE, SAMPLE_LOBSTER, Source

    src = Source()
    i = 0
    while i < len(argv):
        if argv[i] == "--sample":
            src.lobster.append(SAMPLE_LOBSTER)
            src.binance.append(list(SAMPLE_BINANCE))
            i += 1
        elif argv[i] == "--lobster":
            src.lobster.append((Path(argv[i + 1]), Path(argv[i + 2])))
            i += 3
        elif argv[i] == "--binance":
            j = i + 1
            files = []
            while j < len(argv) and not argv[j].startswith("--"):
                files.append(Path(argv[j]))
                j += 1
            src.binance.append(files)
            i = j
        else:
            raise SystemExit(f"bench: unknown source argument {argv[i]}")
    return src


# ---------------------------------------------------------------------------------------------
# stages (each run as `python -m jobs.bench --stage NAME ...` in a child process)


def core_pass(events: Iterable[L2Event], features: FeatureConfig) -> int:
    """Stage (a)'s loop, shared with ``jobs.bench_compiled``: every event through a fresh book
    and feature state per instrument (an event the book refuses is skipped, as the job does);
    returns the number of feature rows emitted. The ``udfs`` modules are imported at call time,
    so the pure or the compiled copy runs, whichever the interpreter resolves."""
    from udfs.market.book import BookError, OrderBook
    from udfs.market.features import FeatureState, on_event
    from udfs.schema import Kind

    books: dict[str, OrderBook] = {}
    feats: dict[str, FeatureState] = {}
    rows = 0
    for ev in events:
        book = books.get(ev.instrument)
        if book is None:
            book = books[ev.instrument] = OrderBook(ev.instrument)
            feats[ev.instrument] = FeatureState()
        try:
            book.apply(ev)
        except BookError:
            continue
        if (
            ev.kind is not Kind.BBO
            and on_event(feats[ev.instrument], book, ev, features) is not None
        ):
            rows += 1
    return rows


def stage_core(source_argv: list[str]) -> dict:
    cfg = load_config()
    events = list(_source_from(source_argv).events())
    best = 0.0
    rows = 0
    for _ in range(3):
        t = time.perf_counter()
        rows = core_pass(events, cfg.features)
        best = max(best, len(events) / (time.perf_counter() - t))
    return {"events": len(events), "features": rows, "events_per_s": best}


def stage_record(source_argv: list[str]) -> dict:
    from udfs.pipeline import RecordSource, process_record
    from udfs.schema import encode_event

    cfg = load_config()
    records = [
        (ev.instrument, encode_event(ev).decode()) for ev in _source_from(source_argv).events()
    ]
    src = RecordSource("bench", 0, 0)
    best = 0.0
    for _ in range(3):
        states: dict = {}
        t = time.perf_counter()
        for key, raw in records:
            states[key], _ = process_record(
                states.get(key), key, raw, src, cfg.features, cfg.flink.out_of_orderness_ms
            )
        best = max(best, len(records) / (time.perf_counter() - t))
    return {"events": len(records), "events_per_s": best}


def run_config(run: str) -> Config:
    """The configuration of one bench run: every topic of it the run's own (a bench never
    reads or writes a live topic)."""
    return load_config().for_run(run)


def stage_broker(run: str) -> dict:
    from confluent_kafka import Consumer

    from jobs.kafka_io import client_config, count_records, make_producer

    cfg = run_config(run)
    topic, copy_topic = cfg.topics.events, broker_copy_topic(cfg)
    total = count_records(cfg, topic)
    consumer = Consumer(
        client_config(
            cfg,
            {
                "group.id": f"bench-{uuid.uuid4().hex[:6]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "fetch.max.bytes": 52428800,
            },
        )
    )
    consumer.subscribe([topic])
    producer = make_producer(cfg)
    n = 0
    t = time.perf_counter()
    while n < total:
        for m in consumer.consume(num_messages=10000, timeout=1.0):
            if m.error():
                continue
            while True:
                try:
                    producer.produce(
                        copy_topic, value=m.value(), key=m.key(), timestamp=m.timestamp()[1]
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
            n += 1
        producer.poll(0)
    producer.flush(60)
    dt = time.perf_counter() - t
    consumer.close()
    return {"events": n, "events_per_s": n / dt, "wall_s": dt}


def broker_copy_topic(cfg: Config) -> str:
    """Where the broker stage copies the run's events to (a bench-only topic)."""
    return f"{cfg.topics.events}.copy"


def build_bench_job(
    cfg: Config, start_offsets: dict[int, int] | None = None
) -> StreamExecutionEnvironment:
    """The trading job (the ladder's ``batched`` rung) on ``cfg``'s topics, bounded."""
    from jobs.stream_job import build_stream_job

    return build_stream_job(
        cfg,
        bounded=True,
        group_id=f"bench-{uuid.uuid4().hex[:6]}",
        start_offsets=start_offsets,
        trading=True,
    )


def _broker_pid(cfg: Config) -> int:
    return _broker_pids(cfg)[0]


def _broker_pids(cfg: Config) -> list[int]:
    """The pid of each Kafka node of ``cfg``'s state directory (infra/kafka/start.sh)."""
    if cfg.kafka.brokers == 1:
        return [int((cfg.state_dir / "run" / "kafka.pid").read_text().split()[0])]
    return [
        int((cfg.state_dir / "kafka" / f"node-{i}" / "kafka.pid").read_text().split()[0])
        for i in range(1, cfg.kafka.brokers + 1)
    ]


def free_port_block(width: int) -> int:
    """A base port with ``width`` consecutive free ports on 127.0.0.1 (the bench's three
    Kafka nodes; tests/integration/test_broker_failover.py's too)."""
    import socket

    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        held: list[socket.socket] = []
        try:
            for port in range(base, base + width):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
        return base
    raise RuntimeError("bench: no block of free ports for the three Kafka nodes")


def brokers3(payload: Path, records: int) -> dict:
    """Kafka's perf tools (:func:`stage_broker_tools`, same records, same producer settings)
    against three KRaft nodes of this machine (infra/kafka/start.sh with ``kafka.brokers =
    3``: a state directory of the bench's own and free ports, the project's broker untouched),
    the topic replicated 3 times with ``min.insync.replicas`` 2: what replication costs next to
    the single broker's figure of the same run."""
    import shutil
    import tempfile

    from jobs.kafka_io import create_topics

    state = Path(tempfile.mkdtemp(prefix="bench-kafka3-"))
    (state / "jars").symlink_to(load_config().jars_dir)
    base = free_port_block(6)
    env = {
        **os.environ,
        "BOOKSTREAM_STATE_DIR": str(state),
        "BOOKSTREAM_KAFKA_BROKERS": "3",
        "BOOKSTREAM_KAFKA_PORT": str(base),
        "BOOKSTREAM_KAFKA_CONTROLLER_PORT": str(base + 1),
        "BOOKSTREAM_KAFKA_NODE_PORT_STEP": "2",
        "BOOKSTREAM_KAFKA_BOOTSTRAP": "",
    }
    script = PROJECT_ROOT / "infra" / "kafka"
    try:
        subprocess.run(["bash", str(script / "start.sh")], env=env, check=True)
        cfg3 = load_config(env={k: v for k, v in env.items() if k.startswith("BOOKSTREAM_")})
        topic = "bench.perf3"
        create_topics(
            cfg3,
            [TopicSpec(name=topic, partitions=cfg3.topics.partitions, retention_ms=-1)],
        )
        result = _run_stage(["broker_tools", topic, str(payload), str(records)], env=env)
        result["brokers"] = 3
        result["replication_factor"], result["min_insync_replicas"] = cfg3.replication()
        return result
    finally:
        subprocess.run(["bash", str(script / "stop.sh")], env=env, check=False)
        shutil.rmtree(state, ignore_errors=True)


def stage_ladder(run: str, rungs: str) -> dict:
    """The ablation ladder (``jobs.bench_ladder``): every rung on the run's events, one JVM,
    each rung writing to topics of its own."""
    from jobs.bench_ladder import run_rung
    from jobs.kafka_io import count_records

    cfg = run_config(run)
    total = count_records(cfg, cfg.topics.events)
    broker = _broker_pid(cfg)
    out = {}
    for rung in rungs.split(","):
        out[rung] = run_rung(cfg, rung, f"{run}.{rung}", total, broker)
        print(json.dumps(out[rung]), file=sys.stderr, flush=True)
    return {"events": total, "events_per_s": 0.0, "rungs": out}


def stage_cluster(run: str, parallelisms: str) -> dict:
    """The trading job on the Flink session cluster (``bookstream submit --bounded``) at each
    parallelism, on the run's events, outputs to topics of its own: events/s over the job's
    RUNNING -> FINISHED span (each subtask's Python start-up included: Flink reports no
    first-record time) and the CPU seconds of the JobManager, the TaskManagers (their Python
    runs inside, thread mode) and the broker. Starts the cluster unless it is up (stopped again
    only then)."""
    from jobs.cluster import TERMINAL_STATES, ClusterError, job_detail, overview, submit, wait_job
    from jobs.energy import proc_cpu_s
    from jobs.kafka_io import count_records, create_topics, delete_topics

    cfg = run_config(run)
    total = count_records(cfg, cfg.topics.events)
    try:
        overview(cfg)
        started = False
    except ClusterError:
        # as many one-slot TaskManagers as the highest parallelism asks for
        most = max(int(x) for x in parallelisms.split(","))
        subprocess.run(
            ["bash", "infra/flink/start.sh"],
            cwd=PROJECT_ROOT,
            env={**os.environ, "BOOKSTREAM_FLINK_CLUSTER_TASKMANAGERS": str(most)},
            check=True,
        )
        started = True

    def pids(kind: str) -> list[int]:
        path = cfg.flink_cluster_dir / "run" / f"flink-bookstream-{kind}.pid"
        return [int(x) for x in path.read_text().split()] if path.is_file() else []

    out: dict[str, dict] = {}
    try:
        for p in (int(x) for x in parallelisms.split(",")):
            if p > int(overview(cfg).get("slots-total", 0)):
                out[str(p)] = {"skipped": f"{p} slots needed, the cluster has fewer"}
                continue
            job_cfg = cfg.for_run(f"{run}.clu{p}")
            job_cfg = dataclasses.replace(
                job_cfg, topics=dataclasses.replace(job_cfg.topics, events=cfg.topics.events)
            )
            specs = [s for s in job_cfg.topics.specs() if s.name != cfg.topics.events]
            create_topics(job_cfg, specs)
            env = topics_env(job_cfg.topics)
            procs = {"jobmanager": pids("standalonesession"), "taskmanagers": pids("taskexecutor")}
            procs["broker_jvm"] = [_broker_pid(cfg)]
            cpu0 = {k: sum(proc_cpu_s(x) for x in v) for k, v in procs.items()}
            try:
                job = submit(
                    job_cfg,
                    ["--bounded", "--group-id", f"bench-clu{p}-{uuid.uuid4().hex[:6]}"],
                    parallelism=p,
                    env=env,
                )
                state = wait_job(cfg, job.job_id, TERMINAL_STATES, 3600)
                stamps = job_detail(cfg, job.job_id).get("timestamps", {})
                span_s = (stamps.get("FINISHED", 0) - stamps.get("RUNNING", 0)) / 1000
                cpu = {k: sum(proc_cpu_s(x) for x in v) - cpu0[k] for k, v in procs.items()}
                out[str(p)] = {
                    "parallelism": p,
                    "state": state,
                    "events": total,
                    "running_s": span_s,
                    "events_per_s": total / span_s if span_s > 0 else None,
                    "cpu_s": cpu,
                    "cpu_s_per_1k_events": {k: 1000 * v / max(total, 1) for k, v in cpu.items()},
                }
                print(json.dumps(out[str(p)]), file=sys.stderr, flush=True)
            finally:
                delete_topics(job_cfg, [s.name for s in specs])
    finally:
        if started:
            subprocess.run(["bash", "infra/flink/stop.sh"], cwd=PROJECT_ROOT, check=False)
    return {"events": total, "events_per_s": 0.0, "parallelism": out}


def stage_broker_tools(topic: str, payload_file: str, records: str) -> dict:
    """Kafka's own ProducerPerformance then ConsumerPerformance on ``topic``, records drawn from
    the bench's own serialised events (same sizes, same compressibility), producer settings as
    the publisher's (idempotent, acks=all, lz4, linger 20 ms); at least 500k records, so the
    tools' JVM start-up does not dominate. The ceiling is the lower of the two rates."""
    import re

    cfg = load_config()
    cp = str(cfg.jars_dir / "perf" / "*")
    n = int(records)
    java = ["java", "-Xmx1g", "-cp", cp]
    brokers = _broker_pids(cfg)
    from jobs.energy import proc_cpu_s

    def broker_cpu() -> float:
        return sum(proc_cpu_s(pid) for pid in brokers)

    # the passthrough (kafka.client) for the tools' Java clients: a 0600 file, no secret in argv
    client_file = cfg.state_dir / "run" / f"bench-client-{os.getpid()}.properties"
    client_file.parent.mkdir(parents=True, exist_ok=True)
    client_file.touch(mode=0o600)
    client_file.write_text(
        "".join(
            # a Java properties file: a backslash escapes, a newline ends the value
            f"{k}={v.replace(chr(92), chr(92) * 2).replace(chr(10), chr(92) + 'n')}\n"
            for k, v in java_properties(cfg.kafka_client_properties(ADMIN), shaded=False).items()
        )
    )
    cpu0 = broker_cpu()
    prod = subprocess.run(
        [
            *java,
            "org.apache.kafka.tools.ProducerPerformance",
            "--producer.config",
            str(client_file),
            "--topic",
            topic,
            "--num-records",
            str(n),
            "--throughput",
            "-1",
            "--payload-file",
            payload_file,
            "--producer-props",
            f"bootstrap.servers={cfg.kafka.bootstrap_servers}",
            "acks=all",
            "enable.idempotence=true",
            "compression.type=lz4",
            "linger.ms=20",
            "batch.size=262144",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    cpu_prod = broker_cpu() - cpu0
    last = [ln for ln in prod.stdout.splitlines() if "records sent" in ln][-1]
    rate_match = re.search(r"([\d.]+) records/sec", last)
    if rate_match is None:
        raise RuntimeError(f"bench: no records/sec in ProducerPerformance's output: {last!r}")
    prod_rate = float(rate_match.group(1))
    cpu0 = broker_cpu()
    cons = subprocess.run(
        [
            *java,
            "org.apache.kafka.tools.ConsumerPerformance",
            "--consumer.config",
            str(client_file),
            "--bootstrap-server",
            cfg.kafka.bootstrap_servers,
            "--topic",
            topic,
            "--messages",
            str(n),
            "--timeout",
            "60000",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    cpu_cons = broker_cpu() - cpu0
    lines = [ln for ln in cons.stdout.splitlines() if ln.strip()]
    header = [h.strip() for h in lines[-2].split(",")]
    values = dict(zip(header, (v.strip() for v in lines[-1].split(",")), strict=False))
    client_file.unlink(missing_ok=True)
    cons_rate = float(values["fetch.nMsg.sec"])
    return {
        "events": n,
        "events_per_s": min(prod_rate, cons_rate),
        "producer_events_per_s": prod_rate,
        "consumer_events_per_s": cons_rate,
        "broker_cpu_s": {"produce": cpu_prod, "consume": cpu_cons},
    }


HOPS = (
    "publish->read",
    "read->py_in",
    "py_in->feature",
    "feature->signal",
    "signal->order",
    "order->sink",
    "sink->consumer",
)
"""The tick-to-order path, hop by hop: the publisher's send (ts_recv), the source
deserialiser's read, the batch's entry into Python, the features computed, the traded signal,
the order's creation in Python, the Java sink serialiser, the consumer's receipt (wall clock,
one machine; the trace is udfs.latency's)."""


def stage_latency_reader(
    run: str, topic: str, out_path: str, ready_path: str, seconds: str
) -> dict:
    """A process of its own: reads the orders topic message by message (``poll``, no batch
    wait) from its end, and writes ``trigger_ts_recv hops received_ns`` per new order."""
    from confluent_kafka import Consumer, TopicPartition

    from jobs.kafka_io import client_config, end_offsets

    cfg = run_config(run)
    consumer = Consumer(
        client_config(
            cfg,
            {
                "group.id": f"bench-lat-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            },
        )
    )
    consumer.assign([TopicPartition(topic, p, hi) for p, hi in end_offsets(cfg, topic).items()])
    consumer.poll(0.5)  # connected before the clock starts
    Path(ready_path).touch()
    n = 0
    deadline = time.monotonic() + float(seconds)
    with open(out_path, "w") as out:
        while time.monotonic() < deadline:
            m = consumer.poll(0.1)
            if m is None or m.error():
                continue
            now = time.time_ns()
            value = m.value()
            if b'"action":"new"' not in value:
                continue
            order = json.loads(value)
            hops = dict(m.headers() or []).get("bookstream.hops", b"").decode()
            out.write(f"{order['trigger_ts_recv']} {hops} {now}\n")
            n += 1
    consumer.close()
    return {"events": n, "events_per_s": 0.0}


def stage_latency(run: str, rate_s: str, seconds_s: str, source_argv: list[str]) -> dict:
    """Tick-to-order latency: the trading job runs live (unbounded, its own topics) while the
    events are published at ``rate`` events/s for ``seconds`` with ``ts_recv`` set to the wall
    clock at publishing; each new order carries its trigger's ``ts_recv`` and, in a Kafka
    header, the trace of its hops; a separate process reads the orders message by message. The
    first 10 s are warm-up and dropped."""
    import signal as signals
    import tempfile
    from dataclasses import replace

    import numpy as np

    from jobs.kafka_io import count_records, create_topics, delete_topics, make_producer
    from udfs.schema import encode_event

    rate, seconds = float(rate_s), float(seconds_s)
    cfg = run_config(run)
    create_topics(cfg)
    events = list(_source_from(source_argv).events())
    warmup, events = events[:500], events[500 : 500 + int(rate * seconds)]
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobs.cli",
            "stream-job",
            "--group-id",
            f"bench-lat-{uuid.uuid4().hex[:6]}",
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, **topics_env(cfg.topics)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-lat-"))
    reader = None
    producer = make_producer(cfg, **{"linger.ms": 0})
    try:
        for ev in warmup:  # the job is up once these come out as features
            producer.produce(
                cfg.topics.events,
                key=ev.instrument,
                value=encode_event(ev),
                timestamp=ev.ts_event // 1_000_000,
            )
        producer.flush(30)
        deadline = time.monotonic() + 180
        while count_records(cfg, cfg.topics.features) == 0:
            if time.monotonic() > deadline or job.poll() is not None:
                raise RuntimeError(
                    "the trading job did not start (run `bookstream stream-job` to see why)"
                )
            time.sleep(0.5)
        reader = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobs.bench",
                "--stage",
                "latency_reader",
                run,
                cfg.topics.orders,
                str(tmp / "orders.txt"),
                str(tmp / "ready"),
                str(seconds + 60),
            ],
            cwd=PROJECT_ROOT,
            stdout=subprocess.DEVNULL,
        )
        while not (tmp / "ready").exists():
            if reader.poll() is not None:
                raise RuntimeError("the latency reader failed")
            time.sleep(0.1)
        t0 = time.perf_counter()
        t_start = time.time_ns()
        warm_until = t_start + 10_000_000_000
        for i, ev in enumerate(events):
            due = t0 + i / rate
            ahead = due - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
            ev = replace(ev, ts_recv=time.time_ns())
            producer.produce(
                cfg.topics.events,
                key=ev.instrument,
                value=encode_event(ev),
                timestamp=ev.ts_event // 1_000_000,
            )
            producer.poll(0)
        producer.flush(30)
        achieved = len(events) / (time.perf_counter() - t0)
        time.sleep(5)
    finally:
        if reader is not None:
            reader.send_signal(signals.SIGTERM)
            reader.wait(30)
        os.killpg(job.pid, signals.SIGKILL)
        job.wait(30)
        delete_topics(cfg, [spec.name for spec in cfg.topics.specs()])
    end_to_end, hops = [], []
    path = tmp / "orders.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    # the job falling behind the paced input shows as no order triggered after the warm-up
    # being out in time: then every order is counted, and the result says so
    after = [ln for ln in lines if int(ln.split(" ")[0]) >= warm_until]
    warmup_included = not after
    for line in after or lines:
        trigger_s, trace, received_s = line.split(" ")
        trigger, received = int(trigger_s), int(received_s)
        if trigger < t_start:  # a warm-up event's order: its ts_recv is the capture's
            continue
        end_to_end.append(received - trigger)
        stamps = [trigger, *(int(x) for x in trace.split(",") if x), received]
        if len(stamps) == len(HOPS) + 1:
            hops.append([b - a for a, b in itertools.pairwise(stamps)])

    def pct(values: list[int]) -> dict[str, float | None]:
        ms = np.array(values, dtype=float) / 1e6
        if not len(ms):
            return {q: None for q in ("p50", "p95", "p99", "max")}
        return {
            **{f"p{q}": float(np.percentile(ms, q)) for q in (50, 95, 99)},
            "max": float(ms.max()),
        }

    per_hop = {name: pct([h[i] for h in hops]) for i, name in enumerate(HOPS)}
    return {
        "events": len(events),
        "events_per_s": achieved,
        "seconds": seconds,
        "orders": len(end_to_end),
        "orders_read": len(lines),
        "warmup_included": warmup_included,
        "last_trigger_s": (max(int(ln.split(" ")[0]) for ln in lines) - t_start) / 1e9
        if lines
        else None,
        "rate_target": rate,
        **pct(end_to_end),
        "hops": per_hop,
    }


def stage_lake(run: str) -> dict:
    """Live path on a full LOBSTER day -> Iceberg; then replay and every sql/ file on it."""
    import statistics

    from jobs.demo import load_run, run_demo
    from jobs.replay import ReplayRange, replay
    from jobs.sql import SQL_DIR, run_sql
    from udfs.market.adapters.sources import Source

    cfg = run_config(run)
    live = run_demo(cfg, Source(lobster=list(LOBSTER_DAY)), progress=False)
    run_row = load_run(cfg, live["run_id"])
    rep = replay(
        cfg,
        ReplayRange(
            run_id=run_row["run_id"], offsets_from=run_row["from"], offsets_to=run_row["to"]
        ),
        progress=False,
        verify=True,
    )
    queries = {}
    for path in sorted(SQL_DIR.glob("*.sql")):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            run_sql(cfg, str(path), fmt="csv")
            times.append(time.perf_counter() - t)
        queries[path.name] = statistics.median(times)
    return {
        "events": live["published"],
        "events_per_s": live["job_events_per_s"],
        "history_rows": live["history_rows"],
        "history_rows_per_s": live["history_rows"] / live["history_s"],
        "live_job_events_per_s": live["job_events_per_s"],
        "replay_events_per_s": rep["events_per_s"],
        "replay_job_events_per_s": rep["events_replayed"] / rep["job_s"],
        "replay_identical": rep["identical"],
        "orders_live": rep["orders_live"],
        "orders_identical": rep["orders_identical"],
        "fills_live": rep["fills_live"],
        "fills_identical": rep["fills_identical"],
        "first_divergence": rep["first_divergence"],
        "query_s": queries,
    }


DAY_NS = 86_400 * 1_000_000_000


def _lobster_day_copies(copies: int) -> Iterator[L2Event]:
    """The full LOBSTER day ``copies`` times over, copy k moved k days later (exchange and
    receive times) with its sequence numbers after the previous copy's: one longer market, not
    the same records again (which the job would refuse as duplicates)."""
    import dataclasses

    from udfs.market.adapters.sources import Source

    seq_step = 10**9
    for k in range(copies):
        for ev in Source(lobster=list(LOBSTER_DAY)).events():
            if k == 0:
                yield ev
            else:
                yield dataclasses.replace(
                    ev,
                    ts_event=ev.ts_event + k * DAY_NS,
                    ts_recv=ev.ts_recv + k * DAY_NS,
                    seq=ev.seq + k * seq_step,
                    seq_first=ev.seq_first + k * seq_step if ev.seq_first else 0,
                    seq_prev=ev.seq_prev + k * seq_step if ev.seq_prev else 0,
                )


def stage_soak_publish(copies: str) -> dict:
    from jobs.kafka_io import DeliveryErrors, as_role, create_topics, make_producer
    from jobs.publish import produce_events

    cfg = load_config()
    create_topics(cfg)  # as the super user; each soak stage then as its own principal
    with as_role("publisher"):
        producer = make_producer(cfg)
    errors = DeliveryErrors()
    published = produce_events(
        producer, cfg.topics.events, _lobster_day_copies(int(copies)), errors, progress=False
    )
    errors.check(cfg, producer.flush(120))
    return {"events": published}


def stage_soak_job(group: str) -> dict:
    from jobs.kafka_io import count_records
    from jobs.stream_job import build_stream_job

    cfg = load_config()
    t = time.perf_counter()
    build_stream_job(cfg, bounded=True, group_id=group).execute("bookstream-soak")
    return {
        "wall_s": time.perf_counter() - t,
        "features": count_records(cfg, cfg.topics.features),
        "orders": count_records(cfg, cfg.topics.orders),
        "dead_letters": count_records(cfg, cfg.topics.dead_letter),
    }


def stage_soak_exec(group: str) -> dict:
    from jobs.execution_sink import run_sink
    from jobs.kafka_io import as_role

    cfg = load_config()
    t = time.perf_counter()
    with as_role("exec-sink"):
        res = run_sink(cfg, group=group, bounded=True)
    return {
        "wall_s": time.perf_counter() - t,
        "inputs": res.inputs,
        "outputs": res.outputs,
        "fills": res.stats.get("fills", 0),
        "read_pauses": res.read_pauses,
    }


def stage_soak_history() -> dict:
    from jobs.history_sink import run_history_sink
    from jobs.kafka_io import as_role

    cfg = load_config()
    with as_role("history-sink"):
        res = run_history_sink(cfg, bounded=True)
    return {"wall_s": res.wall_s, "rows": res.total_rows, "commits": res.commits}


def soak(cfg: Config, run: str, copies_list: tuple[int, ...] = (1, 2)) -> dict:
    """The full LOBSTER day, ``copies`` times over for each number in ``copies_list``, through
    the stream job, the execution sink and the history sink (each a process of its own, on
    topics and a lake of their own): peak RSS per process. Bounded state means the figures stay
    flat from 1x to 2x; growth says something keeps every record."""
    import shutil

    from jobs.kafka_io import delete_topics
    from udfs.config import load_config as load

    results: dict[str, dict] = {}
    for copies in copies_list:
        root = cfg.state_dir / "bench" / f"{run}.soak{copies}"
        env = {
            **topics_env(cfg.topics.for_run(f"{run}.soak{copies}")),
            "BOOKSTREAM_LAKE_ROOT": str(root / "lake"),
            "BOOKSTREAM_FLINK_CHECKPOINT_DIR": str(root / "checkpoints"),
        }
        try:
            r = {
                "publish": _run_stage(["soak-publish", str(copies)], env=env),
                "stream_job": _run_stage(["soak-job", f"{run}.soak{copies}.job"], env=env),
                "execution_sink": _run_stage(["soak-exec", f"{run}.soak{copies}.exec"], env=env),
                "history_sink": _run_stage(["soak-history"], env=env),
            }
        finally:
            lcfg = load(env={**os.environ, **env})
            delete_topics(lcfg, [spec.name for spec in lcfg.topics.specs()])
            shutil.rmtree(root, ignore_errors=True)
            for leftover in (cfg.state_dir / "exec-sink").glob(f"{run}.soak{copies}.exec*"):
                leftover.unlink()
        results[f"{copies}x"] = r
        print(f"\nsoak {copies}x: {r['publish']['events']:,} events", flush=True)
        for name, fig in r.items():
            print(
                f"  {name:<16} peak RSS {fig['peak_rss_mb']:>8.0f} MB  "
                f"{json.dumps({k: v for k, v in fig.items() if k != 'peak_rss_mb'})}",
                flush=True,
            )
    print(json.dumps({"soak": results}, default=float), flush=True)
    return results


def exec_bench(cfg: Config, run: str, cadences: tuple[int, ...] = CADENCES) -> dict:
    """The execution sink over the full LOBSTER day's backlog once per transaction cadence
    (``jobs.bench_exec``), on topics of its own; printed, then the topics and the sinks' state
    files removed."""
    from jobs.kafka_io import delete_topics
    from udfs.config import load_config as load

    env = topics_env(cfg.topics.for_run(f"{run}.exec"))
    load_before = os.getloadavg()
    day = json.dumps([[str(m), str(o)] for m, o in LOBSTER_DAY])
    try:
        pub = _run_stage(["exec-publish", day], env=env)
        runs = {n: _run_stage(["exec-sink", f"{run}.exec.{n}", str(n)], env=env) for n in cadences}
    finally:
        ecfg = load(env={**os.environ, **env})
        delete_topics(ecfg, [spec.name for spec in ecfg.topics.specs()])
        for leftover in (cfg.state_dir / "exec-sink").glob(f"{run}.exec.*"):
            leftover.unlink()
    r = {
        "publish": pub,
        "runs": runs,
        "chosen": choose_cadence(runs),
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }
    print_exec_bench(r)
    print(json.dumps({"exec_sink": r}, default=float), flush=True)
    return r


# --- Feast (issue 12 §7) ---------------------------------------------------------------------

FEAST_REFS = [
    *(
        f"book_features:{f}"
        for f in (
            "best_bid_px", "best_ask_px", "spread_px", "mid_px", "microprice_px",
            "bid_size_qty", "ask_size_qty", "imbalance_1", "imbalance_2", "imbalance_3",
            "bid_depth_qty", "ask_depth_qty", "ofi", "ts_event", "ts_avail",
        )
    ),
    *(
        f"window_features:{f}"
        for f in ("rv", "ofi_window", "trade_volume_qty", "trade_signed_volume_qty", "trade_count")
    ),
]  # fmt: skip


def _pct_ms(values_ns: list[int] | list[float]) -> dict[str, float | None]:
    import numpy as np

    ms = np.asarray(values_ns, dtype=float) / 1e6
    if not len(ms):
        return {"n": 0, "p50": None, "p99": None, "max": None}
    return {
        "n": len(ms),
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "max": float(ms.max()),
    }


FRESHNESS_STAMPS = ("received", "processed", "on_topic", "read_by_pusher", "pushed", "readable")
"""The stamps of one freshness sample, in order, all on this machine's wall clock (ns): the
event's ``ts_recv`` (the bench's publish), the feature row's ``ts_proc`` (the job computed
it), the features topic's log-append time (the broker stored it; ms, so this stamp can read
up to 1 ms early), the pusher's read, the return of its Feast push, the poller's first
``get_online_features`` that returned the value."""

FRESHNESS_HOPS = ("job", "sink", "pusher_wait", "push", "read")
"""The hops between consecutive :data:`FRESHNESS_STAMPS`: job = source read, queueing behind
the task thread, micro-batch and features; sink = the trading stage after the features, the
routed output and the Kafka producer to the broker's append; pusher_wait = on the topic until
the pusher's read (its poll timeout, or it was busy pushing); push = decode + Feast's push to
Redis; read = push returned to the poller's first sight (its poll interval; can be slightly
negative: the value is readable before the push call returns)."""


def freshness_samples(
    seen: dict[tuple[str, int], int], pushes: list[dict[str, Any]], since_ns: int
) -> list[tuple[int, ...]]:
    """Join the poller's first sight of each ``(instrument, ts_event)`` value (``seen``) with
    the pusher's trace (``jobs.feast_store.trace_line`` records, in push order): one tuple of
    :data:`FRESHNESS_STAMPS` per value seen whose event was received at or after ``since_ns``
    (the paced input; the warm-up's ``ts_recv`` are the file's). A value pushed more than once
    (a replay) counts from its first push. Sorted by receipt."""
    first: dict[tuple[str, int], tuple[int, ...]] = {}
    for push in pushes:
        for inst, ts_event, ts_recv, ts_proc, topic_ms in push["newest"]:
            first.setdefault(
                (inst, ts_event),
                (ts_recv, ts_proc, topic_ms * 1_000_000, push["read_ns"], push["pushed_ns"]),
            )
    samples = [
        (*stamps, readable)
        for key, readable in seen.items()
        if (stamps := first.get(key)) is not None and stamps[0] >= since_ns
    ]
    return sorted(samples)


def freshness_hops(samples: list[tuple[int, ...]]) -> dict[str, Any]:
    """p50/p99/max (ms) of each hop of :data:`FRESHNESS_HOPS` and end to end (received ->
    readable) over ``samples`` (:func:`freshness_samples`), and ``n``."""
    out: dict[str, Any] = {"n": len(samples)}
    for i, hop in enumerate(FRESHNESS_HOPS):
        out[hop] = _pct_ms([s[i + 1] - s[i] for s in samples])
    out["end_to_end"] = _pct_ms([s[-1] - s[0] for s in samples])
    return out


def push_rate(pushes: list[dict[str, Any]], since_ns: int) -> dict[str, Any]:
    """The pusher while the job ran: the pushes whose read came at or after ``since_ns`` (the
    paced input's start: the warm-up and the sleep before it are out), rows read per second of
    their span (first read -> last push returned), Redis writes (one per instrument per push),
    and the share of that span the pusher was busy reading + pushing (the rest it waited for
    rows: 1.0 would mean the pusher itself is the bound)."""
    window = [p for p in pushes if p["read_ns"] >= since_ns]
    if not window:
        return {"pushes": 0, "rows": 0, "span_s": 0.0, "rows_per_s": None, "busy_share": None}
    span_ns = max(1, window[-1]["pushed_ns"] - window[0]["read_ns"])
    rows = sum(p["rows"] for p in window)
    return {
        "pushes": len(window),
        "rows": rows,
        "redis_writes": sum(len(p["newest"]) for p in window),
        "span_s": span_ns / 1e9,
        "rows_per_s": rows / (span_ns / 1e9),
        "rows_per_push": rows / len(window),
        "push_ms": _pct_ms([p["pushed_ns"] - p["read_ns"] for p in window]),
        "busy_share": sum(p["pushed_ns"] - p["read_ns"] for p in window) / span_ns,
    }


FEAST_POLL_S = 0.01
"""The freshness poller's interval between two ``get_online_features`` calls."""
FEAST_DRAIN_CAP_S = 300.0
"""After the paced input, the longest the stage waits for its last values to be readable
(reported when reached: the figures then miss the values never seen)."""


def _log_append_time(cfg: Config, topic: str) -> None:
    """The bench's own ``topic`` stamps each record with the broker's append time (not the
    exchange time the job sets): the on-topic stamp of the freshness hops."""
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
    )

    from jobs.kafka_io import client_config

    admin = AdminClient(client_config(cfg, {}, ADMIN))
    entry = ConfigEntry(
        "message.timestamp.type",
        "LogAppendTime",
        incremental_operation=AlterConfigOpType.SET,
    )
    resource = ConfigResource("topic", topic, incremental_configs=[entry])
    for fut in admin.incremental_alter_configs([resource]).values():
        fut.result()


def _wait_readable(
    cfg: Config, job_offsets: Any, pusher_offsets: Any, end_ns: int
) -> dict[str, Any]:
    """Wait until every feature row of the input had its chance to be seen: the job has
    committed the offsets of the whole input (its sink flushed before: all its rows are on the
    topic), then the pusher has committed the features topic's end (it commits after its push
    returned: Redis holds its last write), then a few more polls. Not "the last row's value is
    readable": Feast's Redis store drops a write whose event time (``ts_avail``) is not newer
    than the stored one, so the last row of an instrument may never be. At most
    :data:`FEAST_DRAIN_CAP_S`; the seconds after the input's end (``end_ns``) each step took."""
    drain: dict[str, Any] = {"cap_s": FEAST_DRAIN_CAP_S, "cap_hit": False}
    cap = time.monotonic() + FEAST_DRAIN_CAP_S
    job_done = False
    while time.monotonic() < cap:
        if not job_done and _caught_up(cfg, job_offsets, cfg.topics.events):
            job_done = True
            drain["job_caught_up_s"] = (time.time_ns() - end_ns) / 1e9
        if job_done and _caught_up(cfg, pusher_offsets, cfg.topics.features):
            drain["all_pushed_s"] = (time.time_ns() - end_ns) / 1e9
            time.sleep(50 * FEAST_POLL_S)  # the poller's sight of the last writes
            return drain
        time.sleep(0.2)
    drain["cap_hit"] = True
    return drain


def _wait_caught_up(cfg: Config, pusher: subprocess.Popen, pusher_offsets: Any) -> float:
    """Seconds until the pusher has committed every row of the features topic so far (at
    most 180 s, or it exited: an error)."""
    warm = time.monotonic()
    while not _caught_up(cfg, pusher_offsets, cfg.topics.features):
        if time.monotonic() - warm > 180 or pusher.poll() is not None:
            raise RuntimeError("feast-push did not catch up with the warm-up rows")
        time.sleep(0.5)
    return time.monotonic() - warm


def _caught_up(cfg: Config, group_offsets: Any, topic: str) -> bool:
    """Whether the group of consumer ``group_offsets`` has committed the end of ``topic``
    (the job: on a checkpoint, after its sink flushed; the pusher: after each push)."""
    from confluent_kafka import TopicPartition

    from jobs.kafka_io import committed_offsets, topic_end_offsets

    ends = topic_end_offsets(cfg, topic)
    got = committed_offsets(group_offsets, [TopicPartition(topic, p) for p in ends])
    # a partition with nothing to read may have no commit at all (offset < 0)
    return all(max(tp.offset, ends[tp.partition][0]) >= ends[tp.partition][1] for tp in got)


def _lobster_head(out_dir: Path, lines: int) -> list[tuple[Path, Path]]:
    """The first ``lines`` messages of each instrument of the LOBSTER day (message and
    orderbook files are line-aligned); 0: the whole day, the files themselves."""
    if lines <= 0:
        return [(Path(m), Path(o)) for m, o in LOBSTER_DAY]
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = []
    for m, o in LOBSTER_DAY:
        pair = []
        for src in (m, o):
            dst = out_dir / src.name
            with src.open() as fin, dst.open("w") as fout:
                fout.writelines(itertools.islice(fin, lines))
            pair.append(dst)
        pairs.append((pair[0], pair[1]))
    return pairs


def _feast_apply(cfg: Config, repo: Path) -> None:
    from jobs.feast_store import feast_env

    applied = subprocess.run(
        [str(Path(sys.executable).parent / "feast"), "-c", str(repo), "apply"],
        cwd=PROJECT_ROOT,
        env={**os.environ, **feast_env(cfg)},
        capture_output=True,
        text=True,
    )
    if applied.returncode != 0:
        raise RuntimeError(f"feast apply failed:\n{applied.stderr[-4000:]}")


def _feast_training_set(base: Config, run: str, day: list[tuple[Path, Path]], work: Path) -> dict:
    """The day through the live path into the lake, then ``bookstream features training-set``
    over its whole span in a process of its own: its build time and peak RSS (``wait4``)."""
    import pyarrow.parquet as pq

    from jobs.demo import run_demo
    from jobs.feast_store import export_offline
    from jobs.kafka_io import delete_topics
    from jobs.training_set import TrainingSetRequest
    from udfs.market.adapters.sources import Source

    cfg = base.for_run(f"{run}.day")
    try:
        live = run_demo(cfg, Source(lobster=day), progress=False)
    finally:
        delete_topics(cfg, [spec.name for spec in cfg.topics.specs()])
    t = time.perf_counter()
    snap = export_offline(cfg)
    export_s = time.perf_counter() - t
    ts = pq.read_table(snap["parquet"], columns=["ts_event"])["ts_event"].to_numpy()
    start_ns, end_ns = int(ts.min()), int(ts.max()) + 1
    argv = [sys.executable, "-m", "jobs.cli", "features", "training-set", "--from",
            str(start_ns), "--to", str(end_ns), "--step-ms", "1000",
            "--out", str(work / "train.parquet")]  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    said_path, complaint_path = work / "training_set.out", work / "training_set.err"
    t = time.perf_counter()
    with said_path.open("w") as said_file, complaint_path.open("w") as complaint_file:
        # files, not pipes: wait4 reaps the child itself (its own peak RSS, not a sum)
        child = subprocess.Popen(argv, cwd=PROJECT_ROOT, stdout=said_file, stderr=complaint_file)
        _pid, status, usage = os.wait4(child.pid, 0)
    wall_s = time.perf_counter() - t
    child.returncode = os.waitstatus_to_exitcode(status)
    said, complaint = said_path.read_text(), complaint_path.read_text()
    if child.returncode != 0 or not said.strip():
        raise RuntimeError(f"training-set failed ({child.returncode}):\n{complaint[-4000:]}")
    summary = json.loads(said.strip().splitlines()[-1])
    return {
        "events": live["published"],
        "feature_rows": snap["rows"],
        "entity_rows": summary["rows"],
        "export_s": export_s,
        "build_s": summary["seconds"],
        "wall_s": wall_s,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # kB on Linux
        "chunk_s": TrainingSetRequest.chunk_s,
        "missing": summary["missing"],
        "span_s": (end_ns - start_ns) / 1e9,
    }


def _feast_online_read(cfg: Config, instrument: str) -> dict:
    """get_online_features of one instrument's vector: 500 warm-up, 5,000 timed (wall and
    on-CPU time of the reading thread: the difference is waiting, for Redis or for a core),
    then a cProfile of 500 reads (where the time goes)."""
    import cProfile
    import pstats

    from jobs.feast_store import open_store

    store = open_store(cfg)
    row = [{"instrument": instrument}]

    def read() -> dict:
        return store.get_online_features(features=FEAST_REFS, entity_rows=row).to_dict()

    for _ in range(500):
        read()
    lat, cpu = [], []
    for _ in range(5000):
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        read()
        cpu.append(time.thread_time_ns() - c0)
        lat.append(time.perf_counter_ns() - t0)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(500):
        read()
    prof.disable()
    stats = pstats.Stats(prof)
    top = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:12]  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    return {
        "features": len(FEAST_REFS),
        "instrument": instrument,
        **_pct_ms(lat),
        "cpu_ms": _pct_ms(cpu),
        "profile_tottime_share": {
            f"{Path(f).name}:{ln}:{fn}": round(v[2] / total, 3) for (f, ln, fn), v in top
        },
        "profile_ms_per_read": total / 500 * 1000,
    }


def stage_feast(run: str, day_lines_s: str, rate_s: str, seconds_s: str) -> dict:
    """Feast figures on a Feast project and a lake of their own (env of the parent):

    1. training set: the LOBSTER day (or its first ``day_lines`` messages per instrument)
       through the live path into the lake (``run_demo``), then the wall time of
       ``build_training_set`` over the whole span, as known at, 1 s grid (incl. the export);
    2. push and freshness: the trading job live, ``bookstream feast-push --trace`` following
       its features topic (log-append timestamps), the day's events published at ``rate``/s
       for ``seconds`` with ``ts_recv`` = wall clock; a poller calls ``get_online_features``
       for the day's instruments every :data:`FEAST_POLL_S` until every row has been pushed
       (at most :data:`FEAST_DRAIN_CAP_S`, reported if reached; :func:`_wait_readable`): each
       value seen is a sample, split into :data:`FRESHNESS_HOPS` by the pusher's trace; the
       pusher's rows/s while the job runs (:func:`push_rate`); then a bounded ``feast-push``
       of the whole topic: push capacity in rows/s;
    3. online read: ``get_online_features`` of one instrument's 20 features, 500 warm-up
       then 5,000 timed reads (wall and on-CPU), and a cProfile of 500 reads.
    """
    import signal as signals
    import threading
    from dataclasses import replace

    from jobs.feast_store import PUSHER_GROUP, feast_env, open_store
    from jobs.kafka_io import (
        count_records,
        create_topics,
        delete_topics,
        make_consumer,
        make_producer,
    )
    from udfs.market.adapters.sources import Source
    from udfs.schema import encode_event

    day_lines, rate, seconds = int(day_lines_s), float(rate_s), float(seconds_s)
    base = load_config()
    work = base.state_dir / "bench" / run
    _feast_apply(base, base.feast_repo)
    out: dict[str, Any] = {}

    # 1. the day into the lake, then the training set
    day = _lobster_head(work / "lobster", day_lines)
    out["training_set"] = _feast_training_set(base, run, day, work)
    out["training_set"]["day_lines_per_instrument"] = day_lines or None

    # 2. push while the job runs, freshness
    cfg = base.for_run(f"{run}.live")
    create_topics(cfg)
    _log_append_time(cfg, cfg.topics.features)
    events = list(Source(lobster=day).events())
    warmup, events = events[:500], events[500 : 500 + int(rate * seconds)]
    instruments = sorted({ev.instrument for ev in events})
    child_env = {**os.environ, **topics_env(cfg.topics), **feast_env(cfg)}
    group = f"bench-feast-{run}"
    job = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "stream-job", "--group-id", group],
        cwd=PROJECT_ROOT,
        env=child_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    pusher = None
    trace_path = work / "feast-push.trace"
    producer = make_producer(cfg, **{"linger.ms": 0})
    seen: dict[tuple[str, int], int] = {}
    polls: list[int] = []
    stop, polling = threading.Event(), threading.Event()

    def poll_online() -> None:
        poll_store = open_store(cfg)
        rows = [{"instrument": i} for i in instruments]
        while not stop.is_set():
            t0 = time.perf_counter_ns()
            got = poll_store.get_online_features(
                features=["book_features:ts_event"], entity_rows=rows
            ).to_dict()
            now = time.time_ns()
            polls.append(time.perf_counter_ns() - t0)
            for inst, ts_event in zip(got["instrument"], got["ts_event"], strict=True):
                if ts_event is not None:
                    seen.setdefault((inst, int(ts_event)), now)
            polling.set()
            # a poll every ~POLL_S: the sight's granularity, without a spinning thread taking
            # a core from the job on a small machine
            stop.wait(FEAST_POLL_S)

    poller = threading.Thread(target=poll_online, daemon=True)
    # they read the job's and the pusher's committed offsets, join no group
    job_offsets, pusher_offsets = make_consumer(cfg, group), make_consumer(cfg, PUSHER_GROUP)
    try:
        for ev in warmup:
            producer.produce(cfg.topics.events, key=ev.instrument, value=encode_event(ev),
                             timestamp=ev.ts_event // 1_000_000)  # fmt: skip
        producer.flush(30)
        deadline = time.monotonic() + 180
        while count_records(cfg, cfg.topics.features) == 0:
            if time.monotonic() > deadline or job.poll() is not None:
                raise RuntimeError("the trading job did not start")
            time.sleep(0.5)
        pusher = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", "feast-push", "--trace", str(trace_path)],
            cwd=PROJECT_ROOT,
            env=child_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # the pusher's start (Feast import, registry) and its catch-up on the warm-up rows:
        # the paced input starts once it has committed them (a fixed sleep was too short on
        # a loaded machine: the input's first rows then waited for the pusher to start)
        pusher_ready_s = _wait_caught_up(cfg, pusher, pusher_offsets)
        # the poller's store opened and polling before the input (its start, the Feast
        # registry's load, took seconds at load 10: the first values went unseen)
        poller.start()
        if not polling.wait(180):
            raise RuntimeError("the freshness poller did not start")
        t0 = time.perf_counter()
        start_ns = time.time_ns()
        for i, ev in enumerate(events):
            ahead = t0 + i / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
            ev = replace(ev, ts_recv=time.time_ns())
            producer.produce(cfg.topics.events, key=ev.instrument, value=encode_event(ev),
                             timestamp=ev.ts_event // 1_000_000)  # fmt: skip
            producer.poll(0)
        producer.flush(30)
        end_ns = time.time_ns()
        achieved = len(events) / (time.perf_counter() - t0)
        # until the value of the last feature row of each instrument is readable: the job has
        # committed the offsets of the whole input (its sink flushed before), then its last
        # row per instrument on the topic is what the poller must see
        drain = _wait_readable(cfg, job_offsets, pusher_offsets, end_ns)
        stop.set()
        poller.join(30)
        pusher.send_signal(signals.SIGTERM)
        try:
            said, complaint = pusher.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            pusher.kill()
            said, complaint = pusher.communicate()
        if not said.strip():
            raise RuntimeError(f"feast-push gave no summary:\n{complaint[-4000:]}")
        follow = json.loads(said.strip().splitlines()[-1])
        features = count_records(cfg, cfg.topics.features)
        t = time.perf_counter()
        drained = subprocess.run(
            [sys.executable, "-m", "jobs.cli", "feast-push", "--bounded"],
            cwd=PROJECT_ROOT,
            env=child_env,
            capture_output=True,
            text=True,
        )
        drain_wall = time.perf_counter() - t
        bounded = json.loads(drained.stdout.strip().splitlines()[-1])
    finally:
        stop.set()
        job_offsets.close()
        pusher_offsets.close()
        if pusher is not None and pusher.poll() is None:
            pusher.kill()
        os.killpg(job.pid, signals.SIGKILL)
        job.wait(30)
        delete_topics(cfg, [spec.name for spec in cfg.topics.specs()])
    pushes = [json.loads(line) for line in trace_path.read_text().splitlines() if line]
    samples = freshness_samples(seen, pushes, start_ns)
    last_proc = max((s[1] for s in samples), default=0)
    out["push"] = {
        "events": len(events),
        "events_per_s": achieved,
        "input_s": (end_ns - start_ns) / 1e9,
        "feature_rows": features,
        "drain": drain,
        "follow": follow,
        "push_poll_ms": cfg.feast.push_poll_ms,
        "pusher_ready_s": pusher_ready_s,
        "while_job_runs": push_rate(pushes, start_ns),
        # the job's own pace: its last row of the input (ts_proc of the newest value seen)
        # against the input's span; below the input rate: the job is behind
        "job_events_per_s": len(events) / max(1e-9, (last_proc - start_ns) / 1e9)
        if last_proc
        else None,
        "bounded": bounded,
        "bounded_rows_per_s": bounded["read"] / bounded["seconds"],
        "bounded_wall_s": drain_wall,
        "freshness": freshness_hops(samples),
        "poll_ms": _pct_ms(polls),
        "poll_interval_ms": FEAST_POLL_S * 1000,
    }

    # 3. online read of one instrument's feature vector
    out["online_read"] = _feast_online_read(cfg, instruments[0])
    return out


# ---------------------------------------------------------------------------------------------


def _run_stage(argv: list[str], env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.bench", "--stage", *argv],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"bench stage {argv[0]} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _children_peak_rss_mb() -> float:
    """Peak RSS (VmHWM) of this process's live children: the Flink JVM the PyFlink gateway
    started, which has not exited yet when the stage reports."""
    total = 0.0
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[1] != me:
                continue
            for line in (stat.parent / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
        except (OSError, IndexError, ValueError):
            continue
    return total


def _run_stage_here(argv: list[str]) -> int:
    name, rest = argv[0], argv[1:]
    stages: dict[str, Callable[..., dict[str, Any]]] = {
        "core": stage_core,
        "capture": stage_capture,
        "record": stage_record,
        "broker": stage_broker,
        "ladder": stage_ladder,
        "cluster": stage_cluster,
        "broker_tools": stage_broker_tools,
        "latency": stage_latency,
        "latency_reader": stage_latency_reader,
        "lake": stage_lake,
        "feast": stage_feast,
        "soak-publish": stage_soak_publish,
        "soak-job": stage_soak_job,
        "soak-exec": stage_soak_exec,
        "soak-history": stage_soak_history,
        "exec-publish": stage_exec_publish,
        "exec-sink": stage_exec_sink,
    }
    fn = stages[name]
    if name == "soak-history":
        result = fn()
    elif name in ("soak-publish", "soak-job", "soak-exec"):
        result = fn(rest[0])
    elif name in ("core", "record"):
        result = fn(rest)
    elif name == "latency":
        result = fn(rest[0], rest[1], rest[2], rest[3:])
    else:
        result = fn(*rest)
    result["peak_rss_mb"] = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 + _children_peak_rss_mb()
    )
    print(json.dumps(result))
    return 0


def _create_bench_topics(
    run_cfg: Config, extra: list[TopicSpec], rung_cfgs: list[Config]
) -> list[TopicSpec]:
    """The run's topics, then each rung's outputs (returned), one call per rung:
    ``create_topics`` grants the roles' ACLs over the topic set of the config it is given,
    and a rung's job writes its outputs as the job role."""
    from jobs.kafka_io import create_topics

    create_topics(run_cfg, [*run_cfg.topics.specs(), *extra])
    rung_specs: list[TopicSpec] = []
    for rung_cfg in rung_cfgs:
        specs = [s for s in rung_cfg.topics.specs() if s.name != rung_cfg.topics.events]
        create_topics(rung_cfg, specs)
        rung_specs += specs
    return rung_specs


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--stage"]:  # a child run of one stage; its arguments are not options
        return _run_stage_here(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m jobs.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--lobster", nargs=2, action="append", metavar=("MSG", "OB"))
    parser.add_argument("--binance", nargs="+", action="append", metavar="FILE")
    parser.add_argument(
        "--sample-only",
        action="store_true",
        help="only the shipped sample (faster, less steady figures)",
    )
    parser.add_argument(
        "--latency-rate",
        type=float,
        default=5000.0,
        help="input rate (events/s) of the tick-to-order latency run",
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        default=125.0,
        help="how long the latency run's input is paced (the first 10 s are dropped)",
    )
    parser.add_argument(
        "--rungs",
        default=LADDER,
        help=f"the ablation ladder's rungs, in order (default: {LADDER})",
    )
    parser.add_argument("--no-latency", action="store_true", help="skip the latency run")
    parser.add_argument(
        "--capture-repeats",
        type=int,
        default=3,
        metavar="N",
        help="stage capture: best of N passes of the core and of hftbacktest's converter",
    )
    parser.add_argument(
        "--no-brokers3",
        action="store_true",
        help="skip Kafka's perf tools against three KRaft nodes (RF 3, min ISR 2)",
    )
    parser.add_argument(
        "--no-cluster",
        action="store_true",
        help="skip the trading job on the Flink session cluster (started for the bench unless "
        "`make cluster-up` already did)",
    )
    parser.add_argument(
        "--cluster-parallelism",
        default="1,2,4",
        help="the cluster job's parallelisms (default 1,2,4; one above the cluster's slots is "
        "reported as skipped)",
    )
    parser.add_argument(
        "--no-lake",
        action="store_true",
        help="skip the history / replay / SQL figures on a full LOBSTER day",
    )
    parser.add_argument(
        "--only-lake", action="store_true", help="only the history / replay / SQL figures"
    )
    parser.add_argument(
        "--feast",
        action="store_true",
        help="only the Feast figures: training-set build on the LOBSTER day, push throughput "
        "and freshness into Redis while the job runs, online read p50/p99",
    )
    parser.add_argument(
        "--feast-day-lines",
        type=int,
        default=0,
        metavar="N",
        help="with --feast: the first N messages per instrument of the day (default 0: all)",
    )
    parser.add_argument(
        "--feast-rate",
        type=float,
        default=250.0,
        help="with --feast: paced input, events/s (default 250: one the trading job kept up "
        "with at load 10 on 2 cores; above the job's pace, freshness measures its backlog)",
    )
    parser.add_argument(
        "--feast-seconds", type=float, default=60.0, help="with --feast: paced input duration"
    )
    parser.add_argument(
        "--soak",
        action="store_true",
        help="only the soak: the full LOBSTER day once and twice over through the stream job "
        "and the sinks, peak RSS per process",
    )
    parser.add_argument(
        "--soak-copies",
        type=int,
        nargs="+",
        default=[1, 2],
        metavar="N",
        help="with --soak: the numbers of copies of the day to measure (default: 1 2)",
    )
    parser.add_argument(
        "--exec-sink",
        action="store_true",
        help="only the execution sink: the full LOBSTER day's events and orders, orders -> "
        "execution reports per second and CPU at each transaction cadence (--exec-cadences)",
    )
    parser.add_argument(
        "--exec-cadences",
        default=",".join(str(n) for n in CADENCES),
        help="with --exec-sink: the execution.commit_every values to run (inputs per "
        "transaction at most)",
    )
    args = parser.parse_args(argv)

    from jobs.kafka_io import delete_topics
    from jobs.publish import publish

    cfg = load_config()
    run = f"bench.{uuid.uuid4().hex[:6]}"
    have_day = all(p.is_file() for pair in LOBSTER_DAY for p in pair)
    if args.soak:
        if not have_day:
            raise SystemExit(f"the full LOBSTER day is not there: {LOBSTER_DAY}")
        soak(cfg, run, tuple(args.soak_copies))
        return 0
    if args.exec_sink:
        if not have_day:
            raise SystemExit(f"the full LOBSTER day is not there: {LOBSTER_DAY}")
        exec_bench(cfg, run, tuple(int(n) for n in args.exec_cadences.split(",")))
        return 0
    if args.feast:
        if not have_day:
            raise SystemExit(f"the full LOBSTER day is not there: {LOBSTER_DAY}")
        _feast_bench(cfg, run, args.feast_day_lines, args.feast_rate, args.feast_seconds)
        return 0
    if args.only_lake:
        if not have_day:
            raise SystemExit(f"the full LOBSTER day is not there: {LOBSTER_DAY}")
        _lake_bench(cfg, run)
        return 0
    run_cfg = cfg.for_run(run)
    rungs = args.rungs.split(",")
    source_argv = _source_args(args)
    load = os.getloadavg()
    print(
        f"bookstream bench  {time.strftime('%Y-%m-%d %H:%M:%S')}  cores={os.cpu_count()}  "
        f"load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}  source: {' '.join(source_argv)}",
        flush=True,
    )
    extra = [
        TopicSpec(name=name, partitions=cfg.topics.partitions, retention_ms=-1)
        for name in (broker_copy_topic(run_cfg), f"{run}.perf")
    ]
    rung_cfgs = [run_cfg.for_run(f"{run}.{rung}") for rung in rungs]
    rung_specs = _create_bench_topics(run_cfg, extra, rung_cfgs)
    perf_topic = f"{run}.perf"
    results: dict = {}
    try:
        results["core"] = _run_stage(["core", *source_argv])
        results["record"] = _run_stage(["record", *source_argv])
        results["capture"] = _capture_stage(_capture_file(args), args.capture_repeats)
        pub = publish(run_cfg, _source_from(source_argv), progress=False)
        results["publish"] = {"events": pub.published, "events_per_s": pub.rate}
        results["broker"] = _run_stage(["broker", run])
        payload = cfg.state_dir / "bench" / f"{run}.payload"
        payload.parent.mkdir(parents=True, exist_ok=True)
        _write_payload(_source_from(source_argv), payload)
        try:
            results["broker_tools"] = _run_stage(
                ["broker_tools", perf_topic, str(payload), str(max(pub.published, 500_000))]
            )
            if not args.no_brokers3:
                results["broker_tools_3"] = brokers3(payload, max(pub.published, 500_000))
        finally:
            payload.unlink(missing_ok=True)
        results["ladder"] = _run_stage(["ladder", run, ",".join(rungs)])
        results["load_after_ladder"] = os.getloadavg()[0]
        if not args.no_cluster:
            results["cluster"] = _run_stage(["cluster", run, args.cluster_parallelism])
        if not args.no_latency:
            # the full LOBSTER day first: its orders run through the whole paced window (the
            # sample's come in its first seconds, inside the warm-up)
            day = [a for m, o in LOBSTER_DAY for a in ("--lobster", str(m), str(o))]
            results["latency"] = _run_stage(
                [
                    "latency",
                    f"{run}.lat",
                    str(args.latency_rate),
                    str(args.latency_seconds),
                    *(day if have_day else []),
                    *source_argv,
                ],
            )
    finally:
        delete_topics(
            run_cfg,
            [*(s.name for s in run_cfg.topics.specs()), *(s.name for s in extra + rung_specs)],
        )
    _report(results)
    if not args.no_lake:
        if have_day:
            _lake_bench(cfg, run)
        else:
            print(f"lake: skipped, the full LOBSTER day is not there ({SHARED_LOBSTER})")
    return 0


def _capture_file(args: argparse.Namespace) -> Path:
    """The one Binance USD-M capture file of stage capture: the first ``--binance`` file given,
    else the 2024-08-08 capture of ../shared/data, else the sample's."""
    from udfs.market.adapters.sources import SAMPLE_BINANCE

    if args.binance:
        return Path(args.binance[0][0])
    return SHARED_USDM if SHARED_USDM.is_file() else SAMPLE_BINANCE[0]


def _capture_stage(capture: Path, repeats: int) -> dict:
    """Stage capture in a child process; hftbacktest is a bench-only dependency
    (``make bench`` installs it): without it the stage is reported as skipped."""
    import importlib.util

    if importlib.util.find_spec("hftbacktest") is None:
        return {"skipped": "hftbacktest is not installed (make bench installs the bench group)"}
    return _run_stage(["capture", str(capture), str(repeats)])


def _write_payload(source: Source, path: Path, limit: int = 100_000) -> None:
    """Serialised events, one per line, for ProducerPerformance's --payload-file: the bench's
    own record sizes and compressibility (an evenly spread subset, at most ``limit``)."""
    from udfs.schema import encode_event

    events = list(source.events())
    step = max(1, len(events) // limit)
    with open(path, "wb") as out:
        for ev in events[::step]:
            out.write(encode_event(ev) + b"\n")


def _fmt(x: float | None, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def _report(results: dict) -> dict:
    """Prints the figures and the targets; returns the summary for the closing JSON line."""
    rows = [
        ("(a)  core: book + features, 1 process", "core"),
        ("(a') record: decode + validate + (a)", "record"),
        ("     publish: adapter + encode + produce", "publish"),
        ("(b') broker: Python Kafka -> Kafka copy", "broker"),
        ("(b)  broker: Kafka perf tools, min(prod, cons)", "broker_tools"),
    ]
    print(f"\n{'stage':<48}{'events':>10}{'events/s':>12}{'peak RSS MB':>13}")
    for label, key in rows:
        r = results[key]
        rss = r.get("peak_rss_mb")
        print(
            f"{label:<48}{r['events']:>10}{r['events_per_s']:>12,.0f}"
            f"{(f'{rss:,.0f}' if rss else '-'):>13}"
        )
    bt3 = results.get("broker_tools_3")
    if bt3:
        print(
            f"{'(b3) 3 KRaft nodes, RF 3, min ISR 2, perf tools':<48}{bt3['events']:>10}"
            f"{bt3['events_per_s']:>12,.0f}{'-':>13}"
        )
    bt = results["broker_tools"]
    print(
        f"     ProducerPerformance {bt['producer_events_per_s']:,.0f} rec/s, "
        f"ConsumerPerformance {bt['consumer_events_per_s']:,.0f} rec/s (fetch)"
    )
    b = bt["events_per_s"]
    ladder = results["ladder"]["rungs"]
    print(
        f"\nablation ladder (same {results['ladder']['events']:,} events; steady = first read to "
        f"last write; CPU s per 1k events)  load after: {results['load_after_ladder']:.1f}"
    )
    print(
        f"{'rung':<17}{'end-to-end ev/s':>16}{'steady ev/s':>13}{'x broker':>9}"
        f"{'flink+py':>10}{'broker':>8}{'client':>8}"
    )
    for name, r in ladder.items():
        steady = r["steady_events_per_s"]
        cpu = r["cpu_s_per_1k_events"]
        print(
            f"{name:<17}{r['events_per_s']:>16,.0f}{_fmt(steady):>13}"
            f"{_fmt(steady / b if steady else None, '.2f'):>9}"
            f"{cpu['flink_jvm']:>10.3f}{cpu['broker_jvm']:>8.3f}{cpu['client']:>8.3f}"
        )
    for name, r in ladder.items():
        threads = r.get("flink_threads_cpu_s_per_1k_events") or {}
        print(
            f"  {name} Flink JVM threads (CPU s / 1k events): "
            + ", ".join(f"{k} {v:.4f}" for k, v in list(threads.items())[:6])
        )
    job = ladder.get("batched", {})
    job_steady = job.get("steady_events_per_s") or 0.0
    lat = results.get("latency")
    if lat:
        print(
            f"\ntick-to-order latency, trading job live at {lat['events_per_s']:,.0f} ev/s input "
            f"for {lat['seconds']:.0f} s (first 10 s dropped), {lat['orders']} orders "
            "(ms: p50 / p95 / p99 / max):"
        )
        if lat.get("warmup_included"):
            print(
                "  NOTE: no order triggered after the warm-up came out: the job fell behind the "
                f"input (the newest trigger read was {_fmt(lat['last_trigger_s'], '.1f')} s into "
                "the run); figures over every order, warm-up included"
            )
        print(
            f"  {'end to end':<18}"
            + " / ".join(_fmt(lat[q], ".2f") for q in ("p50", "p95", "p99", "max"))
        )
        for hop, q in lat["hops"].items():
            print(
                f"  {hop:<18}" + " / ".join(_fmt(q[k], ".2f") for k in ("p50", "p95", "p99", "max"))
            )
    clu = results.get("cluster")
    if clu:
        print(
            f"\ntrading job on the Flink session cluster (bookstream submit --bounded, same "
            f"{clu['events']:,} events; events/s over RUNNING -> FINISHED, Python start-up "
            "included; CPU s per 1k events):"
        )
        print(
            f"{'parallelism':<13}{'events/s':>10}{'running s':>11}{'TMs':>8}{'JM':>7}{'broker':>8}"
        )
        for p, r in clu["parallelism"].items():
            if "skipped" in r:
                print(f"{p:<13}skipped: {r['skipped']}")
                continue
            c = r["cpu_s_per_1k_events"]
            print(
                f"{p:<13}{_fmt(r['events_per_s']):>10}{r['running_s']:>11.1f}"
                f"{c['taskmanagers']:>8.3f}{c['jobmanager']:>7.3f}{c['broker_jvm']:>8.3f}"
            )
    cap = results.get("capture") or {}
    core_rows = cap.get("core_rows_per_s")
    core_ratio = cap.get("core_over_hftbacktest")
    print_capture(cap)
    a = results["core"]["events_per_s"]
    verdicts = {}
    if core_rows is not None and core_ratio is not None:
        verdicts["core >= 1M level rows/s from raw capture"] = core_rows >= TARGETS["core"]
        verdicts["core >= 4x hftbacktest's converter"] = core_ratio >= TARGETS["core/hftbacktest"]
    verdicts |= {
        "trading job >= 100k ev/s (steady)": job_steady >= TARGETS["job"],
        "trading job >= 0.5 x broker (steady)": job_steady / b >= TARGETS["job/broker"],
    }
    if lat and lat["p99"] is not None:
        verdicts["tick-to-order p99 <= 10 ms"] = lat["p99"] <= TARGETS["tick_to_order_p99_ms"]
    print("targets:")
    for k, v in verdicts.items():
        print(f"  {k:<40} {'met' if v else 'MISSED'}")
    summary = {
        "job_events_per_s": job_steady,
        "job_end_to_end_events_per_s": job.get("events_per_s"),
        "broker_events_per_s": b,
        "job_over_broker": job_steady / b,
        "tick_to_order_ms": {q: lat[q] for q in ("p50", "p95", "p99", "max")} if lat else None,
        "core_rows_per_s": core_rows,
        "core_over_hftbacktest": core_ratio,
        "core_events_per_s": a,
        "targets_met": verdicts,
    }
    print(json.dumps({"results": results, **summary}, default=float), flush=True)
    return summary


def _lake_bench(cfg: Config, run: str) -> dict:
    """The lake stage on topics and a lake of its own, printed; both deleted afterwards."""
    import shutil

    from jobs.kafka_io import delete_topics
    from udfs.config import load_config as load

    root = cfg.state_dir / "bench" / run
    env = {"BOOKSTREAM_LAKE_ROOT": str(root / "lake")}
    try:
        r = _run_stage(["lake", f"{run}.lake"], env=env)
    finally:
        lcfg = load(env={**os.environ, **env}).for_run(f"{run}.lake")
        delete_topics(lcfg, [spec.name for spec in lcfg.topics.specs()])
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nlake: a full LOBSTER day ({r['events']:,} events, 3 instruments) live -> Iceberg")
    print(
        f"  history sink        {r['history_rows']:>10,} rows  {r['history_rows_per_s']:>10,.0f}"
        " rows/s"
    )
    print(
        f"  live job            {r['events']:>10,} ev    {r['live_job_events_per_s']:>10,.0f}"
        " ev/s (Kafka -> Flink trading job -> Kafka, incl. start-up)"
    )
    print(
        f"  replay from Iceberg {r['events']:>10,} ev    {r['replay_events_per_s']:>10,.0f}"
        " ev/s (read + publish + the same job), job alone "
        f"{r['replay_job_events_per_s']:,.0f} ev/s; replay/live = "
        f"{r['replay_events_per_s'] / r['live_job_events_per_s']:.2f}"
    )
    print(
        f"  replay identical: {r['replay_identical']} (orders {r['orders_identical']}/"
        f"{r['orders_live']}, fills {r['fills_identical']}/{r['fills_live']})"
    )
    if r["first_divergence"]:
        print(f"  first divergence: {json.dumps(r['first_divergence'])[:2000]}")
    for name, secs in r["query_s"].items():
        print(f"  sql/{name:<32} {secs * 1000:>8.0f} ms (median of 3)")
    print(json.dumps({"lake": r}, default=float), flush=True)
    return r


def _feast_bench(cfg: Config, run: str, day_lines: int, rate: float, seconds: float) -> dict:
    """The Feast stage on a lake, topics and Feast project of its own (a copy of
    feature_repo/ under project ``bench_<run>``), printed; all removed afterwards."""
    import shutil

    from jobs.feast_store import open_store
    from udfs.config import load_config as load

    root = cfg.state_dir / "bench" / run
    repo = root / "feature_repo"
    shutil.copytree(cfg.feast_repo, repo, ignore=shutil.ignore_patterns("__pycache__", ".venv"))
    project = f"bench_{run.split('.')[-1]}"
    yaml_path = repo / "feature_store.yaml"
    yaml_path.write_text(
        yaml_path.read_text().replace("\nproject: bookstream\n", f"\nproject: {project}\n")
    )
    env = {"BOOKSTREAM_LAKE_ROOT": str(root / "lake"), "BOOKSTREAM_FEAST_REPO": str(repo)}
    load_avg = os.getloadavg()
    try:
        r = _run_stage(["feast", run, str(day_lines), str(rate), str(seconds)], env=env)
    finally:
        fcfg = load(env={**os.environ, **env})
        try:
            store = open_store(fcfg)
            store._get_provider().teardown_infra(
                project, store.list_feature_views(), store.list_entities()
            )
            store.delete_project(project)
        except Exception as exc:  # cleanup must not hide the stage's error
            print(f"feast: could not remove project {project}: {exc}", file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)
    r["load_average_before"] = load_avg
    r["load_average_after"] = os.getloadavg()
    ts, push, rd = r["training_set"], r["push"], r["online_read"]
    part = f"first {day_lines:,} messages per instrument of" if day_lines else "the full"
    print(f"\nfeast: {part} LOBSTER day ({ts['events']:,} events, 3 instruments); load "
          f"{load_avg[0]:.1f} {load_avg[1]:.1f} {load_avg[2]:.1f} before")  # fmt: skip
    print(
        f"  training set        {ts['entity_rows']:>10,} entity rows over {ts['span_s']:,.0f} s, "
        f"{ts['feature_rows']:,} feature rows: {ts['build_s']:.1f} s (incl. lake export "
        f"{ts['export_s']:.1f} s; {ts['wall_s']:.1f} s with the process start), peak RSS "
        f"{ts['peak_rss_mb']:,.0f} MB, {ts['chunk_s']} s chunks"
    )
    fresh, live, drain = push["freshness"], push["while_job_runs"], push["drain"]
    job_rate = push["job_events_per_s"]
    kept_up = job_rate is not None and job_rate >= 0.95 * push["events_per_s"]
    print(
        f"  input               {push['events']:>10,} events at {push['events_per_s']:,.0f}/s "
        f"for {push['input_s']:.1f} s -> {push['feature_rows']:,} feature rows; the job's pace "
        f"{_fmt(job_rate)} ev/s (input span / its last row's ts_proc); caught up "
        f"{_fmt(drain.get('job_caught_up_s'), '.1f')} s after the input, all rows "
        f"pushed {_fmt(drain.get('all_pushed_s'), '.1f')} s after"
        + (f"  (CAP {drain['cap_s']:.0f} s REACHED: values missing)" if drain["cap_hit"] else "")
        + (
            "; the job kept up"
            if kept_up
            else "; THE JOB FELL BEHIND its input: freshness below is its backlog, growing "
            "with the run's length"
        )
    )
    print(
        f"  push while the job runs (pusher ready {push['pusher_ready_s']:.1f} s after its start) "
        f"{live['rows']:,} rows in {live['pushes']:,} pushes over "
        f"{live['span_s']:.1f} s: {_fmt(live['rows_per_s'])} rows/s, pusher busy "
        f"{_fmt((live['busy_share'] or 0) * 100, '.0f')} % of the span (push p50 "
        f"{_fmt((live.get('push_ms') or {}).get('p50'), '.0f')} ms; poll timeout "
        f"{push['push_poll_ms']} ms)"
    )
    print(
        f"  push capacity       {push['bounded']['read']:>10,.0f} rows  "
        f"{push['bounded_rows_per_s']:>10,.0f} rows/s (bounded feast-push of the topic)"
    )
    print(
        f"  freshness, received -> readable online, n={fresh['n']} values seen (poll every "
        f"{push['poll_interval_ms']:.0f} ms, poll p50 {_fmt(push['poll_ms']['p50'], '.2f')} ms):"
    )
    print(f"    {'hop (ms)':<14}{'p50':>10}{'p99':>10}{'max':>10}")
    for hop in (*FRESHNESS_HOPS, "end_to_end"):
        h = fresh[hop]
        print(
            f"    {hop:<14}{_fmt(h['p50'], ',.1f'):>10}{_fmt(h['p99'], ',.1f'):>10}"
            f"{_fmt(h['max'], ',.1f'):>10}"
        )
    print(
        f"  online read ({rd['features']} features, 1 instrument): p50 {rd['p50']:.2f} ms  "
        f"p99 {rd['p99']:.2f} ms  max {rd['max']:.2f} ms  (n={rd['n']}; goal p99 <= 2 ms); "
        f"on CPU p50 {rd['cpu_ms']['p50']:.2f} ms  p99 {rd['cpu_ms']['p99']:.2f} ms"
    )
    for name, share in rd["profile_tottime_share"].items():
        print(f"    {share * 100:5.1f} %  {name}")
    print(json.dumps({"feast": r}, default=float), flush=True)
    return r


if __name__ == "__main__":
    sys.exit(main())
