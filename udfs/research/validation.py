"""Validation without leakage: purged K-fold with embargo, combinatorial purged cross-validation
(CPCV), walk-forward, and the deflated Sharpe ratio.

Splitters (López de Prado, *Advances in Financial Machine Learning*, 2018, ch. 7 and 12)
--------------------------------------------------------------------------------------
Each sample ``i`` (in event order) carries the span ``[start_ns[i], end_ns[i]]`` of event time
its label depends on: ``start`` the entry, ``end`` when the label is known (e.g.
:attr:`udfs.research.labels.TripleBarrier.end_ns`). Starts are non-decreasing; ``end >= start``.

* **Purging**: a train sample whose span intersects (closed intervals) the span of a test block
  is dropped. For a contiguous test block ``a..b`` that is exactly: a train ``j < a`` with
  ``end_j >= start_a``, a train ``j > b`` with ``start_j <= max(end[a..b])``.
* **Embargo** (``embargo`` samples): after each test block, the first ``embargo`` samples that
  follow the purged ones (the samples starting after the block's last label end) are dropped
  too, since features carry serial correlation past the last test label (AFML §7.4.2).
* Folds are contiguous, sized as ``numpy.array_split`` (and scikit-learn's ``KFold``): the first
  ``n % k`` folds hold one sample more.

Against skfolio (``CombinatorialPurgedCV``, ``WalkForward``): skfolio counts observations, not
spans. Its ``purged_size = h`` removes ``h`` observations on each side of a test block; span
purging removes the same ones exactly when each span ends at the start of the sample ``h``
later (a label horizon of ``h`` observations, strictly increasing starts). Its
``embargo_size`` is our ``embargo``. Its folds give the remainder to the *last* fold instead of
the first ones, so the two agree when ``k`` divides ``n``. Its walk-forward keeps ``train_size``
observations and skips ``purged_size`` before the test; ours takes a ``train_size`` window and
purges it by span, so ours with ``train_size = T + h`` is skfolio's ``T`` with
``purged_size = h``. With real, variable spans (triple-barrier touches) only span purging is
right: a fixed count over- or under-purges. (The tests check all of this split by split.)
AFML's own ``PurgedKFold`` keeps a train sample starting exactly at the last test label end;
closed intervals drop it (the label end is an event both would see).

Deflated Sharpe ratio (Bailey and López de Prado, 2014)
-------------------------------------------------------
Sharpe ratios here are per observation (not annualised), kurtosis is *not* excess (3 for a
normal). With ``N`` trials whose Sharpe ratios have variance ``V``:

* ``SR0 = sqrt(V) * ((1 - g) * Z^-1(1 - 1/N) + g * Z^-1(1 - 1/(N e)))``, ``g`` the
  Euler–Mascheroni constant: the expected maximum Sharpe ratio of ``N`` skill-less trials;
* ``DSR = PSR(SR0) = Z((SR - SR0) * sqrt(T - 1) / sqrt(1 - g3 * SR + (g4 - 1) / 4 * SR**2))``,
  ``T`` the number of returns, ``g3`` their skewness, ``g4`` their kurtosis.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

__all__ = [
    "EULER_GAMMA",
    "Split",
    "combinatorial_purged_splits",
    "contiguous_blocks",
    "cpcv_path_count",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "fold_bounds",
    "probabilistic_sharpe_ratio",
    "purge_train",
    "purged_kfold_splits",
    "return_moments",
    "walk_forward_splits",
]

IntArray = npt.NDArray[np.int64]

EULER_GAMMA = 0.5772156649015329
"""The Euler–Mascheroni constant."""

_NORMAL = NormalDist()


@dataclass(frozen=True)
class Split:
    """One train/test split: sample indices, each increasing."""

    train: IntArray
    test: IntArray
    test_folds: tuple[int, ...] = ()
    """the folds tested (K-fold, CPCV); empty for walk-forward"""


def _check_spans(start_ns: IntArray, end_ns: IntArray) -> tuple[IntArray, IntArray]:
    start = np.asarray(start_ns, dtype=np.int64)
    end = np.asarray(end_ns, dtype=np.int64)
    if start.ndim != 1 or start.shape != end.shape:
        raise ValueError("start_ns and end_ns must be 1-d arrays of one length")
    if np.any(np.diff(start) < 0):
        raise ValueError("samples must be in event order: start_ns non-decreasing")
    bad = np.flatnonzero(end < start)
    if bad.size:
        raise ValueError(
            f"sample {int(bad[0])}: end_ns {end[bad[0]]} before start_ns {start[bad[0]]}"
        )
    return start, end


def contiguous_blocks(indices: IntArray) -> list[tuple[int, int]]:
    """Runs of consecutive indices in increasing ``indices``, as (first, last) pairs."""
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) != 1)
    firsts = np.concatenate(([idx[0]], idx[breaks + 1]))
    lasts = np.concatenate((idx[breaks], [idx[-1]]))
    return list(zip(firsts.tolist(), lasts.tolist(), strict=True))


def purge_train(start_ns: IntArray, end_ns: IntArray, test: IntArray, embargo: int = 0) -> IntArray:
    """Every sample not in ``test`` whose span overlaps no test block's span and that is not
    embargoed after one (module doc): the train set of a split, increasing."""
    start, end = _check_spans(start_ns, end_ns)
    if embargo < 0:
        raise ValueError(f"embargo must be >= 0, got {embargo}")
    n = start.size
    keep = np.ones(n, dtype=bool)
    test_idx = np.asarray(test, dtype=np.int64)
    keep[test_idx] = False
    for first, last in contiguous_blocks(test_idx):
        block_start = start[first]
        block_end = int(end[first : last + 1].max())
        # before the block: the label ends at or after the block's first start
        before = np.arange(first)
        keep[before[end[:first] >= block_start]] = False
        # after the block: starts at or before the block's last label end, then the embargo
        after_first = int(np.searchsorted(start, block_end, side="right"))
        after_first = max(after_first, last + 1)
        keep[last + 1 : min(n, after_first + embargo)] = False
    return np.flatnonzero(keep).astype(np.int64)


def fold_bounds(n_samples: int, n_folds: int) -> list[tuple[int, int]]:
    """Contiguous folds as [lo, hi) ranges, sized like ``numpy.array_split``."""
    if n_folds < 2 or n_folds > n_samples:
        raise ValueError(f"need 2 <= n_folds <= n_samples, got {n_folds} for {n_samples}")
    size, extra = divmod(n_samples, n_folds)
    bounds = []
    lo = 0
    for k in range(n_folds):
        hi = lo + size + (1 if k < extra else 0)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def purged_kfold_splits(
    start_ns: IntArray, end_ns: IntArray, n_folds: int, embargo: int = 0
) -> Iterator[Split]:
    """Purged K-fold: each fold in turn is the test set, the others (purged, embargoed) train."""
    return combinatorial_purged_splits(start_ns, end_ns, n_folds, 1, embargo)


def combinatorial_purged_splits(
    start_ns: IntArray, end_ns: IntArray, n_folds: int, n_test_folds: int, embargo: int = 0
) -> Iterator[Split]:
    """CPCV: every combination of ``n_test_folds`` of the ``n_folds`` folds is tested once
    (``itertools.combinations`` order), trained on the rest, purged and embargoed around each
    contiguous test block. ``n_test_folds = 1`` is the purged K-fold."""
    start, end = _check_spans(start_ns, end_ns)
    if not 1 <= n_test_folds < n_folds:
        raise ValueError(f"need 1 <= n_test_folds < n_folds, got {n_test_folds}, {n_folds}")
    bounds = fold_bounds(start.size, n_folds)
    for folds in itertools.combinations(range(n_folds), n_test_folds):
        test = np.concatenate([np.arange(*bounds[f], dtype=np.int64) for f in folds])
        yield Split(purge_train(start, end, test, embargo), test, folds)


def cpcv_path_count(n_folds: int, n_test_folds: int) -> int:
    """Backtest paths CPCV recombines: ``k / N * C(N, k)`` (AFML §12.4)."""
    return math.comb(n_folds, n_test_folds) * n_test_folds // n_folds


def walk_forward_splits(
    start_ns: IntArray,
    end_ns: IntArray,
    *,
    train_size: int,
    test_size: int,
    expand_train: bool = False,
    reduce_test: bool = False,
) -> Iterator[Split]:
    """Walk-forward: test blocks of ``test_size`` samples one after the other, the first
    starting at ``train_size``; each trains on the ``train_size`` samples before its test block
    (all of them from index 0 with ``expand_train``), purged of those whose label reaches into
    the block. ``reduce_test`` keeps a last, shorter test block. Train never follows test, so
    there is nothing to embargo."""
    start, end = _check_spans(start_ns, end_ns)
    n = start.size
    if train_size < 1 or test_size < 1:
        raise ValueError("train_size and test_size must be >= 1")
    test_lo = train_size
    while test_lo < n:
        test_hi = test_lo + test_size
        if test_hi > n and not reduce_test:
            return
        test = np.arange(test_lo, min(test_hi, n), dtype=np.int64)
        window_lo = 0 if expand_train else test_lo - train_size
        train = np.arange(window_lo, test_lo, dtype=np.int64)
        # a train label that ends at or after the test block's first start would leak into it
        yield Split(train[end[train] < start[test_lo]], test)
        test_lo = test_hi


def return_moments(returns: npt.ArrayLike) -> tuple[float, float, float, int]:
    """(Sharpe ratio, skewness, kurtosis, T) of a return series, per observation: Sharpe
    ``mean / std`` (``ddof=1``), skewness and (non-excess) kurtosis from the population central
    moments (``m3 / m2**1.5``, ``m4 / m2**2``, as the paper and ``scipy.stats`` default)."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1 or r.size < 3:
        raise ValueError("need a 1-d series of at least 3 returns")
    dev = r - r.mean()
    m2 = float(np.mean(dev**2))
    if m2 == 0:
        raise ValueError("returns have zero variance: no Sharpe ratio")
    sharpe = float(r.mean() / r.std(ddof=1))
    skew = float(np.mean(dev**3) / m2**1.5)
    kurt = float(np.mean(dev**4) / m2**2)
    return sharpe, skew, kurt, int(r.size)


