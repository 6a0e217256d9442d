"""Execution engine on the real LOBSTER sample: risk gate, kill switch, CANCEL_ALL, throttle,
idempotency, restart, drawdown guard, risk reports and position bookkeeping.

Orders are placed at chosen moments of the real stream against the touch seen by an independent
:class:`~udfs.market.book.OrderBook` the test feeds itself (never the engine's own book)."""

from __future__ import annotations

import contextlib
import itertools
import math
import pickle
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from fractions import Fraction
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from udfs.config import RiskConfig, VenueConfig
from udfs.execution.engine import ExecutionEngine, Output
from udfs.market.adapters.lobster import iter_lobster_events
from udfs.market.adapters.sources import SAMPLE_LOBSTER
from udfs.market.book import BookError, OrderBook
from udfs.schema import (
    F_LAST,
    Control,
    ControlCommand,
    ExecKind,
    ExecReport,
    Kind,
    L2Event,
    Order,
    OrderAction,
    OrderSide,
    OrderType,
    RiskReport,
    Side,
    encode_record,
)
from udfs.strategy.orders import order_id

MS = 1_000_000
BUY, SELL = OrderSide.BUY, OrderSide.SELL
LOOSE = RiskConfig(
    max_order_notional=1e6,
    max_position_notional=1e7,
    price_band_bps=50.0,
    max_orders_per_window=20,
    throttle_window_ms=1000,
    max_drawdown=1e9,
)

Input = L2Event | Order | Control


# ------------------------------------------------------------------------------------ data


@cache
def events() -> tuple[L2Event, ...]:
    return tuple(iter_lobster_events(*SAMPLE_LOBSTER))


@cache
def touches() -> tuple[tuple[int, int] | None, ...]:
    """(best bid, best ask) after event i when i closes a batch and both sides exist, else
    None -- from the test's own book."""
    book = OrderBook(events()[0].instrument)
    out: list[tuple[int, int] | None] = []
    for ev in events():
        with contextlib.suppress(BookError):
            book.apply(ev)
        bid, ask = book.best_bid(), book.best_ask()
        ok = ev.flags & F_LAST and bid is not None and ask is not None
        out.append((bid, ask) if ok else None)
    return tuple(out)


def tradable(start: int = 0) -> list[int]:
    """Event indices (>= start) at which an order can be placed (a complete book)."""
    return [i for i, t in enumerate(touches()) if t is not None and i >= start]


def make_order(
    i: int,
    side: OrderSide,
    *,
    qty: int = 10,
    marketable: bool = False,
    market: bool = False,
    offset: int = 0,
    slice_index: int = 0,
    strategy: str = "t",
) -> Order:
    """A NEW order decided on event ``i``: a LIMIT at the touch of its own side moved
    ``offset`` ticks away from the spread (passive), at the opposite touch (``marketable``),
    or a MARKET order."""
    ev = events()[i]
    touch = touches()[i]
    assert touch is not None, f"no complete book at event {i}"
    bid, ask = touch
    if market:
        otype, price = OrderType.MARKET, 0
    elif marketable:
        otype, price = OrderType.LIMIT, ask if side is BUY else bid
    else:
        otype, price = OrderType.LIMIT, (bid - offset) if side is BUY else (ask + offset)
    return Order(
        order_id=order_id(strategy, ev.instrument, ev.seq, ev.ts_event, slice_index),
        instrument=ev.instrument,
        strategy=strategy,
        action=OrderAction.NEW,
        side=side,
        order_type=otype,
        price=price,
        quantity=qty,
        price_exp=ev.price_exp,
        size_exp=ev.size_exp,
        ts_event=ev.ts_event,
        source_seq=ev.seq,
    )


def cancel_of(o: Order, i: int) -> Order:
    """The CANCEL of ``o`` decided on event ``i`` (same order id: the target)."""
    ev = events()[i]
    return Order(
        order_id=o.order_id,
        instrument=o.instrument,
        strategy=o.strategy,
        action=OrderAction.CANCEL,
        side=o.side,
        order_type=o.order_type,
        price=o.price,
        quantity=o.quantity,
        price_exp=o.price_exp,
        size_exp=o.size_exp,
        ts_event=ev.ts_event,
        source_seq=ev.seq,
    )


def control(cmd: ControlCommand, i: int, instrument: str = "", reason: str = "") -> Control:
    return Control(cmd, instrument, reason, events()[i].ts_event)


def script(extra: dict[int, list[Order | Control]], upto: int | None = None) -> list[Input]:
    """The market stream with ``extra[i]`` fed right after event ``i``."""
    out: list[Input] = []
    for i, ev in enumerate(events()[:upto]):
        out.append(ev)
        out += extra.get(i, [])
    return out


