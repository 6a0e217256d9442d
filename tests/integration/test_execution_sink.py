"""Execution sink on a real broker: risk gate, kill switch from the control topic, duplicate
orders, and a restart that continues byte-identically.

No Flink here: the LOBSTER sample is published with :func:`jobs.publish.publish`, the orders are
made by hand (LIMIT at the passive touch of a book the test keeps itself, decided 1 ms after the
triggering event) and produced straight to the orders topic, then :func:`run_sink` runs
in-process and the executions topic (transactional, read committed) is read back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from functools import cache
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from it_helpers import (
    committed_inputs,
    committed_values,
    config_for,
    kill_job,
    read_topic,
    state_env,
)

from jobs.execution_sink import SinkResult, SinkStateError, run_sink
from jobs.kafka_io import client_config, end_offsets, make_producer
from jobs.publish import publish
from udfs.config import PROJECT_ROOT, Config
from udfs.market.adapters.lobster import iter_lobster_events
from udfs.market.adapters.sources import SAMPLE_LOBSTER, Source
from udfs.market.book import BookError, OrderBook
from udfs.schema import (
    F_LAST,
    Control,
    ControlCommand,
    ExecKind,
    ExecReport,
    L2Event,
    Order,
    OrderAction,
    OrderSide,
    OrderType,
    decode_record,
    encode_record,
)
from udfs.strategy.orders import order_id

pytestmark = pytest.mark.integration

MS = 1_000_000
N_ORDERS = 12


# ------------------------------------------------------------------------------------ data


@cache
def events() -> tuple[L2Event, ...]:
    return tuple(iter_lobster_events(*SAMPLE_LOBSTER))


@cache
def orders() -> tuple[Order, ...]:
    """N_ORDERS NEW orders spread over the sample, alternating sides, each a LIMIT at its own
    passive touch (from the test's own book) decided 1 ms after its trigger event."""
    evs = events()
    book = OrderBook(evs[0].instrument)
    touch: list[tuple[int, int] | None] = []
    for ev in evs:
        with contextlib.suppress(BookError):
            book.apply(ev)
        bid, ask = book.best_bid(), book.best_ask()
        touch.append((bid, ask) if ev.flags & F_LAST and bid and ask else None)
    # the middle of the stream: a complete book, and market data after every order
    tradable = [i for i, t in enumerate(touch) if t is not None and 100 <= i < len(evs) - 100]
    step = len(tradable) // N_ORDERS
    out = []
    for n, i in enumerate(tradable[::step][:N_ORDERS]):
        ev, (bid, ask) = evs[i], touch[i]
        side = OrderSide.BUY if n % 2 == 0 else OrderSide.SELL
        ts = ev.ts_event + MS
        out.append(
            Order(
                order_id=order_id("it-sink", ev.instrument, ev.seq, ts),
                instrument=ev.instrument,
                strategy="it-sink",
                action=OrderAction.NEW,
                side=side,
                order_type=OrderType.LIMIT,
                price=bid if side is OrderSide.BUY else ask,
                quantity=2,
                price_exp=ev.price_exp,
                size_exp=ev.size_exp,
                ts_event=ts,
                source_seq=ev.seq,
            )
        )
    assert len(out) == N_ORDERS
    assert all(a.ts_event < b.ts_event for a, b in itertools.pairwise(out))
    return tuple(out)


def heartbeat(ts: int) -> Order:
    inst = events()[0].instrument
    return Order(
        order_id=f"hb-{ts}",
        instrument=inst,
        strategy="it-sink",
        action=OrderAction.HEARTBEAT,
        side=OrderSide.BUY,
        order_type=OrderType.LIMIT,
        price=0,
        quantity=0,
        price_exp=0,
        size_exp=0,
        ts_event=ts,
        source_seq=0,
    )


# ---------------------------------------------------------------------------------- kafka


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**state_env(tmp_path / "state"), **extra}


