"""Tests of udfs.execution.risk: one hand-computed case per rule, with the boundary value on both
sides so
that removing a rule or flipping its comparison fails a test.

Instrument: prices in ticks of 1e-4 USD (LOBSTER convention), sizes in shares (size_exp 0), so
``notional = price_ticks * qty / 10_000`` USD.
"""

from __future__ import annotations

import pickle
from dataclasses import replace

import pytest

from udfs.config import RiskConfig
from udfs.execution.portfolio import Portfolio
from udfs.execution.risk import (
    OpenLots,
    RiskDecision,
    RiskEngine,
    Rule,
    TradingMode,
    closing_lots,
    mid_ticks,
    reject_report,
)
from udfs.market.book import OrderBook
from udfs.schema import (
    Control,
    ControlCommand,
    ExecKind,
    ExecReport,
    Order,
    OrderAction,
    OrderSide,
    OrderType,
)

INST = "AAPL.XNAS"
OTHER = "MSFT.XNAS"
PX_EXP = -4
MS = 1_000_000
T0 = 1_340_280_000_000_000_000  # 2012-06-21 ~12:00 UTC, ns

# limits wide enough that only the rule under test can refuse
LOOSE = RiskConfig(
    max_order_notional=1e9,
    max_position_notional=1e9,
    price_band_bps=10_000.0,
    max_orders_per_window=1_000_000,
    throttle_window_ms=1000,
    max_drawdown=1e9,
)

_ids = iter(range(1, 10**9))


def order(
    side: str = "BUY",
    qty: int = 100,
    price: int = 1_000_000,
    *,
    otype: OrderType = OrderType.LIMIT,
    inst: str = INST,
    oid: str | None = None,
    action: OrderAction = OrderAction.NEW,
    reduce_only: bool = False,
    ts: int = T0,
) -> Order:
    return Order(
        order_id=oid or f"o{next(_ids)}",
        instrument=inst,
        strategy="test",
        action=action,
        side=OrderSide(side),
        order_type=otype,
        price=0 if otype is OrderType.MARKET else price,
        quantity=qty,
        price_exp=PX_EXP,
        size_exp=0,
        ts_event=ts,
        source_seq=1,
        reduce_only=reduce_only,
    )


def book(bid: int | None = 999_900, ask: int | None = 1_000_100, inst: str = INST) -> OrderBook:
    ob = OrderBook(inst)
    if bid is not None:
        ob.bids.set(bid, 500)
    if ask is not None:
        ob.asks.set(ask, 500)
    return ob


def fill(
    side: str, qty: int, price: int, *, inst: str = INST, fee: float = 0.0, rid: str | None = None
) -> ExecReport:
    return ExecReport(
        report_id=rid or f"f{next(_ids)}",
        order_id="x",
        instrument=inst,
        kind=ExecKind.FILL,
        ts_event=T0,
        side=side,
        fill_price=price,
        fill_qty=qty,
        fee=fee,
        price_exp=PX_EXP,
        size_exp=0,
    )


def portfolio_with(qty: int, price: int = 1_000_000, inst: str = INST) -> Portfolio:
    pf = Portfolio()
    if qty:
        pf.apply_fill(fill("BUY" if qty > 0 else "SELL", abs(qty), price, inst=inst))
    return pf


# ---------------------------------------------------------------------------------------------
# helpers


def test_mid_and_reducing_helpers():
    assert mid_ticks(book(999_900, 1_000_101)) == pytest.approx(1_000_000.5)
    assert mid_ticks(book(999_900, None)) is None and mid_ticks(None) is None
    sell, buy = OrderSide.SELL, OrderSide.BUY
    assert closing_lots(sell, 100, 100) == 100
    assert closing_lots(sell, 40, 100) == 40
    assert closing_lots(sell, 101, 100) == 100  # through zero: 1 lot opens a short
    assert closing_lots(buy, 10, 100) == 0
    assert closing_lots(sell, 10, 0) == 0
    assert closing_lots(buy, 30, -30) == 30
    # open orders on the order's own side already close part of the position
    assert closing_lots(sell, 10, 10, open_same_side=10) == 0
    assert closing_lots(sell, 10, 25, open_same_side=20) == 5
    assert closing_lots(buy, 10, -5, open_same_side=3) == 2


