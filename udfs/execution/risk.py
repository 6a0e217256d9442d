"""Pre-trade risk: the gate every order passes before it reaches the venue.

Modelled on the role of NautilusTrader's ``RiskEngine`` (a trading state ``ACTIVE`` /
``REDUCING`` / ``HALTED`` and a denial that names its reason); the implementation is this
project's own. Pure Python, no Flink import, integer ticks and lots throughout; every limit is
compared exactly (:class:`~fractions.Fraction`), floats appear only in reason strings.

Checks, in order (the first refusal wins)
-----------------------------------------
``action == CANCEL``  always accepted (cancels only take risk off), in every trading state,
                      without a book, never throttled or deduplicated.
``duplicate``         an order id already decided is refused; the caller should drop it (its
                      first decision stands and is quoted in the reason). See :meth:`seen`.
``halted``            trading state HALTED (global or for the instrument) refuses every new order.
``reducing``          trading state REDUCING accepts only orders that reduce ``|position|``.
``reduce_only``       an order flagged ``reduce_only`` that would not reduce is refused.
fail closed           ``invalid_order`` (quantity <= 0, limit price <= 0),
                      ``unknown_instrument`` (not in the configured universe), ``no_book`` (no
                      book yet / book of another instrument), ``venue_halted`` (the feed says the
                      venue halted), ``no_mark`` (a book side is empty: no mid, no touch).
``max_order_notional``    ``price * quantity`` above ``cfg.max_order_notional``.
``max_position_notional`` post-trade ``|position| * mid`` above ``cfg.max_position_notional``.
                      An order that only reduces exposure skips both notional limits.
``price_band``        a LIMIT price more than ``cfg.price_band_bps`` from the mid; a MARKET order
                      is checked at the touch it would take (ask for a buy, bid for a sell).
``throttle``          at most ``cfg.max_orders_per_window`` ACCEPTED new orders per instrument in
                      any ``cfg.throttle_window_ms`` of event time (sliding window).

"Reduces" means: opposite side to a non-zero position and ``quantity <= |position|`` (it never
goes through zero). The position is the FILLED position of the portfolio; orders still resting
are not counted.

Notional: ``price_ticks * 10**price_exp * quantity_lots * 10**size_exp`` quote currency, with
the order's exponents (the book carries ticks only, in the same exponent as the order).

Decisions and reasons
---------------------
:meth:`RiskEngine.check` returns a :class:`RiskDecision` ``(accepted, reason)`` (a named tuple:
``ok, reason = engine.check(...)`` works). A refusal's reason is ``"<rule>: <detail>"`` where
``<rule>`` is one of :class:`Rule` and the detail quotes the numbers compared, e.g.
``"max_order_notional: BUY 500 @ 5859400 = 292970 > limit 25000"`` (prices in ticks,
notionals in quote currency); an acceptance is
``"accepted"`` (``"accepted: reducing"`` when the notional limits were skipped,
``"accepted: cancel"`` for a cancel). :func:`reject_report` turns a refusal into the REJECT
:class:`~udfs.schema.ExecReport` the sink emits.

Time is event time only: ``now_ts`` (ns) drives the throttle and the engine keeps the largest
``now_ts`` seen as its clock, so a replay takes exactly the same decisions.

State survives a restart: the engine pickles, and :meth:`RiskEngine.to_dict` /
:meth:`RiskEngine.from_dict` give a JSON-serialisable form.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable, Mapping
from enum import StrEnum
from fractions import Fraction
from typing import Any, NamedTuple

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
    "RiskDecision",
    "RiskEngine",
    "Rule",
    "TradingState",
    "is_reducing",
    "mid_ticks",
    "reject_report",
]

NS_PER_MS = 1_000_000


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    """only orders that reduce |position| are accepted"""
    HALTED = "HALTED"
    """no new order is accepted; cancels pass"""


_SEVERITY = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


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


def is_reducing(order: Order, position: int) -> bool:
    """True when ``order`` only takes exposure off: opposite side to a non-zero ``position``
    (signed lots) and ``quantity <= |position|`` (never through zero)."""
    if position == 0 or order.quantity <= 0:
        return False
    return order.side.sign != (1 if position > 0 else -1) and order.quantity <= abs(position)


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


class RiskEngine:
    """Pre-trade checks, trading state, kill switch, drawdown guard, idempotency.

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
        self.instruments: frozenset[str] | None = (
            None if instruments is None else frozenset(instruments)
        )
        self.state = TradingState.ACTIVE
        """global trading state (applies to every instrument)"""
        self.state_reason = ""
        self.instrument_states: dict[str, tuple[TradingState, str]] = {}
        """per-instrument state and why; the stricter of global and instrument applies"""
        self.clock = 0
        """largest event time (ns) seen by :meth:`check` / :meth:`on_control`"""
        self._accepted: dict[str, deque[int]] = {}
        self._seen = BoundedIdSet(seen_capacity)
        self._dd_peak: Fraction | None = None
        """the drawdown guard's peak equity; None: take the portfolio's peak"""
        self._dd_rebase = False
        """set by a global RESUME: the guard's peak restarts at the current equity"""
        self._limits()

    def _limits(self) -> None:
        cfg = self.cfg
        self._max_order = to_fraction(cfg.max_order_notional)
        self._max_position = to_fraction(cfg.max_position_notional)
        self._band_bps = to_fraction(cfg.price_band_bps)
        self._max_dd = to_fraction(cfg.max_drawdown)
        self._window_ns = cfg.throttle_window_ms * NS_PER_MS

    # -- trading state -------------------------------------------------------------------------

    def effective_state(self, instrument: str) -> tuple[TradingState, str]:
        """The stricter of the global state and the instrument's, with its reason."""
        own = self.instrument_states.get(instrument)
        if own is not None and _SEVERITY[own[0]] > _SEVERITY[self.state]:
            return own
        return self.state, self.state_reason

    def set_state(self, state: TradingState | str, instrument: str = "", reason: str = "") -> None:
        """Set the trading state globally (``instrument == ""``) or for one instrument."""
        state = TradingState(state)
        if instrument:
            if state is TradingState.ACTIVE:
                self.instrument_states.pop(instrument, None)
            else:
                self.instrument_states[instrument] = (state, reason)
        else:
            self.state, self.state_reason = state, reason

    def on_control(self, ctrl: Control) -> bool:
        """Apply a control command; it takes effect for every order checked after this call.

        KILL / KILL_TRIPPED -> HALTED; RESUME -> ACTIVE (a global RESUME clears every
        instrument's state too and restarts the drawdown guard's peak at the current equity,
        so trading can go on after a trip). Returns True for CANCEL_ALL: the caller cancels the
        open orders (of ``ctrl.instrument``, or all when empty); nothing else changes.
        """
        self.clock = max(self.clock, ctrl.ts_event)
        cmd = ctrl.command
        if cmd in (ControlCommand.KILL, ControlCommand.KILL_TRIPPED):
            why = f"{cmd.value}" + (f" ({ctrl.reason})" if ctrl.reason else "")
            self.set_state(TradingState.HALTED, ctrl.instrument, why)
            return False
        if cmd is ControlCommand.RESUME:
            if ctrl.instrument:
                self.set_state(TradingState.ACTIVE, ctrl.instrument)
            else:
                self.set_state(TradingState.ACTIVE)
                self.instrument_states.clear()
                self._dd_rebase = True
            return False
        if cmd is ControlCommand.CANCEL_ALL:
            return True
        raise ValueError(f"unknown control command {cmd!r}")

    def check_drawdown(
        self, portfolio: Portfolio, marks: Mapping[str, Number], now_ts: int = 0
    ) -> Control | None:
        """Mark the portfolio (moves its peak) and trip the kill switch when
        ``peak - equity > cfg.max_drawdown``: the state becomes HALTED globally and the
        KILL_TRIPPED :class:`Control` to publish is returned (reason
        ``"max_drawdown: drawdown D > limit L (peak P, equity E)"``). Returns None when within
        the limit or already HALTED globally (nothing changes)."""
        equity = portfolio.mark(marks)
        if self._dd_rebase:
            self._dd_peak, self._dd_rebase = equity, False
        elif self._dd_peak is None:
            self._dd_peak = portfolio.peak
        else:
            self._dd_peak = max(self._dd_peak, equity)
        drawdown = self._dd_peak - equity
        if drawdown <= self._max_dd or self.state is TradingState.HALTED:
            return None
        reason = (
            f"{Rule.MAX_DRAWDOWN.value}: drawdown {fmt_money(drawdown)} > limit "
            f"{fmt_money(self._max_dd)} (peak {fmt_money(self._dd_peak)}, equity "
            f"{fmt_money(equity)})"
        )
        ts = max(now_ts, self.clock)
        self.set_state(TradingState.HALTED, "", f"{ControlCommand.KILL_TRIPPED.value} ({reason})")
        return Control(ControlCommand.KILL_TRIPPED, "", reason, ts)

    # -- idempotency ---------------------------------------------------------------------------

    def seen(self, order_id: str) -> bool:
        """True when a NEW order with this id was already decided (accepted or refused) and is
        still within the remembered window. Pure query."""
        return order_id in self._seen

    # -- the checks ----------------------------------------------------------------------------

    def check(
        self,
        order: Order,
        book: OrderBook | None,
        portfolio: Portfolio | None,
        now_ts: int,
        working_lots: int = 0,
    ) -> RiskDecision:
        """Decide on ``order`` at event time ``now_ts`` (ns). See the module notes for the rules
        and their order. ``portfolio`` gives the filled position (None: flat);
        ``working_lots`` is the quantity of the instrument's open orders on the order's own side
        (>= 0): the position limit holds for the position they and this order would make if all
        filled. A new order's decision is recorded (for :meth:`seen`); an accepted one counts
        towards the throttle."""
        self.clock = max(self.clock, now_ts)
        if order.action is OrderAction.CANCEL:
            return RiskDecision(True, "accepted: cancel")
        earlier = self._seen.get(order.order_id)
        if earlier is not None:
            return _deny(Rule.DUPLICATE, f"order {order.order_id} already decided ({earlier})")
        decision = self._decide(order, book, portfolio, working_lots)
        self._seen.add(order.order_id, decision.reason if not decision.accepted else "accepted")
        if decision.accepted:
            self._accepted.setdefault(order.instrument, deque()).append(self.clock)
        return decision

    def _decide(
        self,
        order: Order,
        book: OrderBook | None,
        portfolio: Portfolio | None,
        working_lots: int = 0,
    ) -> RiskDecision:
        cfg = self.cfg
        inst = order.instrument
        side = order.side.value
        position = 0 if portfolio is None else portfolio.position(inst)
        reducing = is_reducing(order, position)

        # 1. trading state
        state, why = self.effective_state(inst)
        if state is TradingState.HALTED:
            scope = "all instruments" if self.state is TradingState.HALTED else inst
            return _deny(
                Rule.HALTED,
                f"trading HALTED for {scope}"
                + (f" by {why}" if why else "")
                + f"; new {side} {order.quantity} refused",
            )
        if state is TradingState.REDUCING and not reducing:
            return _deny(
                Rule.REDUCING,
                f"trading REDUCING for {inst}: {side} {order.quantity} "
                f"does not reduce position {position:+d}",
            )
        if order.reduce_only and not reducing:
            return _deny(
                Rule.REDUCE_ONLY,
                f"reduce-only {side} {order.quantity} does not reduce position {position:+d}",
            )

        # 2. fail closed
        if order.quantity <= 0:
            return _deny(Rule.INVALID_ORDER, f"quantity {order.quantity} <= 0")
        if order.order_type is OrderType.LIMIT and order.price <= 0:
            return _deny(Rule.INVALID_ORDER, f"limit price {order.price} <= 0")
        if self.instruments is not None and inst not in self.instruments:
            return _deny(Rule.UNKNOWN_INSTRUMENT, f"{inst} is not in the tradable universe")
        if book is None:
            return _deny(Rule.NO_BOOK, f"no book for {inst} yet")
        if book.instrument != inst:
            return _deny(Rule.NO_BOOK, f"book given is {book.instrument}, order is for {inst}")
        if book.halted:
            return _deny(Rule.VENUE_HALTED, f"the feed reports {inst} halted")
        bid, ask = book.best_bid(), book.best_ask()
        if bid is None or ask is None:
            empty = " and ".join(s for s, p in (("bid", bid), ("ask", ask)) if p is None)
            return _deny(Rule.NO_MARK, f"{inst} book has no {empty}: no mid to price against")
        mid = Fraction(bid + ask, 2)
        if order.order_type is OrderType.MARKET:
            px = Fraction(ask if order.side is OrderSide.BUY else bid)
            px_text = f"{'ask' if order.side is OrderSide.BUY else 'bid'} {px}"
        else:
            px = Fraction(order.price)
            px_text = f"{order.price}"
        scale = Fraction(10) ** (order.price_exp + order.size_exp)

        # 3. notional limits (an order that only reduces exposure is never blocked here)
        if not reducing:
            notional = px * order.quantity * scale
            if notional > self._max_order:
                return _deny(
                    Rule.MAX_ORDER_NOTIONAL,
                    f"{side} {order.quantity} @ {px_text} = {fmt_money(notional)} > "
                    f"limit {fmt_money(self._max_order)}",
                )
            after = position + order.side.sign * (working_lots + order.quantity)
            pos_notional = abs(after) * mid * scale
            if pos_notional > self._max_position:
                return _deny(
                    Rule.MAX_POSITION_NOTIONAL,
                    f"position {position:+d} -> {after:+d} lots x mid "
                    f"{fmt_money(mid)} ticks = {fmt_money(pos_notional)} > limit "
                    f"{fmt_money(self._max_position)}",
                )

        # 4. price band: |price - mid| / mid * 1e4 > band  <=>  |price - mid| * 1e4 > band * mid
        distance = abs(px - mid)
        if distance * 10_000 > self._band_bps * mid:
            bps = distance * 10_000 / mid
            return _deny(
                Rule.PRICE_BAND,
                f"{order.order_type.value} {side} price {px_text} is "
                f"{fmt_money(bps)} bps from mid {fmt_money(mid)} > band "
                f"{fmt_money(self._band_bps)} bps",
            )

        # 5. throttle (sliding window of event time over accepted orders)
        window = self._accepted.get(inst)
        if window is not None:
            while window and window[0] <= self.clock - self._window_ns:
                window.popleft()
            if len(window) >= cfg.max_orders_per_window:
                return _deny(
                    Rule.THROTTLE,
                    f"{len(window)} orders accepted for {inst} in the last "
                    f"{cfg.throttle_window_ms} ms (limit {cfg.max_orders_per_window} "
                    f"per {cfg.throttle_window_ms} ms)",
                )
        elif cfg.max_orders_per_window == 0:
            return _deny(Rule.THROTTLE, f"0 orders allowed per {cfg.throttle_window_ms} ms")

        return RiskDecision(True, "accepted: reducing" if reducing else "accepted")

    # -- state ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (config included)."""
        return {
            "config": dataclasses.asdict(self.cfg),
            "instruments": None if self.instruments is None else sorted(self.instruments),
            "state": self.state.value,
            "state_reason": self.state_reason,
            "instrument_states": {
                k: [s.value, r] for k, (s, r) in sorted(self.instrument_states.items())
            },
            "clock": self.clock,
            "accepted": {k: list(v) for k, v in sorted(self._accepted.items())},
            "seen": {"capacity": self._seen.capacity, "items": self._seen.to_list()},
            "dd_peak": None if self._dd_peak is None else str(self._dd_peak),
            "dd_rebase": self._dd_rebase,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], cfg: RiskConfig | None = None) -> RiskEngine:
        """Rebuild from :meth:`to_dict`; ``cfg`` (if given) replaces the stored limits, the
        state (trading state, throttle windows, seen ids, guard peak) is kept."""
        cfg = cfg if cfg is not None else RiskConfig(**d["config"])
        eng = cls(cfg, d["instruments"], d["seen"]["capacity"])
        eng.state, eng.state_reason = TradingState(d["state"]), d["state_reason"]
        eng.instrument_states = {
            k: (TradingState(s), r) for k, (s, r) in d["instrument_states"].items()
        }
        eng.clock = d["clock"]
        eng._accepted = {k: deque(v) for k, v in d["accepted"].items()}
        eng._seen = BoundedIdSet.from_list(d["seen"]["capacity"], d["seen"]["items"])
        eng._dd_peak = None if d["dd_peak"] is None else Fraction(d["dd_peak"])
        eng._dd_rebase = d["dd_rebase"]
        return eng

    def __getstate__(self) -> dict[str, Any]:
        return self.to_dict()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(RiskEngine.from_dict(state).__dict__)

    def __repr__(self) -> str:
        return (
            f"RiskEngine(state={self.state.value}, instruments_states="
            f"{ {k: s.value for k, (s, _) in self.instrument_states.items()} }, "
            f"clock={self.clock})"
        )
