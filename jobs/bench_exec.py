"""``make bench ARGS=--exec-sink`` (issue 11 §2): does the execution sink keep up, and how many
inputs should go into one of its Kafka transactions (``execution.commit_every``)?

The full LOBSTER day (AAPL, AMZN level 1 + GOOG level 10, 2012-06-21) goes to the events topic
of a run of its own, and the orders the trading logic makes from it to its orders topic: the
same per-record function the Flink job runs (:func:`udfs.pipeline.process_record` with the
configured :class:`udfs.strategy.trading.Trader`), in one process, with the job's end-of-input
heartbeat per instrument; real orders from real events, without a Flink run. Then the
execution sink runs bounded over that backlog once per cadence, each run a process and a
consumer group of its own (so each reads every input from the start):

    orders/s     orders (heartbeats included: the sink sequences them alike) read per second
                 of the run's wall time; inputs/s all inputs (market events too)
    reports/s    execution reports (acks, fills, rejects, cancels) written per second
    CPU          seconds of the sink process and of the broker JVM per 1k inputs
    visible      how long a batch's first input waited for its transaction to commit (its
                 outputs readable read_committed), mean and max: over a backlog, the latency
                 the cadence adds
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from udfs.config import Config
    from udfs.schema import L2Event, Order

__all__ = [
    "choose_cadence",
    "cpu_per_1k_inputs",
    "orders_of",
    "print_exec_bench",
    "stage_exec_publish",
    "stage_exec_sink",
]

CADENCES = (200, 1_000, 5_000, 20_000)


def orders_of(events: Iterable[L2Event], cfg: Config) -> Iterator[Order]:
    """The orders topic's records the trading job writes for ``events`` (in order): each event
    serialised and through :func:`udfs.pipeline.process_record` with the configured trader,
    as the job's keyed function does, then one heartbeat per instrument at its newest exchange
    time, as the job's end-of-input timer does."""
    from udfs.latency import AvailabilityModel
    from udfs.pipeline import InstrumentState, RecordSource, process_record
    from udfs.schema import encode_event
    from udfs.strategy.trading import Trader, heartbeat

    trader = Trader.load(cfg)
    availability = AvailabilityModel.from_config(cfg)
    states: dict[str, InstrumentState | None] = {}
    src = RecordSource(cfg.topics.events, 0, 0)
    for ev in events:
        key = ev.instrument
        states[key], result = process_record(
            states.get(key),
            key,
            encode_event(ev),
            src,
            cfg.features,
            cfg.flink.out_of_orderness_ms,
            trader,
            cfg.quality,
            cfg.flink.max_ahead_ms,
            cfg.flink.future_confirm,
            availability,
        )
        yield from result.orders
    for key, state in states.items():
        if state is not None and state.max_ts_event:
            yield heartbeat(
                key, state.max_ts_event + trader.min_feed_latency_ns, state.book.last_seq
            )


def cpu_per_1k_inputs(run: dict[str, Any]) -> float:
    """CPU seconds per 1k inputs of one run, the sink's and the broker's: what a cadence costs,
    which unlike its wall rate does not move with the other load of a shared machine."""
    return float(run["sink_cpu_s_per_1k_inputs"] + run["broker_cpu_s_per_1k_inputs"])


def choose_cadence(runs: dict[int, dict[str, Any]], slack: float = 0.1) -> int:
    """The smallest cadence whose CPU per input is within ``slack`` of the cheapest run's:
    past it, larger transactions save little work and only delay when outputs become
    visible (a batch's outputs are readable when its transaction commits)."""
    cheapest = min(cpu_per_1k_inputs(r) for r in runs.values())
    return min(n for n, r in runs.items() if cpu_per_1k_inputs(r) <= (1 + slack) * cheapest)


