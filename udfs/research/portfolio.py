"""Hierarchical risk parity (López de Prado, "Building Diversified Portfolios that Outperform Out
of Sample", 2016) across instruments, and the event-time return grid it is fed from.

The choices are skfolio's ``HierarchicalRiskParity()`` defaults, so the weights equal its own
(tests/unit/test_research_portfolio.py):

* covariance: the sample covariance (``ddof = 1``); correlation: Pearson;
* distance ``d_ij = sqrt(clip((1 - rho_ij) / 2, 0, 1))``;
* Ward linkage on that distance, then scipy's optimal leaf ordering; the ordered leaves are the
  seriation;
* recursive bisection of the ordered list into halves (``n // 2`` on the left); each half's risk
  is the variance of its inverse-variance portfolio, and the left half gets
  ``alpha = 1 - v_left / (v_left + v_right)`` of the parent's weight.

Weights are long-only and sum to 1. They are written to a JSON file
(:func:`write_capital_weights`) that the strategy's sizing reads as per-instrument capital
shares (``SizingConfig.capital_weights_path``; :mod:`udfs.strategy.sizing`), so the stream job
needs no clustering library.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["grid_log_returns", "hrp_order", "hrp_weights", "write_capital_weights"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def grid_log_returns(
    paths: Sequence[tuple[IntArray, IntArray]], start_ns: int, step_ns: int, n_steps: int
) -> FloatArray:
    """Log returns of several instruments on one event-time grid: ``(n_steps, n_instruments)``.

    ``paths[k]`` is instrument ``k``'s ``(ts_ns, price)`` (non-decreasing ns, positive ticks).
    At grid time ``g_m = start_ns + m * step_ns`` (``m = 0..n_steps``) each instrument's price is
    its last one at or before ``g_m`` (what a trader knew then); row ``m - 1`` holds
    ``ln(p(g_m) / p(g_{m-1}))``. Every instrument must have a price at ``start_ns``.
    """
    if step_ns <= 0 or n_steps < 1:
        raise ValueError("step_ns must be > 0 and n_steps >= 1")
    grid = start_ns + step_ns * np.arange(n_steps + 1, dtype=np.int64)
    columns = []
    for k, (ts_ns, price) in enumerate(paths):
        ts = np.asarray(ts_ns, dtype=np.int64)
        px = np.asarray(price, dtype=np.int64)
        at = np.searchsorted(ts, grid, side="right") - 1
        if at[0] < 0:
            raise ValueError(f"instrument {k}: no price at or before the grid start {start_ns}")
        sampled = px[at]
        # ln(p1 / p0) = log1p((p1 - p0) / p0): the tick difference is exact, so a small move
        # keeps its digits (log(p1) - log(p0) would cancel them)
        columns.append(np.log1p((sampled[1:] - sampled[:-1]) / sampled[:-1]))
    return np.column_stack(columns)


def hrp_order(returns: FloatArray) -> IntArray:
    """The seriation: leaves of the Ward tree over the correlation distance, optimally ordered."""
    from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering
    from scipy.spatial.distance import squareform

    corr = np.corrcoef(returns, rowvar=False)
    distance = np.sqrt(np.clip(0.5 * (1.0 - corr), 0.0, 1.0))
    condensed = squareform(distance, checks=False)
    tree = optimal_leaf_ordering(linkage(condensed, method="ward"), condensed)
    return np.asarray(leaves_list(tree), dtype=np.int64)


def hrp_weights(returns: FloatArray) -> FloatArray:
    """HRP weights (sum 1, long only) of the columns of ``returns`` (observations x
    instruments); see the module doc for each choice."""
    x = np.asarray(returns, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2 or x.shape[0] < 3:
        raise ValueError("returns must be (observations >= 3) x (instruments >= 2)")
    if not np.all(np.isfinite(x)):
        raise ValueError("returns must be finite")
    cov = np.atleast_2d(np.cov(x, rowvar=False, ddof=1))
    variances = np.diag(cov)
    if np.any(variances <= 0):
        zero = np.flatnonzero(variances <= 0).tolist()
        raise ValueError(f"instrument column(s) {zero} have zero variance: no risk to split")
    n = x.shape[1]
    weights = np.ones(n)
    clusters: list[IntArray] = [hrp_order(x)]
    while clusters:
        halves: list[IntArray] = []
        for cluster in clusters:
            if cluster.size < 2:
                continue
            mid = cluster.size // 2
            left, right = cluster[:mid], cluster[mid:]
            risks = []
            for part in (left, right):
                # variance of the part's inverse-variance portfolio
                ivp = np.zeros(n)
                ivp[part] = 1.0 / variances[part]
                ivp /= ivp.sum()
                risks.append(float(ivp @ cov @ ivp))
            alpha = 1.0 - risks[0] / (risks[0] + risks[1])
            weights[left] *= alpha
            weights[right] *= 1.0 - alpha
            halves += [left, right]
        clusters = halves
    return weights


def write_capital_weights(path: str | Path, weights: Mapping[str, float]) -> None:
    """Write ``{instrument: weight}`` as the JSON file ``SizingConfig.capital_weights_path``
    names (keys sorted, so the same weights give the same bytes)."""
    for name, w in weights.items():
        if not (np.isfinite(w) and w >= 0):
            raise ValueError(f"weight of {name!r} is {w!r}: must be finite and >= 0")
    Path(path).write_text(json.dumps(dict(sorted(weights.items())), indent=2) + "\n")