def expected_max_sharpe(n_trials: int, sharpe_variance: float, mean_sharpe: float = 0.0) -> float:
    """Expected maximum of ``n_trials`` Sharpe ratios drawn from a normal with the trials' mean
    and ``sharpe_variance`` (Bailey and López de Prado 2014, eq. for ``SR0``)."""
    if n_trials < 2:
        raise ValueError(f"n_trials must be >= 2 (one trial has no selection), got {n_trials}")
    if sharpe_variance < 0:
        raise ValueError(f"sharpe_variance must be >= 0, got {sharpe_variance}")
    z1 = _NORMAL.inv_cdf(1.0 - 1.0 / n_trials)
    z2 = _NORMAL.inv_cdf(1.0 - 1.0 / (n_trials * math.e))
    return mean_sharpe + math.sqrt(sharpe_variance) * ((1 - EULER_GAMMA) * z1 + EULER_GAMMA * z2)


def probabilistic_sharpe_ratio(
    sharpe: float, benchmark: float, n_obs: int, skewness: float, kurtosis: float
) -> float:
    """Probability that the true Sharpe ratio exceeds ``benchmark``, given the observed
    ``sharpe`` over ``n_obs`` returns with that skewness and (non-excess) kurtosis."""
    if n_obs < 2:
        raise ValueError(f"n_obs must be >= 2, got {n_obs}")
    var_term = 1.0 - skewness * sharpe + (kurtosis - 1.0) / 4.0 * sharpe * sharpe
    if var_term <= 0:
        raise ValueError(
            f"1 - skewness*SR + (kurtosis-1)/4*SR^2 = {var_term} <= 0: moments inconsistent"
        )
    z = (sharpe - benchmark) * math.sqrt(n_obs - 1) / math.sqrt(var_term)
    return _NORMAL.cdf(z)


def deflated_sharpe_ratio(
    sharpe: float,
    *,
    n_trials: int,
    sharpe_variance: float,
    n_obs: int,
    skewness: float,
    kurtosis: float,
) -> float:
    """DSR: the probabilistic Sharpe ratio of the selected strategy against the expected
    maximum Sharpe ratio of ``n_trials`` trials with ``sharpe_variance`` (module doc)."""
    benchmark = expected_max_sharpe(n_trials, sharpe_variance)
    return probabilistic_sharpe_ratio(sharpe, benchmark, n_obs, skewness, kurtosis)