def publish_market(cfg: Config) -> None:
    res = publish(cfg, Source(lobster=[SAMPLE_LOBSTER]), progress=False)
    assert res.published == len(events())


def produce(cfg: Config, topic: str, records: list[Order | Control]) -> None:
    producer = make_producer(cfg)
    for rec in records:
        producer.produce(
            topic, key=getattr(rec, "instrument", "") or None, value=encode_record(rec)
        )
    assert producer.flush(30) == 0


def run(cfg: Config, group: str | None = None, **kw) -> SinkResult:
    return run_sink(
        cfg, group=group or f"it-sink-{uuid.uuid4().hex[:8]}", bounded=kw.pop("bounded", True), **kw
    )


def raw_executions(cfg: Config) -> list[bytes]:
    """Committed values of the executions topic, in (partition, offset) order."""
    recs = sorted(read_topic(cfg, cfg.topics.executions), key=lambda r: (r.partition, r.offset))
    return [r.value for r in recs]


def executions(cfg: Config) -> list[ExecReport]:
    return [decode_record(ExecReport, v) for v in raw_executions(cfg)]


def by_order(reports: list[ExecReport]) -> dict[str, list[ExecReport]]:
    out: dict[str, list[ExecReport]] = {}
    for r in reports:
        out.setdefault(r.order_id, []).append(r)
    return out


# ---------------------------------------------------------------------------------- tests


def test_risk_limit_rejects_every_order_with_its_reason(kafka_topics, tmp_path: Path) -> None:
    cfg, _ = kafka_topics("risk", **env_for(tmp_path, BOOKSTREAM_RISK_MAX_ORDER_NOTIONAL="1"))
    assert cfg.risk.max_order_notional == 1.0
    publish_market(cfg)
    produce(cfg, cfg.topics.orders, list(orders()))

    res = run(cfg)

    reps = executions(cfg)
    assert res.stats["new_orders"] == N_ORDERS and res.stats["rejected"] == N_ORDERS
    per_order = by_order(reps)
    assert set(per_order) == {o.order_id for o in orders()}
    for oid, rs in per_order.items():
        assert [r.kind for r in rs] == [ExecKind.REJECT], (oid, rs)
        assert rs[0].reason.startswith("max_order_notional"), rs[0].reason
        assert rs[0].report_id == f"{oid}:risk-reject"
    assert not [r for r in reps if r.kind is ExecKind.FILL]
    assert all(p == 0 for p in res.positions.values())


def test_kill_on_control_topic_refuses_the_next_order(kafka_topics, tmp_path: Path) -> None:
    cfg, _ = kafka_topics("kill", **env_for(tmp_path))
    publish_market(cfg)
    ords = list(orders())
    k = N_ORDERS // 2  # KILL after order k-1 (0-based), before order k
    kill_ts = (ords[k - 1].ts_event + ords[k].ts_event) // 2
    produce(cfg, cfg.topics.orders, ords)
    produce(cfg, cfg.topics.control, [Control(ControlCommand.KILL, "", "it: kill", kill_ts)])

    res = run(cfg)

    assert res.stats["kills"] == 1
    per_order = by_order(executions(cfg))
    for o in ords[:k]:
        kinds = [r.kind for r in per_order[o.order_id]]
        assert kinds[0] is ExecKind.ACK, (o.order_id, kinds)
        assert ExecKind.REJECT not in kinds
    first_after = per_order[ords[k].order_id]
    assert [r.kind for r in first_after] == [ExecKind.REJECT]
    assert first_after[0].reason.startswith("halted"), first_after[0].reason
    for o in ords[k + 1 :]:
        rs = per_order[o.order_id]
        assert [r.kind for r in rs] == [ExecKind.REJECT] and rs[0].reason.startswith("halted")