def stage_exec_publish(lobster_day: str) -> dict[str, Any]:
    """Child stage: the day's events and the orders made from them onto the run's topics."""
    from jobs.kafka_io import DeliveryErrors, as_role, create_topics, make_producer
    from jobs.publish import produce_events
    from udfs.config import load_config
    from udfs.market.adapters.sources import Source
    from udfs.schema import OrderAction, encode_record

    cfg = load_config()
    files = json.loads(lobster_day)
    create_topics(cfg)
    with as_role("publisher"):
        producer = make_producer(cfg)
    errors = DeliveryErrors()
    events = list(Source(lobster=[(Path(m), Path(o)) for m, o in files]).events())
    published = produce_events(producer, cfg.topics.events, events, errors, progress=False)
    errors.check(cfg, producer.flush(120))
    t = time.process_time()
    orders = list(orders_of(events, cfg))
    trading_cpu_s = time.process_time() - t
    with as_role("job"):
        order_producer = make_producer(cfg)
    for order in orders:
        order_producer.produce(
            cfg.topics.orders,
            key=order.instrument,
            value=encode_record(order),
            timestamp=max(order.ts_event // 1_000_000, 0),
            on_delivery=errors,
        )
        order_producer.poll(0)
    errors.check(cfg, order_producer.flush(120))
    return {
        "events": published,
        "orders": len(orders),
        "heartbeats": sum(1 for o in orders if o.action is OrderAction.HEARTBEAT),
        "trading_cpu_s": trading_cpu_s,
    }


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, seconds (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stage_exec_sink(group: str, commit_every: str) -> dict[str, Any]:
    """Child stage: the execution sink bounded over the run's topics, ``commit_every`` inputs
    per transaction at most."""
    from jobs.execution_sink import run_sink
    from jobs.kafka_io import as_role, count_records
    from udfs.config import load_config

    cfg = load_config()
    broker = _broker_pid(cfg)
    broker_cpu = _proc_cpu_s(broker)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    with as_role("exec-sink"):
        res = run_sink(cfg, group=group, bounded=True, commit_every=int(commit_every))
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    orders = count_records(cfg, cfg.topics.orders)
    return {
        "commit_every": int(commit_every),
        "wall_s": wall,
        "inputs": res.inputs,
        "orders": orders,
        "outputs": res.outputs,
        "reports": res.reports,
        "fills": res.stats.get("fills", 0),
        "commits": res.commits,
        "inputs_per_s": res.inputs / wall,
        "orders_per_s": orders / wall,
        "reports_per_s": res.reports / wall,
        "sink_cpu_s_per_1k_inputs": cpu / res.inputs * 1000 if res.inputs else 0.0,
        "broker_cpu_s_per_1k_inputs": (
            (_proc_cpu_s(broker) - broker_cpu) / res.inputs * 1000 if res.inputs else 0.0
        ),
        "commit_s": res.commit_s,
        "visible_wait_mean_ms": res.visible_wait_s / res.commits * 1000 if res.commits else 0.0,
        "visible_wait_max_ms": res.visible_wait_max_s * 1000,
        "load_after": os.getloadavg()[0],
    }


def _broker_pid(cfg: Config) -> int:
    from jobs.bench import _broker_pid as pid_of

    try:
        return pid_of(cfg)
    except (OSError, ValueError):
        return 0


def print_exec_bench(r: dict[str, Any]) -> None:
    pub = r["publish"]
    print(
        f"\nexecution sink over a backlog: the full LOBSTER day, {pub['events']:,} events + "
        f"{pub['orders']:,} orders ({pub['heartbeats']:,} heartbeats) from the trading logic; "
        f"load {r['load_before'][0]:.1f} {r['load_before'][1]:.1f} before"
    )
    print(
        f"{'commit_every':>12}{'txns':>7}{'inputs/s':>10}{'orders/s':>10}{'reports/s':>10}"
        f"{'sink CPU':>9}{'broker':>8}{'per CPU-s':>10}{'commit s':>9}{'visible ms':>18}"
        f"{'load':>6}"
    )
    for n, x in r["runs"].items():
        print(
            f"{n:>12,}{x['commits']:>7,}{x['inputs_per_s']:>10,.0f}{x['orders_per_s']:>10,.0f}"
            f"{x['reports_per_s']:>10,.0f}{x['sink_cpu_s_per_1k_inputs']:>9.3f}"
            f"{x['broker_cpu_s_per_1k_inputs']:>8.3f}{1000 / cpu_per_1k_inputs(x):>10,.0f}"
            f"{x['commit_s']:>9.1f}"
            f"{x['visible_wait_mean_ms']:>9,.0f} /{x['visible_wait_max_ms']:>7,.0f}"
            f"{x['load_after']:>6.1f}"
        )
    print(
        "  (rates per second of wall time; CPU s per 1k inputs; per CPU-s = inputs per CPU "
        "second of sink + broker; visible = a batch's first input read -> its transaction "
        f"committed, mean / max)\n  chosen by the numbers: commit_every {r['chosen']:,} (the "
        "smallest whose sink + broker CPU per input is within 10% of the cheapest run's)"
    )
