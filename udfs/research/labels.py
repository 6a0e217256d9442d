"""Triple-barrier labels and meta-labels in event time (López de Prado, *Advances in Financial
Machine Learning*, 2018, ch. 3).

Inputs are one instrument's price path in event order: ``ts_ns`` (int64 exchange times, ns,
non-decreasing) and ``price`` (int64 exact ticks, e.g. ``best_bid + best_ask``, the mid doubled so
it stays an integer). A *sample* enters at index ``i`` (time ``t0 = ts_ns[i]``, price ``p0``):

* profit-take / stop-loss barriers at ``w_pt = ceil(p0 * profit_take * sigma_i)`` and
  ``w_sl = ceil(p0 * stop_loss * sigma_i)`` ticks from ``p0`` (at least ``min_width_ticks``),
  ``sigma_i`` the EWM volatility of returns known at ``i`` (:func:`ewm_volatility`); a factor of
  0 switches that barrier off. The float width becomes a whole number of ticks once, so every
  touch is an exact integer comparison: ``p - p0 >= w`` for an integer ``p`` is ``p - p0 >=
  ceil(w)``;
* for a side ``s`` (+1 long, -1 short; +1 without a primary signal) the profit-take is touched at
  the first later event with ``s * (p - p0) >= w_pt``, the stop-loss at the first with
  ``s * (p0 - p) >= w_sl``;
* the vertical barrier at ``t0 + horizon_ns``: events with ``ts <= t0 + horizon_ns`` count
  (events after index ``i`` at the same nanosecond come after the entry in the feed, so they
  count too). Touched by neither horizontal barrier, the sample ends there, its exit price
  the last one at or before the vertical barrier.

``end_ns`` (when the label is known: the touch time, or ``t0 + horizon_ns``) is the sample's
span end for purged validation (:mod:`udfs.research.validation`). A sample whose vertical barrier
lies after the last event and that touched nothing before is *unresolved*: left out (the data
cannot say what happened) and counted in :attr:`TripleBarrier.unresolved`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "PROFIT_TAKE",
    "STOP_LOSS",
    "VERTICAL",
    "TripleBarrier",
    "barrier_width_ticks",
    "ewm_volatility",
    "meta_labels",
    "triple_barrier",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

PROFIT_TAKE = 1
STOP_LOSS = -1
VERTICAL = 0
"""Which barrier ended a sample (:attr:`TripleBarrier.touch`)."""

NO_BARRIER = np.iinfo(np.int64).max
"""Width of a switched-off barrier: never reached."""

_SNAP_REL = 1e-9
"""A width within this relative distance of a whole number of ticks is that number: 0.3 / 0.1
tick widths are 2.9999999999999996 in floats, and rounding up to 3 is the intent, not 4 from a
width of 3.0000000000000004."""


def ewm_volatility(price: IntArray, span: int) -> FloatArray:
    """EWM standard deviation of the simple returns ``r_j = price[j] / price[j-1] - 1``, at each
    index the value known there (returns up to and including ``j``; no look-ahead).

    Weights ``(1 - a)**k`` for the return ``k`` steps back, ``a = 2 / (span + 1)``, normalised
    over the returns seen so far, with the bias correction of a weighted variance
    (``(sum w)**2 / ((sum w)**2 - sum w**2)``): pandas' ``ewm(span).std()`` (adjust=True,
    bias=False). NaN where fewer than two returns are known (indices 0 and 1).
    """
    if span < 1:
        raise ValueError(f"span must be >= 1, got {span}")
    p = np.asarray(price, dtype=np.int64)
    if p.ndim != 1:
        raise ValueError("price must be one-dimensional")
    if p.size and p.min() <= 0:
        raise ValueError("price must be positive ticks")
    out = np.full(p.size, np.nan)
    if p.size < 2:
        return out
    # exact integer difference first, one rounding in the division
    returns = (p[1:] - p[:-1]) / p[:-1]
    decay = 1.0 - 2.0 / (span + 1)
    sum_w = 0.0  # sum of the weights
    sum_w2 = 0.0  # sum of the squared weights
    mean = 0.0  # weighted mean
    sq_dev = 0.0  # weighted sum of squared deviations from the mean
    for j, r in enumerate(returns.tolist()):
        # every old weight decays one step (the mean stays), the new return weighs 1;
        # West's (1979) incremental weighted update keeps it stable for tiny returns
        sum_w = sum_w * decay + 1.0
        sum_w2 = sum_w2 * decay * decay + 1.0
        sq_dev *= decay
        delta = r - mean
        mean += delta / sum_w
        sq_dev += delta * (r - mean)
        if j >= 1:
            # unbiased weighted variance: sq_dev / sum_w * sum_w**2 / (sum_w**2 - sum_w2)
            out[j + 1] = math.sqrt(max(sq_dev * sum_w / (sum_w * sum_w - sum_w2), 0.0))
    return out


def barrier_width_ticks(price: int, factor: float, sigma: float, min_width_ticks: int = 1) -> int:
    """``ceil(price * factor * sigma)`` ticks (snapped to a whole number within a relative
    1e-9), at least ``min_width_ticks``; :data:`NO_BARRIER` when ``factor`` is 0 (switched off).
    """
    if factor == 0:
        return int(NO_BARRIER)
    width = price * factor * sigma
    if not math.isfinite(width) or width < 0:
        raise ValueError(
            f"barrier width {width!r} from price {price}, factor {factor}, sigma {sigma}"
        )
    nearest = round(width)
    ticks = nearest if abs(width - nearest) <= _SNAP_REL * max(1.0, width) else math.ceil(width)
    return max(int(ticks), min_width_ticks)


@dataclass(frozen=True)
class TripleBarrier:
    """One row per resolved sample, in the order of ``events``."""

    event: IntArray
    """index of the entry in the price path"""
    side: IntArray
    """+1 long, -1 short (the primary signal's side; +1 without one)"""
    start_ns: IntArray
    """entry time ``t0``"""
    end_ns: IntArray
    """time the label is known: the touch, or the vertical barrier ``t0 + horizon_ns``"""
    exit_index: IntArray
    """index of the touching event, or of the last event at or before the vertical barrier"""
    entry_price: IntArray
    exit_price: IntArray
    profit_take_price: IntArray
    """``p0 + side * w_pt`` ticks (meaningless where the barrier is off: ``w_pt`` = NO_BARRIER)"""
    stop_loss_price: IntArray
    """``p0 - side * w_sl`` ticks"""
    profit_take_width: IntArray
    stop_loss_width: IntArray
    touch: npt.NDArray[np.int8]
    """:data:`PROFIT_TAKE`, :data:`STOP_LOSS` or :data:`VERTICAL`"""
    unresolved: int
    """samples left out: vertical barrier after the last event and no touch before"""
    skipped_no_volatility: int
    """samples left out: no volatility known at entry (NaN sigma)"""

    @property
    def ret(self) -> FloatArray:
        """Return of acting on ``side``: ``side * (exit - entry) / entry``."""
        return self.side * (self.exit_price - self.entry_price) / self.entry_price

    @property
    def label(self) -> npt.NDArray[np.int8]:
        """Direction of the price move: +1 up, -1 down; at the vertical barrier the sign of the
        exit minus entry price (0 if equal). Independent of ``side``."""
        return np.sign(self.exit_price - self.entry_price).astype(np.int8)

    def __len__(self) -> int:
        return int(self.event.size)


def triple_barrier(
    ts_ns: IntArray,
    price: IntArray,
    events: IntArray,
    *,
    horizon_ns: int,
    profit_take: float,
    stop_loss: float,
    volatility: FloatArray,
    side: IntArray | None = None,
    min_width_ticks: int = 1,
) -> TripleBarrier:
    """Triple-barrier outcome of each sample entering at ``events`` (indices into ``ts_ns`` /
    ``price``, increasing). ``volatility`` is per price index (e.g. :func:`ewm_volatility`);
    ``side`` per sample (+1/-1), None for +1 everywhere. See the module doc for the barriers."""
    ts = np.asarray(ts_ns, dtype=np.int64)
    px = np.asarray(price, dtype=np.int64)
    ev = np.asarray(events, dtype=np.int64)
    vol = np.asarray(volatility, dtype=np.float64)
    if ts.shape != px.shape or ts.shape != vol.shape or ts.ndim != 1:
        raise ValueError("ts_ns, price and volatility must be 1-d arrays of one length")
    if ts.size and np.any(np.diff(ts) < 0):
        raise ValueError("ts_ns must be non-decreasing (event order)")
    if ev.size and (ev.min() < 0 or ev.max() >= ts.size or np.any(np.diff(ev) <= 0)):
        raise ValueError("events must be increasing indices into the price path")
    if horizon_ns < 0 or profit_take < 0 or stop_loss < 0 or min_width_ticks < 1:
        raise ValueError("horizon_ns, profit_take, stop_loss must be >= 0, min_width_ticks >= 1")
    sides = np.ones(ev.size, dtype=np.int64) if side is None else np.asarray(side, np.int64)
    if sides.shape != ev.shape or not np.all(np.abs(sides) == 1):
        raise ValueError("side must hold +1 or -1 for each event")

    last_ts = int(ts[-1]) if ts.size else 0
    # the last event index at or before each sample's vertical barrier
    vertical_idx = np.searchsorted(ts, ts[ev] + horizon_ns, side="right") - 1
    rows: list[tuple[int, ...]] = []
    unresolved = skipped = 0
    for k, i in enumerate(ev.tolist()):
        sigma = float(vol[i])
        if not math.isfinite(sigma):
            skipped += 1
            continue
        p0 = int(px[i])
        s = int(sides[k])
        w_pt = barrier_width_ticks(p0, profit_take, sigma, min_width_ticks)
        w_sl = barrier_width_ticks(p0, stop_loss, sigma, min_width_ticks)
        t0 = int(ts[i])
        j_end = int(vertical_idx[k])
        # signed move in the side's favour over the window after the entry, exact ints
        move = s * (px[i + 1 : j_end + 1] - p0)
        hit_pt = np.flatnonzero(move >= w_pt) if w_pt != NO_BARRIER else np.empty(0, np.int64)
        hit_sl = np.flatnonzero(-move >= w_sl) if w_sl != NO_BARRIER else np.empty(0, np.int64)
        first_pt = int(hit_pt[0]) if hit_pt.size else -1
        first_sl = int(hit_sl[0]) if hit_sl.size else -1
        if first_pt >= 0 and (first_sl < 0 or first_pt < first_sl):
            touch, j = PROFIT_TAKE, i + 1 + first_pt
            end = int(ts[j])
        elif first_sl >= 0:
            touch, j = STOP_LOSS, i + 1 + first_sl
            end = int(ts[j])
        elif t0 + horizon_ns > last_ts:
            unresolved += 1
            continue
        else:
            touch, j = VERTICAL, j_end
            end = t0 + horizon_ns
        rows.append((i, s, t0, end, j, p0, int(px[j]), w_pt, w_sl, touch))

    cols = np.array(rows, dtype=np.int64).reshape(-1, 10)
    entry, s_col, w_pt_col, w_sl_col = cols[:, 5], cols[:, 1], cols[:, 7], cols[:, 8]
    return TripleBarrier(
        event=cols[:, 0],
        side=s_col,
        start_ns=cols[:, 2],
        end_ns=cols[:, 3],
        exit_index=cols[:, 4],
        entry_price=entry,
        exit_price=cols[:, 6],
        profit_take_price=entry + s_col * np.where(w_pt_col == NO_BARRIER, 0, w_pt_col),
        stop_loss_price=entry - s_col * np.where(w_sl_col == NO_BARRIER, 0, w_sl_col),
        profit_take_width=w_pt_col,
        stop_loss_width=w_sl_col,
        touch=cols[:, 9].astype(np.int8),
        unresolved=unresolved,
        skipped_no_volatility=skipped,
    )


def meta_labels(
    ts_ns: IntArray,
    price: IntArray,
    events: IntArray,
    side: IntArray,
    *,
    horizon_ns: int,
    profit_take: float,
    stop_loss: float,
    volatility: FloatArray,
    min_width_ticks: int = 1,
) -> tuple[TripleBarrier, npt.NDArray[np.int8]]:
    """Meta-labels of a primary signal: for each event where the primary model takes ``side``
    (+1/-1), 1 if acting on that side touches the profit-take barrier first, else 0 (stop-loss
    first, or the vertical barrier). The secondary model learns *whether* to act on the primary
    signal (AFML §3.6). Returns the barrier outcomes and the labels, row for row.

    AFML's own meta-label also counts a vertical-barrier exit with a positive side-adjusted
    return as 1; here only a profit-take touch does (the issue's definition): a trade that
    merely drifted into profit by the horizon did not reach its target."""
    outcome = triple_barrier(
        ts_ns,
        price,
        events,
        horizon_ns=horizon_ns,
        profit_take=profit_take,
        stop_loss=stop_loss,
        volatility=volatility,
        side=side,
        min_width_ticks=min_width_ticks,
    )
    return outcome, (outcome.touch == PROFIT_TAKE).astype(np.int8)
