"""Position sizing: volatility targeting, a fractional-Kelly cap and a notional cap, in lots.

Pure Python (no Flink import). Every input is per instrument and over one horizon ``H``: the
feature window (``FeatureConfig.window_ms``), because the features' realised volatility ``rv``
is the standard deviation of the mid's log return over that window.

Units and notation
------------------
* ``C``      capital, quote currency (``SizingConfig.capital``; times the instrument's share
  ``w`` when ``SizingConfig.capital_weights_path`` names per-instrument weights, e.g. HRP's);
* ``tv``     volatility target, a fraction of ``C`` per horizon (``SizingConfig.target_vol``);
* ``P``      price, quote currency per instrument *unit* (``mid_px`` = ``mid * 10**price_exp``);
* ``sigma``  the instrument's return volatility over ``H`` (dimensionless, e.g. ``rv``);
* ``mu``     the instrument's expected return over ``H`` (dimensionless, signed: > 0 expects an
  up move), the *edge*; e.g. from a model probability ``p`` of an up move,
  ``mu = (2p - 1) * E|r|``;
* ``q``      a quantity in instrument units (shares, BTC); ``lots = q / 10**size_exp``.

Formulas (each repeated next to its code):

* vol target:   ``|q_vol| = tv * C / (P * sigma)`` (units), so ``|q_vol| * P * sigma = tv * C``:
  the position's P&L standard deviation over ``H`` is ``tv`` of the capital;
* Kelly:        ``f = k * mu / sigma**2`` (leverage: notional / capital, signed), ``k`` the
  Kelly fraction; as a quantity cap ``|q_kelly| = max(0, d * f) * C / P``
  with ``d`` the signal direction (a Kelly fraction against ``d`` allows nothing);
* notional cap: ``|q_max| = N_max / P`` (``SizingConfig.max_position_notional``);
* target:       ``lots = d * floor(min(|q_vol|, |q_kelly|, |q_max|) / 10**size_exp)``
  (rounded toward zero, so the position never exceeds any cap).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from udfs.config import SizingConfig

__all__ = [
    "instrument_capital",
    "kelly_fraction_cap",
    "load_capital_weights",
    "qty_to_lots",
    "row_price",
    "target_position_lots",
    "vol_target_position",
]

_SNAP_REL = 1e-9
"""A quantity within this relative distance of a whole number of lots counts as that number:
``q / 10**size_exp`` of e.g. 0.3 / 0.1 is 2.9999999999999996 in floats, and flooring it to 2
would be a rounding artefact, not a cap."""


def _finite(x: Any) -> bool:
    try:
        return math.isfinite(x)
    except TypeError:
        return False


def _positive_finite(x: Any) -> bool:
    return _finite(x) and x > 0


def vol_target_position(capital: float, target_vol: float, sigma: float, price: float) -> float:
    """Size (instrument units, >= 0) whose P&L std over the horizon is ``target_vol`` of
    ``capital``.

    ``|q| = target_vol * capital / (price * sigma)``, from ``|q| * price * sigma =
    target_vol * capital``: ``capital`` quote currency, ``target_vol`` fraction of capital per
    horizon, ``price`` quote currency per unit, ``sigma`` return std over the same horizon
    (e.g. the features' ``rv``), result in units.

    Returns 0 when ``sigma <= 0`` (or is not a finite number): a zero volatility estimate --
    ``rv`` is 0 whenever the mid has not moved inside the window, e.g. right after a start or
    in a quiet spell -- is an absence of information, not a riskless instrument, and the
    formula would give an infinite size. Likewise 0 for a non-positive or non-finite price,
    capital or target (nothing to size against). The sign of the position is the caller's.
    """
    if not (
        _positive_finite(sigma)
        and _positive_finite(price)
        and _positive_finite(capital)
        and _positive_finite(target_vol)
    ):
        return 0.0
    # |q| = tv * C / (P * sigma)   [units = (1 * ccy) / (ccy/unit * 1)]
    return target_vol * capital / (price * sigma)


def kelly_fraction_cap(edge: float, variance: float, fraction: float) -> float:
    """Fractional-Kelly leverage ``f = fraction * edge / variance`` (notional / capital, signed).

    ``edge`` is the expected return per unit of notional over the horizon (signed, e.g.
    ``(2p - 1) * E|r|`` for a model probability ``p`` of an up move), ``variance`` the return
    variance over the same horizon (``rv**2``), ``fraction`` the share of full Kelly allowed
    (``SizingConfig.kelly_fraction``). Both ``edge`` and ``variance`` are dimensionless, so
    ``f`` is a leverage: ``f * capital`` is the Kelly notional, negative meaning short.

    Returns 0 when ``variance <= 0`` (or is not finite) or ``edge``/``fraction`` is not finite:
    an edge over zero measured risk would be an unbounded bet, and a cap derived from no risk
    estimate is no cap; 0 also for ``fraction <= 0`` (Kelly sizing switched off).
    """
    if not (_positive_finite(variance) and _positive_finite(fraction) and _finite(edge)):
        return 0.0
    # f = k * mu / sigma^2   [leverage = 1 * 1 / 1]
    return fraction * edge / variance


def qty_to_lots(qty: float, size_exp: int) -> int:
    """Units -> integer lots of ``10**size_exp`` units, rounded toward zero (a quantity within
    a relative ``1e-9`` of a whole number of lots is that number, see ``_SNAP_REL``)."""
    if not math.isfinite(qty) or qty == 0:
        return 0
    # lots = q / 10**size_exp; a negative exponent multiplies by the exact int 10**-size_exp
    lots = qty * 10**-size_exp if size_exp <= 0 else qty / 10**size_exp
    nearest = round(lots)
    if abs(lots - nearest) <= _SNAP_REL * max(1.0, abs(lots)):
        return int(nearest)
    return math.trunc(lots)


def row_price(row: Mapping[str, Any]) -> float:
    """Price in quote currency per unit from a feature row: ``mid_px`` if present, else
    ``mid * 10**price_exp`` (``mid`` in ticks)."""
    if "mid_px" in row:
        return float(row["mid_px"])
    mid, exp = row["mid"], int(row.get("price_exp", 0))
    return float(mid * 10**exp) if exp >= 0 else mid / 10**-exp


def load_capital_weights(path: str | Path) -> dict[str, float]:
    """``{instrument: share of capital}`` from the JSON file ``SizingConfig.capital_weights_path``
    names (e.g. written by ``udfs.research.portfolio.write_capital_weights``). Each weight must
    be a finite number >= 0 and together at most 1 (a relative 1e-9 of rounding allowed): shares
    above the whole capital would lever the book past what the volatility target assumes."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"capital weights {path}: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"capital weights {path}: expected a non-empty JSON object")
    weights: dict[str, float] = {}
    for name, w in raw.items():
        if isinstance(w, bool) or not isinstance(w, int | float) or not _finite(w) or w < 0:
            raise ValueError(
                f"capital weights {path}: {name!r} has weight {w!r}, not a number >= 0"
            )
        weights[name] = float(w)
    total = math.fsum(weights.values())
    if total > 1.0 + 1e-9:
        raise ValueError(f"capital weights {path}: they sum to {total!r} > 1")
    return weights


