"""``make bench``: throughput and peak memory of each stage, measured in one run on the same
events, with the ratios that say where the time goes. Not a test: it prints figures.

    (a) core     the pure-Python book + features over decoded events, one process
    (a') record  the same plus decoding and validation of each serialised record
                 (udfs.pipeline.process_record: exactly what the Flink function runs per record)
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

Each stage runs in a subprocess of its own, so its peak RSS is its own (ru_maxrss of the child
plus, for (c), the VmHWM of the Flink JVM it started, whose embedded Python runs the function).
Targets from the issue are printed next to the figures; a missed target is reported, never
hidden.

Data: by default the sample (LOBSTER AAPL + Binance USD-M) plus, where ../shared/data exists, the
Binance USD-M 2024-08-08 capture (~600k events), so the job runs long enough to measure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from udfs.config import PROJECT_ROOT, Config, load_config, topics_env

if TYPE_CHECKING:  # imported where used: each stage runs in a child with only what it needs
    from pyflink.datastream import StreamExecutionEnvironment

    from udfs.market.adapters.sources import Source

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
TARGETS = {"core": 300_000, "job": 50_000, "job/broker": 0.5}


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


def stage_core(source_argv: list[str]) -> dict:
    from udfs.market.book import BookError, OrderBook
    from udfs.market.features import FeatureState, on_event
    from udfs.schema import Kind

    cfg = load_config()
    events = list(_source_from(source_argv).events())
    best = 0.0
    for _ in range(3):
        books: dict[str, OrderBook] = {}
        feats: dict[str, FeatureState] = {}
        rows = 0
        t = time.perf_counter()
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
                and on_event(feats[ev.instrument], book, ev, cfg.features) is not None
            ):
                rows += 1
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

    from jobs.kafka_io import count_records, make_producer

    cfg = run_config(run)
    topic, copy_topic = cfg.topics.events, broker_copy_topic(cfg)
    total = count_records(cfg, topic)
    consumer = Consumer(
        {
            "bootstrap.servers": cfg.kafka.bootstrap_servers,
            "group.id": f"bench-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.max.bytes": 52428800,
        }
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
    """The stream job of the job stage on ``cfg``'s topics (features only, bounded)."""
    from jobs.stream_job import build_stream_job

    return build_stream_job(
        cfg,
        bounded=True,
        group_id=f"bench-{uuid.uuid4().hex[:6]}",
        start_offsets=start_offsets,
        trading=False,
    )


def stage_job(run: str) -> dict:
    from jobs.kafka_io import count_records, create_topics, delete_topics, first_offsets

    cfg = run_config(run)
    # the same job over an empty topic set: what start-up and shutdown cost alone
    empty = run_config(f"{run}.empty")
    create_topics(empty)
    total = count_records(cfg, cfg.topics.events)

    def timed(job_cfg: Config) -> float:
        t = time.perf_counter()
        job = build_bench_job(job_cfg, first_offsets(job_cfg, job_cfg.topics.events))
        job.execute("bookstream-bench")
        return time.perf_counter() - t

    # the first run in a process also launches the JVM: run one to warm up, measure the job,
    # then measure the empty job again, so both figures come from a JVM in the same state
    try:
        first = timed(empty)
        wall = timed(cfg)
        startup = timed(empty)
    finally:
        delete_topics(empty, [spec.name for spec in empty.topics.specs()])
    steady = total / (wall - startup) if wall > startup else None
    return {
        "events": total,
        "features": count_records(cfg, cfg.topics.features),
        "events_per_s": total / (wall + first - startup),
        "wall_s": wall,
        "jvm_launch_s": first - startup,
        "startup_s": startup,
        "steady_events_per_s": steady,
    }