def default_plan(every: int = 25) -> dict[int, list[Order | Control]]:
    """Every ``every``-th tradable event: a small order alternating sides; every third one
    marketable (every ninth a MARKET order), the others passive at the touch, half of which are
    canceled 150 events later."""
    plan: dict[int, list[Order | Control]] = defaultdict(list)
    for n, i in enumerate(tradable()[::every]):
        side = BUY if n % 2 == 0 else SELL
        if n % 9 == 4:
            plan[i].append(make_order(i, side, market=True))
        elif n % 3 == 1:
            plan[i].append(make_order(i, side, marketable=True))
        else:
            o = make_order(i, side)
            plan[i].append(o)
            later = tradable(i + 150)
            if n % 2 == 0 and later:
                plan[later[0]].append(cancel_of(o, later[0]))
    return dict(plan)


def feed(engine: ExecutionEngine, inputs: Iterable[Input]) -> list[Output]:
    out: list[Output] = []
    for x in inputs:
        if isinstance(x, L2Event):
            out += engine.on_market_event(x)
        elif isinstance(x, Order):
            out += engine.on_order(x)
        else:
            out += engine.on_control(x)
    return out


def run(
    inputs: Iterable[Input], risk: RiskConfig = LOOSE, venue: VenueConfig | None = None, **kw
) -> tuple[ExecutionEngine, list[Output]]:
    engine = ExecutionEngine(risk, venue or VenueConfig(), **kw)
    out = feed(engine, inputs)
    return engine, out + engine.finish()


def reports(
    out: Iterable[Output], order_id_: str | None = None, kind: ExecKind | None = None
) -> list[ExecReport]:
    return [
        r
        for r in out
        if isinstance(r, ExecReport)
        and (order_id_ is None or r.order_id == order_id_)
        and (kind is None or r.kind is kind)
    ]


def encoded(out: Iterable[Output]) -> list[bytes]:
    return [encode_record(r) for r in out]


# ----------------------------------------------------------------------------- fail closed


def test_order_without_market_data_is_rejected_fail_closed() -> None:
    o = make_order(tradable()[0], BUY)
    engine = ExecutionEngine(LOOSE, VenueConfig())
    out = engine.on_order(o)
    assert len(out) == 1 and out[0].kind is ExecKind.REJECT
    assert out[0].reason.startswith("no_book:") and out[0].order_id == o.order_id
    # its cancel, too, has nowhere to go
    cx = engine.on_order(cancel_of(o, tradable()[0]))
    assert [r.kind for r in cx] == [ExecKind.REJECT] and "no market data" in cx[0].reason
    assert engine.stats["rejected"] == 1 and engine.positions() == {}


# ------------------------------------------------------------------------------- risk gate


def test_risk_limit_rejects_with_its_reason_and_never_reaches_the_venue() -> None:
    # AAPL ~ $586: 10 shares ~ $5.9k pass a $10k limit, 30 shares ~ $17.6k do not
    cfg = RiskConfig(
        max_order_notional=10_000.0,
        max_position_notional=1e7,
        max_orders_per_window=20,
        max_drawdown=1e9,
    )
    plan: dict[int, list[Order | Control]] = defaultdict(list)
    big, small = [], []
    for n, i in enumerate(tradable()[::40]):
        side = BUY if n % 2 else SELL
        o = make_order(i, side, qty=30 if n % 3 == 0 else 10, marketable=n % 2 == 0)
        (big if o.quantity == 30 else small).append(o)
        plan[i].append(o)
    engine, out = run(script(plan), cfg)
    assert len(big) >= 5 and len(small) >= 5
    for o in big:
        reps = reports(out, o.order_id)
        assert len(reps) == 1, f"{o.order_id} reached the venue: {reps}"
        rej = reps[0]
        assert rej.kind is ExecKind.REJECT and rej.report_id == f"{o.order_id}:risk-reject"
        assert rej.reason.startswith("max_order_notional:")
        assert "limit 10000" in rej.reason and rej.ts_event == o.ts_event
    for o in small:
        assert next(r.kind for r in reports(out, o.order_id)) is ExecKind.ACK
    assert engine.stats["rejected"] == len(big) and engine.stats["accepted"] == len(small)

    # a tiny limit: nothing at all reaches the venue, nothing is ever held
    tiny = RiskConfig(max_order_notional=1.0, max_position_notional=1e7, max_drawdown=1e9)
    engine, out = run(script(plan), tiny)
    assert {r.kind for r in reports(out)} == {ExecKind.REJECT}
    assert all(r.reason.startswith("max_order_notional:") for r in reports(out))
    assert engine.positions() == {events()[0].instrument: 0}
    assert engine.open_orders() == {events()[0].instrument: []}


