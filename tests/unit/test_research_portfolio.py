"""Tests of udfs.research.portfolio without skfolio (its equality with skfolio's HRP is in
test_research_skfolio.py): the event-time return grid against a naive walk, HRP's two-instrument
case by hand, and the weights file the sizing stage reads."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _research_data import sample_mid2

from udfs.research.portfolio import grid_log_returns, hrp_weights, write_capital_weights
from udfs.strategy.sizing import load_capital_weights


def test_grid_returns_take_the_last_price_at_or_before_each_grid_time() -> None:
    ts, mid2 = sample_mid2()
    # the sample and a copy of it delayed by 0.3 s as a second path
    paths = [(ts, mid2), (ts + 300_000_000, mid2)]
    start, step, n = int(ts[0]) + 300_000_000, 250_000_000, 150
    returns = grid_log_returns(paths, start, step, n)
    assert returns.shape == (n, 2)
    for k, (pts, ppx) in enumerate(paths):
        prices = []
        for m in range(n + 1):
            g = start + m * step
            last = None
            for t, p in zip(pts.tolist(), ppx.tolist(), strict=True):
                if t > g:
                    break
                last = p
            prices.append(last)
        expected = [math.log(prices[m + 1] / prices[m]) for m in range(n)]
        np.testing.assert_allclose(returns[:, k], expected, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="no price at or before"):
        grid_log_returns(paths, int(ts[0]), step, n)


def test_hrp_of_two_instruments_is_inverse_variance() -> None:
    rng = np.random.default_rng(2)
    returns = rng.normal(size=(400, 2)) * [1e-3, 3e-3] + rng.normal(size=(400, 1)) * 1e-3
    var = np.var(returns, axis=0, ddof=1)
    w = hrp_weights(returns)
    np.testing.assert_allclose(w, (1 / var) / (1 / var).sum(), rtol=1e-12)
    with pytest.raises(ValueError, match="zero variance"):
        hrp_weights(np.column_stack([returns[:, 0], np.zeros(400)]))


def test_weights_file_round_trips_into_the_sizing_stage(tmp_path) -> None:
    path = tmp_path / "hrp.json"
    weights = {"GOOG.XNAS": 0.2, "AAPL.XNAS": 0.5, "AMZN.XNAS": 0.3}
    write_capital_weights(path, weights)
    assert load_capital_weights(path) == weights
    assert path.read_text().index("AAPL") < path.read_text().index("GOOG")  # stable bytes