def test_orders_published_twice_give_the_reports_of_once(kafka_topics, tmp_path: Path) -> None:
    once, _ = kafka_topics("once", **env_for(tmp_path))
    twice, _ = kafka_topics("twice", **env_for(tmp_path))
    ords = list(orders())
    for cfg, recs in ((once, ords), (twice, [o for o in ords for _ in (0, 1)])):
        publish_market(cfg)
        produce(cfg, cfg.topics.orders, recs)

    res_once, res_twice = run(once), run(twice)

    assert res_twice.stats["duplicates"] == N_ORDERS and res_once.stats["duplicates"] == 0
    assert res_twice.stats["new_orders"] == N_ORDERS
    a, b = raw_executions(once), raw_executions(twice)
    ids = [decode_record(ExecReport, v).report_id for v in b]
    assert not [i for i, c in Counter(ids).items() if c > 1]
    assert {o.order_id for o in ords} <= {decode_record(ExecReport, v).order_id for v in b}
    assert b == a  # the same reports, byte for byte, in the same order
    assert res_twice.stats["fills"] == res_once.stats["fills"]
    assert res_twice.positions == res_once.positions


def test_restart_continues_as_one_uninterrupted_run(kafka_topics, tmp_path: Path) -> None:
    ords = list(orders())
    k = N_ORDERS // 2
    first = [*ords[:k], heartbeat(ords[k - 1].ts_event)]  # heartbeat: lets the live sink feed
    rest = ords[k:]

    # reference: every input up front, one bounded run
    ref, _ = kafka_topics("ref", **env_for(tmp_path / "ref"))
    publish_market(ref)
    produce(ref, ref.topics.orders, first + rest)
    ref_res = run(ref)
    expected = raw_executions(ref)
    assert ref_res.stats["acks"] >= N_ORDERS // 2  # something real to compare

    # restarted: a live sink over the first half exits (idle), then a bounded one continues
    cfg, _ = kafka_topics("restart", **env_for(tmp_path / "restart"))
    group = f"it-sink-{uuid.uuid4().hex[:8]}"
    publish_market(cfg)
    produce(cfg, cfg.topics.orders, first)
    live = run(cfg, group, bounded=False, commit_every=100, idle_exit_s=3)
    assert live.outputs > 0 and live.stats["new_orders"] == k
    part1 = raw_executions(cfg)
    assert part1 and part1 == expected[: len(part1)]

    produce(cfg, cfg.topics.orders, rest)
    resumed = run(cfg, group)
    assert resumed.rebuilt_inputs == live.inputs  # state rebuilt from the whole history
    assert resumed.inputs == len(rest)  # and only the new orders consumed live
    assert raw_executions(cfg) == expected
    assert resumed.positions == ref_res.positions
    assert resumed.stats == ref_res.stats


def test_bounded_run_then_restart_on_the_same_group_publishes_nothing_twice(
    kafka_topics, tmp_path: Path
) -> None:
    """A bounded run resolves what is in flight at its end (the final drain); a restart on the
    same group must rebuild that very state, not re-resolve (and re-publish) it."""
    cfg, _ = kafka_topics("bounded-restart", **env_for(tmp_path))
    group = f"it-sink-{uuid.uuid4().hex[:8]}"
    publish_market(cfg)
    ords = list(orders())
    produce(cfg, cfg.topics.orders, ords)
    first = run(cfg, group)
    after_first = raw_executions(cfg)
    assert first.stats["acks"] >= N_ORDERS // 2 and after_first

    again = run(cfg, group)  # nothing new to read

    assert again.inputs == 0 and again.outputs == 0
    assert raw_executions(cfg) == after_first
    assert again.positions == first.positions
    ids = [r.report_id for r in executions(cfg)]
    assert not [i for i, c in Counter(ids).items() if c > 1]


def _delete_up_to(cfg: Config, topic: str, offsets: dict[int, int]) -> None:
    """What size/time retention does: the records before ``offsets`` are gone."""
    admin = AdminClient(client_config(cfg, {}))
    futures = admin.delete_records([TopicPartition(topic, p, o) for p, o in offsets.items()])
    for fut in futures.values():
        fut.result()


