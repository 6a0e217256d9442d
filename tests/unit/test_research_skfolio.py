"""udfs.research against skfolio, an independent implementation, on the same real index: each
CPCV and walk-forward split, and the HRP weights.

skfolio counts observations where udfs.research purges by label span; they define the same
split when every label ends at the start of the sample ``h`` later (a horizon of ``h``
observations) on strictly increasing event times, ``n_folds`` divides the sample count, and our
walk-forward ``train_size`` is skfolio's plus ``h`` (udfs/research/validation.py's module doc).
The last test shows where they part: on real triple-barrier spans a fixed count leaks.

Slow: importing skfolio (cvxpy, plotly) costs several CPU seconds; `make test` runs these."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _research_data import SHARED_LOBSTER, lobster_level1_mid2, sample_mid2

from udfs.research.labels import ewm_volatility, triple_barrier
from udfs.research.portfolio import grid_log_returns, hrp_weights
from udfs.research.validation import combinatorial_purged_splits, walk_forward_splits

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def skfolio_cv() -> Any:
    """skfolio.model_selection, imported only when a test here runs (not at collection: the
    fast lane deselects this module and must not pay for the import)."""
    return pytest.importorskip("skfolio.model_selection")


def event_index(n_folds: int) -> np.ndarray:
    """Strictly increasing event times of the AAPL sample's feature rows (the last row of each
    nanosecond), cut to a multiple of ``n_folds``."""
    ts, _ = sample_mid2()
    last_of_ns = np.append(ts[1:] != ts[:-1], True)
    unique = ts[last_of_ns]
    return unique[: unique.size - unique.size % n_folds]


def horizon_spans(start: np.ndarray, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Each label ends at the start of the sample ``h`` later (clipped at the last)."""
    return start, start[np.minimum(np.arange(start.size) + h, start.size - 1)]


@pytest.mark.parametrize(
    ("n_folds", "n_test_folds", "h", "embargo"),
    [(6, 2, 0, 0), (6, 2, 4, 3), (8, 3, 7, 0), (5, 4, 2, 9), (10, 2, 15, 10)],
)
def test_cpcv_splits_equal_skfolio_combinatorial_purged_cv(
    skfolio_cv: Any, n_folds: int, n_test_folds: int, h: int, embargo: int
) -> None:
    start, end = horizon_spans(event_index(n_folds), h)
    ours = list(combinatorial_purged_splits(start, end, n_folds, n_test_folds, embargo))
    cv = skfolio_cv.CombinatorialPurgedCV(
        n_folds=n_folds, n_test_folds=n_test_folds, purged_size=h, embargo_size=embargo
    )
    theirs = list(cv.split(np.zeros((start.size, 1))))
    assert len(ours) == len(theirs) == cv.n_splits
    for split, (train, tests) in zip(ours, theirs, strict=True):
        assert split.train.tolist() == train.tolist()
        assert split.test.tolist() == np.concatenate(tests).tolist()


@pytest.mark.parametrize(
    ("train_size", "test_size", "h", "expand", "reduce"),
    [
        (100, 50, 0, False, False),
        (120, 40, 5, False, False),
        (100, 70, 12, True, True),
        (300, 33, 3, False, True),
    ],
)
def test_walk_forward_splits_equal_skfolio_walk_forward(
    skfolio_cv: Any, train_size: int, test_size: int, h: int, expand: bool, reduce: bool
) -> None:
    start, end = horizon_spans(event_index(1), h)
    ours = list(
        walk_forward_splits(
            start,
            end,
            train_size=train_size + h,
            test_size=test_size,
            expand_train=expand,
            reduce_test=reduce,
        )
    )
    cv = skfolio_cv.WalkForward(
        test_size=test_size,
        train_size=train_size,
        purged_size=h,
        expand_train=expand,
        reduce_test=reduce,
    )
    theirs = list(cv.split(np.zeros((start.size, 1))))
    assert len(ours) == len(theirs) > 3
    for split, (train, test) in zip(ours, theirs, strict=True):
        assert split.train.tolist() == train.tolist()
        assert split.test.tolist() == test.tolist()


def test_on_real_triple_barrier_spans_a_fixed_purge_count_leaks(skfolio_cv: Any) -> None:
    """Where the two part: labels end at their barrier touch, so no one count fits; skfolio's
    purge of h observations, with h the median label length, leaves train labels overlapping
    test labels, which span purging never does."""
    ts, mid2 = sample_mid2()
    last_of_ns = np.append(ts[1:] != ts[:-1], True)
    ts, mid2 = ts[last_of_ns], mid2[last_of_ns]
    out = triple_barrier(
        ts,
        mid2,
        np.arange(ts.size),
        horizon_ns=1_000_000_000,
        profit_take=2.0,
        stop_loss=2.0,
        volatility=ewm_volatility(mid2, 50),
    )
    n = out.event.size - out.event.size % 6
    start, end = out.start_ns[:n], out.end_ns[:n]
    ends_at = np.searchsorted(start, end, side="right") - 1 - np.arange(n)
    h = int(np.median(ends_at))
    cv = skfolio_cv.CombinatorialPurgedCV(n_folds=6, n_test_folds=2, purged_size=h)
    leaks = 0
    for (train, tests), ours in zip(
        cv.split(np.zeros((n, 1))), combinatorial_purged_splits(start, end, 6, 2), strict=True
    ):
        test = np.concatenate(tests)
        for tr in (train, ours.train):
            overlap = (start[tr][:, None] <= end[test][None, :]) & (
                start[test][None, :] <= end[tr][:, None]
            )
            if tr is ours.train:
                assert not overlap.any()
            else:
                leaks += int(overlap.any(axis=1).sum())
    assert leaks > 0


def hrp_of(returns: np.ndarray) -> np.ndarray:
    optimization = pytest.importorskip("skfolio.optimization")
    return optimization.HierarchicalRiskParity().fit(returns).weights_


@pytest.mark.skipif(not SHARED_LOBSTER.is_dir(), reason="../shared/data not present")
def test_hrp_weights_equal_skfolio_on_lobster_returns() -> None:
    paths = [lobster_level1_mid2(sym) for sym in ("AAPL", "AMZN", "GOOG")]
    # 10 s grid from 09:31 to 15:59 ET: 2328 returns per instrument
    returns = grid_log_returns(paths, 34_260 * 10**9, 10 * 10**9, 2328)
    assert returns.shape == (2328, 3) and np.all(returns.std(axis=0) > 0)
    ours = hrp_weights(returns)
    np.testing.assert_allclose(ours, hrp_of(returns), rtol=0, atol=1e-9)
    assert ours.sum() == pytest.approx(1.0, abs=1e-12)


def test_hrp_weights_equal_skfolio_on_twelve_correlated_instruments() -> None:
    # 12 instruments in three correlated groups with different volatilities: a tree with depth
    rng = np.random.default_rng(12)
    factors = rng.normal(size=(750, 3))
    loads = np.array([0.9, 0.6, 0.3, 0.7, 0.5, 0.8, 0.4, 0.6, 0.95, 0.2, 0.5, 0.65])
    cols = [
        loads[i] * factors[:, i % 3] + np.sqrt(1 - loads[i] ** 2) * rng.normal(size=750)
        for i in range(12)
    ]
    returns = np.column_stack(cols) * np.linspace(1e-4, 8e-4, 12)
    ours = hrp_weights(returns)
    np.testing.assert_allclose(ours, hrp_of(returns), rtol=0, atol=1e-9)
    assert np.all(ours > 0)
