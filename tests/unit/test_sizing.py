"""Tests of udfs.strategy.sizing: every formula against hand-computed numbers (written out in the
comments), the guards, the binding cap of each case, and rounding toward zero in lots."""

from __future__ import annotations

import math

import pytest

from udfs.config import SizingConfig
from udfs.market.features import FeatureRow
from udfs.strategy.sizing import (
    instrument_capital,
    kelly_fraction_cap,
    load_capital_weights,
    qty_to_lots,
    row_price,
    target_position_lots,
    vol_target_position,
)

EXACT = {"rel": 1e-12, "abs": 0.0}


# --- vol target: |q| = tv * C / (P * sigma) ------------------------------------------------


def test_vol_target_hand_computed() -> None:
    # 0.001 * 100_000 = 100 ccy of P&L std; 250 ccy/unit * 0.002 = 0.5 ccy std per unit
    # -> 100 / 0.5 = 200 units
    assert vol_target_position(100_000, 0.001, 0.002, 250.0) == pytest.approx(200.0, **EXACT)
    # 0.0005 * 1_000_000 = 500; 50 * 0.0004 = 0.02 -> 25_000 units
    assert vol_target_position(1_000_000, 0.0005, 0.0004, 50.0) == pytest.approx(25_000.0, **EXACT)
    # 0.0005 * 100_000 = 50; 585.33 * 0.002 = 1.17066
    # -> 5_000_000 / 117_066 = 42.71094937898... units
    assert vol_target_position(100_000, 0.0005, 0.002, 585.33) == pytest.approx(
        42.7109493789828, **EXACT
    )


def test_vol_target_meets_its_definition() -> None:
    capital, tv, sigma, price = 250_000.0, 0.0007, 0.0013, 31.7
    q = vol_target_position(capital, tv, sigma, price)
    assert q * price * sigma == pytest.approx(tv * capital, **EXACT)


def test_vol_target_scales_inversely_with_sigma_and_price() -> None:
    base = vol_target_position(100_000, 0.001, 0.002, 250.0)
    assert vol_target_position(100_000, 0.001, 0.004, 250.0) == pytest.approx(base / 2, **EXACT)
    assert vol_target_position(100_000, 0.001, 0.002, 500.0) == pytest.approx(base / 2, **EXACT)
    assert vol_target_position(200_000, 0.001, 0.002, 250.0) == pytest.approx(base * 2, **EXACT)


@pytest.mark.parametrize("sigma", [0.0, -0.001, math.nan, math.inf])
def test_vol_target_zero_without_a_usable_sigma(sigma: float) -> None:
    assert vol_target_position(100_000, 0.001, sigma, 250.0) == 0.0


@pytest.mark.parametrize(
    ("capital", "tv", "price"),
    [
        (0.0, 0.001, 250.0),
        (100_000, 0.0, 250.0),
        (100_000, 0.001, 0.0),
        (100_000, 0.001, -1.0),
        (100_000, 0.001, math.nan),
    ],
)
def test_vol_target_zero_without_capital_target_or_price(
    capital: float, tv: float, price: float
) -> None:
    assert vol_target_position(capital, tv, 0.002, price) == 0.0


# --- Kelly: f = k * mu / sigma^2 --------------------------------------------------------------


def test_kelly_hand_computed() -> None:
    # 0.25 * 0.001 / 0.0001 = 2.5 (leverage)
    assert kelly_fraction_cap(0.001, 0.0001, 0.25) == pytest.approx(2.5, **EXACT)
    # a negative edge is a short Kelly bet: -2.5
    assert kelly_fraction_cap(-0.001, 0.0001, 0.25) == pytest.approx(-2.5, **EXACT)
    # full Kelly: 1 * 0.0002 / 0.0004 = 0.5
    assert kelly_fraction_cap(0.0002, 0.0004, 1.0) == pytest.approx(0.5, **EXACT)


def test_kelly_from_a_model_probability() -> None:
    # p = 0.6 up, E|r| = 0.002: mu = (2 * 0.6 - 1) * 0.002 = 0.0004; sigma = 0.01
    # f = 0.5 * 0.0004 / 0.0001 = 2.0
    p, abs_move, sigma = 0.6, 0.002, 0.01
    edge = (2 * p - 1) * abs_move
    assert kelly_fraction_cap(edge, sigma**2, 0.5) == pytest.approx(2.0, **EXACT)