# ----------------------------------------------------------------------------- kill switch


def test_kill_refuses_the_very_next_order_and_resume_reenables() -> None:
    i1, i2, i3, i4 = tradable(100)[0], tradable(110)[0], tradable(300)[0], tradable(400)[0]
    # 20 cents away from the touch: a rests until its cancel (the market gets there at ~180)
    a = make_order(i1, BUY, offset=2000)
    b = make_order(i2, BUY, offset=2000)
    c = make_order(i3, SELL, offset=2000)
    d = make_order(i4, SELL, offset=2000)
    plan: dict[int, list[Order | Control]] = {
        i1: [a, control(ControlCommand.KILL, i1, reason="operator")],
        i2: [b, cancel_of(a, i2)],  # cancels still pass while halted
        i3: [control(ControlCommand.RESUME, i3), c],
        i4: [d],
    }
    engine, out = run(script(plan))
    assert reports(out, a.order_id)[0].kind is ExecKind.ACK  # decided before the kill
    rej = reports(out, b.order_id)
    assert [r.kind for r in rej] == [ExecKind.REJECT] and rej[0].reason.startswith("halted:")
    assert "kill (operator)" in rej[0].reason
    assert [r.kind for r in reports(out, a.order_id)] == [ExecKind.ACK, ExecKind.CANCELED]
    assert reports(out, c.order_id)[0].kind is ExecKind.ACK
    assert reports(out, d.order_id)[0].kind is ExecKind.ACK
    assert engine.stats["kills"] == 1 and engine.stats["resumes"] == 1
    assert engine.stats["rejected"] == 1


def test_cancel_all_cancels_every_open_order() -> None:
    plan: dict[int, list[Order | Control]] = defaultdict(list)
    placed = []
    for n, i in enumerate(tradable(50)[:400:20]):
        o = make_order(i, BUY if n % 2 else SELL, offset=100 * (n % 4))
        placed.append(o)
        plan[i].append(o)
    cut = tradable(450)[0]
    # the last order is decided on the cut event itself: still in flight at the CANCEL_ALL
    last = make_order(cut, BUY, offset=200, slice_index=1)
    plan[cut] += [last, control(ControlCommand.CANCEL_ALL, cut)]
    placed.append(last)

    engine = ExecutionEngine(LOOSE, VenueConfig())
    before = feed(engine, script(plan, upto=cut + 1)[:-1])
    done = {
        r.order_id
        for r in reports(before)
        if r.kind is ExecKind.CANCELED or (r.kind is ExecKind.FILL and r.leaves_qty == 0)
    }
    live = [o.order_id for o in placed if o.order_id not in done]
    assert len(live) >= 5
    resting = engine.open_orders()[cut_inst := events()[0].instrument]
    assert len(resting) >= 3 and set(resting) < set(live)  # some are still pending

    out = engine.on_control(control(ControlCommand.CANCEL_ALL, cut))
    assert [r.kind for r in out] == [ExecKind.CANCELED] * len(out)
    assert sorted(r.order_id for r in out) == sorted(live)
    assert all(r.leaves_qty == 0 for r in out)
    assert engine.open_orders() == {cut_inst: []}
    rest = feed(engine, events()[cut + 1 :]) + engine.finish()
    assert not [r for r in reports(rest) if r.order_id in live], "a canceled order came back"
    assert engine.stats["cancel_alls"] == 1


# -------------------------------------------------------------------------------- throttle


def test_throttle_accepts_exactly_the_limit_in_a_burst() -> None:
    cfg = RiskConfig(
        max_order_notional=1e6,
        max_position_notional=1e7,
        max_drawdown=1e9,
        max_orders_per_window=8,
        throttle_window_ms=1000,
    )
    i = tradable(100)[0]
    burst = [make_order(i, BUY if k % 2 else SELL, offset=100, slice_index=k) for k in range(13)]
    t0 = events()[i].ts_event
    later_i = next(j for j in tradable(i) if events()[j].ts_event > t0 + 1000 * MS)
    later = make_order(later_i, BUY, offset=100)
    engine, out = run(script({i: list(burst), later_i: [later]}), cfg)
    rejected = [o for o in burst if reports(out, o.order_id)[0].kind is ExecKind.REJECT]
    acked = [o for o in burst if reports(out, o.order_id)[0].kind is ExecKind.ACK]
    assert len(acked) == 8 and len(rejected) == 5
    assert acked == burst[:8]  # first come, first served
    assert all(reports(out, o.order_id)[0].reason.startswith("throttle:") for o in rejected)
    assert reports(out, later.order_id)[0].kind is ExecKind.ACK  # next window is open again
    assert engine.stats["accepted"] == 9 and engine.stats["rejected"] == 5


