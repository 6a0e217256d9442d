"""Per-instrument order-book features, computed event by event in event time.

Pure Python (no Flink import): :func:`on_event` runs inside the stream job's
``KeyedProcessFunction`` with a :class:`FeatureState` per instrument held in Flink keyed state
(pickled), and equally in a plain loop for tests, backfills and benchmarks.

Call order per record: ``book.apply(ev)`` (or nothing for a trade / no-op record), then
``on_event(state, book, ev, cfg)``. A :class:`FeatureRow` comes back only after the last record
of a batch (``ev.flags & F_LAST``) and only when both sides of the book are non-empty; such a
call is a *feature event*. Every other call still updates the trade-flow window.

Notation (all at the current feature event; primes denote the previous feature event):

* ``Pb, qb`` / ``Pa, qa``: best bid / ask price (int ticks) and size (int lots);
* ``B_k`` / ``A_k``: sum of the sizes of the best ``k`` bid / ask levels (fewer if the side
  has fewer levels);
* ``N = cfg.depth_levels``, ``W = cfg.window_ms * 1_000_000`` ns.

Formulas (each repeated next to its code):

* ``spread = Pa - Pb`` (ticks), ``mid = (Pb + Pa) / 2`` (ticks);
* ``microprice = (Pb * qa + Pa * qb) / (qb + qa)`` (ticks; size-weighted towards the thin side);
* ``imbalance_k = (B_k - A_k) / (B_k + A_k)`` for ``k = 1..N`` (0 if both are 0);
* ``bid_depth = B_N``, ``ask_depth = A_N``;
* ``ofi = 1{Pb >= Pb'} qb - 1{Pb <= Pb'} qb' - 1{Pa <= Pa'} qa + 1{Pa >= Pa'} qa'``
  (Cont, Kukanov & Stoikov 2014, "The price impact of order book events", eq. 10; 0 at the first
  feature event of the state);
* ``r = ln(mid / mid')``, ``rv = sqrt(sum of r^2 over the feature events in the window)``;
* ``ofi_window = sum of ofi over the feature events in the window``;
* trade flow over the trade records (``schema.TRADE_KINDS``) in the window: the record's side is
  the *resting* side, so the aggressor is the other one: resting ``A`` => buyer-initiated
  => ``+size``, resting ``B`` => seller-initiated => ``-size`` (a side ``N`` counts 0);
  ``trade_volume = sum size``, ``trade_signed_volume = sum signed size``, ``trade_count``.

Windows are in event time: the window of a feature event at ``ts`` holds exactly the values
that arrived *before or with* it whose ``ts_event`` lies in ``(ts - W, ts]``, whatever their
arrival order. Exchange time of one instrument is not monotone in real feeds (Binance's trade and
depth streams interleave: ``ts_event`` steps back by up to ~30 ms), so a first-in-first-out
eviction would let a row see values stamped after it (look-ahead) or lose values that belong to
it. Each window is therefore kept sorted by ``ts_event`` (:class:`EventWindow`; a value that
arrives out of order is inserted by bisection, in arrival order among equal times) and the sums
are moved incrementally between the previous row's index range and this row's, so a row costs
O(log n) plus the values that entered or left. A value is forgotten only once no future row can
need it: the stream job refuses records older than the instrument's newest exchange time minus
the lateness bound ``L`` (``on_event(..., lateness_ns=L)``), so values stamped at or before
``newest - L - W`` are dropped. Nothing here reads a clock: the output depends only on the
records and their order, so a replay gives the same rows.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field, fields
from typing import Any, get_type_hints

from udfs.config import FeatureConfig
from udfs.market.book import OrderBook
from udfs.schema import F_LAST, TRADE_KINDS, L2Event, Side

__all__ = [
    "FEATURE_VERSION",
    "PRICE_FIELDS",
    "SIZE_FIELDS",
    "EventWindow",
    "FeatureRow",
    "FeatureState",
    "feature_columns",
    "feature_keys",
    "on_event",
]

FEATURE_VERSION = 1
"""Schema version of the feature row (``v``); a change of its fields or their meaning bumps it."""

_NS_PER_MS = 1_000_000
_PURGE_AT_LEAST = 64
"""Forgotten values are deleted from the front of a window's lists in chunks of at least this
many (a list's front deletion is a memmove: amortised, it costs next to nothing)."""


@dataclass(slots=True)
class EventWindow:
    """Values stamped with an exchange time, sorted by it (stable: equal times keep their
    arrival order), and the index range ``[lo, hi)`` of the values in the last row's window.
    The owner keeps the sums of that range: :meth:`add` and :meth:`move` say which values
    entered or left it."""

    ts: list[int] = field(default_factory=list)
    vals: list[Any] = field(default_factory=list)
    lo: int = 0
    hi: int = 0

    def __len__(self) -> int:
        return len(self.ts)

    def add(self, t: int, value: Any) -> bool:
        """Insert ``value`` stamped ``t``; True when it lands inside the current range (the
        caller adds it to its sums: the sums are always those of ``vals[lo:hi]``)."""
        ts = self.ts
        if not ts or t >= ts[-1]:  # the common case: in time order, after everything
            ts.append(t)
            self.vals.append(value)
            return False
        p = bisect_right(ts, t)
        ts.insert(p, t)
        self.vals.insert(p, value)
        if p < self.lo:
            self.lo += 1
            self.hi += 1
            return False
        if p < self.hi:
            self.hi += 1
            return True
        return False

    def move(self, after: int, upto: int) -> tuple[list[Any], list[Any]]:
        """Make the range the values stamped in ``(after, upto]``; returns (the values that left
        it, the values that entered it)."""
        ts, vals = self.ts, self.vals
        lo, hi = self.lo, self.hi
        nlo = bisect_right(ts, after)
        nhi = bisect_right(ts, upto)
        if nlo == lo and nhi == hi:
            return _NONE, _NONE
        self.lo, self.hi = nlo, nhi
        if nlo >= hi or nhi <= lo:  # disjoint (or one side empty): swap the whole range
            return vals[lo:hi], vals[nlo:nhi]
        left = vals[lo:nlo] if nlo > lo else []
        entered = vals[nlo:lo] if nlo < lo else []
        if nhi < hi:
            left += vals[nhi:hi]
        elif nhi > hi:
            entered += vals[hi:nhi]
        return left, entered

    def forget(self, upto: int) -> list[Any]:
        """Drop the values stamped at or before ``upto`` (no future row can need them: the
        caller's lateness bound guarantees it); returns those of them that were in the range
        (the caller takes them out of its sums)."""
        ts = self.ts
        if not ts or ts[0] > upto:
            return _NONE
        k = bisect_right(ts, upto)
        lo, hi = self.lo, self.hi
        left = _NONE
        if k > lo:
            left = self.vals[lo : min(k, hi)]
        if k >= _PURGE_AT_LEAST or k == len(ts) or left:
            del ts[:k]
            del self.vals[:k]
            self.lo = max(lo - k, 0)
            self.hi = max(hi - k, 0)
        return left


_NONE: list[Any] = []
"""Shared empty result of :meth:`EventWindow.move` (never mutated)."""


@dataclass(slots=True)
class FeatureState:
    """Everything the features of one instrument carry from one event to the next.

    Small and picklable (ints, floats and three :class:`EventWindow` of lists), so it can live
    in Flink keyed state. Windows hold only non-zero contributions (a zero changes no sum).
    """

    prev_bid_px: int = 0
    """Best bid price ``Pb'`` at the previous feature event (0: none yet)."""
    prev_bid_sz: int = 0
    """Best bid size ``qb'`` at the previous feature event (0: none yet)."""
    prev_ask_px: int = 0
    """Best ask price ``Pa'`` at the previous feature event (0: none yet)."""
    prev_ask_sz: int = 0
    """Best ask size ``qa'`` at the previous feature event (0: none yet).
    The previous mid is ``(prev_bid_px + prev_ask_px) / 2``, kept exact as these two ints."""
    ofi_win: EventWindow = field(default_factory=EventWindow)
    """ofi of the feature events (ofi != 0), stamped with their ``ts_event``."""
    ofi_sum: int = 0
    """Sum of ``ofi_win``'s range (exact: OFI is an integer number of lots)."""
    rv_win: EventWindow = field(default_factory=EventWindow)
    """r^2 of the feature events (r != 0), stamped with their ``ts_event``."""
    rv_sum: float = 0.0
    """Running sum of ``rv_win``'s range (Neumaier-compensated, with ``rv_comp``)."""
    rv_comp: float = 0.0
    """Compensation term of ``rv_sum``: the sum is ``rv_sum + rv_comp``."""
    trade_win: EventWindow = field(default_factory=EventWindow)
    """(size, signed size) of the trade records, stamped with their ``ts_event``."""
    trade_volume: int = 0
    """Sum of the sizes in ``trade_win``'s range."""
    trade_signed: int = 0
    """Sum of the signed sizes in ``trade_win``'s range (buyer-initiated positive)."""
    newest_ts: int = 0
    """Newest ``ts_event`` seen: values at or before ``newest_ts - lateness - W`` are dropped."""
    events: int = 0
    """Records seen by :func:`on_event`."""
    trades: int = 0
    """Trade records seen."""
    rows: int = 0
    """Feature rows emitted."""


@dataclass(slots=True)
class FeatureRow:
    """Features after one consistent book state (one per feature event). Prices are int ticks
    of ``10**price_exp``, sizes int lots of ``10**size_exp``; see the module docstring for
    every formula and :meth:`to_dict` for the serialised form."""

    instrument: str
    ts_event: int
    ts_recv: int
    seq: int
    price_exp: int
    size_exp: int
    best_bid: int
    best_ask: int
    bid_size: int
    ask_size: int
    spread: int
    mid: float
    microprice: float
    imbalance: tuple[float, ...]
    """``imbalance[k-1]`` is imbalance_k, k = 1..N."""
    bid_depth: int
    ask_depth: int
    ofi: float
    ofi_window: float
    rv: float
    trade_volume: int
    trade_signed_volume: int
    trade_count: int

    ts_proc: int = 0
    """When the job emitted the row (its wall clock, ns; set by ``udfs.pipeline`` after the
    trading stage): for latency measurement, not deterministic. 0 until then."""
    ts_avail: int = 0
    """When the live path could first have used the row, in event time (ns): ``ts_event`` +
    the modelled feed and processing latency (``udfs.latency.AvailabilityModel``, set by
    ``udfs.pipeline``). A training set "as known at" joins on this; a replay gives the same
    value. 0 until then (and absent from rows written before it existed)."""
    v: int = FEATURE_VERSION
    """schema version of the feature row"""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable values (str, int, float) in the order of
        :func:`feature_keys` ``(len(self.imbalance))``: the fields in declaration order with
        ``imbalance`` flattened to ``imbalance_1..imbalance_N``, then real units:
        ``<f>_px = f * 10**price_exp`` for ``f`` in :data:`PRICE_FIELDS` and
        ``<f>_qty = f * 10**size_exp`` for ``f`` in :data:`SIZE_FIELDS`."""
        # value * 10**exp as a float; a negative exponent divides by the exact integer
        # 10**-exp, so e.g. 5853300 ticks of 1e-4 give the float nearest 585.33. Per feature
        # row: the keys are made once (_imbalance_keys, _PX_KEYS, _QTY_KEYS) and each power
        # of ten once per row
        d: dict[str, Any] = {name: getattr(self, name) for name in _BEFORE_IMBALANCE}
        imbalance = self.imbalance
        d.update(zip(_imbalance_keys(len(imbalance)), imbalance, strict=True))
        for name in _AFTER_IMBALANCE:
            d[name] = getattr(self, name)
        for keys, exp in ((_PX_KEYS, self.price_exp), (_QTY_KEYS, self.size_exp)):
            if exp >= 0:
                scale = 10**exp
                for name, key in keys:
                    d[key] = float(getattr(self, name) * scale)
            else:
                divisor = 10**-exp
                for name, key in keys:
                    d[key] = getattr(self, name) / divisor
        return d


PRICE_FIELDS = ("best_bid", "best_ask", "spread", "mid", "microprice")
"""Fields in price ticks, also serialised in real units as ``<field>_px``."""
SIZE_FIELDS = (
    "bid_size",
    "ask_size",
    "bid_depth",
    "ask_depth",
    "trade_volume",
    "trade_signed_volume",
)
"""Fields in size lots, also serialised in real units as ``<field>_qty``."""

_FIELD_NAMES = tuple(f.name for f in fields(FeatureRow))
_PX_KEYS = tuple((name, f"{name}_px") for name in PRICE_FIELDS)
_QTY_KEYS = tuple((name, f"{name}_qty") for name in SIZE_FIELDS)
_IMBALANCE_KEYS: dict[int, tuple[str, ...]] = {}


def _imbalance_keys(n: int) -> tuple[str, ...]:
    """``imbalance_1..imbalance_n``, made once per depth."""
    keys = _IMBALANCE_KEYS.get(n)
    if keys is None:
        keys = _IMBALANCE_KEYS[n] = tuple(f"imbalance_{k}" for k in range(1, n + 1))
    return keys


_BEFORE_IMBALANCE = _FIELD_NAMES[: _FIELD_NAMES.index("imbalance")]
_AFTER_IMBALANCE = _FIELD_NAMES[_FIELD_NAMES.index("imbalance") + 1 :]


def feature_columns(depth_levels: int) -> tuple[tuple[str, type], ...]:
    """(key, Python type) of every key of :meth:`FeatureRow.to_dict`, in order, for
    ``N = depth_levels``: what the history table and the feature store's schema follow."""
    hints = get_type_hints(FeatureRow)
    out: list[tuple[str, type]] = []
    for name in _FIELD_NAMES:
        if name == "imbalance":
            out += [(f"imbalance_{k}", float) for k in range(1, depth_levels + 1)]
        else:
            out.append((name, hints[name]))
    out += [(f"{name}_px", float) for name in PRICE_FIELDS]
    out += [(f"{name}_qty", float) for name in SIZE_FIELDS]
    return tuple(out)


def feature_keys(depth_levels: int) -> tuple[str, ...]:
    """The keys of :meth:`FeatureRow.to_dict`, in order, for ``N = depth_levels``."""
    return tuple(name for name, _ in feature_columns(depth_levels))


def on_event(  # noqa: C901 - the per-event hot path, one pass over the book and windows
    state: FeatureState,
    book: OrderBook,
    ev: L2Event,
    cfg: FeatureConfig,
    lateness_ns: int = 0,
    emit: bool = True,
) -> FeatureRow | None:
    """Update ``state`` with ``ev`` (already applied to ``book``) and return the features when
    ``ev`` ends a batch, both book sides are non-empty and ``emit`` (False: the book is not to be
    trusted -- out of sync -- so the record only feeds the trade window), else None.
    ``lateness_ns``: no later call has a ``ts_event`` older than the newest one seen minus this
    (the stream job's lateness bound); values older than that minus the window are forgotten."""
    ts = ev.ts_event
    w = cfg.window_ms * _NS_PER_MS
    cutoff = ts - w  # this row's window is (cutoff, ts]
    state.events += 1
    if ts > state.newest_ts:
        state.newest_ts = ts

    # --- trade flow: resting side A => buyer-initiated => +size; resting B => -size ---
    trade_win = state.trade_win
    if ev.kind in TRADE_KINDS:
        size = ev.size
        side = ev.side
        signed = size if side is Side.ASK else -size if side is Side.BID else 0
        if trade_win.add(ts, (size, signed)):
            state.trade_volume += size
            state.trade_signed += signed
        state.trades += 1
        if not state.trades % _PURGE_AT_LEAST:
            # bounded memory even when no row comes (one side of the book empty, out of sync)
            for size, signed in trade_win.forget(state.newest_ts - lateness_ns - w):
                state.trade_volume -= size
                state.trade_signed -= signed

    if not emit:
        # the book is not to be trusted: no row, and the next row has no previous feature
        # event to difference against (OFI and the return across the gap are unknown)
        state.prev_bid_px = state.prev_bid_sz = state.prev_ask_px = state.prev_ask_sz = 0
        return None
    if not ev.flags & F_LAST:
        return None
    bids, asks = book.bids, book.asks
    bpx, apx = bids.prices, asks.prices  # ascending: best bid last, best ask first
    if not bpx or not apx:
        return None
    bsz, asz = bids.sizes, asks.sizes
    pb = bpx[-1]
    pa = apx[0]
    qb = bsz[pb]
    qa = asz[pa]

    # --- depth imbalance: imbalance_k = (B_k - A_k) / (B_k + A_k), 0 if both 0;
    #     bid_depth = B_N, ask_depth = A_N (a side with fewer than k levels sums what it has)
    n = cfg.depth_levels
    nb, na = len(bpx), len(apx)
    cb = ca = 0
    imbalance = []
    for k in range(n):
        if k < nb:
            cb += bsz[bpx[-1 - k]]
        if k < na:
            ca += asz[apx[k]]
        tot = cb + ca
        imbalance.append((cb - ca) / tot if tot else 0.0)

    # --- OFI (Cont-Kukanov-Stoikov 2014), primes = previous feature event:
    #     e = 1{Pb >= Pb'} qb - 1{Pb <= Pb'} qb' - 1{Pa <= Pa'} qa + 1{Pa >= Pa'} qa'
    pb0, pa0 = state.prev_bid_px, state.prev_ask_px
    ofi = 0
    mid2 = pb + pa  # 2 * mid, exact
    if state.prev_bid_sz:  # there is a previous feature event
        qb0, qa0 = state.prev_bid_sz, state.prev_ask_sz
        if pb >= pb0:
            ofi += qb
        if pb <= pb0:
            ofi -= qb0
        if pa <= pa0:
            ofi -= qa
        if pa >= pa0:
            ofi += qa0
        # --- log return of mid: r = ln(mid / mid') = log1p((mid - mid') / mid'), evaluated
        #     on 2*mid (exact ints) so the difference is exact and the log well conditioned
        mid2_0 = pb0 + pa0
        if mid2 != mid2_0:
            r = math.log1p((mid2 - mid2_0) / mid2_0)
            if state.rv_win.add(ts, r * r):
                _rv_add(state, r * r)
        if ofi and state.ofi_win.add(ts, ofi):
            state.ofi_sum += ofi
    state.prev_bid_px, state.prev_bid_sz, state.prev_ask_px, state.prev_ask_sz = pb, qb, pa, qa

    # --- event-time windows: exactly the values that arrived so far stamped in (cutoff, ts]
    ofi_win = state.ofi_win
    left, entered = ofi_win.move(cutoff, ts)
    if left or entered:
        state.ofi_sum += sum(entered) - sum(left)
    rv_win = state.rv_win
    left, entered = rv_win.move(cutoff, ts)
    if left or entered:
        if rv_win.lo == rv_win.hi:  # no rounding residue once the window is empty
            state.rv_sum = state.rv_comp = 0.0
        else:
            for x in left:
                _rv_add(state, -x)
            for x in entered:
                _rv_add(state, x)
    left, entered = trade_win.move(cutoff, ts)
    for size, signed in left:
        state.trade_volume -= size
        state.trade_signed -= signed
    for size, signed in entered:
        state.trade_volume += size
        state.trade_signed += signed
    # values no later row can need: stamped at or before newest - lateness - W
    # (within the lateness bound that is at or before cutoff: out of every range already)
    forget = state.newest_ts - lateness_ns - w
    for x in ofi_win.forget(forget):
        state.ofi_sum -= x
    for x in rv_win.forget(forget):
        _rv_add(state, -x)
    for size, signed in trade_win.forget(forget):
        state.trade_volume -= size
        state.trade_signed -= signed
    # rv = sqrt(sum over the window of r^2); max() guards a -0.0/-tiny rounding residue
    rv = math.sqrt(max(state.rv_sum + state.rv_comp, 0.0))

    state.rows += 1
    return FeatureRow(
        ev.instrument,
        ts,
        ev.ts_recv,
        ev.seq,
        ev.price_exp,
        ev.size_exp,
        pb,
        pa,
        qb,
        qa,
        pa - pb,  # spread = Pa - Pb
        mid2 / 2,  # mid = (Pb + Pa) / 2
        (pb * qa + pa * qb) / (qb + qa),  # microprice = (Pb qa + Pa qb) / (qb + qa)
        tuple(imbalance),
        cb,
        ca,  # bid_depth = B_N, ask_depth = A_N
        float(ofi),
        float(state.ofi_sum),
        rv,
        state.trade_volume,
        state.trade_signed,
        trade_win.hi - trade_win.lo,
    )


def _rv_add(state: FeatureState, x: float) -> None:
    """Neumaier-compensated ``rv_sum += x`` (keeps the windowed sum accurate to a few ulps
    however many values have entered and left it)."""
    s = state.rv_sum
    t = s + x
    if abs(s) >= abs(x):
        state.rv_comp += (s - t) + x
    else:
        state.rv_comp += (x - t) + s
    state.rv_sum = t
