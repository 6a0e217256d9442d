"""Tests of udfs.strategy.orders: deterministic ids (also across processes), the order to a target,
TWAP sums and spacing, and POV on hand-made trades and on the real LOBSTER AAPL trade stream
(its volume checked against the raw message CSV, independently of the adapter)."""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import pickle
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from udfs.market.adapters.lobster import iter_lobster_events
from udfs.schema import (
    TRADE_KINDS,
    Kind,
    L2Event,
    Order,
    OrderAction,
    OrderSide,
    OrderType,
    Side,
    decode_record,
    encode_record,
)
from udfs.strategy.orders import PovSlicer, order_id, orders_for_target, twap_children

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "lobster"
MESSAGES = DATA / "AAPL_2012-06-21_34200000_57600000_message_10.csv"
ORDERBOOK = DATA / "AAPL_2012-06-21_34200000_57600000_orderbook_10.csv"
INSTRUMENT = "AAPL.XNAS"
TS0 = 1_340_285_400_004_241_176  # 2012-06-21 09:30:00.004241176 EDT, the sample's first message

ROW = {
    "instrument": INSTRUMENT,
    "ts_event": TS0,
    "seq": 42,
    "price_exp": -4,
    "size_exp": 0,
    "best_bid": 5853000,
    "best_ask": 5853300,
    "mid": 5853150.0,
}


def _parent(
    qty: int = 10,
    side: OrderSide = OrderSide.BUY,
    ts: int = TS0,
    order_type: OrderType = OrderType.LIMIT,
    reduce_only: bool = False,
) -> Order:
    return Order(
        order_id=order_id("twap", INSTRUMENT, 42, ts),
        instrument=INSTRUMENT,
        strategy="twap",
        action=OrderAction.NEW,
        side=side,
        order_type=order_type,
        price=5853000 if order_type is OrderType.LIMIT else 0,
        quantity=qty,
        price_exp=-4,
        size_exp=0,
        ts_event=ts,
        source_seq=42,
        reduce_only=reduce_only,
        tif="DAY",
    )


def _trade(
    size: int, ts: int, seq: int, kind: Kind = Kind.EXECUTE, instrument: str = INSTRUMENT
) -> L2Event:
    return L2Event(instrument, "XNAS", kind, Side.BID, 5853000, size, ts, ts, -4, 0, seq=seq)


# --- order ids -------------------------------------------------------------------------------


def test_order_id_is_the_hash_of_the_canonical_string() -> None:
    canonical = b'["bookstream.order.v1","imb","AAPL.XNAS",42,1340285400004241176,0,""]'
    expected = hashlib.sha256(canonical).hexdigest()[:20]
    assert order_id("imb", INSTRUMENT, 42, TS0) == expected
    # pinned: a changed scheme, field order or length fails here
    assert expected == "da96d8f82f0c1055b405"
    assert order_id("imb", INSTRUMENT, 42, TS0, 3, "abc") == "53b18e4c2c80427e68ab"


def test_order_id_changes_with_every_input() -> None:
    base = ("imb", INSTRUMENT, 42, TS0, 0, "")
    variants = [
        ("imb2", INSTRUMENT, 42, TS0, 0, ""),
        ("imb", "MSFT.XNAS", 42, TS0, 0, ""),
        ("imb", INSTRUMENT, 43, TS0, 0, ""),
        ("imb", INSTRUMENT, 42, TS0 + 1, 0, ""),
        ("imb", INSTRUMENT, 42, TS0, 1, ""),
        ("imb", INSTRUMENT, 42, TS0, 0, "p"),
        # a separator inside a name cannot shift a boundary: JSON quotes every string
        ("imb|AAPL.XNAS", "", 42, TS0, 0, ""),
        ('imb","AAPL.XNAS', "", 42, TS0, 0, ""),
    ]
    ids = {order_id(*base)} | {order_id(*v) for v in variants}
    assert len(ids) == 1 + len(variants)
    assert all(len(i) == 20 and int(i, 16) >= 0 for i in ids)