@pytest.mark.parametrize(
    ("edge", "variance", "fraction"),
    [
        (0.001, 0.0, 0.25),
        (0.001, -1e-6, 0.25),
        (0.001, math.nan, 0.25),
        (math.nan, 1e-4, 0.25),
        (0.001, 1e-4, 0.0),
    ],
)
def test_kelly_guards(edge: float, variance: float, fraction: float) -> None:
    assert kelly_fraction_cap(edge, variance, fraction) == 0.0


# --- lots ----------------------------------------------------------------------------------


def test_qty_to_lots_rounds_toward_zero() -> None:
    assert qty_to_lots(166.6667, 0) == 166
    assert qty_to_lots(-166.6667, 0) == -166
    assert qty_to_lots(0.99, 0) == 0
    # lots of 0.001 units: 1.5625 units -> 1562.5 -> 1562
    assert qty_to_lots(1.5625, -3) == 1562
    # lots of 100 units: 250 -> 2.5 -> 2
    assert qty_to_lots(250.0, 2) == 2


def test_qty_to_lots_does_not_floor_a_float_artefact() -> None:
    # 0.29 * 100 is 28.999999999999996 in binary floats: that is 29 lots, not 28
    assert 0.29 * 100 < 29
    assert qty_to_lots(0.29, -2) == 29
    assert qty_to_lots(-0.29, -2) == -29
    # ... but a real shortfall (one millionth of a lot) still floors
    assert qty_to_lots(28.999999, 0) == 28


def test_row_price() -> None:
    assert row_price({"mid_px": 585.33, "mid": 1, "price_exp": 0}) == 585.33
    assert row_price({"mid": 5853300.0, "price_exp": -4}) == 585.33
    assert row_price({"mid": 5853250.0, "price_exp": -4}) == 585.325
    assert row_price({"mid": 12.5, "price_exp": 1}) == 125.0


# --- target_position_lots ------------------------------------------------------------------

CFG = SizingConfig(
    target_vol=0.001, capital=100_000.0, kelly_fraction=0.25, max_position_notional=60_000.0
)
ROW = {"mid_px": 250.0, "rv": 0.002, "size_exp": 0, "price_exp": -4}


def test_target_vol_binds() -> None:
    # q_vol = 0.001 * 100_000 / (250 * 0.002) = 200; q_max = 60_000 / 250 = 240 -> 200
    assert target_position_lots(1, ROW, CFG, None) == 200
    assert target_position_lots(-1, ROW, CFG, None) == -200


def test_notional_cap_binds() -> None:
    cfg = SizingConfig(
        target_vol=0.001, capital=100_000.0, kelly_fraction=0.25, max_position_notional=25_000.0
    )
    # q_vol = 200; q_max = 25_000 / 250 = 100 -> 100
    assert target_position_lots(1, ROW, cfg, None) == 100
    assert target_position_lots(-1, ROW, cfg, None) == -100


def test_kelly_cap_binds() -> None:
    # f = 0.25 * 1e-6 / 0.002**2 = 0.0625; notional 0.0625 * 100_000 = 6_250 -> 25 units
    assert target_position_lots(1, ROW, CFG, 1e-6) == 25
    assert target_position_lots(-1, ROW, CFG, -1e-6) == -25
    # an edge against the direction allows nothing
    assert target_position_lots(-1, ROW, CFG, 1e-6) == 0
    assert target_position_lots(1, ROW, CFG, -1e-6) == 0
    assert target_position_lots(1, ROW, CFG, 0.0) == 0


def test_kelly_cap_not_binding() -> None:
    # f = 0.25 * 1e-4 / 4e-6 = 6.25 -> 625_000 ccy -> 2_500 units: vol target (200) binds
    assert target_position_lots(1, ROW, CFG, 1e-4) == 200


def test_floor_toward_zero_both_sides() -> None:
    row = dict(ROW, mid_px=300.0)
    # q_vol = 100 / (300 * 0.002) = 166.67 -> 166 (and -166, not -167); q_max = 200
    assert target_position_lots(1, row, CFG, None) == 166
    assert target_position_lots(-1, row, CFG, None) == -166