def stage_latency(run: str, rate_s: str, source_argv: list[str]) -> dict:
    """Tick-to-order latency: the trading job runs live (unbounded, its own topics) while the
    events are published at ``rate`` events/s with ``ts_recv`` set to the wall clock at
    publishing; each new order carries its trigger's ``ts_recv``, and a consumer stamps it when
    the order is readable on the orders topic."""
    import signal as signals
    import threading
    from dataclasses import replace

    import numpy as np
    from confluent_kafka import Consumer, TopicPartition

    from jobs.kafka_io import (
        count_records,
        create_topics,
        delete_topics,
        end_offsets,
        make_producer,
    )
    from udfs.schema import Order, OrderAction, decode_record, encode_event

    rate = float(rate_s)
    cfg = run_config(run)
    create_topics(cfg)
    events = list(_source_from(source_argv).events())
    warmup, events = events[:500], events[500:]
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
    latencies: list[int] = []
    stop = threading.Event()

    # assigned, not subscribed: no group join may delay the first orders' reading
    consumer = Consumer(
        {
            "bootstrap.servers": cfg.kafka.bootstrap_servers,
            "group.id": f"bench-lat-{uuid.uuid4().hex[:6]}",
            "fetch.wait.max.ms": 5,
        }
    )

    def consume() -> None:
        while not stop.is_set():
            for m in consumer.consume(num_messages=1000, timeout=0.05):
                if m.error():
                    continue
                now = time.time_ns()
                order = decode_record(Order, m.value())
                if order.action is OrderAction.NEW and order.trigger_ts_recv > t_start:
                    latencies.append(now - order.trigger_ts_recv)
        consumer.close()

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
        deadline = time.monotonic() + 120
        while count_records(cfg, cfg.topics.features) == 0:
            if time.monotonic() > deadline or job.poll() is not None:
                raise RuntimeError(
                    "the trading job did not start (run `bookstream stream-job` to see why)"
                )
            time.sleep(0.5)
        consumer.assign(
            [
                TopicPartition(cfg.topics.orders, p, hi)
                for p, hi in end_offsets(cfg, cfg.topics.orders).items()
            ]
        )
        consumer.consume(num_messages=1, timeout=1.0)  # connect before the clock starts
        t_start = time.time_ns()
        reader = threading.Thread(target=consume, daemon=True)
        reader.start()
        t0 = time.perf_counter()
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
        stop.set()
        reader.join(10)
    finally:
        os.killpg(job.pid, signals.SIGKILL)
        job.wait(30)
        delete_topics(cfg, [spec.name for spec in cfg.topics.specs()])
    lat_ms = np.array(latencies) / 1e6
    pct = {f"p{q}": float(np.percentile(lat_ms, q)) if len(lat_ms) else None for q in (50, 95, 99)}
    return {
        "events": len(events),
        "events_per_s": achieved,
        "orders": len(latencies),
        "rate_target": rate,
        **pct,
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
    recorded = load_run(cfg, live["run_id"])
    rep = replay(
        cfg,
        ReplayRange(
            run_id=recorded["run_id"], offsets_from=recorded["from"], offsets_to=recorded["to"]
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
    result: dict
    if name == "core":
        result = stage_core(rest)
    elif name == "record":
        result = stage_record(rest)
    elif name == "broker":
        result = stage_broker(*rest)
    elif name == "job":
        result = stage_job(*rest)
    elif name == "latency":
        result = stage_latency(rest[0], rest[1], rest[2:])
    elif name == "lake":
        result = stage_lake(*rest)
    else:
        raise KeyError(name)
    result["peak_rss_mb"] = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 + _children_peak_rss_mb()
    )
    print(json.dumps(result))
    return 0


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
        default=2000.0,
        help="input rate (events/s) of the tick-to-order latency run",
    )
    parser.add_argument(
        "--no-lake",
        action="store_true",
        help="skip the history / replay / SQL figures on a full LOBSTER day",
    )
    parser.add_argument(
        "--only-lake", action="store_true", help="only the history / replay / SQL figures"
    )
    args = parser.parse_args(argv)

    from jobs.kafka_io import create_topics, delete_topics
    from jobs.publish import publish
    from udfs.config import TopicSpec

    cfg = load_config()
    run = f"bench.{uuid.uuid4().hex[:6]}"
    have_day = all(p.is_file() for pair in LOBSTER_DAY for p in pair)
    if args.only_lake:
        if not have_day:
            raise SystemExit(f"the full LOBSTER day is not there: {LOBSTER_DAY}")
        _lake_bench(cfg, run)
        return 0
    run_cfg = cfg.for_run(run)
    source_argv = _source_args(args)
    print(
        f"bookstream bench  {time.strftime('%Y-%m-%d %H:%M:%S')}  cores={os.cpu_count()}  "
        f"source: {' '.join(source_argv)}",
        flush=True,
    )
    copy_spec = TopicSpec(
        name=broker_copy_topic(run_cfg), partitions=cfg.topics.partitions, retention_ms=-1
    )
    create_topics(run_cfg, [*run_cfg.topics.specs(), copy_spec])
    try:
        results = {}
        results["core"] = _run_stage(["core", *source_argv])
        results["record"] = _run_stage(["record", *source_argv])
        pub = publish(run_cfg, _source_from(source_argv), progress=False)
        results["publish"] = {"events": pub.published, "events_per_s": pub.rate}
        results["broker"] = _run_stage(["broker", run])
        results["job"] = _run_stage(["job", run])
        results["latency"] = _run_stage(
            ["latency", f"{run}.lat", str(args.latency_rate), "--sample"]
        )
    finally:
        delete_topics(run_cfg, [*(s.name for s in run_cfg.topics.specs()), copy_spec.name])

    rows = [
        ("(a)  core: book + features, 1 process", "core"),
        ("(a') record: decode + validate + (a)", "record"),
        ("     publish: adapter + encode + produce", "publish"),
        ("(b)  broker: Kafka -> Kafka copy", "broker"),
        ("(c)  job: Kafka -> Flink -> Kafka", "job"),
    ]
    print(f"\n{'stage':<44}{'events':>10}{'events/s':>12}{'peak RSS MB':>13}")
    for label, key in rows:
        r = results[key]
        rss = r.get("peak_rss_mb")
        print(
            f"{label:<44}{r['events']:>10}{r['events_per_s']:>12,.0f}"
            f"{(f'{rss:,.0f}' if rss else '-'):>13}"
        )
    a, b, c = (results[k]["events_per_s"] for k in ("core", "broker", "job"))
    ratios = {"c/b": c / b, "c/a": c / a, "a'/a": results["record"]["events_per_s"] / a}
    print("\nratios: " + "  ".join(f"{k} = {v:.3f}" for k, v in ratios.items()))
    job = results["job"]
    steady = job["steady_events_per_s"]
    print(
        f"job: JVM launch ~{job['jvm_launch_s']:.1f}s + run {job['wall_s']:.1f}s, of which "
        f"job start-up/shutdown ~{job['startup_s']:.1f}s (same job on an empty topic); "
        + (
            f"steady {steady:,.0f} ev/s, steady c/b = {steady / b:.3f}"
            if steady
            else "input too small to separate the steady rate from start-up"
        )
    )
    steady = steady or 0.0
    verdicts = {
        "core >= 300k ev/s": a >= TARGETS["core"],
        "job >= 50k ev/s (end to end)": c >= TARGETS["job"],
        "job/broker >= 0.5 (end to end)": ratios["c/b"] >= TARGETS["job/broker"],
        "job >= 50k ev/s (steady)": steady >= TARGETS["job"],
        "job/broker >= 0.5 (steady)": steady / b >= TARGETS["job/broker"],
    }
    lat = results["latency"]
    print(
        f"tick-to-order latency (trigger's receive -> order readable on the orders topic), "
        f"trading job live at {lat['events_per_s']:,.0f} ev/s input, {lat['orders']} orders: "
        f"p50 {lat['p50']} ms  p95 {lat['p95']} ms  p99 {lat['p99']} ms"
    )
    print("targets:")
    for k, v in verdicts.items():
        print(f"  {k:<34} {'met' if v else 'MISSED'}")
    print(
        json.dumps({"results": results, "ratios": ratios, "targets_met": verdicts}, default=float),
        flush=True,
    )
    if not args.no_lake:
        if have_day:
            _lake_bench(cfg, run)
        else:
            print(f"lake: skipped, the full LOBSTER day is not there ({SHARED_LOBSTER})")
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