def test_cold_start_needs_only_what_follows_its_snapshot(kafka_topics, tmp_path: Path) -> None:
    """Retention deletes the inputs a bounded run consumed: the next run starts from the
    snapshot the first one left, replays nothing and continues; without the snapshot it
    refuses, naming retention, instead of rebuilding a wrong state."""
    cfg, _ = kafka_topics("retention", **env_for(tmp_path))
    group = f"it-sink-{uuid.uuid4().hex[:8]}"
    publish_market(cfg)
    ords = list(orders())
    k = N_ORDERS // 2
    produce(cfg, cfg.topics.orders, ords[:k])
    first = run(cfg, group)
    assert first.stats["new_orders"] == k
    for topic in (cfg.topics.events, cfg.topics.orders):
        _delete_up_to(cfg, topic, end_offsets(cfg, topic))
    produce(cfg, cfg.topics.orders, ords[k:])

    snapshot = cfg.state_dir / "exec-sink" / f"{group}.snapshot.pkl"
    aside = snapshot.with_name("aside.pkl")
    snapshot.rename(aside)
    with pytest.raises(SinkStateError, match="retention"):
        run(cfg, group)
    aside.rename(snapshot)

    again = run(cfg, group)
    assert again.rebuilt_inputs == 0
    assert again.inputs == N_ORDERS - k
    assert again.stats["new_orders"] == N_ORDERS
    ids = [r.report_id for r in executions(cfg)]
    assert not [i for i, c in Counter(ids).items() if c > 1]


def test_sigkill_mid_stream_then_restart_gives_the_same_executions(
    kafka_topics, tmp_path: Path
) -> None:
    """A live sink in a subprocess is SIGKILLed between two of its transactions; a bounded one
    with the same group finishes: the committed executions equal one uninterrupted run's."""
    # many heartbeats after every order, so that the live sink consumes (and commits) in many
    # batches of at most 10 000 inputs: the kill lands between two commits, not after the last
    beats = 12_000
    inputs = [rec for o in orders() for rec in (o, *[heartbeat(o.ts_event)] * beats)]
    total = len(events()) + len(inputs)

    # reference: the same inputs, one uninterrupted bounded run
    ref, _ = kafka_topics("kref", **env_for(tmp_path / "ref"))
    publish_market(ref)
    produce(ref, ref.topics.orders, inputs)
    ref_res = run(ref)
    expected = committed_values(ref, ref.topics.executions)
    assert ref_res.stats["acks"] >= N_ORDERS // 2 and ref_res.stats["fills"] > 0

    # killed: a live sink in its own process group, SIGKILLed between two commits
    cfg, env = kafka_topics("killed", **env_for(tmp_path / "killed"))
    group = f"it-sink-{uuid.uuid4().hex[:8]}"
    publish_market(cfg)
    produce(cfg, cfg.topics.orders, inputs)
    code = (
        "from jobs.execution_sink import run_sink; from udfs.config import load_config; "
        f"run_sink(load_config(), group={group!r}, bounded=False, commit_every=200, "
        "idle_exit_s=None)"
    )
    watcher = Consumer(client_config(cfg, {"group.id": group, "enable.auto.commit": False}))
    assert committed_inputs(watcher, cfg) == 0  # (and the watcher knows its coordinator)
    with (tmp_path / "live.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=PROJECT_ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        seen = 0
        # past the first two orders and their heartbeats: the first order's reports committed
        progress = len(events()) + 2 * (1 + beats)
        while time.monotonic() < deadline and proc.poll() is None and seen <= progress:
            seen = committed_inputs(watcher, cfg)
        kill_job(proc)
        killed_at = committed_inputs(watcher, cfg)
    finally:
        kill_job(proc)
        watcher.close()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "live.log").read_text()[-3000:]
    assert progress < seen <= killed_at < total, (seen, killed_at, total)  # killed mid-stream
    before = committed_values(cfg, cfg.topics.executions)
    assert before and before == expected[: len(before)] and len(before) < len(expected)

    resumed = run(cfg, group)

    assert resumed.rebuilt_inputs == killed_at > 0  # state rebuilt from the committed history
    assert resumed.inputs == total - killed_at
    after = committed_values(cfg, cfg.topics.executions)
    ids = [decode_record(ExecReport, v).report_id for v in after]
    assert not [i for i, c in Counter(ids).items() if c > 1]
    assert after == expected  # byte for byte, in the same order
    assert resumed.positions == ref_res.positions