def test_order_id_rejects_float_integers() -> None:
    with pytest.raises(TypeError):
        order_id("imb", INSTRUMENT, 42, float(TS0))
    with pytest.raises(TypeError):
        order_id("imb", INSTRUMENT, 42.0, TS0)  # type: ignore[arg-type]


# --- orders_for_target -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "target", "side", "qty", "reduce_only"),
    [
        (0, 100, OrderSide.BUY, 100, False),  # open long
        (100, 40, OrderSide.SELL, 60, True),  # reduce long
        (100, 0, OrderSide.SELL, 100, True),  # close long
        (100, -50, OrderSide.SELL, 150, False),  # flip long -> short
        (100, 130, OrderSide.BUY, 30, False),  # add to long
        (0, -20, OrderSide.SELL, 20, False),  # open short
        (-100, -30, OrderSide.BUY, 70, True),  # reduce short
        (-100, 0, OrderSide.BUY, 100, True),  # close short
        (-100, 20, OrderSide.BUY, 120, False),  # flip short -> long
        (-100, -130, OrderSide.SELL, 30, False),  # add to short
    ],
)
def test_orders_for_target(
    current: int, target: int, side: OrderSide, qty: int, reduce_only: bool
) -> None:
    (o,) = orders_for_target(current, target, ROW, "imb")
    assert o.side is side and o.quantity == qty and o.reduce_only is reduce_only
    assert current + side.sign * o.quantity == target
    assert o.order_type is OrderType.LIMIT and o.action is OrderAction.NEW
    # passive touch: a buy joins the bid, a sell joins the ask
    assert o.price == (5853000 if side is OrderSide.BUY else 5853300)
    assert (o.instrument, o.strategy, o.ts_event, o.source_seq) == (INSTRUMENT, "imb", TS0, 42)
    assert (o.price_exp, o.size_exp, o.parent_id, o.tif) == (-4, 0, "", "GTC")
    assert o.order_id == order_id("imb", INSTRUMENT, 42, TS0)


def test_orders_for_target_at_target_is_empty() -> None:
    assert orders_for_target(5, 5, ROW, "imb") == []
    assert orders_for_target(0, 0, ROW, "imb") == []


def test_orders_for_target_market() -> None:
    (o,) = orders_for_target(0, -7, ROW, "imb", order_type=OrderType.MARKET, tif="IOC")
    assert (o.side, o.order_type, o.price, o.quantity, o.tif) == (
        OrderSide.SELL,
        OrderType.MARKET,
        0,
        7,
        "IOC",
    )


def test_orders_for_target_needs_a_touch_for_a_limit() -> None:
    with pytest.raises(ValueError, match="best_ask"):
        orders_for_target(0, -1, dict(ROW, best_ask=0), "imb")
    with pytest.raises(KeyError):
        orders_for_target(0, 1, {k: v for k, v in ROW.items() if k != "best_bid"}, "imb")
    with pytest.raises(TypeError):  # prices are int ticks, never floats
        orders_for_target(0, 1, dict(ROW, best_bid=585.30), "imb")


def test_order_survives_the_wire() -> None:
    (o,) = orders_for_target(3, -2, ROW, "imb")
    assert decode_record(Order, encode_record(o)) == o


# --- TWAP ------------------------------------------------------------------------------------


def test_twap_hand_computed() -> None:
    parent = _parent(10)
    kids = twap_children(parent, 1_000, 4_000, 3)
    # 10 = 3 * 3 + 1: the remainder goes to the first slice; span 3_000 ns / 3 = 1_000 ns
    assert [k.quantity for k in kids] == [4, 3, 3]
    assert [k.ts_event for k in kids] == [1_000, 2_000, 3_000]
    for i, k in enumerate(kids):
        assert k.parent_id == parent.order_id
        assert k.order_id == order_id("twap", INSTRUMENT, 42, k.ts_event, i, parent.order_id)
        assert (k.side, k.order_type, k.price, k.tif, k.source_seq) == (
            parent.side,
            parent.order_type,
            parent.price,
            parent.tif,
            parent.source_seq,
        )
    assert len({k.order_id for k in kids} | {parent.order_id}) == 4