def instrument_capital(
    cfg: SizingConfig, weights: Mapping[str, float] | None, instrument: str
) -> float:
    """The capital ``instrument`` is sized against: ``cfg.capital``, or ``cfg.capital * w``
    with its weight ``w`` (0 for an instrument the weights leave out: it has no allocation)."""
    if weights is None:
        return cfg.capital
    return cfg.capital * weights.get(instrument, 0.0)


def target_position_lots(
    signal_direction: int,
    row: Mapping[str, Any],
    cfg: SizingConfig,
    edge: float | None = None,
    capital: float | None = None,
) -> int:
    """Target position in lots (signed) for a signal ``direction`` after feature ``row``.

    ``row`` is a :meth:`~udfs.market.features.FeatureRow.to_dict` (read: ``rv``, ``mid_px`` or
    ``mid``/``price_exp``, ``size_exp``). With ``P`` the mid price per unit, ``sigma = rv``,
    ``d`` the direction and ``C = cfg.capital``::

        |q_vol|   = cfg.target_vol * C / (P * sigma)                  units
        f         = cfg.kelly_fraction * edge / sigma**2              leverage (signed)
        |q_kelly| = max(0, d * f) * C / P                             units (edge given only)
        |q_max|   = cfg.max_position_notional / P                     units
        lots      = d * floor(min(|q_vol|, |q_kelly|, |q_max|) / 10**size_exp)

    ``edge`` is the instrument's signed expected return over the feature window (see
    :func:`kelly_fraction_cap`); ``None`` means no model edge is known and the Kelly cap is not
    applied. An edge against the direction gives 0. Direction 0, ``rv <= 0`` (see
    :func:`vol_target_position`) or a non-positive price give 0. ``capital`` replaces
    ``cfg.capital`` as ``C`` (the instrument's share, :func:`instrument_capital`); None: the
    configured capital.
    """
    if signal_direction not in (-1, 0, 1):
        raise ValueError(f"signal_direction must be -1, 0 or +1, got {signal_direction!r}")
    if signal_direction == 0:
        return 0
    price = row_price(row)
    if not _positive_finite(price):
        return 0
    sigma = float(row["rv"])
    size_exp = int(row.get("size_exp", 0))
    cap = cfg.capital if capital is None else capital

    # |q_vol| = tv * C / (P * sigma), units
    q = vol_target_position(cap, cfg.target_vol, sigma, price)
    if edge is not None:
        # f = k * mu / sigma^2 (leverage); |q_kelly| = max(0, d * f) * C / P, units
        f = kelly_fraction_cap(edge, sigma * sigma, cfg.kelly_fraction)
        q = min(q, max(0.0, signal_direction * f) * cap / price)
    # |q_max| = N_max / P, units
    q = min(q, max(0.0, cfg.max_position_notional) / price)
    # lots = d * floor(|q| / 10**size_exp)
    return signal_direction * qty_to_lots(q, size_exp)
