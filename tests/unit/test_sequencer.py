"""The execution sink's sequencer feeds the engine one order of inputs whatever order the
partitions are read in (real sample events, two instruments on two partitions)."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field, replace

import pytest

from udfs.execution.sequencer import Sequencer
from udfs.market.adapters.sources import SAMPLE_BINANCE, SAMPLE_LOBSTER, Source
from udfs.schema import L2Event, Order, OrderAction, OrderSide, OrderType

BOUND_NS = 100_000_000
"""lateness bound of these tests: above the sample's own disorder (24 ms), below its spans"""


@dataclass
class RecordingEngine:
    """Stands in for the execution engine: records what it is fed, in order."""

    fed: list[tuple[str, str, int, int]] = field(default_factory=list)
    """(kind, instrument, seq, exchange time) per input fed"""

    def on_market_event(self, ev: L2Event) -> list:
        self.fed.append(("market", ev.instrument, ev.seq, ev.ts_event))
        return []

    def on_order(self, order: Order) -> list:
        self.fed.append(("order", order.instrument, order.source_seq, order.ts_event))
        return []

    def on_control(self, ctrl) -> list:
        self.fed.append(("control", "", 0, ctrl.ts_event))
        return []

    def finish(self) -> list:
        return []


def _order(ev: L2Event, action: OrderAction = OrderAction.NEW) -> Order:
    return Order(
        order_id=f"{ev.instrument}-{ev.seq}",
        instrument=ev.instrument,
        strategy="t",
        action=action,
        side=OrderSide.BUY,
        order_type=OrderType.LIMIT,
        price=ev.price,
        quantity=1,
        price_exp=ev.price_exp,
        size_exp=ev.size_exp,
        ts_event=ev.ts_event + 1_000_000,
        source_seq=ev.seq,
    )


@pytest.fixture(scope="module")
def streams() -> dict[int, tuple[list[L2Event], list[Order]]]:
    """partition -> (market events, orders + heartbeats): AAPL on 0, BTC on 1, BTC moved in
    time onto AAPL's so the two interleave."""
    aapl = list(Source(lobster=[SAMPLE_LOBSTER]).events())
    btc = list(itertools.islice(Source(binance=[list(SAMPLE_BINANCE)]).events(), 3000))
    shift = btc[0].ts_event - aapl[0].ts_event
    btc = [replace(e, ts_event=e.ts_event - shift) for e in btc]
    out = {}
    for p, events in enumerate((aapl, btc)):
        orders = []
        for i, ev in enumerate(events):
            if i % 37 == 0:
                orders.append(_order(ev))
            if i % 200 == 199:  # the job's heartbeat: every order up to here is out
                orders.append(
                    replace(_order(ev, OrderAction.HEARTBEAT), ts_event=ev.ts_event + 1_000_000)
                )
        out[p] = (events, orders)
    return out


def _run(streams, schedule: list[tuple[str, int, int]]) -> list:
    """Feed chunks (kind, partition, size) in the given order, draining after each; then
    mark everything complete and drain what the end releases."""
    engine = RecordingEngine()
    seq = Sequencer(
        engine, lateness_ns=BOUND_NS, expected_partitions={0, 1}, expected_order_partitions={0, 1}
    )
    cursors = {("market", p): 0 for p in streams} | {("orders", p): 0 for p in streams}
    for kind, p, size in schedule:
        items = streams[p][0] if kind == "market" else streams[p][1]
        start = cursors[(kind, p)]
        for item in items[start : start + size]:
            if kind == "market":
                seq.add_market(item, p)
            else:
                seq.add_order(item, p)
        cursors[(kind, p)] = start + size
        seq.drain()
    for p in streams:
        seq.market_complete(p)
        seq.orders_complete(p)
    seq.drain()
    assert seq.pending() == 0
    return engine.fed


