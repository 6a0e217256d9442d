"""Pre-trade risk: the gate every order passes before it reaches the venue.

Modelled on the role of NautilusTrader's ``RiskEngine`` (a trading mode ``ACTIVE`` /
``REDUCING`` / ``HALTED``, small named checks, a denial that names its reason); the
implementation is this project's own. Pure Python, no Flink import, integer ticks and lots
throughout; every limit is compared exactly (:class:`~fractions.Fraction`), floats appear only
in reason strings.

Exposure
--------
Every check sees the instrument's *exposure*: the filled position plus the lots of its orders
that may still fill -- resting at the venue and still in flight to it (sent, not arrived) --
per side (:class:`OpenLots`). An order on side ``s`` (sign ``+1`` BUY, ``-1`` SELL) acts on
``e = position + s * open_s``, the position if every open order of its own side filled (open
orders of the other side are assumed not to fill: the conservative reading for both limits and
reduction). Its *closing part* is ``min(quantity, max(0, -s * e))`` -- what it takes off
``|e|`` without going through zero -- and the rest is its *opening part*. An order is
*closing* when it has no opening part. So four SELL 10 sent at once against +10 are one
closing order and three opening ones, and five BUY 15 in one event meet the position limit
with 15, 30, 45... lots already open.

Trading modes (global, or per instrument; the stricter applies)
---------------------------------------------------------------
``ACTIVE``    every check below applies.
``REDUCING``  only closing orders are accepted (set by the ``reduce`` control command, or by
              the drawdown guard when ``RiskConfig.drawdown_mode`` is ``REDUCING``, the
              default). A partly closing order is refused, not clipped.
``HALTED``    every new order is refused; cancels (and CANCEL_ALL) still pass (``kill``, or the
              drawdown guard with ``drawdown_mode = "HALTED"``). ``resume`` sets ``ACTIVE``.

Checks, in order (the first refusal wins; each is one method ``_check_<rule>``)
---------------------------------------------------------------------------
``action == CANCEL``  always accepted, in every mode, without a book, never throttled.
``duplicate``         an order id already decided is refused; the caller should drop it.
``invalid_order``     quantity not an ``int`` (a float, NaN, a bool...), ``<= 0`` or above
                      ``cfg.max_order_lots``; a LIMIT price not a positive ``int``.
``unknown_instrument`` not in the configured universe.
``halted`` / ``reducing``  the trading mode (above).
``reduce_only``       an order flagged ``reduce_only`` that is not closing.
``no_book`` / ``venue_halted`` / ``no_mark``  fail closed: no book (or another instrument's),
                      the feed says the venue halted, a book side is empty (no mid). A closing
                      MARKET order needs only the side it takes.
``max_order_notional``    ``price * opening part`` above ``cfg.max_order_notional`` (a MARKET
                      order priced at the touch it takes).
``max_position_notional`` ``|e + s * quantity| * mid`` above ``cfg.max_position_notional``,
                      checked when the order has an opening part.
``price_band``        a LIMIT price (a MARKET order: the touch it takes) more than
                      ``cfg.price_band_bps`` from the mid.
``throttle``          at most ``cfg.max_orders_per_window`` accepted new orders per instrument
                      in any ``cfg.throttle_window_ms`` of event time (sliding window).

What a closing order still meets. The notional limits exempt only the closing part (the limits
bound exposure, and a closing part lowers it). A closing LIMIT order still meets the price band
(a price far from the mid is a fat finger or a stale decision, and a marketable one would sweep
the book) and the throttle (it bounds the message rate whatever the messages are). A closing
MARKET order skips both: it has no price of its own to be wrong (it takes the touch), and a
loop of them cannot run away -- once the closes in flight cover the exposure, the next one is
no longer closing and meets every check. So a market close is always possible while the book
shows the side it takes, the feed does not report the venue halted, and the mode is not
HALTED.

Invariant (property-tested): with fixed marks, no sequence of orders, cancels and fills takes the
filled position past the position limit, and a closing order never flips the position.

Notional: ``price_ticks * 10**price_exp * quantity_lots * 10**size_exp`` quote currency, with
the order's exponents (the book carries ticks only, in the same exponent as the order).

Decisions and reasons
---------------------
:meth:`RiskEngine.check` returns a :class:`RiskDecision` ``(accepted, reason)``. A refusal's
reason is ``"<rule>: <detail>"`` where ``<rule>`` is one of :class:`Rule` and the detail quotes
the numbers compared, e.g. ``"max_order_notional: BUY 500 @ 5859400 = 292970 > limit 25000"``
(prices in ticks, notionals in quote currency); an acceptance is ``"accepted"``
(``"accepted: closing"`` for a closing order, ``"accepted: cancel"`` for a cancel).
:func:`reject_report` turns a refusal into the REJECT :class:`~udfs.schema.ExecReport`.

Time is event time only: ``now_ts`` (ns) drives the throttle and the engine keeps the largest
``now_ts`` seen as its clock, so a replay takes exactly the same decisions. The engine pickles
(it lives inside the execution engine's state).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from typing import NamedTuple

from udfs.config import RiskConfig
from udfs.execution.portfolio import BoundedIdSet, Number, Portfolio, fmt_money, to_fraction
from udfs.market.book import OrderBook
from udfs.schema import (
    Control,
    ControlCommand,
    ExecKind,
    ExecReport,
    Order,
    OrderAction,
    OrderSide,
    OrderType,
)

__all__ = [
    "OpenLots",
    "RiskDecision",
    "RiskEngine",
    "Rule",
    "TradingMode",
    "closing_lots",
    "mid_ticks",
    "reject_report",
]

NS_PER_MS = 1_000_000


class TradingMode(StrEnum):
    """What the risk engine lets through (NautilusTrader's ``TradingState`` values)."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    """only closing orders are accepted"""
    HALTED = "HALTED"
    """no new order is accepted; cancels pass"""


_SEVERITY = {TradingMode.ACTIVE: 0, TradingMode.REDUCING: 1, TradingMode.HALTED: 2}


class Rule(StrEnum):
    """The ``<rule>`` prefix of a refusal's reason."""

    DUPLICATE = "duplicate"
    HALTED = "halted"
    REDUCING = "reducing"
    REDUCE_ONLY = "reduce_only"
    INVALID_ORDER = "invalid_order"
    UNKNOWN_INSTRUMENT = "unknown_instrument"
    NO_BOOK = "no_book"
    VENUE_HALTED = "venue_halted"
    NO_MARK = "no_mark"
    MAX_ORDER_NOTIONAL = "max_order_notional"
    MAX_POSITION_NOTIONAL = "max_position_notional"
    PRICE_BAND = "price_band"
    THROTTLE = "throttle"
    MAX_DRAWDOWN = "max_drawdown"
    """reason of the KILL_TRIPPED control emitted by :meth:`RiskEngine.check_drawdown`"""


class RiskDecision(NamedTuple):
    accepted: bool
    reason: str

    @property
    def rule(self) -> str:
        """The refusing rule (a :class:`Rule` value), ``""`` when accepted."""
        return "" if self.accepted else self.reason.split(":", 1)[0]

    @property
    def duplicate(self) -> bool:
        """A repeated order id: drop it, do not report it (its first decision stands)."""
        return self.rule == Rule.DUPLICATE


class OpenLots(NamedTuple):
    """Lots of one instrument's orders that may still fill (resting at the venue plus in flight
    to it), per side."""

    buy: int = 0
    sell: int = 0

    def on_side(self, side: OrderSide) -> int:
        return self.buy if side is OrderSide.BUY else self.sell


NO_OPEN_LOTS = OpenLots()


def _deny(rule: Rule, detail: str) -> RiskDecision:
    return RiskDecision(False, f"{rule.value}: {detail}")


def mid_ticks(book: OrderBook | None) -> Fraction | None:
    """``(best_bid + best_ask) / 2`` in ticks (exact; may be a half tick), None when a side is
    empty or there is no book."""
    if book is None:
        return None
    bid, ask = book.best_bid(), book.best_ask()
    if bid is None or ask is None:
        return None
    return Fraction(bid + ask, 2)


def closing_lots(side: OrderSide, quantity: int, position: int, open_same_side: int = 0) -> int:
    """The closing part of an order: the lots of ``quantity`` that take exposure off without
    going through zero, against ``position + sign * open_same_side`` (see the module notes)."""
    exposure = position + side.sign * open_same_side
    return min(quantity, max(0, -side.sign * exposure))


def reject_report(order: Order, decision: RiskDecision, position: int = 0) -> ExecReport:
    """The REJECT execution report of a refused order (id derived from the order id, time = the
    order's decision time, so a replay re-creates the same report)."""
    if decision.accepted:
        raise ValueError(f"order {order.order_id} was accepted, not rejected")
    return ExecReport(
        report_id=f"{order.order_id}:risk-reject",
        order_id=order.order_id,
        instrument=order.instrument,
        kind=ExecKind.REJECT,
        ts_event=order.ts_event,
        reason=decision.reason,
        side=order.side.value,
        leaves_qty=0,
        position=position,
        price_exp=order.price_exp,
        size_exp=order.size_exp,
    )


@dataclass(slots=True)
class _Pending:
    """One order under check: its exposure, then (after the book check) its prices."""

    order: Order
    book: OrderBook | None
    position: int
    open_same: int
    mid: Fraction | None = None
    price: Fraction | None = None
    """the LIMIT price, or the touch a MARKET order takes (ticks)"""
    price_text: str = ""

    @property
    def side(self) -> str:
        return self.order.side.value

    @property
    def closing(self) -> int:
        """closing part, lots (the quantity check has run: it is a positive int)"""
        return closing_lots(self.order.side, self.order.quantity, self.position, self.open_same)

    @property
    def opening(self) -> int:
        return self.order.quantity - self.closing

    @property
    def is_closing(self) -> bool:
        return self.closing == self.order.quantity

    @property
    def market_close(self) -> bool:
        return self.is_closing and self.order.order_type is OrderType.MARKET

    @property
    def exposure(self) -> int:
        """position if every open order on the order's side filled"""
        return self.position + self.order.side.sign * self.open_same

    @property
    def scale(self) -> Fraction:
        return Fraction(10) ** (self.order.price_exp + self.order.size_exp)


class RiskEngine:
    """Pre-trade checks, trading mode, kill switch, drawdown guard, idempotency.

    ``instruments``: the tradable universe; when given, any other instrument is refused
    (``unknown_instrument``). ``seen_capacity``: how many decided order ids are remembered for
    :meth:`seen` (oldest forgotten first).
    """

    def __init__(
        self,
        cfg: RiskConfig | None = None,
        instruments: Iterable[str] | None = None,
        seen_capacity: int = 100_000,
    ) -> None:
        self.cfg = cfg if cfg is not None else RiskConfig()
        if self.cfg.max_orders_per_window < 0 or self.cfg.throttle_window_ms <= 0:
            raise ValueError("throttle needs max_orders_per_window >= 0 and a positive window")
        self._drawdown_mode = TradingMode(self.cfg.drawdown_mode)
        if self._drawdown_mode is TradingMode.ACTIVE:
            raise ValueError("drawdown_mode must be REDUCING or HALTED")
        if self.cfg.max_order_lots <= 0:
            raise ValueError(f"max_order_lots must be positive, got {self.cfg.max_order_lots}")
        self.instruments: frozenset[str] | None = (
            None if instruments is None else frozenset(instruments)
        )
        self.mode = TradingMode.ACTIVE
        """global trading mode (applies to every instrument)"""
        self.mode_reason = ""
        self.instrument_modes: dict[str, tuple[TradingMode, str]] = {}
        """per-instrument mode and why; the stricter of global and instrument applies"""
        self.clock = 0
        """largest event time (ns) seen by :meth:`check` / :meth:`on_control`"""
        self._accepted: dict[str, deque[int]] = {}
        self._seen = BoundedIdSet(seen_capacity)
        self._dd_peak: Fraction | None = None
        """the drawdown guard's peak equity; None: take the portfolio's peak"""
        self._dd_rebase = False
        """set by a global RESUME: the guard's peak restarts at the current equity"""
        self._max_order = to_fraction(self.cfg.max_order_notional)
        self._max_position = to_fraction(self.cfg.max_position_notional)
        self._band_bps = to_fraction(self.cfg.price_band_bps)
        self._max_dd = to_fraction(self.cfg.max_drawdown)
        self._window_ns = self.cfg.throttle_window_ms * NS_PER_MS

    # -- trading mode --------------------------------------------------------------------------

    def effective_mode(self, instrument: str) -> tuple[TradingMode, str]:
        """The stricter of the global mode and the instrument's, with its reason."""
        own = self.instrument_modes.get(instrument)
        if own is not None and _SEVERITY[own[0]] > _SEVERITY[self.mode]:
            return own
        return self.mode, self.mode_reason

    def set_mode(self, mode: TradingMode | str, instrument: str = "", reason: str = "") -> None:
        """Set the trading mode globally (``instrument == ""``) or for one instrument."""
        mode = TradingMode(mode)
        if instrument:
            if mode is TradingMode.ACTIVE:
                self.instrument_modes.pop(instrument, None)
            else:
                self.instrument_modes[instrument] = (mode, reason)
        else:
            self.mode, self.mode_reason = mode, reason

    def on_control(self, ctrl: Control) -> bool:
        """Apply a control command; it takes effect for every order checked after this call.

        KILL / KILL_TRIPPED -> HALTED; REDUCE -> REDUCING; RESUME -> ACTIVE (a global RESUME
        clears every instrument's mode too and restarts the drawdown guard's peak at the
        current equity, so trading can go on after a trip). Returns True for CANCEL_ALL: the
        caller cancels the open orders (of ``ctrl.instrument``, or all when empty); nothing
        else changes.
        """
        self.clock = max(self.clock, ctrl.ts_event)
        cmd = ctrl.command
        why = f"{cmd.value}" + (f" ({ctrl.reason})" if ctrl.reason else "")
        if cmd in (ControlCommand.KILL, ControlCommand.KILL_TRIPPED):
            self.set_mode(TradingMode.HALTED, ctrl.instrument, why)
            return False
        if cmd is ControlCommand.REDUCE:
            self.set_mode(TradingMode.REDUCING, ctrl.instrument, why)
            return False
        if cmd is ControlCommand.RESUME:
            if ctrl.instrument:
                self.set_mode(TradingMode.ACTIVE, ctrl.instrument)
            else:
                self.set_mode(TradingMode.ACTIVE)
                self.instrument_modes.clear()
                self._dd_rebase = True
            return False
        if cmd is ControlCommand.CANCEL_ALL:
            return True
        raise ValueError(f"unknown control command {cmd!r}")

    def check_drawdown(
        self, portfolio: Portfolio, marks: Mapping[str, Number], now_ts: int = 0
    ) -> Control | None:
        """Mark the portfolio (moves its peak) and trip the guard when ``peak - equity >
        cfg.max_drawdown``: the global mode becomes ``cfg.drawdown_mode`` (REDUCING by default)
        and the KILL_TRIPPED :class:`Control` to publish is returned (reason ``"max_drawdown:
        drawdown D > limit L (peak P, equity E): trading <MODE>"``). Returns None when within
        the limit or when the global mode is already at least that strict (nothing changes)."""
        equity = portfolio.mark(marks)
        if self._dd_rebase:
            self._dd_peak, self._dd_rebase = equity, False
        elif self._dd_peak is None:
            self._dd_peak = portfolio.peak
        else:
            self._dd_peak = max(self._dd_peak, equity)
        drawdown = self._dd_peak - equity
        target = self._drawdown_mode
        if drawdown <= self._max_dd or _SEVERITY[self.mode] >= _SEVERITY[target]:
            return None
        reason = (
            f"{Rule.MAX_DRAWDOWN.value}: drawdown {fmt_money(drawdown)} > limit "
            f"{fmt_money(self._max_dd)} (peak {fmt_money(self._dd_peak)}, equity "
            f"{fmt_money(equity)}): trading {target.value}"
        )
        ts = max(now_ts, self.clock)
        self.set_mode(target, "", f"{ControlCommand.KILL_TRIPPED.value} ({reason})")
        return Control(ControlCommand.KILL_TRIPPED, "", reason, ts)

    # -- idempotency ---------------------------------------------------------------------------

    def seen(self, order_id: str) -> bool:
        """True when a NEW order with this id was already decided (accepted or refused) and is
        still within the remembered window. Pure query."""
        return order_id in self._seen

    # -- the gate ------------------------------------------------------------------------------

    def check(
        self,
        order: Order,
        book: OrderBook | None,
        portfolio: Portfolio | None,
        now_ts: int,
        open_lots: OpenLots = NO_OPEN_LOTS,
    ) -> RiskDecision:
        """Decide on ``order`` at event time ``now_ts`` (ns). ``portfolio`` gives the filled
        position (None: flat); ``open_lots`` the instrument's orders that may still fill
        (resting and in flight). See the module notes for the rules and their order. A new
        order's decision is recorded (for :meth:`seen`); an accepted one counts towards the
        throttle."""
        self.clock = max(self.clock, now_ts)
        if order.action is OrderAction.CANCEL:
            return RiskDecision(True, "accepted: cancel")
        earlier = self._seen.get(order.order_id)
        if earlier is not None:
            return _deny(Rule.DUPLICATE, f"order {order.order_id} already decided ({earlier})")
        position = 0 if portfolio is None else portfolio.position(order.instrument)
        p = _Pending(order, book, position, open_lots.on_side(order.side))
        decision = self._decide(p)
        self._seen.add(order.order_id, decision.reason if not decision.accepted else "accepted")
        if decision.accepted:
            self._accepted.setdefault(order.instrument, deque()).append(self.clock)
        return decision

    def _decide(self, p: _Pending) -> RiskDecision:
        for check in (
            self._check_order_quantity,
            self._check_order_price,
            self._check_instrument,
            self._check_trading_mode,
            self._check_reduce_only,
            self._check_book,
            self._check_order_notional,
            self._check_position_notional,
            self._check_price_band,
            self._check_throttle,
        ):
            denied = check(p)
            if denied is not None:
                return denied
        return RiskDecision(True, "accepted: closing" if p.is_closing else "accepted")

    # -- the checks: each returns its denial, or None to pass ---------------------------------

    def _check_order_quantity(self, p: _Pending) -> RiskDecision | None:
        qty = p.order.quantity
        # type(...) is int: a bool, float (NaN, inf, 1.5) or str is not a lot count
        if type(qty) is not int:
            return _deny(Rule.INVALID_ORDER, f"quantity {qty!r} is not a whole number of lots")
        if qty <= 0:
            return _deny(Rule.INVALID_ORDER, f"quantity {qty} <= 0")
        if qty > self.cfg.max_order_lots:
            return _deny(
                Rule.INVALID_ORDER, f"quantity {qty} > max_order_lots {self.cfg.max_order_lots}"
            )
        return None

    def _check_order_price(self, p: _Pending) -> RiskDecision | None:
        o = p.order
        for name in ("price_exp", "size_exp"):
            if type(getattr(o, name)) is not int:
                return _deny(Rule.INVALID_ORDER, f"{name} {getattr(o, name)!r} is not an integer")
        if o.order_type is not OrderType.LIMIT:
            return None
        if type(o.price) is not int:
            return _deny(Rule.INVALID_ORDER, f"limit price {o.price!r} is not whole ticks")
        if o.price <= 0:
            return _deny(Rule.INVALID_ORDER, f"limit price {o.price} <= 0")
        return None

    def _check_instrument(self, p: _Pending) -> RiskDecision | None:
        inst = p.order.instrument
        if self.instruments is not None and inst not in self.instruments:
            return _deny(Rule.UNKNOWN_INSTRUMENT, f"{inst} is not in the tradable universe")
        return None

    def _check_trading_mode(self, p: _Pending) -> RiskDecision | None:
        inst = p.order.instrument
        mode, why = self.effective_mode(inst)
        if mode is TradingMode.HALTED:
            scope = "all instruments" if self.mode is TradingMode.HALTED else inst
            return _deny(
                Rule.HALTED,
                f"trading HALTED for {scope}"
                + (f" by {why}" if why else "")
                + f"; new {p.side} {p.order.quantity} refused",
            )
        if mode is TradingMode.REDUCING and not p.is_closing:
            return _deny(
                Rule.REDUCING,
                f"trading REDUCING for {inst}"
                + (f" by {why}" if why else "")
                + f": {p.side} {p.order.quantity} {self._exposure_text(p)}",
            )
        return None

    def _check_reduce_only(self, p: _Pending) -> RiskDecision | None:
        if p.order.reduce_only and not p.is_closing:
            return _deny(
                Rule.REDUCE_ONLY,
                f"reduce-only {p.side} {p.order.quantity} {self._exposure_text(p)}",
            )
        return None

    @staticmethod
    def _exposure_text(p: _Pending) -> str:
        what = f"position {p.position:+d}"
        if p.open_same:
            what += f" with {p.open_same} {p.side} open (exposure {p.exposure:+d})"
        if p.closing:
            return f"closes only {p.closing} lots of {what}"
        return f"does not reduce {what}"

    def _check_book(self, p: _Pending) -> RiskDecision | None:
        o, book, inst = p.order, p.book, p.order.instrument
        if book is None:
            return _deny(Rule.NO_BOOK, f"no book for {inst} yet")
        if book.instrument != inst:
            return _deny(Rule.NO_BOOK, f"book given is {book.instrument}, order is for {inst}")
        if book.halted:
            return _deny(Rule.VENUE_HALTED, f"the feed reports {inst} halted")
        bid, ask = book.best_bid(), book.best_ask()
        is_buy = o.side is OrderSide.BUY
        touch = ask if is_buy else bid
        if bid is None or ask is None:
            # a market close needs only the side it takes; anything else needs a mid
            if not (p.market_close and touch is not None):
                empty = " and ".join(s for s, q in (("bid", bid), ("ask", ask)) if q is None)
                return _deny(Rule.NO_MARK, f"{inst} book has no {empty}: no mid to price against")
        else:
            p.mid = Fraction(bid + ask, 2)
        if o.order_type is OrderType.MARKET:
            assert touch is not None
            p.price = Fraction(touch)
            p.price_text = f"{'ask' if is_buy else 'bid'} {touch}"
        else:
            p.price = Fraction(o.price)
            p.price_text = f"{o.price}"
        return None

    def _check_order_notional(self, p: _Pending) -> RiskDecision | None:
        if p.opening == 0:  # only the opening part counts: the closing part lowers exposure
            return None
        assert p.price is not None
        notional = p.price * p.opening * p.scale
        if notional <= self._max_order:
            return None
        part = "" if p.closing == 0 else f" (opening part of {p.order.quantity})"
        return _deny(
            Rule.MAX_ORDER_NOTIONAL,
            f"{p.side} {p.opening}{part} @ {p.price_text} = {fmt_money(notional)} > "
            f"limit {fmt_money(self._max_order)}",
        )

    def _check_position_notional(self, p: _Pending) -> RiskDecision | None:
        if p.opening == 0:
            return None
        assert p.mid is not None
        after = p.exposure + p.order.side.sign * p.order.quantity
        pos_notional = abs(after) * p.mid * p.scale
        if pos_notional <= self._max_position:
            return None
        open_text = f", {p.open_same} {p.side} open" if p.open_same else ""
        return _deny(
            Rule.MAX_POSITION_NOTIONAL,
            f"position {p.position:+d}{open_text} -> {after:+d} lots x mid "
            f"{fmt_money(p.mid)} ticks = {fmt_money(pos_notional)} > limit "
            f"{fmt_money(self._max_position)}",
        )

    def _check_price_band(self, p: _Pending) -> RiskDecision | None:
        if p.market_close:  # takes the touch: no price of its own to be wrong
            return None
        assert p.mid is not None and p.price is not None
        # |price - mid| / mid * 1e4 > band  <=>  |price - mid| * 1e4 > band * mid
        distance = abs(p.price - p.mid)
        if distance * 10_000 <= self._band_bps * p.mid:
            return None
        bps = distance * 10_000 / p.mid
        return _deny(
            Rule.PRICE_BAND,
            f"{p.order.order_type.value} {p.side} price {p.price_text} is "
            f"{fmt_money(bps)} bps from mid {fmt_money(p.mid)} > band "
            f"{fmt_money(self._band_bps)} bps",
        )

    def _check_throttle(self, p: _Pending) -> RiskDecision | None:
        cfg, inst = self.cfg, p.order.instrument
        window = self._accepted.get(inst)
        if window is not None:
            while window and window[0] <= self.clock - self._window_ns:
                window.popleft()
        if p.market_close:  # counted once accepted, never refused: see the module notes
            return None
        if len(window or ()) >= cfg.max_orders_per_window:
            return _deny(
                Rule.THROTTLE,
                f"{len(window or ())} orders accepted for {inst} in the last "
                f"{cfg.throttle_window_ms} ms (limit {cfg.max_orders_per_window} "
                f"per {cfg.throttle_window_ms} ms)",
            )
        return None

    def __repr__(self) -> str:
        return (
            f"RiskEngine(mode={self.mode.value}, instrument_modes="
            f"{ {k: s.value for k, (s, _) in self.instrument_modes.items()} }, "
            f"clock={self.clock})"
        )