def test_decision_unpacks_and_names_rule():
    ok, reason = RiskDecision(False, "throttle: 5 orders ...")
    assert not ok and reason.startswith("throttle")
    assert RiskDecision(False, "throttle: x").rule == Rule.THROTTLE
    assert RiskDecision(True, "accepted").rule == ""


# ---------------------------------------------------------------------------------------------
# max order notional


def test_max_order_notional_limit_price_boundary():
    eng = RiskEngine(replace(LOOSE, max_order_notional=10_000.0))
    # 100 shares x $100.00 = $10,000: equal to the limit, accepted
    assert eng.check(order("BUY", 100, 1_000_000), book(), Portfolio(), T0) == (True, "accepted")
    ok, reason = eng.check(order("BUY", 101, 1_000_000), book(), Portfolio(), T0)
    assert not ok
    assert reason == "max_order_notional: BUY 101 @ 1000000 = 10100 > limit 10000"


def test_max_order_notional_market_uses_touch():
    eng = RiskEngine(replace(LOOSE, max_order_notional=10_000.0))
    ob = book(1_000_000, 1_000_200)
    # market buy takes the ask: 100 x $100.02 = $10,002 > $10,000
    ok, reason = eng.check(order("BUY", 100, otype=OrderType.MARKET), ob, Portfolio(), T0)
    assert not ok and reason == ("max_order_notional: BUY 100 @ ask 1000200 = 10002 > limit 10000")
    # market sell takes the bid: 100 x $100.00 = $10,000, accepted
    assert eng.check(order("SELL", 100, otype=OrderType.MARKET), ob, Portfolio(), T0)[0]


def test_max_order_notional_uses_exponents():
    eng = RiskEngine(replace(LOOSE, max_order_notional=10_000.0))
    # size_exp -2: 10_001 lots of 0.01 shares = 100.01 shares x $100 = $10,001
    o = replace(order("BUY", 10_001, 1_000_000), size_exp=-2)
    ok, reason = eng.check(o, book(), Portfolio(), T0)
    assert not ok and "= 10001 > limit 10000" in reason
    assert eng.check(
        replace(order("BUY", 10_000, 1_000_000), size_exp=-2), book(), Portfolio(), T0
    )[0]


# ---------------------------------------------------------------------------------------------
# max position notional


def test_max_position_notional_post_trade_at_mid():
    # mid = (1_000_000 + 1_000_200) / 2 = 1_000_100 ticks = $100.01
    ob = book(1_000_000, 1_000_200)
    pf = portfolio_with(250)
    eng = RiskEngine(replace(LOOSE, max_position_notional=29_902.99))
    # 250 + 49 = 299 x $100.01 = $29,902.99: equal, accepted
    assert eng.check(order("BUY", 49, 1_000_100), ob, pf, T0) == (True, "accepted")
    # 250 + 50 = 300 x $100.01 = $30,003 > limit
    ok, reason = eng.check(order("BUY", 50, 1_000_100), ob, pf, T0)
    assert not ok
    assert reason == (
        "max_position_notional: position +250 -> +300 lots x mid 1000100 ticks "
        "= 30003 > limit 29902.99"
    )


def test_position_limit_counts_short_side():
    ob = book(1_000_000, 1_000_200)
    eng = RiskEngine(replace(LOOSE, max_position_notional=29_902.99))
    ok, reason = eng.check(order("SELL", 300, 1_000_100), ob, Portfolio(), T0)
    assert not ok and reason.startswith("max_position_notional: position +0 -> -300 lots")
    assert eng.check(order("SELL", 299, 1_000_100), ob, Portfolio(), T0)[0]