def test_burst_above_the_throttle_is_cut_to_the_limit(kafka_topics, tmp_path: Path) -> None:
    """max_orders_per_window + 5 orders decided at the same event time: exactly the limit is
    accepted, the rest are rejected with a throttle reason."""
    limit = 4
    cfg, _ = kafka_topics(
        "throttle",
        **env_for(
            tmp_path,
            BOOKSTREAM_RISK_MAX_ORDERS_PER_WINDOW=str(limit),
            BOOKSTREAM_RISK_THROTTLE_WINDOW_MS="1000",
        ),
    )
    publish_market(cfg)
    base = orders()[3]
    burst = [
        dataclasses.replace(
            base,
            order_id=order_id("it-burst", base.instrument, base.source_seq, base.ts_event, i),
            quantity=1,
        )
        for i in range(limit + 5)
    ]
    produce(cfg, cfg.topics.orders, burst)

    res = run(cfg)

    per_order = by_order(executions(cfg))
    first = [per_order[o.order_id][0] for o in burst]
    assert [r.kind for r in first[:limit]] == [ExecKind.ACK] * limit
    assert [r.kind for r in first[limit:]] == [ExecKind.REJECT] * 5
    assert all(r.reason.startswith("throttle") for r in first[limit:]), first[limit].reason
    assert res.stats["accepted"] == limit and res.stats["rejected"] == 5


def test_cold_start_detects_a_working_order_lost_across_the_restart(
    kafka_topics, tmp_path: Path
) -> None:
    """Orders resting 50 cents below the bid / above the ask never fill: the first run acks them
    and they stay working. The restart runs under a limit that refuses them on rebuild, so the
    rebuilt state has the same (flat) positions but no working orders: the sink must refuse to
    start and name the orders, not go on as if nothing rested at the venue."""
    resting = [
        dataclasses.replace(o, price=o.price + (-5000 if o.side is OrderSide.BUY else 5000))
        for o in orders()[:4]
    ]
    cfg, env = kafka_topics("lost", **env_for(tmp_path))
    group = f"it-sink-{uuid.uuid4().hex[:8]}"
    publish_market(cfg)
    produce(cfg, cfg.topics.orders, [*resting, heartbeat(events()[-1].ts_event)])
    first = run(cfg, group, bounded=False, commit_every=100, idle_exit_s=3)
    assert first.stats["acks"] == 4 and first.stats["fills"] == 0, (first.stats, executions(cfg))
    acked = {r.order_id for r in executions(cfg) if r.kind is ExecKind.ACK}
    assert acked == {o.order_id for o in resting}

    # the same history, rebuilt under a limit that refuses every order
    strict = config_for({**env, "BOOKSTREAM_RISK_MAX_ORDER_NOTIONAL": "1"})
    assert strict.topics == cfg.topics and strict.risk.max_order_notional == 1.0
    with pytest.raises(RuntimeError) as err:
        run(strict, group)
    msg = str(err.value)
    assert "resting orders from the executions log differ from the rebuilt state" in msg
    assert "4 resting in the log, not rebuilt" in msg
    assert all(o.order_id in msg for o in resting)
    assert "refusing to accept orders" in msg

    # under the original limits the same restart agrees with its log and goes on
    again = run(cfg, group)
    assert again.rebuilt_inputs == first.inputs