# ------------------------------------------------------------------------------ idempotency


def test_every_order_fed_twice_gives_exactly_the_reports_of_once() -> None:
    plan = default_plan()
    n_msgs = sum(isinstance(x, Order) for xs in plan.values() for x in xs)
    once_engine, once = run(script(plan))
    # sanity: the plan exercises acks, fills, cancels of a NEW (same id!) and risk reports
    kinds = {r.kind for r in reports(once)}
    assert {ExecKind.ACK, ExecKind.FILL, ExecKind.CANCELED} <= kinds
    assert once_engine.stats["duplicates"] == 0

    doubled = {i: [y for x in xs for y in (x, x)] for i, xs in plan.items()}
    # ... and every order is re-delivered once more at the very end
    every_order = [x for i in sorted(plan) for x in plan[i] if isinstance(x, Order)]
    last = len(events()) - 1
    doubled[last] = doubled.get(last, []) + every_order
    twice_engine, twice = run(script(doubled))
    assert encoded(twice) == encoded(once)
    assert twice_engine.stats["duplicates"] == 2 * n_msgs
    assert twice_engine.positions() == once_engine.positions()


# --------------------------------------------------------------------------------- restart


def test_pickled_engine_continues_byte_identically(tmp_path: Path) -> None:
    samples = tmp_path / "latency.txt"
    samples.write_text("0.2\n1\n2.5\n4\n")  # drawn latencies: the venue's seeded RNG pickles too
    venue = VenueConfig(latency_samples_path=str(samples), latency_seed=3)
    plan = default_plan(every=15)
    i_kill, i_res, i_cx = tradable(300)[0], tradable(420)[0], tradable(700)[0]
    plan.setdefault(i_kill, []).append(control(ControlCommand.KILL, i_kill))
    plan.setdefault(i_res, []).append(control(ControlCommand.RESUME, i_res))
    plan.setdefault(i_cx, []).append(control(ControlCommand.CANCEL_ALL, i_cx))
    inputs = script(plan)

    engine, whole = run(inputs, venue=venue, risk_interval_ms=500, var_window=20)
    assert any(isinstance(r, RiskReport) and r.scenarios > 0 for r in whole)

    restored = ExecutionEngine(LOOSE, venue, risk_interval_ms=500, var_window=20)
    pieces: list[Output] = []
    cuts = [0, 137, len(inputs) // 2, len(inputs) - 40, len(inputs)]
    for a, b in itertools.pairwise(cuts):
        restored = pickle.loads(pickle.dumps(restored))  # a restart from a snapshot
        pieces += feed(restored, inputs[a:b])
    pieces += pickle.loads(pickle.dumps(restored)).finish()
    assert encoded(pieces) == encoded(whole)
    assert restored.stats == engine.stats and restored.pnl() == engine.pnl()


# -------------------------------------------------------------------------- drawdown guard


def test_drawdown_guard_trips_to_reducing_closing_orders_only() -> None:
    # no fees: the loss is the position's own (bought at the ask, marked at the mid)
    venue = VenueConfig(maker_fee_bps=0.0, taker_fee_bps=0.0)
    cfg = RiskConfig(max_order_notional=1e6, max_position_notional=1e7, max_drawdown=0.01)
    idx = tradable(100)
    buy = make_order(idx[0], BUY, qty=10, marketable=True)
    after = [make_order(j, SELL, offset=100) for j in idx[10:60:10]]
    plan: dict[int, list[Order | Control]] = {idx[0]: [buy]}
    for j, o in zip(idx[10:60:10], after, strict=True):
        plan[j] = [o]
    engine = ExecutionEngine(cfg, venue)
    out = feed(engine, script(plan))

    trips = [r for r in out if isinstance(r, Control)]
    assert len(trips) == 1, "the guard trips once (then REDUCING)"
    trip = trips[0]
    assert trip.command is ControlCommand.KILL_TRIPPED and trip.reason.startswith("max_drawdown:")
    pos = out.index(trip)
    fills = reports(out[:pos], buy.order_id, ExecKind.FILL)
    assert fills and all(f.fee == 0.0 for f in fills)  # a losing position, not a fee, tripped it
    assert trip.ts_event >= fills[0].ts_event
    # REDUCING: the first SELL 10 closes the long 10 and passes; the next ones would open a
    # short (the first is still open), so they are refused
    assert reports(out, after[0].order_id)[0].kind is ExecKind.ACK
    for o in after[1:]:
        rej = reports(out, o.order_id)
        assert [r.kind for r in rej] == [ExecKind.REJECT]
        assert rej[0].reason.startswith("reducing:") and "kill_tripped" in rej[0].reason
        assert "with 10 SELL open (exposure +0)" in rej[0].reason
    assert engine.stats["kill_tripped"] == 1 and engine.pnl()["drawdown"] > 0.01

    # the echo of our own trip from the control topic changes nothing
    assert engine.on_control(trip) == []
    assert engine.stats["controls_ignored"] == 1
    # a RESUME re-enables trading (the guard restarts from the current equity)
    j = idx[-1]
    assert engine.on_control(control(ControlCommand.RESUME, j)) == []
    res = engine.on_order(make_order(j, SELL, offset=300, slice_index=7))
    assert not [r for r in res if isinstance(r, ExecReport) and r.kind is ExecKind.REJECT]


# ---------------------------------------------------------------------------- risk reports


def expected_boundaries(interval_ns: int) -> list[int]:
    out, top = [], events()[0].ts_event
    for ev in events()[1:]:
        if ev.ts_event // interval_ns > top // interval_ns:
            out.append(ev.ts_event // interval_ns * interval_ns)
        top = max(top, ev.ts_event)
    return out


@pytest.mark.parametrize("interval_ms", [1000, 100])
def test_risk_reports_every_interval_with_var_es_of_current_positions(interval_ms: int) -> None:
    window = 10
    engine, out = run(
        script(default_plan(every=10)), risk_interval_ms=interval_ms, var_window=window
    )
    interval = interval_ms * MS
    rr = [r for r in out if isinstance(r, RiskReport)]
    assert [r.ts_event for r in rr] == expected_boundaries(interval)
    assert len(rr) == engine.stats["risk_reports"] >= 40

    # the mids an observer samples at each boundary (its own book, marks after full batches)
    book, mid, top = OrderBook(events()[0].instrument), None, None
    samples: list[list[float]] = []  # the mid history as of each report
    hist: list[float] = []
    for ev in events():
        if top is not None and ev.ts_event // interval > top // interval:
            crossed = ev.ts_event // interval - top // interval
            if mid is not None:
                hist += [float(mid)] * min(crossed, window + 1)
                hist = hist[-(window + 1) :]
            samples.append(list(hist))
        top = ev.ts_event if top is None else max(top, ev.ts_event)
        with contextlib.suppress(BookError):
            book.apply(ev)
        if ev.flags & F_LAST and book.best_bid() is not None and book.best_ask() is not None:
            mid = Fraction(book.best_bid() + book.best_ask(), 2)
    assert len(samples) == len(rr)

    inst = events()[0].instrument
    scale = 10.0 ** (events()[0].price_exp + events()[0].size_exp)
    running: dict[str, int] = defaultdict(int)
    k = 0
    checked = 0
    for r in out:
        if isinstance(r, ExecReport) and r.kind is ExecKind.FILL:
            running[r.instrument] += OrderSide(r.side).sign * r.fill_qty
        if not isinstance(r, RiskReport):
            continue
        assert r.positions == {inst: running[inst]}, "report positions != the portfolio's"
        assert r.es_99 >= r.var_99
        hist = samples[k]
        k += 1
        if running[inst] == 0 or len(hist) < 2:
            assert (r.var_99, r.es_99, r.scenarios) == (0.0, 0.0, 0)
            continue
        assert r.var_99 >= 0 and r.scenarios == len(hist) - 1 <= window
        mids = np.array(hist)
        pnl = running[inst] * hist[-1] * (mids[1:] / mids[:-1] - 1.0) * scale
        losses = np.sort(-pnl)
        var = losses[math.ceil(len(losses) * 0.99) - 1]
        assert r.var_99 == pytest.approx(var, rel=1e-9, abs=1e-12)
        checked += 1
    assert checked >= 10 and any(r.scenarios == window for r in rr)
    assert any(r.var_99 > 0 for r in rr)


# ----------------------------------------------------------------------- position bookkeeping


def test_every_report_position_is_the_running_sum_of_fills() -> None:
    engine, out = run(script(default_plan(every=8)))
    running: dict[str, int] = defaultdict(int)
    fills = reports(out, kind=ExecKind.FILL)
    assert len(fills) >= 20
    assert {f.side for f in fills} == {"BUY", "SELL"}
    assert {f.liquidity for f in fills} == {"maker", "taker"}
    for r in reports(out):
        if r.kind is ExecKind.FILL:
            running[r.instrument] += OrderSide(r.side).sign * r.fill_qty
            assert r.fill_qty > 0
        assert r.position == running[r.instrument], r
    assert engine.positions() == dict(running)
    assert engine.stats["fills"] == len(fills)
    assert engine.stats["filled_lots"] == sum(f.fill_qty for f in fills)
    pnl = engine.pnl()
    assert pnl["fees"] == pytest.approx(sum(f.fee for f in fills))
    assert pnl["equity"] == pytest.approx(pnl["realised"] + pnl["unrealised"] - pnl["fees"])


def test_same_inputs_same_outputs_and_finish_resolves_in_flight_orders() -> None:
    plan = default_plan()
    _, a = run(script(plan))
    _, b = run(script(plan))
    assert encoded(a) == encoded(b)

    # an order decided on an event followed by > entry latency of silence, then end of input
    evs = events()
    i = next(j for j in tradable(200) if evs[j + 1].ts_event - evs[j].ts_event > 10 * MS)
    o = make_order(i, BUY, offset=2000)
    engine = ExecutionEngine(LOOSE, VenueConfig())  # entry latency 2 ms
    before = feed(engine, script({i: [o]}, upto=i + 1))
    assert not reports(before, o.order_id), "still in flight"
    assert engine.finish() == [] and engine.pending() == {o.instrument: 1}  # arrives after
    after = engine.finish(until_ts=evs[i].ts_event + 2 * MS)
    assert [r.kind for r in reports(after, o.order_id)] == [ExecKind.ACK]
    assert after[0].ts_event == evs[i].ts_event + 3 * MS  # arrival + ack latency
    assert engine.open_orders() == {o.instrument: [o.order_id]}
    assert engine.pending() == {o.instrument: 0}


def test_finish_advances_every_venue_to_the_last_market_time_of_any_instrument() -> None:
    # a second instrument: the same real stream under another name, starting 1 s later
    evs = events()
    other = [
        replace(
            ev,
            instrument="AAPL.COPY",
            ts_event=ev.ts_event + 1000 * MS,
            ts_recv=ev.ts_recv + 1000 * MS,
        )
        for ev in evs
    ]
    i = tradable(200)[0]
    o = make_order(i, SELL, offset=2000)
    engine = ExecutionEngine(LOOSE, VenueConfig())
    out = feed(engine, [*evs[: i + 1], o, *other[: i + 1]])
    # AAPL.XNAS saw no market record after the decision: the order is still in flight
    assert not reports(out, o.order_id) and other[i].ts_event > o.ts_event + 2 * MS
    after = engine.finish()
    assert [r.kind for r in reports(after, o.order_id)] == [ExecKind.ACK]
    assert engine.positions() == {"AAPL.COPY": 0, o.instrument: 0}


# ----------------------------------------------------- exposure: resting + in-flight orders


def lots_cap(i: int, lots: float) -> float:
    """max_position_notional worth ``lots`` shares at the mid of event ``i`` (USD)."""
    touch = touches()[i]
    assert touch is not None
    return lots * (touch[0] + touch[1]) / 2 / 10_000


def position_path(out: Iterable[Output]) -> list[int]:
    return [r.position for r in reports(out, kind=ExecKind.FILL)]


def test_orders_in_flight_count_toward_the_position_limit() -> None:
    # a 20-lot cap; five BUY 15 decided on one event, all still in flight to the venue
    i = tradable(100)[0]
    cfg = replace(LOOSE, max_position_notional=lots_cap(i, 20.5))
    burst = [make_order(i, BUY, qty=15, marketable=True, slice_index=k) for k in range(5)]
    engine, out = run(script({i: burst}), cfg)
    first = reports(out, burst[0].order_id)
    assert first[0].kind is ExecKind.ACK
    for o in burst[1:]:
        (rej,) = reports(out, o.order_id)
        assert rej.kind is ExecKind.REJECT
        assert rej.reason.startswith("max_position_notional: position +0, 15 BUY open -> +30 lots")
    assert max(position_path(out)) == 15 and engine.stats["accepted"] == 1


def test_closing_is_decided_against_the_exposure_not_the_filled_position() -> None:
    # long 10; then four SELL 10 in one event: only the first closes anything
    i, j = tradable(100)[0], tradable(300)[0]
    buy = make_order(i, BUY, qty=10, marketable=True)
    sells = [make_order(j, SELL, qty=10, marketable=True, slice_index=k) for k in range(4)]
    assert len({o.order_id for o in [buy, *sells]}) == 5
    # a 10-lot cap: the old rule took all four as reducing and ended short 30
    cfg = replace(LOOSE, max_position_notional=lots_cap(j, 10.5))
    engine, out = run(script({i: [buy], j: sells}), cfg)
    assert [reports(out, o.order_id)[0].kind for o in [buy, *sells[:2]]] == [ExecKind.ACK] * 3
    for o in sells[2:]:
        (rej,) = reports(out, o.order_id)
        assert rej.reason.startswith("max_position_notional: position +10, 20 SELL open -> -20")
    assert position_path(out)[-1] == -10 and min(position_path(out)) == -10

    # the same in REDUCING: the three that would open a short are refused as not closing
    engine, out = run(script({i: [buy, control(ControlCommand.REDUCE, i)], j: sells}))
    assert reports(out, buy.order_id)[0].kind is ExecKind.ACK  # decided before the REDUCE
    assert reports(out, sells[0].order_id)[0].kind is ExecKind.ACK
    for o in sells[1:]:
        (rej,) = reports(out, o.order_id)
        assert rej.reason.startswith("reducing: trading REDUCING for AAPL.XNAS by reduce: SELL 10")
        assert "with 10 SELL open (exposure +0)" in rej.reason
    assert min(position_path(out)) == 0 and engine.positions() == {buy.instrument: 0}
    assert engine.stats["reduces"] == 1


def test_reduce_command_lets_only_closing_orders_through_and_resume_lifts_it() -> None:
    i, j, k = tradable(100)[0], tradable(300)[0], tradable(400)[0]
    buy = make_order(i, BUY, qty=10, marketable=True)
    add = make_order(j, BUY, qty=1, offset=100)
    flip = make_order(j, SELL, qty=11, offset=100, slice_index=1)
    close = make_order(j, SELL, qty=4, offset=100, slice_index=2)
    later = make_order(k, BUY, qty=1, offset=100)
    plan: dict[int, list[Order | Control]] = {
        i: [buy],
        j: [control(ControlCommand.REDUCE, j, buy.instrument, "eod"), add, flip, close],
        k: [control(ControlCommand.RESUME, k, buy.instrument), later],
    }
    _, out = run(script(plan))
    assert reports(out, add.order_id)[0].reason.startswith("reducing:")
    (rej,) = reports(out, flip.order_id)
    assert "SELL 11 closes only 10 lots of position +10" in rej.reason  # never flips
    assert reports(out, close.order_id)[0].kind is ExecKind.ACK
    assert reports(out, later.order_id)[0].kind is ExecKind.ACK


def test_a_market_close_is_always_possible_unless_halted() -> None:
    # long 10 (the one order the throttle allows per minute), then REDUCING
    i = tradable(100)[0]
    j = tradable(300)[0]
    cfg = replace(LOOSE, max_orders_per_window=1, throttle_window_ms=60_000)
    buy = make_order(i, BUY, qty=10, market=True)
    limit_close = make_order(j, SELL, qty=10, marketable=True, slice_index=1)
    market_close = make_order(j, SELL, qty=10, market=True, slice_index=2)
    engine = ExecutionEngine(cfg, VenueConfig())
    out = feed(engine, script({i: [buy]}, upto=j + 1))
    assert engine.positions() == {buy.instrument: 10}
    out += engine.on_control(control(ControlCommand.REDUCE, j))
    (rej,) = engine.on_order(limit_close)
    assert rej.reason.startswith("throttle:")  # a closing limit order meets the throttle
    assert engine.on_order(market_close) == [], "accepted (throttle used up), in flight"
    out += feed(engine, events()[j + 1 : j + 400])
    fills = reports(out, market_close.order_id, ExecKind.FILL)
    assert sum(f.fill_qty for f in fills) == 10 and engine.positions() == {buy.instrument: 0}
    # HALTED: not even a market close
    k = tradable(j + 400)[0]
    engine.on_control(control(ControlCommand.KILL, k))
    (rej,) = engine.on_order(make_order(k, SELL, qty=1, market=True))
    assert rej.reason.startswith("halted:")


# ------------------------------------------------- property: limits hold on fills (hypothesis)

PROP = "PROP.X"
T_PROP = 1_700_000_000_000_000_000
CAP_LOTS = 20
# mid $100.00 (price_exp -2, size_exp 0): the position limit is exactly 20 lots
PROP_RISK = RiskConfig(
    max_order_notional=1e9,
    max_position_notional=CAP_LOTS * 100.0,
    price_band_bps=10_000.0,
    max_orders_per_window=1_000_000,
    max_drawdown=1e12,
)


def prop_event(kind: Kind, side: Side, price: int, size: int, ts: int) -> L2Event:
    return L2Event(PROP, "X", kind, side, price, size, ts, ts, -2, 0, flags=F_LAST)


def prop_engine() -> ExecutionEngine:
    """Bids 99.99..99.95 and asks 100.01..100.05, 1000 lots each: mid $100.00 whatever trades.
    Trades never change the book here (``TRADE`` prints), so the mid, and the limit in lots,
    stay fixed."""
    engine = ExecutionEngine(PROP_RISK, VenueConfig(maker_fee_bps=0.0, taker_fee_bps=0.0))
    for k in range(5):
        engine.on_market_event(prop_event(Kind.LEVEL, Side.BID, 9999 - k, 1000, T_PROP))
        engine.on_market_event(prop_event(Kind.LEVEL, Side.ASK, 10001 + k, 1000, T_PROP))
    return engine


new_order = st.tuples(
    st.just("new"),
    st.sampled_from([BUY, SELL]),
    st.integers(1, 30),
    st.sampled_from(["market", "marketable", "passive", "deep"]),
    st.booleans(),
)
step = st.one_of(
    new_order,
    st.tuples(st.just("cancel"), st.integers(0, 10**6)),
    st.tuples(st.just("trade"), st.sampled_from([Side.BID, Side.ASK]), st.integers(1, 3000)),
    st.tuples(st.just("through"), st.sampled_from([Side.BID, Side.ASK])),
    st.tuples(st.just("wait"), st.integers(0, 5)),
)


def run_steps(engine: ExecutionEngine, steps, reduce_only: bool = False):
    """Feed ``steps`` (one ms apart); yields the filled position after each."""
    ts = T_PROP
    sent: list[Order] = []
    for n, s in enumerate(steps):
        ts += MS
        kind = s[0]
        if kind == "new":
            _, side, qty, how, flag = s
            touch_own, touch_opp = (9999, 10001) if side is BUY else (10001, 9999)
            otype = OrderType.MARKET if how == "market" else OrderType.LIMIT
            price = {"market": 0, "marketable": touch_opp, "passive": touch_own}.get(
                how, touch_own - 3 * side.sign
            )
            o = Order(
                f"p{n}",
                PROP,
                "prop",
                OrderAction.NEW,
                side,
                otype,
                price,
                qty,
                -2,
                0,
                ts,
                n,
                reduce_only=flag or reduce_only,
            )
            sent.append(o)
            engine.on_order(o)
        elif kind == "cancel" and sent:
            o = sent[s[1] % len(sent)]
            engine.on_order(replace(o, action=OrderAction.CANCEL, ts_event=ts))
        elif kind == "trade":
            price = 9999 if s[1] is Side.BID else 10001
            engine.on_market_event(prop_event(Kind.TRADE, s[1], price, s[2], ts))
        elif kind == "through":  # a print beyond our deep orders: fills every resting one
            price = 9990 if s[1] is Side.BID else 10010
            engine.on_market_event(prop_event(Kind.TRADE, s[1], price, 1, ts))
        else:
            engine.on_market_event(prop_event(Kind.BBO, Side.BID, 9999, 1000, ts + s[1] * MS))
        yield engine.portfolio.position(PROP)
    engine.finish(until_ts=ts + 10 * MS)
    yield engine.portfolio.position(PROP)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, max_size=60))
