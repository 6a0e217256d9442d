"""Tests of udfs.execution.portfolio: average-cost accounting, P&L, peak/drawdown, state, and the
historical-simulation VaR / expected shortfall -- on hand-computed vectors and on a position
revalued over the real mid returns of the LOBSTER AAPL sample, cross-checked with numpy.
"""

from __future__ import annotations

import pickle
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from udfs.execution.portfolio import (
    BoundedIdSet,
    Portfolio,
    Position,
    expected_shortfall,
    historical_var,
    position_pnl_scenarios,
)
from udfs.schema import ExecKind, ExecReport

DATA = Path(__file__).resolve().parents[2] / "data" / "lobster"
ORDERBOOK = DATA / "AAPL_2012-06-21_34200000_57600000_orderbook_10.csv"
INST = "AAPL.XNAS"
OTHER = "MSFT.XNAS"
PX_EXP = -4  # ticks of $0.0001; sizes in shares

_ids = iter(range(1, 10**9))


def fill(
    side: str,
    qty: int,
    price: int,
    *,
    fee: float = 0.0,
    inst: str = INST,
    rid: str | None = None,
    size_exp: int = 0,
) -> ExecReport:
    return ExecReport(
        report_id=rid or f"f{next(_ids)}",
        order_id="o",
        instrument=inst,
        kind=ExecKind.FILL,
        ts_event=1,
        side=side,
        fill_price=price,
        fill_qty=qty,
        fee=fee,
        price_exp=PX_EXP,
        size_exp=size_exp,
    )


# ---------------------------------------------------------------------------------------------
# accounting


def test_average_cost_realised_unrealised_fees():
    pf = Portfolio()
    pf.apply_fill(fill("BUY", 100, 1_000_000, fee=1.0))  # 100 @ $100.00
    pf.apply_fill(fill("BUY", 100, 1_010_000, fee=1.0))  # 100 @ $101.00
    pos = pf.positions[INST]
    assert pos.quantity == 200 and pos.avg_price == 1_005_000  # $100.50
    # sell 150 @ $102: realised 150 x (102 - 100.50) = $225; average of the rest unchanged
    pf.apply_fill(fill("SELL", 150, 1_020_000, fee=1.5))
    assert pf.position(INST) == 50 and pos.avg_price == 1_005_000
    assert pf.realised_exact() == 225.0
    assert pf.fees_exact() == 3.5
    # 50 left, marked at $100: unrealised 50 x (100 - 100.50) = -$25
    assert pf.unrealised_exact({INST: 1_000_000}) == -25.0
    assert pf.equity_exact({INST: 1_000_000}) == Fraction(225 - 25) - Fraction(7, 2)


def test_fill_through_zero_reopens_at_fill_price():
    pf = Portfolio()
    pf.apply_fill(fill("BUY", 50, 1_005_000))
    pf.apply_fill(fill("SELL", 100, 1_000_000))  # closes 50 at -$0.50, opens -50 @ $100
    pos = pf.positions[INST]
    assert pos.quantity == -50 and pos.avg_price == 1_000_000
    assert pf.realised_exact() == -25.0
    # short 50 @ $100 marked at $99: +$50
    assert pf.unrealised_exact({INST: 990_000}) == 50.0


def test_short_round_trip_and_flat_resets_average():
    pf = Portfolio()
    pf.apply_fill(fill("SELL", 10, 1_000_000))
    pf.apply_fill(fill("SELL", 10, 1_010_000))  # short 20 @ $100.50
    assert pf.positions[INST].avg_price == 1_005_000
    pf.apply_fill(fill("BUY", 20, 900_000))  # buy back @ $90: 20 x 10.50 = $210
    assert pf.realised_exact() == 210.0
    assert pf.position(INST) == 0 and pf.positions[INST].avg_price == 0
    assert pf.unrealised_exact({INST: 1}) == 0


def test_exact_money_with_half_tick_marks_and_size_exponent():
    pf = Portfolio()
    # 3 lots of 0.001 BTC at 65000.1 USD (ticks of 0.1) -> exponents -1 / -3
    pf.apply_fill(
        ExecReport(
            "r1",
            "o",
            "BTCUSDT.BINANCE",
            ExecKind.FILL,
            1,
            side="BUY",
            fill_price=650_001,
            fill_qty=3,
            price_exp=-1,
            size_exp=-3,
        )
    )
    # mid 650_001.5 ticks -> unrealised 3 x 0.05 x 0.001 = 0.00015 exactly
    assert pf.unrealised_exact({"BTCUSDT.BINANCE": Fraction(1_300_003, 2)}) == Fraction(15, 100_000)
    assert pf.unrealised_exact({"BTCUSDT.BINANCE": 650_001.5}) == Fraction(15, 100_000)