def test_reducing_order_passes_position_and_order_limits():
    ob = book(1_000_000, 1_000_200)
    pf = portfolio_with(400)  # 400 x $100.01 = $40,004: already above the $30,000 cap
    eng = RiskEngine(replace(LOOSE, max_position_notional=30_000.0, max_order_notional=25_000.0))
    # SELL 100 -> 300 x $100.01 = $30,003 still > cap, but it reduces: accepted
    assert eng.check(order("SELL", 100, 1_000_000), ob, pf, T0) == (True, "accepted: closing")
    # SELL 400 @ $100 = $40,000 > the order cap, but it closes the position: accepted
    assert eng.check(order("SELL", 400, 1_000_000), ob, pf, T0) == (True, "accepted: closing")
    # SELL 401 goes through zero: only the 1 lot beyond zero meets the limits ($100)
    assert eng.check(order("SELL", 401, 1_000_000), ob, pf, T0) == (True, "accepted")
    # SELL 700: its opening part of 300 lots ($30,000) is above the order cap
    ok, reason = eng.check(order("SELL", 700, 1_000_000), ob, pf, T0)
    assert not ok and reason == (
        "max_order_notional: SELL 300 (opening part of 700) @ 1000000 = 30000 > limit 25000"
    )
    # adding to the position is refused by the position cap
    ok, reason = eng.check(order("BUY", 1, 1_000_000), ob, pf, T0)
    assert not ok and reason.startswith("max_position_notional: position +400 -> +401")


# ---------------------------------------------------------------------------------------------
# price band


def test_price_band_limit_boundary():
    ob = book(999_900, 1_000_100)  # mid 1_000_000; 50 bps = 5_000 ticks
    eng = RiskEngine(replace(LOOSE, price_band_bps=50.0))
    assert eng.check(order("BUY", 1, 995_000), ob, Portfolio(), T0)[0]  # exactly 50 bps
    assert eng.check(order("SELL", 1, 1_005_000), ob, Portfolio(), T0)[0]
    ok, reason = eng.check(order("BUY", 1, 994_999), ob, Portfolio(), T0)
    assert not ok
    assert reason == (
        "price_band: LIMIT BUY price 994999 is 50.01 bps from mid 1000000 > band 50 bps"
    )
    ok, reason = eng.check(order("SELL", 1, 1_005_001), ob, Portfolio(), T0)
    assert not ok and reason.startswith("price_band: LIMIT SELL price 1005001 is 50.01 bps")
    # inside the band on the aggressive side too
    assert eng.check(order("BUY", 1, 1_004_000), ob, Portfolio(), T0)[0]


def test_price_band_market_uses_touch():
    wide = book(990_000, 1_010_000)  # mid 1_000_000, touch 100 bps away
    ok, reason = RiskEngine(replace(LOOSE, price_band_bps=99.0)).check(
        order("BUY", 1, otype=OrderType.MARKET), wide, Portfolio(), T0
    )
    assert not ok
    assert reason == (
        "price_band: MARKET BUY price ask 1010000 is 100 bps from mid 1000000 > band 99 bps"
    )
    ok, reason = RiskEngine(replace(LOOSE, price_band_bps=99.0)).check(
        order("SELL", 1, otype=OrderType.MARKET), wide, Portfolio(), T0
    )
    assert not ok and reason.startswith("price_band: MARKET SELL price bid 990000 is 100 bps")
    assert RiskEngine(replace(LOOSE, price_band_bps=100.0)).check(
        order("BUY", 1, otype=OrderType.MARKET), wide, Portfolio(), T0
    )[0]


def test_price_band_applies_to_reducing_orders():
    eng = RiskEngine(replace(LOOSE, price_band_bps=50.0))
    ok, reason = eng.check(order("SELL", 10, 900_000), book(), portfolio_with(10), T0)
    assert not ok and reason.startswith("price_band:")


# ---------------------------------------------------------------------------------------------
# throttle


def test_throttle_burst_accepts_exactly_n():
    n = 7
    eng = RiskEngine(replace(LOOSE, max_orders_per_window=n, throttle_window_ms=1000))
    results = [
        eng.check(order("BUY", 1, ts=T0 + i * MS), book(), Portfolio(), T0 + i * MS)
        for i in range(n + 5)
    ]
    assert [ok for ok, _ in results] == [True] * n + [False] * 5
    assert results[-1].reason == (
        "throttle: 7 orders accepted for AAPL.XNAS in the last 1000 ms (limit 7 per 1000 ms)"
    )
    # another instrument has its own window
    assert eng.check(order("BUY", 1, inst=OTHER), book(inst=OTHER), Portfolio(), T0 + 11 * MS)[0]