def test_property_no_sequence_takes_the_filled_position_past_the_limit(steps) -> None:
    engine = prop_engine()
    for position in run_steps(engine, steps):
        assert abs(position) <= CAP_LOTS
    # and the exposure the limit protects (position + everything that may still fill) too
    buy, sell = engine.venues[PROP].open_lots()
    position = engine.portfolio.position(PROP)
    assert position + buy <= CAP_LOTS and position - sell >= -CAP_LOTS


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(-CAP_LOTS, CAP_LOTS).filter(bool),
    st.sampled_from(["reducing", "reduce_only"]),
    st.lists(step, max_size=60),
)
def test_property_closing_orders_never_flip_the_position(start, how, steps) -> None:
    engine = prop_engine()
    opener = Order(
        "open",
        PROP,
        "prop",
        OrderAction.NEW,
        BUY if start > 0 else SELL,
        OrderType.MARKET,
        0,
        abs(start),
        -2,
        0,
        T_PROP,
        0,
    )
    engine.on_order(opener)
    engine.on_market_event(prop_event(Kind.BBO, Side.BID, 9999, 1000, T_PROP + 5 * MS))
    assert engine.portfolio.position(PROP) == start
    if how == "reducing":
        engine.on_control(Control(ControlCommand.REDUCE, "", "test", T_PROP + 5 * MS))
    held = abs(start)
    for position in run_steps(engine, steps, reduce_only=how == "reduce_only"):
        assert position * start >= 0, f"flipped from {start} to {position}"
        assert abs(position) <= held, "a closing order added exposure"
        held = abs(position)