def test_fractional_lots() -> None:
    # a BTC-like instrument, lots of 0.001 BTC: q_vol = 0.0005 * 100_000 / (20_000 * 0.0016)
    # = 50 / 32 = 1.5625 BTC = 1562.5 lots -> 1562; q_max = 1e6 / 20_000 = 50 BTC
    cfg = SizingConfig(
        target_vol=0.0005, capital=100_000.0, kelly_fraction=0.25, max_position_notional=1_000_000.0
    )
    row = {"mid_px": 20_000.0, "rv": 0.0016, "size_exp": -3}
    assert target_position_lots(1, row, cfg) == 1562
    assert target_position_lots(-1, row, cfg) == -1562


def test_price_from_ticks_when_no_mid_px() -> None:
    row = {"mid": 2_500_000.0, "price_exp": -4, "rv": 0.002, "size_exp": 0}
    assert target_position_lots(1, row, CFG) == 200


def test_flat_cases() -> None:
    assert target_position_lots(0, ROW, CFG, 1e-4) == 0
    assert target_position_lots(1, dict(ROW, rv=0.0), CFG, 1e-4) == 0  # no volatility estimate
    assert target_position_lots(1, dict(ROW, mid_px=0.0), CFG) == 0
    with pytest.raises(ValueError, match="signal_direction"):
        target_position_lots(2, ROW, CFG)


def test_on_a_feature_row_dict() -> None:
    # AAPL-like row: bid 585.32, ask 585.34 (ticks of 1e-4) -> mid_px 585.33, rv 0.002
    fr = FeatureRow(
        instrument="AAPL.XNAS",
        ts_event=1,
        ts_recv=1,
        seq=2,
        price_exp=-4,
        size_exp=0,
        best_bid=5853200,
        best_ask=5853400,
        bid_size=100,
        ask_size=100,
        spread=200,
        mid=5853300.0,
        microprice=5853300.0,
        imbalance=(0.0,),
        bid_depth=100,
        ask_depth=100,
        ofi=0.0,
        ofi_window=0.0,
        rv=0.002,
        trade_volume=0,
        trade_signed_volume=0,
        trade_count=0,
    )
    cfg = SizingConfig(
        target_vol=0.0005, capital=100_000.0, kelly_fraction=0.25, max_position_notional=50_000.0
    )
    # q_vol = 50 / (585.33 * 0.002) = 42.71; q_max = 50_000 / 585.33 = 85.42 -> 42
    assert target_position_lots(1, fr.to_dict(), cfg) == 42
    # Kelly: f = 0.25 * 2e-6 / 4e-6 = 0.125 -> 12_500 ccy / 585.33 = 21.36 -> 21
    assert target_position_lots(1, fr.to_dict(), cfg, 2e-6) == 21


# --- per-instrument capital weights (SizingConfig.capital_weights_path, e.g. HRP) -----------


def test_capital_weights_default_off_and_share_of_capital(tmp_path) -> None:
    cfg = SizingConfig()
    assert cfg.capital_weights_path == ""  # default: every instrument on the whole capital
    assert instrument_capital(cfg, None, "AAPL.XNAS") == cfg.capital
    path = tmp_path / "w.json"
    path.write_text('{"AAPL.XNAS": 0.6, "AMZN.XNAS": 0.4}')
    weights = load_capital_weights(path)
    assert instrument_capital(cfg, weights, "AAPL.XNAS") == pytest.approx(60_000.0, **EXACT)
    assert instrument_capital(cfg, weights, "GOOG.XNAS") == 0.0  # no allocation, no position
    row = {"rv": 0.002, "mid_px": 250.0, "size_exp": 0}
    # C = 60_000: 0.0005 * 60_000 / (250 * 0.002) = 60 units (the notional cap allows 80)
    assert target_position_lots(1, row, cfg, capital=60_000.0) == 60
    assert target_position_lots(1, row, cfg) == target_position_lots(1, row, cfg, capital=None)


@pytest.mark.parametrize(
    "text", ['{"A": 0.7, "B": 0.4}', '{"A": -0.1}', '{"A": "0.5"}', "[0.5]", "{}", "not json"]
)
def test_capital_weights_refused_with_the_reason(tmp_path, text: str) -> None:
    path = tmp_path / "w.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="capital weights"):
        load_capital_weights(path)