def test_throttle_window_slides_in_event_time():
    eng = RiskEngine(replace(LOOSE, max_orders_per_window=2, throttle_window_ms=1000))
    ob, pf = book(), Portfolio()
    assert eng.check(order(), ob, pf, T0)[0]
    assert eng.check(order(), ob, pf, T0 + 500 * MS)[0]
    assert not eng.check(order(), ob, pf, T0 + 999 * MS)[0]  # both still in (t-1000ms, t]
    assert eng.check(order(), ob, pf, T0 + 1000 * MS)[0]  # the T0 order left the window
    assert not eng.check(order(), ob, pf, T0 + 1400 * MS)[0]
    assert eng.check(order(), ob, pf, T0 + 1500 * MS)[0]


def test_throttle_counts_only_accepted_orders():
    eng = RiskEngine(replace(LOOSE, max_orders_per_window=2, max_order_notional=10_000.0))
    ob, pf = book(), Portfolio()
    for _ in range(5):  # refused by the notional limit: they do not use the throttle
        assert eng.check(order("BUY", 1000), ob, pf, T0).rule == Rule.MAX_ORDER_NOTIONAL
    assert eng.check(order(), ob, pf, T0)[0] and eng.check(order(), ob, pf, T0)[0]
    assert eng.check(order(), ob, pf, T0).rule == Rule.THROTTLE


def test_throttle_is_deterministic_on_replay():
    cfg = replace(LOOSE, max_orders_per_window=3, throttle_window_ms=100)
    times = [0, 10, 20, 30, 99, 100, 105, 111, 200, 201, 202, 203, 330]
    orders = [order(ts=T0 + t * MS, oid=f"r{i}") for i, t in enumerate(times)]

    def run() -> list[RiskDecision]:
        eng = RiskEngine(cfg)
        return [eng.check(o, book(), Portfolio(), o.ts_event) for o in orders]

    first = run()
    assert first == run()
    assert [ok for ok, _ in first] == [
        True,
        True,
        True,
        False,
        False,
        True,
        False,
        True,
        True,
        True,
        False,
        False,
        True,
    ]


# ---------------------------------------------------------------------------------------------
# trading state, kill switch, controls


def test_kill_switch_blocks_the_very_next_order_cancels_pass():
    eng = RiskEngine(LOOSE)
    ob, pf = book(), Portfolio()
    assert eng.check(order(), ob, pf, T0)[0]
    assert eng.on_control(Control(ControlCommand.KILL, reason="operator", ts_event=T0)) is False
    ok, reason = eng.check(order("BUY", 1), ob, pf, T0)
    assert not ok
    assert reason == (
        "halted: trading HALTED for all instruments by kill (operator); new BUY 1 refused"
    )
    # reducing orders too: HALTED refuses every new order
    assert eng.check(order("SELL", 10), ob, portfolio_with(10), T0).rule == Rule.HALTED
    # cancels always pass, even without a book
    assert eng.check(order(action=OrderAction.CANCEL), None, pf, T0) == (True, "accepted: cancel")
    eng.on_control(Control(ControlCommand.RESUME, ts_event=T0 + 1))
    assert eng.mode is TradingMode.ACTIVE
    assert eng.check(order(), ob, pf, T0 + 1)[0]


def test_kill_one_instrument_only():
    eng = RiskEngine(LOOSE)
    eng.on_control(Control(ControlCommand.KILL, instrument=INST))
    ok, reason = eng.check(order(), book(), Portfolio(), T0)
    assert not ok and reason.startswith("halted: trading HALTED for AAPL.XNAS by kill")
    assert eng.check(order(inst=OTHER), book(inst=OTHER), Portfolio(), T0)[0]
    eng.on_control(Control(ControlCommand.RESUME, instrument=INST))
    assert eng.check(order(), book(), Portfolio(), T0)[0]


def test_instrument_resume_does_not_lift_global_halt():
    eng = RiskEngine(LOOSE)
    eng.on_control(Control(ControlCommand.KILL))
    eng.on_control(Control(ControlCommand.RESUME, instrument=INST))
    assert eng.check(order(), book(), Portfolio(), T0).rule == Rule.HALTED