def _schedule(streams, rng: random.Random | None, first: int | None = None) -> list:
    chunks = []
    for p, (events, orders) in streams.items():
        chunks += [("market", p, 250)] * (len(events) // 250 + 1)
        chunks += [("orders", p, 20)] * (len(orders) // 20 + 1)
    if first is not None:  # one partition read entirely before the other
        return sorted(chunks, key=lambda c: c[1] != first)
    rng.shuffle(chunks)
    # keep each (kind, partition) in order: a shuffle of the interleaving only
    return chunks


def test_read_order_of_partitions_does_not_change_what_the_engine_sees(streams) -> None:
    reference = _run(streams, _schedule(streams, None, first=0))
    assert len(reference) == sum(
        len(e) + sum(o.action is OrderAction.NEW for o in orders) for e, orders in streams.values()
    )
    assert _run(streams, _schedule(streams, None, first=1)) == reference
    for seed in range(5):
        assert _run(streams, _schedule(streams, random.Random(seed))) == reference


def test_orders_read_long_after_the_market_still_come_in_order(streams) -> None:
    # the orders topic lags: every market event is read before any order. Heartbeats hold the
    # market back until the orders decided before it are in
    reference = _run(streams, _schedule(streams, None, first=0))
    lagging = sorted(_schedule(streams, None, first=0), key=lambda c: c[0] == "orders")
    assert lagging[0][0] == "market" and lagging[-1][0] == "orders"
    assert _run(streams, lagging) == reference


def test_inputs_are_fed_in_exchange_time_with_orders_after_their_trigger(streams) -> None:
    fed = _run(streams, _schedule(streams, random.Random(11)))
    # exchange time never goes back, except for a record older than its own stream's previous
    # one (Binance's few ms of disorder): a stream's order is kept
    newest: dict[tuple[str, str], int] = {}
    clock = 0
    for kind, inst, _seq, ts in fed:
        if ts >= newest.get((kind, inst), 0):
            assert ts >= clock
            clock = ts
        newest[(kind, inst)] = max(ts, newest.get((kind, inst), 0))
    # an order comes after every market event of its instrument up to its trigger
    last_seq: dict[str, int] = {}
    for kind, inst, seq, _ts in fed:
        if kind == "market":
            last_seq[inst] = max(seq, last_seq.get(inst, 0))
        else:
            assert last_seq.get(inst, -1) >= seq


def test_nothing_is_released_before_every_expected_partition_delivered(streams) -> None:
    engine = RecordingEngine()
    seq = Sequencer(
        engine, lateness_ns=BOUND_NS, expected_partitions={0, 1}, expected_order_partitions={0, 1}
    )
    events, orders = streams[1]
    for ev in events:
        seq.add_market(ev, 1)
    for o in orders:
        seq.add_order(o, 1)
    assert seq.drain() == [] and engine.fed == []  # partition 0 may still hold earlier events
    seq.add_market(streams[0][0][0], 0)
    seq.drain()
    assert engine.fed == []  # AAPL has no heartbeat yet: its orders may still come


def test_a_late_market_event_is_skipped_like_the_job_does(streams) -> None:
    engine = RecordingEngine()
    seq = Sequencer(engine, lateness_ns=BOUND_NS, expected_partitions={0})
    events = streams[0][0]
    late = replace(events[10], ts_event=events[-1].ts_event - BOUND_NS - 1)
    for ev in events:
        seq.add_market(ev, 0)
    seq.add_market(late, 0)
    assert seq.late_skipped == 1
    seq.market_complete(0)
    seq.drain(final=True)
    assert len(engine.fed) == len(events)


def _feed_one_partition(events: list[L2Event], orders: list[Order], extra: list) -> Sequencer:
    """AAPL's events and orders on partition 0, ``extra`` (event, key) added after event 10;
    drained without marking anything complete (a live run)."""
    seq = Sequencer(
        RecordingEngine(),
        lateness_ns=BOUND_NS,
        expected_partitions={0},
        expected_order_partitions={0},
    )
    for i, ev in enumerate(events):
        seq.add_market(ev, 0, key=ev.instrument)
        if i == 10:
            for stray, key in extra:
                seq.add_market(stray, 0, key=key)
    for order in orders:
        seq.add_order(order, 0)
    seq.drain()
    return seq


def test_events_the_job_never_keys_or_refuses_as_future_hold_nothing_back(streams) -> None:
    """Before: one event keyed to AAPL but naming another instrument (the job dead-letters it as
    key_mismatch, so that instrument never gets a heartbeat) held the safe time at minus
    infinity for good; an event an hour ahead moved its partition's time. Both are skipped, as
    the job refuses them, and the sink feeds exactly what it feeds without them."""
    events, orders = streams[0]
    clean = _feed_one_partition(events, orders, [])
    assert len(clean.engine.fed) > len(events) // 2  # a live run feeds up to the heartbeats
    stray = replace(events[5], instrument="MSFT.XNAS")
    ahead = replace(events[6], ts_event=events[6].ts_event + 3_600 * 10**9)
    seq = _feed_one_partition(events, orders, [(stray, events[5].instrument), (ahead, None)])
    assert (seq.unkeyed_skipped, seq.future_skipped) == (1, 1)
    assert seq.engine.fed == clean.engine.fed


def _read_ahead_run(
    streams, preference: list[tuple[str, int, int]], bound_ns: int | None
) -> tuple[list, int]:
    """A reader taking chunks ``(kind, partition, size)`` in ``preference`` order, but skipping
    the partitions :meth:`Sequencer.read_ahead` says to pause (``bound_ns``; None: never);
    a partition read to its end is complete (a bounded run). Returns what the engine was fed
    and the largest number of inputs queued after a drain."""
    engine = RecordingEngine()
    seq = Sequencer(
        engine, lateness_ns=BOUND_NS, expected_partitions={0, 1}, expected_order_partitions={0, 1}
    )
    cursors = {("market", p): 0 for p in streams} | {("orders", p): 0 for p in streams}
    todo = list(preference)
    peak = 0
    while todo:
        paused: set[tuple[str, int]] = set()
        if bound_ns is not None:
            events, orders = seq.read_ahead(bound_ns)
            paused = {("market", p) for p in events} | {("orders", p) for p in orders}
        i = next((i for i, (k, p, _) in enumerate(todo) if (k, p) not in paused), None)
        assert i is not None, f"every partition left is paused ({paused}): the reader stalls"
        kind, p, size = todo.pop(i)
        items = streams[p][0] if kind == "market" else streams[p][1]
        start = cursors[(kind, p)]
        for item in items[start : start + size]:
            if kind == "market":
                seq.add_market(item, p)
            else:
                seq.add_order(item, p)
        cursors[(kind, p)] = start + size
        if start + size >= len(items):
            (seq.market_complete if kind == "market" else seq.orders_complete)(p)
        seq.drain()
        peak = max(peak, seq.pending())
    assert seq.pending() == 0
    return engine.fed, peak


def test_partitions_read_far_past_the_safe_time_are_paused_and_the_queues_stay_bounded(
    streams,
) -> None:
    """The soak's backlog: the orders topic read after the whole events topic, partition 0
    before 1. Without flow control every market event waits in the queues; pausing what
    read_ahead names keeps them to about the bound's worth of input past the safe time, and the
    engine is fed exactly the same. (AAPL's 49 s on both partitions, the second copy under
    another name: the Binance slice spans too little time to show a bound of seconds.)"""
    aapl_events, aapl_orders = streams[0]
    other = "AAPL2.XNAS"
    streams = {
        0: streams[0],
        1: (
            [replace(ev, instrument=other) for ev in aapl_events],
            [replace(o, instrument=other, order_id=f"2-{o.order_id}") for o in aapl_orders],
        ),
    }
    lagging = sorted(_schedule(streams, None, first=0), key=lambda c: (c[0] == "orders", c[1]))
    reference, unbounded_peak = _read_ahead_run(streams, lagging, None)
    bound_ns = 1_000_000_000
    fed, peak = _read_ahead_run(streams, lagging, bound_ns)
    assert fed == reference
    # inputs (market events and orders) in the densest window of bound + lateness, plus one
    # chunk per partition read before its pause took effect
    stamps = sorted(
        [ev.ts_event for events, _ in streams.values() for ev in events]
        + [o.ts_event for _, orders in streams.values() for o in orders]
    )
    j, densest = 0, 0
    for i, ts in enumerate(stamps):
        while stamps[j] < ts - bound_ns - BOUND_NS:
            j += 1
        densest = max(densest, i - j + 1)
    assert peak <= densest + 2 * 250 + 2 * 20 < unbounded_peak // 2, (peak, densest, unbounded_peak)