def test_non_fills_duplicates_and_bad_fills():
    pf = Portfolio()
    assert pf.apply_fill(fill("BUY", 10, 1_000_000, rid="r1"))
    assert not pf.apply_fill(fill("BUY", 10, 1_000_000, rid="r1"))  # re-delivered
    ack = ExecReport(
        "a1", "o", INST, ExecKind.ACK, 1, side="BUY", fill_qty=10, fill_price=1_000_000
    )
    assert not pf.apply_fill(ack)
    assert pf.position(INST) == 10
    with pytest.raises(ValueError, match="side"):
        pf.apply_fill(fill("", 1, 1_000_000))
    with pytest.raises(ValueError, match="positive"):
        pf.apply_fill(fill("BUY", 0, 1_000_000))
    with pytest.raises(ValueError, match="exponents"):
        pf.apply_fill(fill("BUY", 1, 1_000_000, size_exp=-2))
    assert pf.position(INST) == 10 and pf.position(OTHER) == 0


def test_peak_and_drawdown():
    pf = Portfolio(capital=10_000)
    pf.apply_fill(fill("BUY", 100, 1_000_000))
    assert pf.mark({INST: 1_000_000}) == 10_000 and pf.drawdown_exact == 0
    pf.mark({INST: 1_030_000})  # +$300
    assert pf.peak == 10_300 and pf.drawdown_exact == 0
    pf.mark({INST: 1_010_000})  # +$100
    assert pf.peak == 10_300 and pf.drawdown_exact == 200
    # equity_exact() is pure: does not move the peak; the last mark is the fallback mark
    assert pf.equity_exact({INST: 2_000_000}) == 20_000 and pf.peak == 10_300
    assert pf.equity_exact() == 10_100
    pf.mark({INST: 1_040_000})
    assert pf.peak == 10_400 and pf.drawdown_exact == 0


def test_portfolio_state_survives_pickle():
    pf = Portfolio(capital=5.5)
    pf.apply_fill(fill("BUY", 7, 1_000_003, fee=0.1, rid="x1"))
    pf.apply_fill(fill("SELL", 3, 1_000_010, fee=0.1, rid="x2"))
    pf.mark({INST: 1_000_001})
    restored = pickle.loads(pickle.dumps(pf))
    assert restored.positions == pf.positions and restored.peak == pf.peak
    assert restored.equity_exact({INST: 999_999}) == pf.equity_exact({INST: 999_999})
    assert not restored.apply_fill(fill("SELL", 3, 1_000_010, rid="x2"))  # still deduped


def test_bounded_id_set():
    s = BoundedIdSet(2)
    s.add("a", "1")
    s.add("b")
    s.add("c")
    assert "a" not in s and "b" in s and "c" in s and len(s) == 2
    assert pickle.loads(pickle.dumps(s)) == s


# ---------------------------------------------------------------------------------------------
# VaR / ES on hand-computed vectors

# 100 scenarios with losses 1..100 (P&L -1 .. -100), shuffled so sorting matters
HAND = -np.random.default_rng(0).permutation(np.arange(1, 101)).astype(float)


@pytest.mark.parametrize(
    ("alpha", "var", "es"),
    [
        (0.99, 99.0, 100.0),  # k = 99; the worst 1% is the single worst loss
        (0.95, 95.0, 98.0),  # k = 95; mean of 96..100
        (0.975, 98.0, 99.2),  # k = 98; (99 + 100 + 0.5 x 98) / 2.5
        (0.5, 50.0, 75.5),  # mean of 51..100
    ],
)
def test_var_es_hand_computed(alpha, var, es):
    assert historical_var(HAND, alpha) == var
    assert expected_shortfall(HAND, alpha) == pytest.approx(es, rel=1e-12)
    assert historical_var(HAND, alpha) == np.quantile(-HAND, alpha, method="inverted_cdf")


def test_var_sign_convention_gains_only():
    gains = np.arange(1, 101, dtype=float)  # every scenario a gain of 1..100
    # losses -100..-1: the 99% VaR is the 99th smallest loss = -2 (a gain of 2)
    assert historical_var(gains, 0.99) == -2.0
    assert expected_shortfall(gains, 0.99) == -1.0


def test_var_es_small_uneven_vector():
    pnl = [5.0, -3.0, 2.0, -10.0, 0.0, -1.0, 4.0]  # losses sorted: -5 -4 -2 0 1 3 10
    # alpha 0.8: n alpha = 5.6, k = 6 -> VaR = 3; ES = (10 + (6 - 5.6) x 3) / 1.4
    assert historical_var(pnl, 0.8) == 3.0
    assert expected_shortfall(pnl, 0.8) == pytest.approx((10 + 0.4 * 3) / 1.4, rel=1e-12)
    assert expected_shortfall(pnl, 0.8) >= historical_var(pnl, 0.8)


def test_var_rejects_bad_input():
    with pytest.raises(ValueError):
        historical_var([], 0.99)
    with pytest.raises(ValueError):
        historical_var([1.0, float("nan")], 0.99)
    for alpha in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError):
            expected_shortfall([1.0, 2.0], alpha)