def test_cancel_all_is_a_flag_for_the_caller():
    eng = RiskEngine(LOOSE)
    assert eng.on_control(Control(ControlCommand.CANCEL_ALL)) is True
    assert eng.mode is TradingMode.ACTIVE
    assert eng.check(order(), book(), Portfolio(), T0)[0]


def test_reducing_state_accepts_only_reducing_orders():
    eng = RiskEngine(LOOSE)
    eng.set_mode(TradingMode.REDUCING, reason="end of day")
    pf = portfolio_with(100)
    ok, reason = eng.check(order("BUY", 10), book(), pf, T0)
    assert not ok
    assert reason == (
        "reducing: trading REDUCING for AAPL.XNAS by end of day: BUY 10 does not reduce "
        "position +100"
    )
    assert eng.check(order("SELL", 150), book(), pf, T0).reason == (
        "reducing: trading REDUCING for AAPL.XNAS by end of day: SELL 150 closes only 100 lots "
        "of position +100"
    )  # would flip
    assert eng.check(order("SELL", 100), book(), pf, T0) == (True, "accepted: closing")
    assert eng.check(order("SELL", 1), book(), Portfolio(), T0).rule == Rule.REDUCING  # flat


def test_reduce_only_flag():
    eng = RiskEngine(LOOSE)
    pf = portfolio_with(-20)
    ok, reason = eng.check(order("SELL", 5, reduce_only=True), book(), pf, T0)
    assert not ok and reason == "reduce_only: reduce-only SELL 5 does not reduce position -20"
    assert eng.check(order("BUY", 20, reduce_only=True), book(), pf, T0)[0]


# ---------------------------------------------------------------------------------------------
# fail closed


def test_fail_closed_without_book_or_mark():
    eng = RiskEngine(LOOSE, instruments=[INST, OTHER])
    pf = Portfolio()
    assert eng.check(order(), None, pf, T0) == (False, "no_book: no book for AAPL.XNAS yet")
    assert eng.check(order(), book(inst=OTHER), pf, T0).reason == (
        "no_book: book given is MSFT.XNAS, order is for AAPL.XNAS"
    )
    assert eng.check(order(), book(999_900, None), pf, T0).reason == (
        "no_mark: AAPL.XNAS book has no ask: no mid to price against"
    )
    assert eng.check(order(), book(None, None), pf, T0).reason == (
        "no_mark: AAPL.XNAS book has no bid and ask: no mid to price against"
    )
    ok, reason = eng.check(order(inst="TSLA.XNAS"), book(inst="TSLA.XNAS"), pf, T0)
    assert not ok and reason == "unknown_instrument: TSLA.XNAS is not in the tradable universe"
    halted = book()
    halted.halted = True
    assert eng.check(order(), halted, pf, T0).rule == Rule.VENUE_HALTED
    assert eng.check(order(qty=0), book(), pf, T0).reason == "invalid_order: quantity 0 <= 0"
    assert eng.check(order(price=0), book(), pf, T0).reason == "invalid_order: limit price 0 <= 0"
    assert eng.check(order(), book(), pf, T0)[0]


def test_rule_order_halted_before_fail_closed_before_limits():
    eng = RiskEngine(replace(LOOSE, max_order_notional=1.0))
    assert eng.check(order(), None, Portfolio(), T0).rule == Rule.NO_BOOK  # not the notional
    eng.on_control(Control(ControlCommand.KILL))
    assert eng.check(order(), None, Portfolio(), T0).rule == Rule.HALTED


# ---------------------------------------------------------------------------------------------
# idempotency and state


def test_duplicate_order_id_refused_and_not_counted():
    eng = RiskEngine(replace(LOOSE, max_orders_per_window=2))
    assert not eng.seen("a")
    assert eng.check(order(oid="a"), book(), Portfolio(), T0)[0]
    assert eng.seen("a")
    dup = eng.check(order(oid="a"), book(), Portfolio(), T0)
    assert dup == (False, "duplicate: order a already decided (accepted)") and dup.duplicate
    # the duplicate did not use the throttle: one more distinct order still fits
    assert eng.check(order(oid="b"), book(), Portfolio(), T0)[0]
    # refused orders are remembered with their reason
    eng.check(order(oid="c", qty=0), book(), Portfolio(), T0)
    assert eng.check(order(oid="c"), book(), Portfolio(), T0).reason == (
        "duplicate: order c already decided (invalid_order: quantity 0 <= 0)"
    )


