"""Tests of udfs.research.labels: triple-barrier labels and meta-labels on real mid prices (the
AAPL sample replayed through the feature stage), each sample's touch time, barrier and label
checked against an independent naive loop; the EWM volatility against pandas."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from _research_data import SHARED_LOBSTER, lobster_level1_mid2, sample_feature_rows, sample_mid2

from udfs.research.labels import (
    NO_BARRIER,
    PROFIT_TAKE,
    STOP_LOSS,
    VERTICAL,
    barrier_width_ticks,
    ewm_volatility,
    meta_labels,
    triple_barrier,
)

SPAN = 50
HORIZON_NS = 1_000_000_000  # 1 s of exchange time (the sample covers 49 s)


def naive_barrier(
    ts: list[int], px: list[int], i: int, side: int, w_pt: int, w_sl: int, horizon: int
) -> tuple[int, int, int, int] | None:
    """(touch, exit index, end ns, exit price) by walking the path one event at a time;
    None if the vertical barrier lies past the data and nothing was touched."""
    t0, p0 = ts[i], px[i]
    last = i
    for j in range(i + 1, len(ts)):
        if ts[j] > t0 + horizon:
            break
        last = j
        gain = (px[j] - p0) if side == 1 else (p0 - px[j])
        if gain >= w_pt:
            return PROFIT_TAKE, j, ts[j], px[j]
        if -gain >= w_sl:
            return STOP_LOSS, j, ts[j], px[j]
    if t0 + horizon > ts[-1]:
        return None
    return VERTICAL, last, t0 + horizon, px[last]


def naive_width(p0: int, factor: float, sigma: float) -> int:
    return max(1, math.ceil(p0 * factor * sigma))


def check_against_naive(
    ts: np.ndarray,
    px: np.ndarray,
    vol: np.ndarray,
    events: np.ndarray,
    sides: np.ndarray,
    pt: float,
    sl: float,
) -> dict[int, int]:
    out = triple_barrier(
        ts,
        px,
        events,
        horizon_ns=HORIZON_NS,
        profit_take=pt,
        stop_loss=sl,
        volatility=vol,
        side=sides,
    )
    ts_l, px_l = ts.tolist(), px.tolist()
    by_event = {int(e): k for k, e in enumerate(out.event)}
    counts = {PROFIT_TAKE: 0, STOP_LOSS: 0, VERTICAL: 0, 99: 0}
    for i, s in zip(events.tolist(), sides.tolist(), strict=True):
        sigma = float(vol[i])
        if math.isnan(sigma):
            assert i not in by_event
            continue
        w_pt, w_sl = naive_width(px_l[i], pt, sigma), naive_width(px_l[i], sl, sigma)
        expected = naive_barrier(ts_l, px_l, i, s, w_pt, w_sl, HORIZON_NS)
        if expected is None:
            assert i not in by_event
            counts[99] += 1
            continue
        k = by_event[i]
        touch, j, end, exit_px = expected
        assert (out.touch[k], out.exit_index[k], out.end_ns[k], out.exit_price[k]) == (
            touch,
            j,
            end,
            exit_px,
        ), f"sample at {i}"
        assert out.start_ns[k] == ts_l[i] and out.entry_price[k] == px_l[i]
        assert out.profit_take_price[k] == px_l[i] + s * w_pt
        assert out.stop_loss_price[k] == px_l[i] - s * w_sl
        assert out.label[k] == np.sign(exit_px - px_l[i])
        counts[touch] += 1
    assert counts[99] == out.unresolved
    return counts


def test_ewm_volatility_equals_pandas_on_the_sample_mids() -> None:
    _, mid2 = sample_mid2()
    vol = ewm_volatility(mid2, SPAN)
    returns = pd.Series((mid2[1:] - mid2[:-1]) / mid2[:-1])
    expected = np.concatenate([[np.nan], returns.ewm(span=SPAN).std().to_numpy()])
    assert np.array_equal(np.isnan(vol), np.isnan(expected))
    known = ~np.isnan(expected)
    np.testing.assert_allclose(vol[known], expected[known], rtol=1e-9, atol=0)
    # zero only while every return so far is zero (the mid had not moved yet)
    assert np.all(vol[known] >= 0) and np.all(vol[known][5:] > 0)


def test_barrier_width_rounds_up_to_whole_ticks() -> None:
    assert barrier_width_ticks(10_000, 2.0, 1.2345e-4) == 3  # 2.469 -> 3
    assert barrier_width_ticks(10_000, 3.0, 1e-4) == 3  # 3.0000000000000004 snaps to 3
    assert barrier_width_ticks(10_000, 1.0, 1e-6) == 1  # under a tick: one tick
    assert barrier_width_ticks(10_000, 0.0, 1e-4) == NO_BARRIER


def test_triple_barrier_on_a_hand_path() -> None:
    # ns:    0    10   10   20   30   40   50
    ts = np.array([0, 10, 10, 20, 30, 40, 50], dtype=np.int64)
    px = np.array([100, 101, 102, 99, 97, 100, 100], dtype=np.int64)
    vol = np.full(7, 0.01)  # width = ceil(100 * 2 * 0.01) = 2 ticks
    out = triple_barrier(
        ts,
        px,
        np.array([0, 2, 3, 5]),
        horizon_ns=20,
        profit_take=2.0,
        stop_loss=2.0,
        volatility=vol,
    )
    # 0: the second event at ns 10 (after the entry in the feed) touches 102 exactly
    # 2: 102 -> 99 at ns 20 is a stop-loss (<= 100); 3: 99 -> 97 at ns 30 touches 97 exactly
    # 5: vertical barrier at 60 > last event 50, nothing touched: unresolved
    assert out.event.tolist() == [0, 2, 3]
    assert out.touch.tolist() == [PROFIT_TAKE, STOP_LOSS, STOP_LOSS]
    assert out.end_ns.tolist() == [10, 20, 30]
    assert out.exit_index.tolist() == [2, 3, 4]
    assert out.unresolved == 1
    # the profit-take off: sample 0 runs to its vertical barrier at ns 20 (inclusive), exit 99
    off = triple_barrier(
        ts, px, np.array([0]), horizon_ns=20, profit_take=0.0, stop_loss=5.0, volatility=vol
    )
    assert (off.touch[0], off.end_ns[0], off.exit_price[0], off.label[0]) == (VERTICAL, 20, 99, -1)


def test_triple_barrier_touch_times_and_barriers_match_a_naive_loop_on_real_mids() -> None:
    ts, mid2 = sample_mid2()
    vol = ewm_volatility(mid2, SPAN)
    events = np.arange(ts.size)
    counts = check_against_naive(ts, mid2, vol, events, np.ones(ts.size, np.int64), 2.0, 2.0)
    # real behaviour, not one branch: all three barriers end samples, the last second is open
    assert counts[PROFIT_TAKE] > 50 and counts[STOP_LOSS] > 50 and counts[VERTICAL] > 50
    assert counts[99] > 0


def test_meta_labels_on_a_primary_imbalance_signal_match_a_naive_loop() -> None:
    ts, mid2 = sample_mid2()
    rows = sample_feature_rows()
    vol = ewm_volatility(mid2, SPAN)
    imbalance = np.array([r["imbalance_3"] for r in rows])
    # primary model: the book-imbalance rule's side where it is decided (|imbalance| > 0.3)
    events = np.flatnonzero(np.abs(imbalance) > 0.3)
    sides = np.where(imbalance[events] > 0, 1, -1).astype(np.int64)
    assert (sides == 1).any() and (sides == -1).any()
    outcome, meta = meta_labels(
        ts,
        mid2,
        events,
        sides,
        horizon_ns=HORIZON_NS,
        profit_take=1.0,
        stop_loss=2.0,
        volatility=vol,
    )
    counts = check_against_naive(ts, mid2, vol, events, sides, 1.0, 2.0)
    assert int(meta.sum()) == counts[PROFIT_TAKE]
    assert np.array_equal(meta == 1, outcome.touch == PROFIT_TAKE)
    # a short's profit-take lies below its entry, a long's above
    short = outcome.side == -1
    assert np.all(outcome.profit_take_price[short] < outcome.entry_price[short])
    assert np.all(outcome.profit_take_price[~short] > outcome.entry_price[~short])
    assert 0 < meta.sum() < meta.size
    assert np.all(outcome.ret[meta == 1] > 0)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_LOBSTER.is_dir(), reason="../shared/data not present")
def test_triple_barrier_matches_a_naive_loop_on_a_whole_lobster_day() -> None:
    ts, mid2 = lobster_level1_mid2("AMZN")
    vol = ewm_volatility(mid2, 200)
    events = np.arange(0, ts.size, 25)
    sides = np.where(np.arange(events.size) % 2 == 0, 1, -1).astype(np.int64)
    counts = check_against_naive(ts, mid2, vol, events, sides, 3.0, 3.0)
    assert min(counts[PROFIT_TAKE], counts[STOP_LOSS], counts[VERTICAL]) > 100
