"""Orders from target positions, deterministic order ids, and TWAP / POV child-order slicers.

Pure Python (no Flink import, no clock, no randomness): every output depends only on the
arguments and the order of the events fed in, so a replay or a restart from a checkpoint
re-creates the same orders with the same ids and downstream dedupe works. Prices are integer
ticks of ``10**price_exp`` and quantities integer lots of ``10**size_exp`` (those of the
instrument's L2 events); prices are compared as ints only.

* :func:`order_id` -- ``sha256`` of a canonical JSON list of the inputs, first 20 hex chars.
* :func:`orders_for_target` -- the one order that moves a position to a target.
* :func:`twap_children` -- a parent split into ``n`` equal slices evenly spaced in event time.
* :class:`PovSlicer` -- children released as a share of the market volume traded since start.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
from collections.abc import Mapping
from dataclasses import replace
from fractions import Fraction
from typing import Any

from udfs.schema import TRADE_KINDS, L2Event, Order, OrderAction, OrderSide, OrderType

__all__ = [
    "ORDER_ID_HEX_CHARS",
    "PovSlicer",
    "order_id",
    "orders_for_target",
    "twap_children",
]

ORDER_ID_HEX_CHARS = 20
"""80 bits: the chance that any two of a billion ids collide is about 4e-7."""
_ID_SCHEME = "bookstream.order.v1"
"""First element of the hashed list: a new id scheme changes it, so old and new never clash."""


def order_id(
    strategy: str,
    instrument: str,
    source_seq: int,
    ts_event: int,
    slice_index: int = 0,
    parent_id: str = "",
) -> str:
    """Deterministic order id: the first 20 hex chars of ``sha256`` of the canonical string
    ``["bookstream.order.v1",strategy,instrument,source_seq,ts_event,slice_index,parent_id]``
    (compact JSON, ASCII-escaped, so no separator inside a name can make two inputs collide).

    The same inputs give the same id in every process and run (no ``hash()``, no clock); a
    change of any input gives a different id. Integer inputs must be ints (a float time would
    be a precision bug upstream): anything else raises ``TypeError``.
    """
    if (
        not isinstance(strategy, str)
        or not isinstance(instrument, str)
        or not isinstance(parent_id, str)
    ):
        raise TypeError("strategy, instrument and parent_id must be str")
    canonical = json.dumps(
        [
            _ID_SCHEME,
            strategy,
            instrument,
            operator.index(source_seq),
            operator.index(ts_event),
            operator.index(slice_index),
            parent_id,
        ],
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:ORDER_ID_HEX_CHARS]


def orders_for_target(
    current_position_lots: int,
    target_lots: int,
    row: Mapping[str, Any],
    strategy: str,
    *,
    order_type: OrderType = OrderType.LIMIT,
    tif: str = "GTC",
) -> list[Order]:
    """The order moving ``current_position_lots`` to ``target_lots``; ``[]`` when equal.

    ``row`` is the feature row the decision was made on (a
    :meth:`~udfs.market.features.FeatureRow.to_dict`; read: ``instrument``, ``ts_event``, ``seq``,
    ``price_exp``, ``size_exp`` and, for a limit, ``best_bid``/``best_ask``).

    * ``delta = target - current`` lots; side BUY if ``delta > 0`` else SELL;
      ``quantity = |delta|`` (one order, also when the position flips sign);
    * LIMIT (default) at the touch on the passive side: a BUY at ``best_bid``, a SELL at
      ``best_ask`` (joins the queue, does not cross the spread); MARKET: price 0;
    * ``reduce_only`` when the order only reduces ``|position|``: ``current != 0`` and the
      target lies between 0 (inclusive) and the current position (same sign, smaller size);
    * id: ``order_id(strategy, instrument, seq, ts_event)`` -- one decision per strategy,
      instrument and event.
    """
    current = operator.index(current_position_lots)
    target = operator.index(target_lots)
    delta = target - current
    if delta == 0:
        return []
    side = OrderSide.BUY if delta > 0 else OrderSide.SELL
    order_type = OrderType(order_type)
    if order_type is OrderType.LIMIT:
        key = "best_bid" if side is OrderSide.BUY else "best_ask"
        price = operator.index(row[key])
        if price <= 0:
            raise ValueError(f"no {key} to place a {side.value} limit at: {price}")
    else:
        price = 0
    # reduce-only: |target| < |current| on the same side of zero (or flat)
    reduce_only = (
        current != 0
        and (target == 0 or (target > 0) == (current > 0))
        and abs(target) < abs(current)
    )
    instrument = str(row["instrument"])
    ts_event = operator.index(row["ts_event"])
    seq = operator.index(row["seq"])
    return [
        Order(
            order_id=order_id(strategy, instrument, seq, ts_event),
            instrument=instrument,
            strategy=strategy,
            action=OrderAction.NEW,
            side=side,
            order_type=order_type,
            price=price,
            quantity=abs(delta),
            price_exp=int(row.get("price_exp", 0)),
            size_exp=int(row.get("size_exp", 0)),
            ts_event=ts_event,
            source_seq=seq,
            reduce_only=reduce_only,
            tif=tif,
        )
    ]


def _child(parent: Order, index: int, quantity: int, ts_event: int, source_seq: int) -> Order:
    """A slice of ``parent``: same instrument, side, type, price, flags; own id, time and qty."""
    return replace(
        parent,
        order_id=order_id(
            parent.strategy, parent.instrument, source_seq, ts_event, index, parent.order_id
        ),
        action=OrderAction.NEW,
        quantity=quantity,
        ts_event=ts_event,
        source_seq=source_seq,
        parent_id=parent.order_id,
    )


def twap_children(parent: Order, start_ts: int, end_ts: int, n_slices: int) -> list[Order]:
    """Split ``parent`` into equal slices released evenly over ``[start_ts, end_ts)`` (event
    time, ns).

    With ``Q = parent.quantity`` lots and ``n = min(n_slices, Q)`` slices (never a zero-lot
    child: fewer lots than slices gives one lot per slice, spread over the whole interval):

    * ``q_i = Q // n + (1 if i < Q % n else 0)`` -- the remainder goes to the first slices,
      so ``sum q_i = Q`` exactly;
    * ``ts_i = start_ts + (i * (end_ts - start_ts)) // n`` -- slice ``i`` opens its ``1/n`` of
      the interval (integer ns; consecutive gaps differ by at most 1 ns);
    * ``order_id = order_id(strategy, instrument, parent.source_seq, ts_i, i, parent.order_id)``,
      ``parent_id = parent.order_id``, ``source_seq = parent.source_seq``; side, type, price,
      ``reduce_only`` and ``tif`` are the parent's.
    """
    start, end, n = operator.index(start_ts), operator.index(end_ts), operator.index(n_slices)
    if n < 1:
        raise ValueError(f"n_slices must be >= 1, got {n}")
    if end < start:
        raise ValueError(f"end_ts {end} is before start_ts {start}")
    total = parent.quantity
    if total <= 0:
        return []
    n = min(n, total)
    base, rem = divmod(total, n)
    span = end - start
    return [
        _child(parent, i, base + (1 if i < rem else 0), start + (i * span) // n, parent.source_seq)
        for i in range(n)
    ]


class PovSlicer:
    """Percentage-of-volume execution of ``parent``: feed it the market trades of the
    instrument (``schema.TRADE_KINDS`` events) and it releases children so that at every point

        released <= min(Q, floor(rho * V))

    with ``Q = parent.quantity`` lots, ``rho = participation`` and ``V`` the market volume (lots)
    of the trades fed since start. ``rho`` is taken as the exact decimal it is written as
    (``0.3`` is 3/10, not the binary float just below it), so the bound is evaluated in exact
    rational arithmetic. After each trade the slicer releases ``floor(rho * V) - released``
    lots (capped by the remainder of the parent) as one child, provided that is at least
    ``min_slice_lots`` -- or it is the whole remainder, so a parent always completes once
    ``rho * V >= Q``.

    Only trades of ``parent.instrument`` whose ``ts_event >= parent.ts_event`` count (a trade
    before the decision is not volume "since start"); other events are ignored. Children are
    ``parent``'s side, type and price, ``ts_event``/``source_seq`` of the triggering trade and
    id ``order_id(strategy, instrument, trade.seq, trade.ts_event, k, parent.order_id)`` for the
    ``k``-th child (k = 0, 1, ...). The state is a handful of ints, so the object pickles (keyed
    state). Whether ``V`` includes the strategy's own fills is the feeder's choice: the trade
    stream of the venue does.
    """

    __slots__ = (
        "_den",
        "_num",
        "market_volume",
        "min_slice_lots",
        "n_children",
        "parent",
        "participation",
        "released",
    )

    def __init__(self, parent: Order, participation: float, min_slice_lots: int = 1) -> None:
        if not (
            isinstance(participation, int | float)
            and math.isfinite(participation)
            and 0 < participation <= 1
        ):
            raise ValueError(f"participation must be in (0, 1], got {participation!r}")
        min_slice = operator.index(min_slice_lots)
        if min_slice < 1:
            raise ValueError(f"min_slice_lots must be >= 1, got {min_slice}")
        if parent.quantity < 0:
            raise ValueError(f"parent quantity must be >= 0, got {parent.quantity}")
        rho = Fraction(repr(float(participation)))  # the decimal as written, exactly
        self.parent = parent
        self.participation = float(participation)
        self.min_slice_lots = min_slice
        self._num, self._den = rho.numerator, rho.denominator
        self.market_volume = 0
        """V: lots traded in the market since start (trades counted by :meth:`on_trade`)."""
        self.released = 0
        """Lots released in children so far."""
        self.n_children = 0

    @property
    def remaining(self) -> int:
        """Lots of the parent not yet released."""
        return self.parent.quantity - self.released

    @property
    def done(self) -> bool:
        """True once the whole parent quantity has been released."""
        return self.released >= self.parent.quantity

    def allowed(self) -> int:
        """``min(Q, floor(rho * V))``: the most the children may add up to now."""
        return min(self.parent.quantity, (self._num * self.market_volume) // self._den)

    def on_trade(self, ev: L2Event) -> list[Order]:
        """Count ``ev`` (if it is a trade of the parent's instrument, not before the parent) and
        return the child it releases: ``[]`` or one order."""
        parent = self.parent
        if (
            ev.kind not in TRADE_KINDS
            or ev.instrument != parent.instrument
            or ev.ts_event < parent.ts_event
            or self.done
        ):
            return []
        if ev.size_exp != parent.size_exp:
            raise ValueError(
                f"trade lots of 10**{ev.size_exp} vs parent lots of "
                f"10**{parent.size_exp}: not comparable"
            )
        self.market_volume += ev.size
        # release = min(Q, floor(rho * V)) - released
        qty = self.allowed() - self.released
        if qty <= 0 or (qty < self.min_slice_lots and qty < self.remaining):
            return []
        child = _child(parent, self.n_children, qty, ev.ts_event, ev.seq)
        self.released += qty
        self.n_children += 1
        return [child]