def test_seen_is_bounded():
    eng = RiskEngine(LOOSE, seen_capacity=3)
    for oid in "abcd":
        eng.check(order(oid=oid), book(), Portfolio(), T0)
    assert [eng.seen(x) for x in "abcd"] == [False, True, True, True]


def test_engine_survives_restart_by_pickle():
    cfg = replace(LOOSE, max_orders_per_window=2)
    eng = RiskEngine(cfg, instruments=[INST])
    eng.check(order(oid="a"), book(), Portfolio(), T0)
    eng.check(order(oid="b"), book(), Portfolio(), T0 + MS)
    eng.on_control(Control(ControlCommand.KILL, instrument=OTHER, reason="x"))
    eng.set_mode(TradingMode.REDUCING, instrument="ZZZ")
    restored = pickle.loads(pickle.dumps(eng))
    assert restored.seen("a") and restored.seen("b")
    # throttle window restored: a third order inside the window is refused
    assert restored.check(order(oid="c"), book(), Portfolio(), T0 + 2 * MS).rule == Rule.THROTTLE
    assert restored.effective_mode(OTHER)[0] is TradingMode.HALTED
    assert restored.effective_mode("ZZZ")[0] is TradingMode.REDUCING
    assert (
        restored.check(
            order(oid="d", inst="TSLA.XNAS"), book(inst="TSLA.XNAS"), Portfolio(), T0
        ).rule
        == Rule.UNKNOWN_INSTRUMENT
    )


def test_reject_report():
    o = order("BUY", 101, oid="z1")
    d = RiskEngine(replace(LOOSE, max_order_notional=10_000.0)).check(o, book(), Portfolio(), T0)
    rep = reject_report(o, d)
    assert rep.kind is ExecKind.REJECT and rep.report_id == "z1:risk-reject"
    assert rep.reason == d.reason and rep.order_id == "z1" and rep.ts_event == o.ts_event
    with pytest.raises(ValueError):
        reject_report(o, RiskDecision(True, "accepted"))


# ---------------------------------------------------------------------------------------------
# drawdown guard


def test_drawdown_guard_trips_at_the_limit_to_reducing():
    eng = RiskEngine(replace(LOOSE, max_drawdown=1_000.0))
    pf = portfolio_with(100, 1_000_000)  # long 100 @ $100
    assert eng.check_drawdown(pf, {INST: 1_000_000}, T0) is None  # equity 0, peak 0
    assert eng.check_drawdown(pf, {INST: 900_000}, T0) is None  # drawdown $1,000 = limit
    ctrl = eng.check_drawdown(pf, {INST: 899_999}, T0 + 5)  # drawdown $1,000.01
    assert ctrl is not None and ctrl.command is ControlCommand.KILL_TRIPPED
    assert ctrl.instrument == "" and ctrl.ts_event == T0 + 5
    assert ctrl.reason == (
        "max_drawdown: drawdown 1000.01 > limit 1000 (peak 0, equity -1000.01): trading REDUCING"
    )
    assert eng.mode is TradingMode.REDUCING
    # adding is refused, closing still passes: the desk can take the position off
    ok, reason = eng.check(order("BUY", 1), book(), pf, T0 + 6)
    assert not ok and reason.startswith(
        "reducing: trading REDUCING for AAPL.XNAS by kill_tripped (max_drawdown: drawdown 1000.01"
    )
    assert eng.check(order("SELL", 100), book(), pf, T0 + 6) == (True, "accepted: closing")
    assert eng.check_drawdown(pf, {INST: 800_000}, T0 + 7) is None  # already tripped: once