# ---------------------------------------------------------------------------------------------
# scenarios: current positions revalued over historical mid returns


def _pos(qty: int, inst: str = INST) -> Position:
    return Position(inst, PX_EXP, 0, quantity=qty, avg_price=Fraction(1_000_000))


def test_position_pnl_scenarios_hand_computed():
    mids = [1_000_000, 1_010_000, 999_900]  # +1%, then -1% (999900 / 1010000 = 0.99)
    long = position_pnl_scenarios({INST: _pos(10)}, {INST: 1_000_000}, {INST: mids})
    # 10 shares x $100 mark x +-1% = +-$10
    np.testing.assert_allclose(long, [10.0, -10.0], rtol=1e-12)
    short = position_pnl_scenarios({INST: _pos(-10)}, {INST: 1_000_000}, {INST: mids})
    np.testing.assert_allclose(short, [-10.0, 10.0], rtol=1e-12)
    # two instruments add up scenario by scenario; a flat position contributes nothing
    both = position_pnl_scenarios(
        {INST: _pos(10), OTHER: _pos(-5, OTHER), "X": _pos(0, "X")},
        {INST: 1_000_000, OTHER: 2_000_000},
        {INST: mids, OTHER: [50.0, 51.0, 51.0]},
    )
    # OTHER: -5 x $200 x (+2%, 0%) = (-20, 0)
    np.testing.assert_allclose(both, [10.0 - 20.0, -10.0], rtol=1e-12)


def test_position_pnl_scenarios_fails_closed():
    with pytest.raises(ValueError, match="no mid history"):
        position_pnl_scenarios({INST: _pos(1)}, {INST: 1}, {})
    with pytest.raises(ValueError, match="mids"):
        position_pnl_scenarios(
            {INST: _pos(1), OTHER: _pos(1, OTHER)},
            {INST: 1, OTHER: 1},
            {INST: [1, 2, 3], OTHER: [1, 2]},
        )
    with pytest.raises(ValueError, match="non-positive"):
        position_pnl_scenarios({INST: _pos(1)}, {INST: 1}, {INST: [1, 0, 3]})
    flat = position_pnl_scenarios({INST: _pos(0)}, {}, {INST: [1, 2, 3]})
    assert flat.tolist() == [0.0, 0.0]


@pytest.fixture(scope="module")
def lobster_mids() -> np.ndarray:
    book = np.loadtxt(ORDERBOOK, delimiter=",", dtype=np.int64)
    ask1, bid1 = book[:, 0], book[:, 2]
    assert (ask1 > bid1).all()
    return (ask1 + bid1) / 2.0  # ticks of $0.0001


@pytest.mark.parametrize("alpha", [0.99, 0.95, 0.975])
def test_var_es_on_lobster_position(lobster_mids, alpha):
    # the position is built through fills, marked at the last mid
    pf = Portfolio()
    pf.apply_fill(fill("BUY", 300, 5_855_000))
    pf.apply_fill(fill("SELL", 100, 5_857_000))  # long 200 shares
    mark = Fraction(int(lobster_mids[-1] * 2), 2)
    pnl = position_pnl_scenarios(pf.positions, {INST: mark}, {INST: lobster_mids})

    # independent computation straight from the CSV mids
    returns = lobster_mids[1:] / lobster_mids[:-1] - 1.0
    expected = 200 * float(mark) * 1e-4 * returns
    np.testing.assert_allclose(pnl, expected, rtol=1e-12, atol=1e-12)
    assert pnl.size == len(lobster_mids) - 1 == 998
    assert np.count_nonzero(pnl) > 50  # the sample moves

    losses = -expected
    var = historical_var(pnl, alpha)
    assert var == pytest.approx(np.quantile(losses, alpha, method="inverted_cdf"), rel=1e-12)
    assert var > 0  # a long position loses money on the down moves of the sample
    # ES: the worst n(1 - alpha) losses, the boundary one weighted by its fractional share
    tail = np.sort(losses)[::-1]
    m = len(tail) * (1 - alpha)
    whole = int(np.floor(m + 1e-9))
    es_numpy = (tail[:whole].sum() + (m - whole) * tail[whole]) / m
    assert expected_shortfall(pnl, alpha) == pytest.approx(es_numpy, rel=1e-9)
    assert expected_shortfall(pnl, alpha) >= var

    # the short position's risk sits on the other tail of the same returns
    pf.apply_fill(fill("SELL", 400, 5_857_000))  # short 200
    short = position_pnl_scenarios(pf.positions, {INST: mark}, {INST: lobster_mids})
    np.testing.assert_allclose(short, -expected, rtol=1e-12, atol=1e-12)
    assert historical_var(short, alpha) == pytest.approx(
        np.quantile(expected, alpha, method="inverted_cdf"), rel=1e-12
    )
