"""Positions, P&L and the portfolio risk figures (historical VaR / expected shortfall).

Pure Python (numpy only for the risk figures), no Flink import, so the stream sink, the backtest
and the tests share one implementation.

Units
-----
* quantities are integer lots of ``10**size_exp`` units, prices integer ticks of
  ``10**price_exp`` quote-currency units, as in the schema; a mark (mid) may be a half tick, so
  marks are taken as ``int``/:class:`~fractions.Fraction`/``Decimal``/``float`` ticks and kept
  as exact fractions;
* money (realised and unrealised P&L, fees, equity) is quote currency:
  ``ticks * 10**price_exp * lots * 10**size_exp``. It is kept as an exact
  :class:`~fractions.Fraction` (fees, which arrive as floats, are read through their shortest
  decimal ``repr``), so limits compare exactly; callers turn it into ``float`` only to report.

Accounting (average cost)
-------------------------
A fill that opens or adds to a position moves the average cost to the quantity-weighted mean of
the old average and the fill price. A fill against the position realises
``closed_lots * (fill_price - avg_cost) * sign(position)`` on the closed part and leaves the
average cost of the remainder unchanged; a fill that goes through zero closes the old position
and opens the rest at the fill price. Fees are kept apart (``fees``) and taken off equity.

``equity = capital + realised + unrealised - fees``; ``unrealised = position * (mark - avg)``.
:meth:`Portfolio.mark` values the book at the given marks and carries the running peak of
equity; ``drawdown = peak - equity`` (>= 0).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any

import numpy as np

from udfs.schema import ExecKind, ExecReport, OrderSide

__all__ = [
    "BoundedIdSet",
    "Portfolio",
    "Position",
    "expected_shortfall",
    "fmt_money",
    "historical_var",
    "position_pnl_scenarios",
    "to_fraction",
]

Number = int | float | Fraction | Decimal


def to_fraction(x: Number | str) -> Fraction:
    """Exact value of ``x``; a float is read as its shortest decimal ``repr`` (``0.1`` is 1/10,
    not the nearest binary double), so a limit written in a config file compares as written."""
    if isinstance(x, bool):
        raise TypeError(f"not a number: {x!r}")
    if isinstance(x, float):
        if not math.isfinite(x):
            raise ValueError(f"not a finite number: {x!r}")
        return Fraction(repr(x))
    if isinstance(x, Decimal) and not x.is_finite():
        raise ValueError(f"not a finite number: {x!r}")
    return Fraction(x)


def _scale(price_exp: int, size_exp: int) -> Fraction:
    """Quote currency per (tick x lot)."""
    return Fraction(10) ** (price_exp + size_exp)


def fmt_money(x: Number) -> str:
    """Readable decimal rendering of an exact amount (at most 6 decimals, no exponent)."""
    f = to_fraction(x)
    d = (Decimal(f.numerator) / Decimal(f.denominator)).quantize(Decimal("0.000001"))
    s = format(d.normalize(), "f")
    return "0" if s in ("-0", "0") else s


# ---------------------------------------------------------------------------------------------
# bounded id set (idempotency)


class BoundedIdSet:
    """Insertion-ordered set of ids with a fixed capacity: the oldest id is forgotten when a new
    one would exceed it. Each id maps to a short note (e.g. the decision taken). Picklable."""

    __slots__ = ("_ids", "capacity")

    def __init__(self, capacity: int = 100_000, items: Iterable[tuple[str, str]] = ()) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self._ids: OrderedDict[str, str] = OrderedDict()
        for key, note in items:
            self.add(key, note)

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, key: str) -> str | None:
        return self._ids.get(key)

    def add(self, key: str, note: str = "") -> None:
        if key in self._ids:
            self._ids.move_to_end(key)
        self._ids[key] = note
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "items": list(self._ids.items())}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.capacity = state["capacity"]
        self._ids = OrderedDict((k, v) for k, v in state["items"])

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, BoundedIdSet)
            and self.capacity == other.capacity
            and list(self._ids.items()) == list(other._ids.items())
        )

    def __repr__(self) -> str:
        return f"BoundedIdSet(capacity={self.capacity}, size={len(self)})"


# ---------------------------------------------------------------------------------------------
# positions


@dataclass(slots=True)
class Position:
    """One instrument's position. ``avg_price`` and ``last_price`` are exact ticks; ``realised``
    and ``fees`` exact quote currency."""

    instrument: str
    price_exp: int
    size_exp: int
    quantity: int = 0
    """signed lots: > 0 long, < 0 short"""
    avg_price: Fraction = field(default_factory=Fraction)
    """average cost of the open quantity, ticks (0 when flat)"""
    realised: Fraction = field(default_factory=Fraction)
    fees: Fraction = field(default_factory=Fraction)
    last_price: Fraction = field(default_factory=Fraction)
    """last mark or fill price seen, ticks: the fallback mark when none is given"""

    @property
    def scale(self) -> Fraction:
        return _scale(self.price_exp, self.size_exp)

    def apply(self, side_sign: int, price: int, qty: int, fee: Fraction) -> Fraction:
        """Book one fill; returns the P&L it realised (quote currency, before fees)."""
        q, d = self.quantity, side_sign * qty
        realised = Fraction(0)
        if q == 0 or (q > 0) == (d > 0):
            self.avg_price = (self.avg_price * abs(q) + price * abs(d)) / (abs(q) + abs(d))
        else:
            closed = min(abs(d), abs(q))
            realised = closed * (price - self.avg_price) * (1 if q > 0 else -1) * self.scale
            after = q + d
            if after == 0:
                self.avg_price = Fraction(0)
            elif (after > 0) != (q > 0):  # through zero: the rest opens at the fill price
                self.avg_price = Fraction(price)
        self.quantity = q + d
        self.realised += realised
        self.fees += fee
        self.last_price = Fraction(price)
        return realised

    def unrealised(self, mark: Number | None = None) -> Fraction:
        """``quantity * (mark - avg_price)`` in quote currency; ``mark`` defaults to
        ``last_price``."""
        if self.quantity == 0:
            return Fraction(0)
        m = self.last_price if mark is None else to_fraction(mark)
        return self.quantity * (m - self.avg_price) * self.scale


class Portfolio:
    """Positions per instrument, P&L, fees, running peak equity and drawdown.

    Only :meth:`mark` moves the peak (call it when marks change, e.g. after each book batch;
    :meth:`udfs.execution.risk.RiskEngine.check_drawdown` does). Fills are deduplicated by
    ``report_id``
    (bounded), so a re-delivered fill is not booked twice.
    """

    def __init__(self, capital: Number = 0, seen_capacity: int = 100_000) -> None:
        self.capital = to_fraction(capital)
        self.positions: dict[str, Position] = {}
        self.peak = self.capital
        """highest equity seen by :meth:`mark` (starts at ``capital``)"""
        self.last_equity = self.capital
        self._fills_seen = BoundedIdSet(seen_capacity)

    # -- fills ---------------------------------------------------------------------------------

    def apply_fill(self, report: ExecReport) -> bool:
        """Book a ``FILL`` report. Returns False (and changes nothing) for other report kinds
        and for a ``report_id`` already booked; raises ``ValueError`` for a fill that cannot be
        booked (no side, non-positive price or quantity, exponents differing from the
        instrument's earlier fills)."""
        if report.kind is not ExecKind.FILL:
            return False
        if report.report_id and report.report_id in self._fills_seen:
            return False
        try:
            sign = OrderSide(report.side).sign
        except ValueError as exc:
            raise ValueError(
                f"fill {report.report_id}: side {report.side!r} is not BUY/SELL"
            ) from exc
        if report.fill_qty <= 0 or report.fill_price <= 0:
            raise ValueError(
                f"fill {report.report_id}: price {report.fill_price} and quantity "
                f"{report.fill_qty} must be positive"
            )
        pos = self.positions.get(report.instrument)
        if pos is None:
            pos = self.positions[report.instrument] = Position(
                report.instrument, report.price_exp, report.size_exp
            )
        elif (pos.price_exp, pos.size_exp) != (report.price_exp, report.size_exp):
            raise ValueError(
                f"fill {report.report_id}: exponents ({report.price_exp}, {report.size_exp}) "
                f"differ from {report.instrument}'s ({pos.price_exp}, {pos.size_exp})"
            )
        pos.apply(sign, report.fill_price, report.fill_qty, to_fraction(report.fee))
        if report.report_id:
            self._fills_seen.add(report.report_id)
        return True

    # -- queries -------------------------------------------------------------------------------

    def position(self, instrument: str) -> int:
        """Signed lots held (0 when never traded)."""
        pos = self.positions.get(instrument)
        return 0 if pos is None else pos.quantity

    def realised_exact(self) -> Fraction:
        return sum((p.realised for p in self.positions.values()), Fraction(0))

    def fees_exact(self) -> Fraction:
        return sum((p.fees for p in self.positions.values()), Fraction(0))

    def unrealised_exact(self, marks: Mapping[str, Number] | None = None) -> Fraction:
        """Sum of ``quantity * (mark - avg)``; an instrument missing from ``marks`` is valued at
        its ``last_price`` (the last mark or fill seen)."""
        marks = marks or {}
        return sum((p.unrealised(marks.get(i)) for i, p in self.positions.items()), Fraction(0))

    def equity_exact(self, marks: Mapping[str, Number] | None = None) -> Fraction:
        return (
            self.capital + self.realised_exact() + self.unrealised_exact(marks) - self.fees_exact()
        )

    # -- marking, peak, drawdown ---------------------------------------------------------------

    def mark(self, marks: Mapping[str, Number]) -> Fraction:
        """Value the portfolio at ``marks`` (ticks per instrument), remember them as each
        position's ``last_price``, update the peak; returns the exact equity."""
        for instrument, m in marks.items():
            pos = self.positions.get(instrument)
            if pos is not None:
                pos.last_price = to_fraction(m)
        eq = self.equity_exact()
        self.last_equity = eq
        if eq > self.peak:
            self.peak = eq
        return eq

    @property
    def drawdown_exact(self) -> Fraction:
        """``peak - equity`` at the last :meth:`mark` (>= 0), quote currency."""
        return self.peak - self.last_equity

    def __repr__(self) -> str:
        held = {i: p.quantity for i, p in self.positions.items() if p.quantity}
        return f"Portfolio(positions={held}, realised={fmt_money(self.realised_exact())})"


# ---------------------------------------------------------------------------------------------
# risk figures: historical simulation
#
# Method. The CURRENT positions are revalued over a window of historical mid-price moves (full
# historical simulation, no distribution assumed): for step t of the window the simple return of
# instrument i is r_{i,t} = mid_{i,t} / mid_{i,t-1} - 1, and the scenario P&L of the portfolio is
#     pnl_t = sum_i quantity_i * mark_i * r_{i,t} * 10**(price_exp_i + size_exp_i)
# i.e. what today's positions, valued at today's marks, would have made over one step of the
# history. The horizon is the sampling step of ``mid_history`` (sample it per second, per minute
# ... before calling); instruments' histories must be aligned on the same steps.
#
# Sign conventions. A P&L change is positive for a gain and negative for a loss. VaR and ES are
# returned as LOSS amounts: positive numbers mean money lost (VaR 120.0 = "with probability
# alpha, the one-step loss does not exceed 120"). They come out negative only when even the tail
# of the distribution is a gain.
#
# Quantile definition. With losses L = -pnl sorted ascending L_(1) <= ... <= L_(n):
#     VaR_alpha = L_(k),  k = ceil(n * alpha)
# the empirical (inverted-CDF) quantile, numpy.quantile(L, alpha, method="inverted_cdf"); no
# interpolation, so the VaR is one of the observed scenarios. alpha is read as the decimal it is
# written as (0.99 is exactly 99/100), so n * alpha is exact.
#     ES_alpha = ( sum_{j > k} L_(j) + (k - n * alpha) * L_(k) ) / (n * (1 - alpha))
# the mean of the worst n * (1 - alpha) scenarios with the boundary scenario weighted by its
# fractional share (Acerbi & Tasche 2002); ES >= VaR always, and when n * (1 - alpha) is an
# integer m it is the plain mean of the m largest losses.


def _losses(
    pnl_changes: Sequence[float] | np.ndarray, alpha: float
) -> tuple[np.ndarray, int, Fraction]:
    pnl = np.asarray(pnl_changes, dtype=float).ravel()
    if pnl.size == 0:
        raise ValueError("no P&L scenarios")
    if not np.isfinite(pnl).all():
        raise ValueError("P&L scenarios contain NaN or infinity")
    a = to_fraction(alpha)
    if not 0 < a < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    n = pnl.size
    k = math.ceil(n * a)  # exact: a is a Fraction
    return np.sort(-pnl), k, a


def historical_var(pnl_changes: Sequence[float] | np.ndarray, alpha: float = 0.99) -> float:
    """Historical Value at Risk of a vector of P&L changes (gains positive), as a positive loss:
    the ``ceil(n * alpha)``-th smallest loss. See the method notes above."""
    losses, k, _ = _losses(pnl_changes, alpha)
    return float(losses[k - 1])


def expected_shortfall(pnl_changes: Sequence[float] | np.ndarray, alpha: float = 0.99) -> float:
    """Historical expected shortfall (CVaR) at ``alpha``, as a positive loss: the mean loss of
    the worst ``n * (1 - alpha)`` scenarios (fractional boundary weight). ES >= VaR."""
    losses, k, a = _losses(pnl_changes, alpha)
    n = losses.size
    tail = float(losses[k:].sum())
    boundary = float(k - n * a) * float(losses[k - 1])
    return (tail + boundary) / float(n * (1 - a))


def position_pnl_scenarios(
    positions: Mapping[str, Position],
    marks: Mapping[str, Number],
    mid_history: Mapping[str, Sequence[float] | np.ndarray],
) -> np.ndarray:
    """One-step P&L (quote currency, gains positive) of the current positions in each historical
    scenario: ``sum_i quantity_i * mark_i * (mid_{i,t} / mid_{i,t-1} - 1) * scale_i``.

    ``positions``: e.g. ``Portfolio.positions``; flat ones are skipped. ``marks``: current mid per
    instrument in ticks (a missing mark falls back to the position's ``last_price``).
    ``mid_history``: aligned mid series per held instrument (any consistent unit: only ratios
    are used), ``T >= 2`` samples each, giving ``T - 1`` scenarios. Raises ``ValueError`` for a
    held instrument without history or mark, histories of different lengths, or a non-positive
    mid -- the figures fail closed rather than silently leaving a position out.
    """
    total: np.ndarray | None = None
    length: int | None = None
    for instrument, pos in sorted(positions.items()):
        if pos.quantity == 0:
            continue
        if instrument not in mid_history:
            raise ValueError(f"no mid history for held instrument {instrument}")
        mids = np.asarray(mid_history[instrument], dtype=float).ravel()
        if mids.size < 2:
            raise ValueError(f"{instrument}: need at least 2 mids, got {mids.size}")
        if length is not None and mids.size != length:
            raise ValueError(f"{instrument}: {mids.size} mids, other instruments have {length}")
        length = mids.size
        if not (np.isfinite(mids).all() and (mids > 0).all()):
            raise ValueError(f"{instrument}: mid history has non-positive or non-finite values")
        mark = marks.get(instrument)
        m = to_fraction(mark) if mark is not None else pos.last_price
        if m <= 0:
            raise ValueError(f"no mark for held instrument {instrument}")
        exposure = float(pos.quantity * m * pos.scale)  # signed quote-currency value
        pnl = exposure * (mids[1:] / mids[:-1] - 1.0)
        total = pnl if total is None else total + pnl
    if total is None:  # flat: every scenario is a zero P&L
        first = next(iter(mid_history.values()), ())
        return np.zeros(max(len(first) - 1, 0))
    return total