def test_drawdown_guard_can_halt_instead():
    eng = RiskEngine(replace(LOOSE, max_drawdown=1_000.0, drawdown_mode="HALTED"))
    pf = portfolio_with(100, 1_000_000)
    assert eng.check_drawdown(pf, {INST: 1_000_000}, T0) is None
    ctrl = eng.check_drawdown(pf, {INST: 899_999}, T0 + 5)
    assert ctrl is not None and ctrl.reason.endswith(": trading HALTED")
    assert eng.mode is TradingMode.HALTED
    assert eng.check(order("SELL", 100), book(), pf, T0 + 6).rule == Rule.HALTED
    assert eng.check(order("SELL", 100, action=OrderAction.CANCEL), None, pf, T0 + 6)[0]
    # a REDUCING guard does not trip again over a HALTED engine, nor soften it
    soft = RiskEngine(replace(LOOSE, max_drawdown=1_000.0))
    soft.on_control(Control(ControlCommand.KILL))
    soft.check_drawdown(pf, {INST: 1_000_000}, T0)
    assert soft.check_drawdown(pf, {INST: 800_000}, T0) is None
    assert soft.mode is TradingMode.HALTED
    with pytest.raises(ValueError):
        RiskEngine(replace(LOOSE, drawdown_mode="ACTIVE"))


def test_drawdown_from_running_peak_with_fees_and_resume():
    eng = RiskEngine(replace(LOOSE, max_drawdown=1_000.0))
    pf = Portfolio()
    pf.apply_fill(fill("BUY", 100, 1_000_000, fee=10.0))
    assert eng.check_drawdown(pf, {INST: 1_050_000}) is None  # equity 500 - 10 = 490 = peak
    assert eng.check_drawdown(pf, {INST: 950_000}) is None  # equity -510: drawdown 1000
    ctrl = eng.check_drawdown(pf, {INST: 949_999})  # drawdown 1000.01
    assert ctrl is not None and "(peak 490, equity -510.01)" in ctrl.reason
    # RESUME: trading goes on, the guard measures from the equity at the resume
    eng.on_control(Control(ControlCommand.RESUME))
    assert eng.check_drawdown(pf, {INST: 949_999}) is None
    assert eng.check(order("BUY", 1), book(), pf, T0)[0]
    assert eng.check_drawdown(pf, {INST: 850_000}) is None  # 999.99 below the rebased peak
    assert eng.check_drawdown(pf, {INST: 849_998}) is not None  # 1000.01


# ---------------------------------------------------------------------------------------------
# quantities and prices: positive whole numbers within bounds


@pytest.mark.parametrize(
    ("qty", "detail"),
    [
        (float("nan"), "quantity nan is not a whole number of lots"),
        (float("inf"), "quantity inf is not a whole number of lots"),
        (1.5, "quantity 1.5 is not a whole number of lots"),
        (10.0, "quantity 10.0 is not a whole number of lots"),
        ("10", "quantity '10' is not a whole number of lots"),
        (True, "quantity True is not a whole number of lots"),
        (0, "quantity 0 <= 0"),
        (-5, "quantity -5 <= 0"),
        (10**12 + 1, "quantity 1000000000001 > max_order_lots 1000000000000"),
    ],
)
def test_quantity_must_be_a_positive_whole_number_within_bounds(qty, detail):
    # every state and every other rule would let these through: the quantity check alone refuses
    eng = RiskEngine(LOOSE)
    eng.set_mode(TradingMode.REDUCING)
    pf = portfolio_with(100)
    o = replace(order("SELL", 1), quantity=qty)
    assert eng.check(o, book(), pf, T0) == (False, f"invalid_order: {detail}")


@pytest.mark.parametrize("price", [float("nan"), 1_000_000.5, "1000000", 0, -1])
def test_limit_price_must_be_positive_whole_ticks(price):
    ok, reason = RiskEngine(LOOSE).check(replace(order(), price=price), book(), Portfolio(), T0)
    assert not ok and reason.startswith("invalid_order: limit price")


