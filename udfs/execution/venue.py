"""A paper venue: orders meet the real market-data stream, in event time, with latency.

Pure Python, deterministic, integer ticks and lots. One :class:`PaperVenue` per instrument is
fed the market stream in order (:meth:`PaperVenue.on_market_event`, which also applies each
record to the venue's own :class:`~udfs.market.book.OrderBook`) and the strategy's orders
(:meth:`PaperVenue.submit`). Nothing reads a clock: the reports depend only on the inputs and
their order, so a replay repeats them exactly, and the whole state pickles (it lives in a
restartable service).

Time and latency
----------------
* ``decision_ts`` is when the strategy decided (exchange time of the triggering event, plus the
  feed latency when the caller models it; the trading stage does, with ``cfg.feed_latency_ms``).
* A request (new order, cancel, scheduled cancel-all) reaches the venue at
  ``arrival = decision_ts + entry latency``. Until then it is *pending*: it is activated just
  before the first market record with ``ts_event > arrival`` (records stamped at the same ns as
  the arrival are taken to have happened first: ties go to the market), and never in the middle
  of an atomic batch (the book is only consistent after ``F_LAST``). So an order meets the book
  as it was at its arrival, not at its decision. :meth:`PaperVenue.advance_to` activates what
  has arrived by a time when no more market record is coming (end of stream, idle watermark).
* Entry latency: ``cfg.entry_latency_ms``; or, when ``cfg.latency_samples_path`` is set, one
  value drawn per request from that recorded distribution (one ms value per line, decimals
  allowed, ``#`` comments) with ``random.Random(cfg.latency_seed)`` -- the same inputs and seed
  give the same draws. Only the entry leg (the one that decides which book an order meets) is
  drawn here; the ack latency has a recorded distribution of its own, and the feed latency
  is drawn by the trading stage (``udfs.strategy.trading``).
* Report times: acks carry ``arrival + ack latency`` (the constant, or drawn from
  ``cfg.ack_latency_samples_path`` with its own seeded stream); rejects, cancels and fills
  carry the venue
  time at which they happen (the arrival, or the ``ts_event`` of the market record that
  triggered them).

Fill model
----------
*Marketable orders* (``MARKET``, or a ``LIMIT`` at or through the opposite touch) walk the book
as it is at arrival: best level first, each fill at that level's price and at most that level's
visible size, never at a price better than the book shows. A LIMIT stops at its limit price and
its remainder rests at the limit (``tif="IOC"``: canceled instead); a MARKET order's remainder
is canceled (IOC). Taker fee.

*Resting orders* get a queue position ``queue_ahead`` = the visible size already resting at their
price on their side when they arrive (our own earlier orders at that price are not in the real
book, and are ahead of us in our own priority, see below). The queue ahead shrinks only through:

1. trades against our side at our price -- ``execute`` (LOBSTER 4) and ``trade`` prints whose
   (resting) side is ours. Traded volume first consumes ``queue_ahead``; only the volume *beyond*
   it fills us (partial fills allowed). Several of our orders at one price share a trade in
   arrival order: the volume one of them filled does not reach the ones behind it.
2. cancels/deletes, under the conservative rule: *a cancel is assumed to come from behind us*.
   ``queue_ahead`` drops only when the visible level becomes smaller than it (the orders ahead
   of us are part of the visible level, so ``queue_ahead <= level size`` is a fact, not an
   assumption), i.e. after every consistent book state ``queue_ahead = min(queue_ahead, level)``.
   No pro-rata credit is given, so an order never fills before the size ahead of it has either
   traded or provably left the level.

A resting order also fills *completely, at its own price* when the market trades through it: a
trade (``execute``, ``hidden_trade`` or ``trade``) against our side at a price worse for the
resting side (below our bid / above our ask) shows an aggressor went past our price, so our
level was consumed. Maker fee.

Conservative choices and known limits
-------------------------------------
* No market impact: the liquidity we take stays in the book, and our resting orders are not in
  it. Two orders arriving before the next market record can both take the same level; the
  market does not react to our orders.
* Hidden liquidity: ``hidden_trade`` (LOBSTER 5) at our price does not shrink our queue (hidden
  orders execute after the displayed ones at a price, so it says nothing about the visible
  queue). Hidden orders that a real venue might let trade ahead of us are not modelled.
  ``cross_trade`` (auction) and ``halt`` records never fill; new orders arriving during a halt
  are rejected.
* A resting order is not filled when the opposite quote merely crosses it (an ``add`` at or
  through our price): only a trade at or through our price fills it. Conservative. With
  ``cfg.resting_fill_rule = "cross"`` (off by default) it also fills, wholly at its own price,
  once the opposite best price reaches it after a complete batch (hftbacktest's rule; the fill
  carries the book that crossed): an optimistic bound, to bracket the conservative one.
* A Binance-style capture delivers trade prints apart from the depth diffs, and a diff that
  already reflects a trade may come before the trade's print (same millisecond, or a diff
  stamped after a print that arrives later). What the level cap took off the queue is therefore
  remembered with the book's time, and a later print stamped at or before that time is first
  matched against it: the same traded lots never shrink the queue twice. A print stamped at or
  before the moment an order started resting happened before it and never touches it. Prints
  are assumed to arrive in their own time order (true of every capture in
  ``../shared/data/binance``): a print stamped ``t`` retires what the cap took before ``t``.
* Trade-through fills the whole remainder, whatever the size of the print that went through --
  optimistic for orders large relative to the prints.
* Queue position after a re-sync (``clear`` + snapshot) is capped by the new level size only.
* ``reduce_only`` is checked at arrival (an order that would not reduce the position is
  rejected), never clipped. ``tif`` other than ``IOC`` is treated as ``GTC``.

Reports
-------
Report ids are ``f"{order_id}:{n}"``, ``n`` counting the reports of that order id from 1.
Every fill carries the book it was decided on (best bid/ask and their sizes *before* the
triggering market record was applied, or at arrival for a taker fill), the ``queue_ahead`` it
was compared with (0 for taker fills), ``liquidity`` ``maker``/``taker``, the fee
``notional * bps / 1e4`` in quote currency with ``notional = price * 10**price_exp * qty *
10**size_exp`` (computed exactly in decimal, then rounded to a float once) and the position
after the fill. A cancel report has ``leaves_qty = 0`` (the order is done); its ``reason`` says
how many lots were canceled.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from udfs.config import VenueConfig
from udfs.latency import LatencyModel
from udfs.market.book import BookError, OrderBook
from udfs.schema import (
    F_LAST,
    ExecKind,
    ExecReport,
    Kind,
    L2Event,
    Order,
    OrderAction,
    OrderSide,
    OrderType,
    Side,
)

__all__ = ["PaperVenue", "WorkingOrder"]

_NS_PER_MS = 1_000_000
_QUEUE_TRADES = frozenset({Kind.EXECUTE, Kind.TRADE})
"""Trades that consume the visible queue at their price."""
_THROUGH_TRADES = frozenset({Kind.EXECUTE, Kind.TRADE, Kind.HIDDEN_TRADE})
"""Trades that, at a worse price for the resting side, prove our level was consumed."""
_NEW, _CANCEL, _CANCEL_ALL = "new", "cancel", "cancel_all"
_FILL_RULES = frozenset({"trade", "cross"})
_MAX_CAPPED = 32
"""entries kept per order in :attr:`WorkingOrder.capped` (older ones are merged: conservative)"""


ID_MEMORY = 100_000
"""Order ids a venue remembers (duplicate check, report numbering), like the risk engine's
``seen_capacity``: beyond it, the oldest ids of orders no longer resting are forgotten."""


@dataclass(slots=True)
class WorkingOrder:
    """An order live at the venue (read-only for callers)."""

    order: Order
    arrival_ts: int
    """venue time the order arrived (decision + entry latency)"""
    entry_latency_ns: int
    priority: int
    """arrival rank at the venue: lower is ahead among our own orders at one price"""
    leaves_qty: int
    queue_ahead: int
    """visible size ahead of the order at its price (0 until it rests)"""
    rest_ts: int = 0
    """venue time it started resting: a trade print stamped at or before it happened before us"""
    capped: list[list[int]] = field(default_factory=list)
    """``[book ts, lots]``: queue the level cap took off that a later-arriving trade print
    (stamped at or before that book state) may already account for"""

    @property
    def side(self) -> Side:
        """Book side the order rests on."""
        return Side.BID if self.order.side is OrderSide.BUY else Side.ASK


@dataclass(slots=True)
class _Request:
    arrival_ts: int
    seq: int
    action: str
    order: Order | None
    entry_latency_ns: int


def _fee(price: int, qty: int, price_exp: int, size_exp: int, bps: float) -> float:
    notional = Decimal(price * qty).scaleb(price_exp + size_exp)
    return float(notional * Decimal(repr(bps)) / 10_000)


class PaperVenue:
    """Simulated venue for one instrument; see the module docstring for the model."""

    def __init__(self, instrument: str, cfg: VenueConfig) -> None:
        if cfg.resting_fill_rule not in _FILL_RULES:
            raise ValueError(
                f"resting_fill_rule must be one of {sorted(_FILL_RULES)}, "
                f"got {cfg.resting_fill_rule!r}"
            )
        self.instrument = instrument
        self.cfg = cfg
        self._fill_on_cross = cfg.resting_fill_rule == "cross"
        self.book = OrderBook(instrument)
        self.now = 0
        """venue time: ts of the last market record or activation"""
        self.position = 0
        """lots, signed"""
        self.book_errors = 0
        """market records the venue's book refused (the book stays as it was)"""
        self.price_exp: int | None = None
        self.size_exp: int | None = None
        self._entry_latency = LatencyModel.from_config(
            cfg.entry_latency_ms, cfg.latency_samples_path
        )
        self._rng = random.Random(cfg.latency_seed)
        self._ack_latency = LatencyModel.from_config(
            cfg.ack_latency_ms, cfg.ack_latency_samples_path
        )
        # a stream of its own, so adding ack samples leaves the entry draws as they were
        self._ack_rng = random.Random(f"ack:{cfg.latency_seed}")
        self._pending: list[tuple[int, int, _Request]] = []  # heap (arrival, seq, request)
        self._seq = 0
        self._priority = 0
        self._live: dict[str, WorkingOrder] = {}
        """resting orders, in arrival (priority) order"""
        self._known: dict[str, None] = {}
        """order ids that reached the venue (live or done), oldest first: duplicates are
        rejected. Done orders beyond ``ID_MEMORY`` are forgotten (bounded memory)"""
        self._report_n: dict[str, int] = {}
        """order id -> reports issued so far (the ``:n`` of report ids); bounded the same way"""

    # ----------------------------------------------------------------------------- latency

    def entry_latency_ns(self) -> int:
        """Draw (or return the constant) decision -> venue latency, ns. Each call draws."""
        return self._entry_latency.draw(self._rng)

    def draw_ack_latency_ns(self) -> int:
        """Draw (or return the constant) venue -> acknowledgement latency, ns."""
        return self._ack_latency.draw(self._ack_rng)

    # ------------------------------------------------------------------------- public API

    def submit(self, order: Order, decision_ts: int) -> list[ExecReport]:
        """Send a new order or a cancel (``OrderAction.CANCEL``, ``order_id`` = the target).

        It reaches the venue at ``decision_ts`` + entry latency and is pending until the market
        stream gets there; the reports then come out of :meth:`on_market_event` (or
        :meth:`advance_to`). A request whose arrival is already behind the venue's clock (a late
        caller) is handled at once, on the current book, at the current venue time."""
        latency = self.entry_latency_ns()
        action = _CANCEL if order.action is OrderAction.CANCEL else _NEW
        self._push(_Request(decision_ts + latency, 0, action, order, latency))
        return self._activate(lambda arrival: arrival < self.now)

    def cancel_all(self, decision_ts: int | None = None) -> list[ExecReport]:
        """Cancel every order. ``decision_ts`` None: at once, at the venue's current time,
        resting and still-pending orders alike (kill switch, shutdown). Otherwise a mass
        cancel that reaches the venue at ``decision_ts`` + entry latency and cancels what rests
        there then (orders still in flight then are not touched, as at a real venue)."""
        if decision_ts is not None:
            latency = self.entry_latency_ns()
            self._push(_Request(decision_ts + latency, 0, _CANCEL_ALL, None, latency))
            return self._activate(lambda arrival: arrival < self.now)
        reports: list[ExecReport] = []
        pending, self._pending = sorted(self._pending), []
        for _, _, req in pending:
            if req.action == _NEW and req.order is not None:
                o = req.order
                reports.append(
                    self._report(
                        o,
                        ExecKind.CANCELED,
                        self.now,
                        reason=f"cancel_all before arrival: {o.quantity} lots canceled",
                    )
                )
        reports += self._cancel_resting(self.now, "cancel_all")
        return reports

    def on_market_event(self, ev: L2Event) -> list[ExecReport]:
        """Feed one market record (in stream order). Activates the requests that arrived
        before it, applies its trades to the resting orders, then applies it to the book."""
        if ev.instrument != self.instrument:
            return []
        reports = self._activate(lambda arrival: arrival < ev.ts_event)
        if ev.ts_event > self.now:
            self.now = ev.ts_event
        if self.price_exp is None and ev.kind is not Kind.CLEAR:
            self.price_exp, self.size_exp = ev.price_exp, ev.size_exp
        if self._live and ev.kind is Kind.TRADE:
            self._expire_capped(ev.ts_event)
        if self._live and ev.kind in _THROUGH_TRADES and ev.side is not Side.NONE:
            reports += self._on_trade(ev)
        try:
            self.book.apply(ev)
        except BookError:
            self.book_errors += 1
        if self._live and ev.flags & F_LAST:
            self._cap_queues(ev.ts_event)
            if self._fill_on_cross:
                reports += self._fill_crossed(ev.ts_event)
        return reports

    def advance_to(self, ts: int) -> list[ExecReport]:
        """Declare that no market record at or before ``ts`` is still to come (end of stream,
        idle watermark): activates the requests arriving at or before ``ts``."""
        reports = self._activate(lambda arrival: arrival <= ts)
        if ts > self.now:
            self.now = ts
        return reports

    def open_orders(self) -> list[WorkingOrder]:
        """Resting orders in priority order (do not mutate)."""
        return list(self._live.values())

    def open_lots(self) -> tuple[int, int]:
        """``(buy, sell)`` lots that may still fill: resting orders' leaves plus new orders in
        flight (sent, not arrived). An in-flight cancel has not taken effect yet: its order
        still counts."""
        lots = {OrderSide.BUY: 0, OrderSide.SELL: 0}
        for w in self._live.values():
            lots[w.order.side] += w.leaves_qty
        for _, _, req in self._pending:
            if req.action == _NEW and req.order is not None:
                lots[req.order.side] += req.order.quantity
        return lots[OrderSide.BUY], lots[OrderSide.SELL]

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    # --------------------------------------------------------------------------- internals

    def _push(self, req: _Request) -> None:
        self._seq += 1
        req.seq = self._seq
        heapq.heappush(self._pending, (req.arrival_ts, req.seq, req))

    def _activate(self, due: Callable[[int], bool]) -> list[ExecReport]:
        # never mid-batch: the book is only consistent after F_LAST
        reports: list[ExecReport] = []
        while self._pending and not self.book.batch_open and due(self._pending[0][0]):
            _, _, req = heapq.heappop(self._pending)
            venue_ts = max(req.arrival_ts, self.now)
            self.now = venue_ts
            if req.action == _NEW:
                reports += self._arrive_new(req, venue_ts)
            elif req.action == _CANCEL:
                reports += self._arrive_cancel(req, venue_ts)
            else:
                reports += self._cancel_resting(venue_ts, "cancel_all")
        return reports

    def _forget_done(self, ids: dict, keep: str) -> None:
        """Drop the oldest ids of orders no longer resting, down to half of ``ID_MEMORY`` (so
        the sweep is rare): an order resting or still on its way keeps its number and its
        duplicate check, and so does ``keep`` (the order being handled)."""
        in_flight = {req.order.order_id for _, _, req in self._pending if req.order is not None}
        in_flight.add(keep)
        excess = len(ids) - ID_MEMORY // 2
        for oid in [o for o in ids if o not in self._live and o not in in_flight][:excess]:
            del ids[oid]

    def _next_id(self, order_id: str) -> str:
        n = self._report_n.get(order_id, 0) + 1
        self._report_n[order_id] = n
        if len(self._report_n) > ID_MEMORY:
            self._forget_done(self._report_n, order_id)
        return f"{order_id}:{n}"

    def _report(self, order: Order, kind: ExecKind, ts: int, **fields: Any) -> ExecReport:
        return ExecReport(
            report_id=self._next_id(order.order_id),
            order_id=order.order_id,
            instrument=self.instrument,
            kind=kind,
            ts_event=ts,
            side=order.side.value,
            position=self.position,
            price_exp=order.price_exp,
            size_exp=order.size_exp,
            **fields,
        )

    def _book_fields(self) -> dict[str, int]:
        bids, asks = self.book.bids, self.book.asks
        bid, ask = bids.best(), asks.best()
        return {
            "book_bid": bid or 0,
            "book_ask": ask or 0,
            "book_bid_size": bids.get(bid) if bid is not None else 0,
            "book_ask_size": asks.get(ask) if ask is not None else 0,
        }

    def _reject_reason(self, o: Order) -> str:
        if o.instrument != self.instrument:
            return f"wrong instrument {o.instrument!r} (venue is {self.instrument!r})"
        if o.order_id in self._known:
            return "duplicate order_id"
        if type(o.quantity) is not int or o.quantity <= 0:
            return f"quantity must be a positive whole number of lots, got {o.quantity!r}"
        if o.order_type is OrderType.LIMIT and (type(o.price) is not int or o.price <= 0):
            return f"limit price must be positive whole ticks, got {o.price!r}"
        if self.price_exp is not None and (o.price_exp, o.size_exp) != (
            self.price_exp,
            self.size_exp,
        ):
            return (
                f"price_exp/size_exp {o.price_exp}/{o.size_exp} differ from the market's "
                f"{self.price_exp}/{self.size_exp}"
            )
        if self.book.halted:
            return "trading halted"
        if o.reduce_only and (self.position == 0 or (self.position > 0) == (o.side.sign > 0)):
            return f"reduce_only order would not reduce position {self.position}"
        return ""

    def _fill(
        self,
        w: WorkingOrder,
        price: int,
        qty: int,
        ts: int,
        liquidity: str,
        queue_ahead: int,
        book: dict[str, int],
    ) -> ExecReport:
        o = w.order
        w.leaves_qty -= qty
        self.position += o.side.sign * qty
        bps = self.cfg.maker_fee_bps if liquidity == "maker" else self.cfg.taker_fee_bps
        fee = _fee(price, qty, o.price_exp, o.size_exp, bps)
        return self._report(
            o,
            ExecKind.FILL,
            ts,
            fill_price=price,
            fill_qty=qty,
            leaves_qty=w.leaves_qty,
            fee=fee,
            liquidity=liquidity,
            queue_ahead=queue_ahead,
            **book,
        )

    def _arrive_new(self, req: _Request, ts: int) -> list[ExecReport]:
        o = req.order
        assert o is not None
        reason = self._reject_reason(o)
        if reason:
            return [self._report(o, ExecKind.REJECT, ts, reason=reason, **self._book_fields())]
        self._known[o.order_id] = None
        if len(self._known) > ID_MEMORY:
            self._forget_done(self._known, o.order_id)
        self._priority += 1
        w = WorkingOrder(
            order=o,
            arrival_ts=req.arrival_ts,
            entry_latency_ns=req.entry_latency_ns,
            priority=self._priority,
            leaves_qty=o.quantity,
            queue_ahead=0,
        )
        book = self._book_fields()
        is_buy = o.side is OrderSide.BUY
        opposite = self.book.asks if is_buy else self.book.bids
        own = self.book.bids if is_buy else self.book.asks
        limit = o.price if o.order_type is OrderType.LIMIT else None
        # walk the opposite side at arrival, best level first, within the limit
        fills: list[tuple[int, int]] = []
        left = o.quantity
        for price, size in opposite.top(len(opposite)):
            if left == 0 or (limit is not None and (price > limit if is_buy else price < limit)):
                break
            take = min(left, size)
            fills.append((price, take))
            left -= take
        rests = left > 0 and limit is not None and o.tif != "IOC"
        if rests and limit is not None:  # (limit: narrowed for the type checker)
            w.queue_ahead = own.get(limit)
            w.rest_ts = ts
        ack = self._report(
            o,
            ExecKind.ACK,
            ts + self.draw_ack_latency_ns(),
            leaves_qty=o.quantity,
            queue_ahead=w.queue_ahead,
            **book,
        )
        reports = [ack]
        for price, qty in fills:
            reports.append(self._fill(w, price, qty, ts, "taker", 0, book))
        if rests:
            self._live[o.order_id] = w
        elif left > 0:
            what = "market" if limit is None else "IOC"
            reports.append(
                self._report(
                    o,
                    ExecKind.CANCELED,
                    ts,
                    leaves_qty=0,
                    reason=f"{what} remainder canceled: {left} lots unfilled (no more liquidity)",
                    **book,
                )
            )
        return reports

    def _arrive_cancel(self, req: _Request, ts: int) -> list[ExecReport]:
        o = req.order
        assert o is not None
        w = self._live.pop(o.order_id, None)
        if w is None:
            return [
                self._report(
                    o,
                    ExecKind.REJECT,
                    ts,
                    reason="cancel: order not live at the venue "
                    "(unknown, done, or not arrived yet)",
                )
            ]
        return [
            self._report(
                w.order,
                ExecKind.CANCELED,
                ts,
                leaves_qty=0,
                queue_ahead=w.queue_ahead,
                reason=f"canceled: {w.leaves_qty} lots",
            )
        ]

    def _cancel_resting(self, ts: int, why: str) -> list[ExecReport]:
        live, self._live = self._live, {}
        return [
            self._report(
                w.order,
                ExecKind.CANCELED,
                ts,
                leaves_qty=0,
                queue_ahead=w.queue_ahead,
                reason=f"{why}: {w.leaves_qty} lots canceled",
            )
            for w in live.values()
        ]

    def _on_trade(self, ev: L2Event) -> list[ExecReport]:
        """Fills of resting orders on ``ev``'s (resting) side, decided on the book *before*
        ``ev`` is applied."""
        side, price, ts = ev.side, ev.price, ev.ts_event
        is_bid = side is Side.BID
        print_only = ev.kind is Kind.TRADE
        book = self._book_fields()
        reports: list[ExecReport] = []
        done: list[str] = []
        # a separate trade print may arrive after orders that rested later than it happened
        live = [w for w in self._live.values() if not (print_only and ts <= w.rest_ts)]
        # 1. trade-through: our price is strictly better for the resting side than the print
        through = [
            w
            for w in live
            if w.side is side and (w.order.price > price if is_bid else w.order.price < price)
        ]
        through.sort(key=lambda w: (-w.order.price if is_bid else w.order.price, w.priority))
        for w in through:
            reports.append(
                self._fill(w, w.order.price, w.leaves_qty, ts, "maker", w.queue_ahead, book)
            )
            done.append(w.order.order_id)
        # 2. a visible trade at our price: consumes the queue ahead, the rest fills us
        if ev.kind in _QUEUE_TRADES:
            volume = ev.size
            for w in live:  # priority order
                if volume <= 0:
                    break
                if w.side is not side or w.order.price != price:
                    continue
                # the part of a print the level cap already took off our queue (the diff
                # reflecting the trade came first) must not shrink it a second time
                traded = volume - self._absorb_capped(w, ts, volume) if print_only else volume
                if traded > w.queue_ahead:
                    qty = min(traded - w.queue_ahead, w.leaves_qty)
                    reports.append(self._fill(w, price, qty, ts, "maker", w.queue_ahead, book))
                    volume -= qty  # what we took never reaches the orders behind us
                    w.queue_ahead = 0
                    if w.leaves_qty == 0:
                        done.append(w.order.order_id)
                else:
                    w.queue_ahead -= traded
        for oid in done:
            self._live.pop(oid, None)
        return reports

    def _fill_crossed(self, ts: int) -> list[ExecReport]:
        """``resting_fill_rule = "cross"``: a resting order whose price the opposite best has
        reached (best ask <= our bid, best bid >= our ask) fills wholly at its own price."""
        if self.book.halted:
            return []
        bid, ask = self.book.best_bid(), self.book.best_ask()
        book = self._book_fields()
        reports: list[ExecReport] = []
        for w in list(self._live.values()):
            if (w.side is Side.BID and ask is not None and ask <= w.order.price) or (
                w.side is Side.ASK and bid is not None and bid >= w.order.price
            ):
                reports.append(
                    self._fill(w, w.order.price, w.leaves_qty, ts, "maker", w.queue_ahead, book)
                )
                del self._live[w.order.order_id]
        return reports

    def _cap_queues(self, ts: int) -> None:
        """Conservative cancel rule: cancels come from behind us, except that the size ahead
        can never exceed what is visible at our price. What the cap takes off is remembered
        with the book's time: a trade print stamped at or before it that arrives later may be
        the very volume that left the level (see :meth:`_absorb_capped`)."""
        for w in self._live.values():
            level = (self.book.bids if w.side is Side.BID else self.book.asks).get(w.order.price)
            if level < w.queue_ahead:
                w.capped.append([ts, w.queue_ahead - level])
                w.queue_ahead = level
                if len(w.capped) > _MAX_CAPPED:
                    # merge the two oldest under the later time: absorbs at least as much
                    (_, a), (t, b) = w.capped[0], w.capped[1]
                    w.capped[:2] = [[t, a + b]]

    @staticmethod
    def _absorb_capped(w: WorkingOrder, ts: int, volume: int) -> int:
        """Lots of a trade print stamped ``ts`` that the level cap already took off ``w``'s
        queue: taken from the cap entries of book states stamped at or after ``ts`` (those
        may reflect the trade), oldest first, at most ``volume``."""
        absorbed = 0
        for entry in w.capped:
            if absorbed == volume:
                break
            if entry[0] >= ts and entry[1] > 0:
                take = min(entry[1], volume - absorbed)
                entry[1] -= take
                absorbed += take
        if absorbed:
            w.capped = [e for e in w.capped if e[1] > 0]
        return absorbed

    def _expire_capped(self, ts: int) -> None:
        """Trade prints arrive in their own time order (true of every capture in
        ``../shared/data/binance``): once one stamped ``ts`` is seen, no later print can be
        reflected in a book state stamped before ``ts``."""
        for w in self._live.values():
            if w.capped and w.capped[0][0] < ts:
                w.capped = [e for e in w.capped if e[0] >= ts]