def test_twap_uneven_span_and_remainders() -> None:
    # 11 lots in 4 slices: 11 = 4 * 2 + 3 -> [3, 3, 3, 2]; span 10 ns: i * 10 // 4 -> 0 2 5 7
    kids = twap_children(_parent(11), 100, 110, 4)
    assert [k.quantity for k in kids] == [3, 3, 3, 2]
    assert [k.ts_event for k in kids] == [100, 102, 105, 107]


def test_twap_fewer_lots_than_slices() -> None:
    # 2 lots, 5 slices asked: 2 one-lot slices over the whole interval, never a 0-lot child
    kids = twap_children(_parent(2), 0, 1_000, 5)
    assert [(k.quantity, k.ts_event) for k in kids] == [(1, 0), (1, 500)]
    assert twap_children(_parent(0), 0, 1_000, 5) == []


def test_twap_reduce_only_and_market_inherited() -> None:
    parent = _parent(5, OrderSide.SELL, order_type=OrderType.MARKET, reduce_only=True)
    kids = twap_children(parent, 0, 10, 5)
    assert all(
        k.reduce_only
        and k.order_type is OrderType.MARKET
        and k.price == 0
        and k.side is OrderSide.SELL
        for k in kids
    )


def test_twap_sums_and_spacing_everywhere() -> None:
    for qty in (1, 2, 7, 100, 1_001):
        for n in (1, 2, 3, 7, 10, 64):
            for span in (0, 1, 999, 60 * 10**9):
                kids = twap_children(_parent(qty), TS0, TS0 + span, n)
                m = min(n, qty)
                assert len(kids) == m
                q = [k.quantity for k in kids]
                assert sum(q) == qty and max(q) - min(q) <= 1 and q == sorted(q, reverse=True)
                ts = [k.ts_event for k in kids]
                assert ts[0] == TS0 and all(t < TS0 + span or span == 0 for t in ts)
                gaps = [b - a for a, b in itertools.pairwise(ts)]
                assert all(g in (span // m, span // m + 1) for g in gaps)
                assert len({k.order_id for k in kids}) == m


def test_twap_bad_arguments() -> None:
    with pytest.raises(ValueError):
        twap_children(_parent(), 0, 10, 0)
    with pytest.raises(ValueError):
        twap_children(_parent(), 10, 0, 2)


# --- POV on hand-made trades ---------------------------------------------------------------


def test_pov_hand_computed() -> None:
    parent = _parent(10)
    pov = PovSlicer(parent, 0.3)
    out = [pov.on_trade(_trade(size, TS0 + i, 100 + i)) for i, size in enumerate([3, 4, 10, 100])]
    # V = 3 -> floor(0.9) = 0; V = 7 -> floor(2.1) = 2; V = 17 -> floor(5.1) = 5 (+3);
    # V = 117 -> min(10, 35) = 10 (+5)
    assert [[c.quantity for c in o] for o in out] == [[], [2], [3], [5]]
    kids = [c for o in out for c in o]
    assert [c.ts_event for c in kids] == [TS0 + 1, TS0 + 2, TS0 + 3]
    assert [c.source_seq for c in kids] == [101, 102, 103]
    assert [c.order_id for c in kids] == [
        order_id("twap", INSTRUMENT, 100 + i + 1, TS0 + i + 1, i, parent.order_id) for i in range(3)
    ]
    assert all(c.parent_id == parent.order_id and c.price == parent.price for c in kids)
    assert pov.done and pov.remaining == 0 and pov.released == 10
    assert pov.on_trade(_trade(50, TS0 + 9, 200)) == []  # nothing after completion


def test_pov_participation_is_the_written_decimal() -> None:
    # in binary floats 0.29 * 100 = 28.999999999999996 (and Fraction(0.29) < 29/100), so a
    # float floor would allow 28 lots; 29% of 100 lots is 29, which the slicer releases
    assert 0.29 * 100 < 29 and Fraction(0.29) * 100 < 29
    pov = PovSlicer(_parent(100), 0.29)
    assert [c.quantity for c in pov.on_trade(_trade(100, TS0, 1))] == [29]
    # and never more: 0.29 * 199 = 57.71 -> 57 in total
    assert [c.quantity for c in pov.on_trade(_trade(99, TS0, 2))] == [28]


def test_pov_min_slice() -> None:
    pov = PovSlicer(_parent(5), 0.5, min_slice_lots=2)
    got = [
        sum(c.quantity for c in pov.on_trade(_trade(s, TS0 + i, i)))
        for i, s in enumerate([2, 2, 1, 1, 2, 2])
    ]
    # V: 2 4 5 6 8 10 -> floor(V/2): 1 2 2 3 4 5; a release needs >= 2 lots unless it is the
    # whole remainder: - 2 - - 2 1 (the last lot completes the parent)
    assert got == [0, 2, 0, 0, 2, 1]
    assert pov.done and pov.n_children == 3


def test_pov_ignores_other_events() -> None:
    pov = PovSlicer(_parent(10, ts=TS0), 0.5)
    assert pov.on_trade(_trade(100, TS0, 1, instrument="MSFT.XNAS")) == []
    assert pov.on_trade(_trade(100, TS0 - 1, 2)) == []  # before the parent's decision
    add = L2Event(INSTRUMENT, "XNAS", Kind.ADD, Side.BID, 5853000, 100, TS0, TS0, -4, 0, seq=3)
    assert pov.on_trade(add) == []
    assert pov.market_volume == 0
    (c,) = pov.on_trade(_trade(4, TS0, 4, kind=Kind.HIDDEN_TRADE))
    assert c.quantity == 2 and pov.market_volume == 4


def test_pov_pickles_mid_stream() -> None:
    trades = [_trade(s, TS0 + i, i) for i, s in enumerate([7, 1, 13, 2, 40, 5, 90])]
    ref = PovSlicer(_parent(30), 0.2)
    ref_out = [c for t in trades for c in ref.on_trade(t)]
    pov = PovSlicer(_parent(30), 0.2)
    out = [c for t in trades[:3] for c in pov.on_trade(t)]
    pov = pickle.loads(pickle.dumps(pov))
    out += [c for t in trades[3:] for c in pov.on_trade(t)]
    assert out == ref_out and pov.done


def test_pov_bad_arguments() -> None:
    for rho in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            PovSlicer(_parent(), rho)
    with pytest.raises(ValueError):
        PovSlicer(_parent(), 0.1, min_slice_lots=0)
    pov = PovSlicer(_parent(), 0.1)
    bad = L2Event(INSTRUMENT, "XNAS", Kind.TRADE, Side.BID, 1, 5, TS0, TS0, -4, -3, seq=1)
    with pytest.raises(ValueError, match="lots"):
        pov.on_trade(bad)


# --- POV on the real LOBSTER AAPL trade stream -------------------------------------------


def _csv_trade_volume() -> tuple[int, int]:
    """Shares and count of LOBSTER executions (type 4 visible, 5 hidden) from the raw CSV.
    Message 1 is not re-emitted by the adapter (its snapshot holds it); it is an add here."""
    with MESSAGES.open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0][1] == "1"
    trades = [int(r[3]) for r in rows[1:] if r[1] in ("4", "5")]
    return sum(trades), len(trades)


def _run_pov(qty: int, rho: float, min_slice: int = 1) -> tuple[PovSlicer, list[Order], list]:
    events = list(iter_lobster_events(MESSAGES, ORDERBOOK))
    parent = _parent(qty, ts=events[0].ts_event)
    pov = PovSlicer(parent, rho, min_slice_lots=min_slice)
    num, den = Fraction(repr(rho)).as_integer_ratio()
    kids: list[Order] = []
    trace = []  # (V, released) after each trade
    volume = 0
    for ev in events:  # every record: the slicer must pick the trades itself
        out = pov.on_trade(ev)
        if ev.kind in TRADE_KINDS:
            assert ev.kind in (Kind.EXECUTE, Kind.HIDDEN_TRADE)
            volume += ev.size
            released = sum(k.quantity for k in kids) + sum(k.quantity for k in out)
            # never above rho * V (exact: released * den <= num * V), never above the parent
            assert released * den <= num * volume and released <= qty
            trace.append((volume, released))
        else:
            assert out == []
        kids += out
    return pov, kids, trace


def test_pov_on_real_trades_completes() -> None:
    total, n_trades = _csv_trade_volume()
    assert (total, n_trades) == (10_592, 159)  # the sample's executions: 98 visible, 61 hidden
    pov, kids, trace = _run_pov(500, 0.1)
    assert len(trace) == n_trades and trace[-1][0] == total
    # with 1-lot minimum the release is exact: released = min(500, floor(V / 10))
    assert all(r == min(500, v // 10) for v, r in trace)
    # completed at the first trade where 0.1 * V >= 500, i.e. V >= 5_000
    first_done = next(i for i, (v, _) in enumerate(trace) if v >= 5_000)
    assert trace[first_done][1] == 500 and trace[first_done - 1][1] < 500
    assert pov.done and sum(k.quantity for k in kids) == 500
    assert len({k.order_id for k in kids}) == len(kids) == pov.n_children
    assert all(k.parent_id == pov.parent.order_id for k in kids)
    assert [k.ts_event for k in kids] == sorted(k.ts_event for k in kids)


def test_pov_on_real_trades_not_enough_volume() -> None:
    pov, kids, _ = _run_pov(2_000, 0.1)
    # 0.1 * 10_592 = 1_059.2 < 2_000: released floor(1_059.2) = 1_059, not done
    assert pov.market_volume == 10_592 and pov.released == 1_059 and not pov.done
    assert sum(k.quantity for k in kids) == 1_059


def test_pov_on_real_trades_min_slice() -> None:
    pov, kids, trace = _run_pov(777, 0.15, min_slice=50)
    assert pov.done and sum(k.quantity for k in kids) == 777
    assert all(k.quantity >= 50 for k in kids[:-1])
    # behind the allowance by less than the minimum slice, until done
    assert all(min(777, v * 15 // 100) - r < 50 for v, r in trace)


# --- ids stable across independent processes ------------------------------------------------

_SCRIPT = """
import json
from udfs.market.adapters.lobster import iter_lobster_events
from udfs.strategy.orders import PovSlicer, orders_for_target, twap_children
ROW = json.loads({row!r})
(parent,) = orders_for_target(0, 1234, ROW, "imb")
ids = [parent.order_id] + [c.order_id for c in twap_children(parent, 0, 60 * 10**9, 12)]
pov = PovSlicer(parent, 0.1)
for ev in iter_lobster_events({msg!r}, {ob!r}):
    ids += [c.order_id for c in pov.on_trade(ev)]
print(json.dumps(ids))
"""


def _ids_in_subprocess(hash_seed: str) -> list[str]:
    script = _SCRIPT.format(row=json.dumps(ROW), msg=str(MESSAGES), ob=str(ORDERBOOK))
    env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(out.stdout)


def test_ids_stable_across_processes_and_unique() -> None:
    first = _ids_in_subprocess("1")
    second = _ids_in_subprocess("12345")
    assert first == second
    (parent,) = orders_for_target(0, 1234, dict(ROW), "imb")
    pov = PovSlicer(parent, 0.1)
    here = [parent.order_id] + [c.order_id for c in twap_children(parent, 0, 60 * 10**9, 12)]
    for ev in iter_lobster_events(MESSAGES, ORDERBOOK):
        here += [c.order_id for c in pov.on_trade(ev)]
    assert here == first
    assert len(first) > 13 + 50  # parent, 12 TWAP slices, and many POV children
    assert len(set(first)) == len(first)