def test_open_orders_count_in_every_check():
    ob = book(1_000_000, 1_000_200)  # mid $100.01
    eng = RiskEngine(replace(LOOSE, max_position_notional=2_100.0))  # 20 lots fit, 21 do not
    pf = Portfolio()
    assert eng.check(order("BUY", 15), ob, pf, T0, OpenLots(buy=0)) == (True, "accepted")
    ok, reason = eng.check(order("BUY", 15), ob, pf, T0, OpenLots(buy=15))
    assert not ok and reason == (
        "max_position_notional: position +0, 15 BUY open -> +30 lots x mid 1000100 ticks "
        "= 3000.3 > limit 2100"
    )
    # open sells do not make a buy closing (they may never fill) ...
    assert eng.check(order("BUY", 21), ob, pf, T0, OpenLots(sell=50)).rule == (
        Rule.MAX_POSITION_NOTIONAL
    )
    # ... and open buys are what a sell closes first
    long10 = portfolio_with(10)
    assert eng.check(order("SELL", 10), ob, long10, T0, OpenLots(sell=0)) == (
        True,
        "accepted: closing",
    )
    assert eng.check(order("SELL", 10), ob, long10, T0, OpenLots(sell=10)) == (True, "accepted")
    eng.set_mode(TradingMode.REDUCING)
    ok, reason = eng.check(order("SELL", 10), ob, long10, T0, OpenLots(sell=10))
    assert not ok and reason == (
        "reducing: trading REDUCING for AAPL.XNAS: SELL 10 does not reduce position +10 "
        "with 10 SELL open (exposure +0)"
    )
    ok, reason = eng.check(order("SELL", 10), ob, long10, T0, OpenLots(sell=5))
    assert not ok and reason.endswith(
        "SELL 10 closes only 5 lots of position +10 with 5 SELL open (exposure +5)"
    )
    assert eng.check(order("SELL", 5), ob, long10, T0, OpenLots(sell=5))[0]


def test_closing_market_order_skips_band_and_throttle_not_the_book():
    wide = book(900_000, 1_100_000)  # 1,000 bps from the mid: no band admits the touch
    cfg = replace(LOOSE, price_band_bps=1.0, max_orders_per_window=0)
    eng = RiskEngine(cfg)
    eng.set_mode(TradingMode.REDUCING)
    pf = portfolio_with(10)
    mkt = order("SELL", 10, otype=OrderType.MARKET)
    assert eng.check(mkt, wide, pf, T0) == (True, "accepted: closing")
    # a closing LIMIT order meets the band (and then the throttle)
    assert eng.check(order("SELL", 10, 900_000), wide, pf, T0).rule == Rule.PRICE_BAND
    assert eng.check(order("SELL", 10, 1_000_000), wide, pf, T0).rule == Rule.THROTTLE
    # the side it takes must exist; the other side may be empty
    assert eng.check(order("SELL", 10, otype=OrderType.MARKET), book(900_000, None), pf, T0)[0]
    assert eng.check(
        order("SELL", 10, otype=OrderType.MARKET), book(None, 1_100_000), pf, T0
    ).rule == (Rule.NO_MARK)
    assert eng.check(order("SELL", 10, otype=OrderType.MARKET), None, pf, T0).rule == Rule.NO_BOOK
    # an opening market order meets everything
    assert eng.check(order("SELL", 11, otype=OrderType.MARKET), wide, pf, T0).rule == (
        Rule.REDUCING
    )
    eng.set_mode(TradingMode.ACTIVE)
    assert eng.check(order("SELL", 11, otype=OrderType.MARKET), wide, pf, T0).rule == (
        Rule.PRICE_BAND
    )
    eng.set_mode(TradingMode.HALTED)
    assert eng.check(order("SELL", 10, otype=OrderType.MARKET), wide, pf, T0).rule == Rule.HALTED


def test_reduce_command_per_instrument_and_globally():
    eng = RiskEngine(LOOSE)
    eng.on_control(Control(ControlCommand.REDUCE, instrument=INST, reason="desk"))
    assert eng.effective_mode(INST) == (TradingMode.REDUCING, "reduce (desk)")
    assert eng.effective_mode(OTHER) == (TradingMode.ACTIVE, "")
    assert eng.check(order("BUY", 1), book(), Portfolio(), T0).rule == Rule.REDUCING
    assert eng.check(order("BUY", 1, inst=OTHER), book(inst=OTHER), Portfolio(), T0)[0]
    eng.on_control(Control(ControlCommand.KILL))  # the stricter applies
    assert eng.effective_mode(INST)[0] is TradingMode.HALTED
    eng.on_control(Control(ControlCommand.RESUME))
    assert eng.effective_mode(INST) == (TradingMode.ACTIVE, "")
