"""The trading stage (udfs/strategy/trading.py) over the real LOBSTER sample: orders, replacement by
cancel, heartbeats, and the TWAP / POV execution of each decision."""

from __future__ import annotations

from collections import defaultdict
from fractions import Fraction

import pytest

from udfs.config import load_config
from udfs.market.adapters.lobster import iter_lobster_events
from udfs.market.adapters.sources import SAMPLE_LOBSTER
from udfs.pipeline import process_events
from udfs.schema import TRADE_KINDS, Order, OrderAction
from udfs.strategy.trading import Trader


def _run(execution: str) -> tuple[list[Order], list, object]:
    cfg = load_config(env={"BOOKSTREAM_STRATEGY_EXECUTION": execution})
    trader = Trader.load(cfg)
    events = list(iter_lobster_events(*SAMPLE_LOBSTER))
    _, out = process_events(events, cfg.features, cfg.flink.out_of_orderness_ms, trader)
    return out.orders, events, cfg


@pytest.fixture(scope="module")
def direct():
    return _run("direct")


def test_direct_orders_replace_the_previous_decision(direct) -> None:
    orders, _, cfg = direct
    new = [o for o in orders if o.action is OrderAction.NEW]
    assert len(new) > 5
    assert len({o.order_id for o in new}) == len(new)
    # before every NEW after the first, the previous NEW is cancelled at the same decision time
    last_new = None
    for i, o in enumerate(orders):
        if o.action is not OrderAction.NEW:
            continue
        if last_new is not None:
            between = orders[last_new + 1 : i]
            cancels = [c for c in between if c.action is OrderAction.CANCEL]
            assert [c.order_id for c in cancels] == [orders[last_new].order_id], o
            assert all(c.ts_event == o.ts_event for c in cancels)
        last_new = i
    beats = [o.ts_event for o in orders if o.action is OrderAction.HEARTBEAT]
    assert beats == sorted(beats) and len(beats) > 10
    feed = cfg.venue.feed_latency_ms * 1_000_000
    assert all(o.trigger_ts_recv == o.ts_event - feed for o in new)  # LOBSTER: recv = event


def test_twap_children_sum_to_each_decision_and_spread_over_the_horizon(direct) -> None:
    parents = [o for o in direct[0] if o.action is OrderAction.NEW]
    orders, _, cfg = _run("twap")
    children = defaultdict(list)
    for o in orders:
        if o.action is OrderAction.NEW:
            children[o.parent_id].append(o)
    assert set(children) == {p.order_id for p in parents}
    horizon = cfg.strategy.twap_horizon_ms * 1_000_000
    for p in parents:
        kids = children[p.order_id]
        assert sum(k.quantity for k in kids) == p.quantity
        assert len(kids) == min(cfg.strategy.twap_slices, p.quantity)
        assert kids[0].ts_event == p.ts_event
        assert all(p.ts_event <= k.ts_event < p.ts_event + horizon for k in kids)
        assert all(k.side is p.side and k.price == p.price for k in kids)


def test_pov_children_never_exceed_the_participation_of_traded_volume(direct) -> None:
    parents = {o.order_id: o for o in direct[0] if o.action is OrderAction.NEW}
    orders, events, cfg = _run("pov")
    rho = Fraction(repr(cfg.strategy.pov_participation))
    feed = cfg.venue.feed_latency_ms * 1_000_000
    trades = [e for e in events if e.kind in TRADE_KINDS]
    released = defaultdict(int)
    n_children = 0
    for o in orders:
        if o.action is not OrderAction.NEW:
            continue
        parent = parents[o.parent_id]  # every child belongs to a decision of the direct run
        released[o.parent_id] += o.quantity
        n_children += 1
        # market volume between the decision and the trade that released this child
        volume = sum(t.size for t in trades if parent.ts_event <= t.ts_event <= o.ts_event - feed)
        assert released[o.parent_id] <= rho * volume, (o, volume)
        assert released[o.parent_id] <= parent.quantity
    assert n_children > 0


def _run_with(env: dict[str, str]) -> list[Order]:
    cfg = load_config(env=env)
    trader = Trader.load(cfg)
    events = iter_lobster_events(*SAMPLE_LOBSTER)
    return process_events(events, cfg.features, cfg.flink.out_of_orderness_ms, trader)[1].orders


def test_feed_latency_drawn_from_a_recorded_distribution_repeats_exactly(tmp_path) -> None:
    samples = tmp_path / "feed_ms.txt"
    samples.write_text("# recorded feed latencies\n0.5\n3\n12.25\n")
    env = {"BOOKSTREAM_VENUE_FEED_LATENCY_SAMPLES_PATH": str(samples)}
    first, again = _run_with(env), _run_with(env)
    other = _run_with({**env, "BOOKSTREAM_VENUE_LATENCY_SEED": "99"})
    new = [o for o in first if o.action is OrderAction.NEW]
    drawn = {o.ts_event - o.trigger_ts_recv for o in new}  # LOBSTER: recv == exchange time
    assert drawn <= {500_000, 3_000_000, 12_250_000} and len(drawn) > 1
    assert first == again
    assert [o.ts_event for o in other if o.action is OrderAction.NEW] != [o.ts_event for o in new]
    # a heartbeat never runs ahead of a decision sent after it
    latest_beat = 0
    for o in first:
        if o.action is OrderAction.HEARTBEAT:
            latest_beat = max(latest_beat, o.ts_event)
        elif o.action is OrderAction.NEW:
            assert o.ts_event >= latest_beat, o


def test_capital_weights_size_each_instrument_on_its_share(tmp_path, direct) -> None:
    # HRP-style weights (udfs.research.portfolio): AAPL sized on a 2**-10 share of the capital
    # trades exactly as with that capital configured (100_000 * 2**-10 = 97.65625, exact); the
    # share is small enough that the volatility target, not the notional cap, binds
    weights = tmp_path / "weights.json"
    weights.write_text('{"AAPL.XNAS": 0.0009765625, "MSFT.XNAS": 0.9990234375}\n')
    weighted = _run_with({"BOOKSTREAM_SIZING_CAPITAL_WEIGHTS_PATH": str(weights)})
    share = _run_with({"BOOKSTREAM_SIZING_CAPITAL": "97.65625"})
    assert weighted == share

    def traded(orders: list[Order]) -> int:
        return sum(o.quantity for o in orders if o.action is OrderAction.NEW)

    # and smaller than on the whole capital (the default run: no weights)
    assert 0 < traded(weighted) < traded(direct[0])
