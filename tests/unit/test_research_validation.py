"""Tests of udfs.research.validation: purged K-fold / CPCV / walk-forward checked split by split
against a naive overlap loop on real triple-barrier spans (the AAPL sample), and the deflated
Sharpe ratio against the worked example of Bailey and López de Prado (2014).

The cross-check against skfolio's own splitters is in test_research_skfolio.py (slow: importing
skfolio alone costs several CPU seconds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from _research_data import sample_mid2

from udfs.research.labels import ewm_volatility, triple_barrier
from udfs.research.validation import (
    combinatorial_purged_splits,
    contiguous_blocks,
    cpcv_path_count,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    fold_bounds,
    probabilistic_sharpe_ratio,
    purged_kfold_splits,
    return_moments,
    walk_forward_splits,
)


def triple_barrier_spans() -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of every resolved triple-barrier sample of the sample's mids: real,
    variable label horizons (a touch after a few ms or the 1 s vertical barrier)."""
    ts, mid2 = sample_mid2()
    out = triple_barrier(
        ts,
        mid2,
        np.arange(ts.size),
        horizon_ns=1_000_000_000,
        profit_take=2.0,
        stop_loss=2.0,
        volatility=ewm_volatility(mid2, 50),
    )
    return out.start_ns, out.end_ns


def naive_train(start: np.ndarray, end: np.ndarray, test: np.ndarray, embargo: int) -> list[int]:
    """Train set by the definition, one sample at a time: not tested, its span meets no test
    sample's span, and not among the first `embargo` samples that start after a test block's
    last label end."""
    test_set = set(test.tolist())
    s, e = start.tolist(), end.tolist()
    embargoed: set[int] = set()
    for first, last in contiguous_blocks(test):
        block_end = max(e[first : last + 1])
        later = [j for j in range(last + 1, len(s)) if s[j] > block_end][:embargo]
        embargoed.update(later)
    test_start, test_end = start[test], end[test]
    train = []
    for j in range(len(s)):
        if j in test_set or j in embargoed:
            continue
        # closed intervals [s_j, e_j] and [s_i, e_i] meet, for any test sample i
        if np.any((s[j] <= test_end) & (test_start <= e[j])):
            continue
        train.append(j)
    return train


def test_folds_are_sized_like_array_split_and_sklearn_kfold() -> None:
    from sklearn.model_selection import KFold  # here: the import costs a second at collection

    for n, k in ((998, 5), (1000, 10), (17, 4)):
        bounds = fold_bounds(n, k)
        assert [hi - lo for lo, hi in bounds] == [a.size for a in np.array_split(np.arange(n), k)]
        tests = [t.tolist() for _, t in KFold(k).split(np.zeros(n))]
        assert tests == [list(range(lo, hi)) for lo, hi in bounds]


def test_purged_kfold_with_embargo_matches_the_naive_definition_on_real_spans() -> None:
    start, end = triple_barrier_spans()
    assert np.any(end - start < 10**8) and np.any(end - start == 10**9)  # really variable
    splits = list(purged_kfold_splits(start, end, n_folds=5, embargo=7))
    assert len(splits) == 5
    purged = 0
    for split in splits:
        assert split.train.tolist() == naive_train(start, end, split.test, 7)
        purged += start.size - split.test.size - split.train.size
    assert purged > 5 * 7  # the overlap removed real samples beyond the embargo


def test_cpcv_matches_the_naive_definition_on_real_spans() -> None:
    start, end = triple_barrier_spans()
    splits = list(combinatorial_purged_splits(start, end, n_folds=6, n_test_folds=2, embargo=3))
    assert len(splits) == math.comb(6, 2) and cpcv_path_count(6, 2) == 5
    assert [s.test_folds for s in splits][:3] == [(0, 1), (0, 2), (0, 3)]
    # each fold is tested in C(5, 1) = 5 splits: the 5 backtest paths
    assert all(sum(f in s.test_folds for s in splits) == 5 for f in range(6))
    for split in splits:
        assert split.train.tolist() == naive_train(start, end, split.test, 3)
        # no train label overlaps a test label
        tr, te = split.train, split.test
        assert not np.any(
            (start[tr][:, None] <= end[te][None, :]) & (start[te][None, :] <= end[tr][:, None])
        )


def test_walk_forward_purges_train_labels_reaching_into_the_test_block() -> None:
    start, end = triple_barrier_spans()
    splits = list(walk_forward_splits(start, end, train_size=200, test_size=150))
    n = start.size
    assert len(splits) == (n - 200) // 150
    for k, split in enumerate(splits):
        lo = 200 + 150 * k
        assert split.test.tolist() == list(range(lo, lo + 150))
        window = np.arange(lo - 200, lo)
        assert split.train.tolist() == [j for j in window if end[j] < start[lo]]
    expanded = list(
        walk_forward_splits(
            start, end, train_size=200, test_size=150, expand_train=True, reduce_test=True
        )
    )
    assert len(expanded) == math.ceil((n - 200) / 150)
    assert expanded[-1].test[-1] == n - 1 and expanded[-1].train[0] == 0


# --- deflated Sharpe ratio -------------------------------------------------------------------
# Bailey, D. H. and M. López de Prado (2014), "The Deflated Sharpe Ratio: Correcting for
# Selection Bias, Backtest Overfitting and Non-Normality", Journal of Portfolio Management
# 40(5), pp. 94-107 (SSRN 2460551), section "A numerical example": after N = 100 independent
# trials whose annualised Sharpe ratios have variance V = 1/2, a strategy shows an annualised
# SR of 2.5 over T = 1250 daily returns (5 years of 250 days) with skewness -3 and kurtosis 10.
# Non-annualised: SR = 2.5 / sqrt(250), V = 0.5 / 250. The paper finds SR0 = 0.1132 (the
# expected maximum daily SR of 100 skill-less trials) and DSR = 0.9004; it adds that N = 46
# trials would have given DSR = 0.9505, and that with normal returns (skewness 0, kurtosis 3)
# N = 88 trials give the same 0.9505 (pp. 9-10 of the SSRN version).
PAPER_SR = 2.5 / math.sqrt(250)
PAPER_VAR = 0.5 / 250
PAPER_SR0 = 0.1132
PAPER_DSR = 0.9004


def test_deflated_sharpe_ratio_reproduces_the_papers_numerical_example() -> None:
    sr0 = expected_max_sharpe(100, PAPER_VAR)
    assert sr0 == pytest.approx(PAPER_SR0, abs=5e-5)
    dsr = deflated_sharpe_ratio(
        PAPER_SR,
        n_trials=100,
        sharpe_variance=PAPER_VAR,
        n_obs=1250,
        skewness=-3.0,
        kurtosis=10.0,
    )
    assert dsr == pytest.approx(PAPER_DSR, abs=5e-5)
    for n_trials, skew, kurt in ((46, -3.0, 10.0), (88, 0.0, 3.0)):
        fewer = deflated_sharpe_ratio(
            PAPER_SR,
            n_trials=n_trials,
            sharpe_variance=PAPER_VAR,
            n_obs=1250,
            skewness=skew,
            kurtosis=kurt,
        )
        assert fewer == pytest.approx(0.9505, abs=5e-5)
    # the same SR from a single pre-registered trial (benchmark 0) is near-certain skill, and
    # more trials deflate it further
    assert probabilistic_sharpe_ratio(PAPER_SR, 0.0, 1250, -3.0, 10.0) > 0.999
    more = deflated_sharpe_ratio(
        PAPER_SR,
        n_trials=1000,
        sharpe_variance=PAPER_VAR,
        n_obs=1250,
        skewness=-3.0,
        kurtosis=10.0,
    )
    assert more < dsr


def test_psr_is_one_half_at_its_benchmark_and_moments_match_scipy() -> None:
    assert probabilistic_sharpe_ratio(0.1, 0.1, 500, 0.5, 4.0) == pytest.approx(0.5, abs=1e-15)
    from scipy import stats

    _, mid2 = sample_mid2()
    returns = np.diff(np.log(mid2.astype(np.float64)))
    sharpe, skew, kurt, n = return_moments(returns)
    assert n == returns.size
    assert sharpe == pytest.approx(returns.mean() / returns.std(ddof=1), rel=1e-12)
    assert skew == pytest.approx(float(stats.skew(returns)), rel=1e-9)
    assert kurt == pytest.approx(float(stats.kurtosis(returns, fisher=False)), rel=1e-9)
