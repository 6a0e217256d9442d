"""The execution sink's deterministic core: market data, orders and controls in; execution
reports, kill-switch trips and risk reports out.

Pure Python (numpy only through the VaR/ES helpers), no Flink, no Kafka, no clock: a service
that consumes the market, order and control topics feeds an :class:`ExecutionEngine` and
publishes what it returns (:data:`Output` records, serialised with
:func:`~udfs.schema.encode_record`). The engine wires together

* one :class:`~udfs.execution.venue.PaperVenue` per instrument (created on the instrument's first
market
  event; it keeps the instrument's order book and fills the orders, with latency, in event time);
* one :class:`~udfs.execution.risk.RiskEngine` (pre-trade checks, trading state, kill switch,
drawdown
  guard) and one :class:`~udfs.execution.portfolio.Portfolio` (positions, P&L, fees, peak and
  drawdown)
  shared by every instrument.

Ordering contract (the caller's job; the engine does not reorder or buffer)
---------------------------------------------------------------------------
* Per instrument, market events are delivered in stream order (the order of the instrument's
  partition). Instruments may be interleaved in any way: each venue only sees its own stream.
* An order is delivered only *after* the market event that triggered it (``order.source_seq`` /
  ``order.ts_event``) has been fed: it is risk-checked against the venue's book as it is when the
  order is fed, and sent with ``decision_ts = order.ts_event``; it reaches the venue
  ``entry latency`` later, so it meets the first book stamped after its arrival (see
  :mod:`udfs.execution.venue`). An order fed late (its arrival already behind the venue's clock) is
  handled
  at once on the current book.
* A control applies from the next input on: a KILL between two orders refuses the second.
* :meth:`ExecutionEngine.finish` at end of input advances every venue to the last market time
  (the latest ``ts_event`` of any instrument, or a later ``until_ts``), so the requests that
  arrived by then resolve on the final book; requests arriving later stay pending.

Fed the same inputs in the same order, the engine returns the same outputs (byte-identical
after ``encode_record``); the whole engine pickles, and a restored copy continues exactly as the
original would (the venues' seeded latency draws included).

Inputs
------
:meth:`~ExecutionEngine.on_market_event`
    Risk report(s) due (see below), then the venue's reports for the event (activated orders,
    fills of resting orders), fills booked into the portfolio; after a complete batch
    (``F_LAST``) the instrument's mark (the mid, exact ticks) is updated; then the drawdown guard.
:meth:`~ExecutionEngine.on_order`
    Idempotent per ``(action, order_id)``: a second NEW with an id already seen, or a second
    CANCEL of the same target id, returns nothing and counts in ``stats["duplicates"]`` (a NEW
    and the CANCEL of that order share the id, so they are different keys). NEW: pre-trade risk
    at ``order.ts_event`` against the instrument's venue book and its exposure (the filled
    position plus the orders resting at and in flight to the venue); a refusal
    returns the REJECT report of :func:`~udfs.execution.risk.reject_report` (reason ``"<rule>:
    ..."``) and
    never reaches the venue; an acceptance is submitted to the venue. Orders for an instrument
    without market data are refused by the risk engine (``no_book``). CANCEL: passed to the
    venue (always allowed, also when HALTED); a cancel for an instrument without a venue is
    rejected here (``"cancel: no market data ..."``).
:meth:`~ExecutionEngine.on_control`
    KILL / REDUCE / RESUME set the risk engine's trading mode HALTED / REDUCING / ACTIVE
    (global when ``instrument`` is empty, else that instrument; see
    :mod:`udfs.execution.risk`). KILL refuses new orders; it does not cancel the resting ones
    (send CANCEL_ALL for that) -- resting orders can still fill. CANCEL_ALL cancels at once, at each
    venue's current time, every resting and still-pending order of ``instrument`` (all
    instruments when empty). KILL_TRIPPED is what the engine itself publishes when the drawdown
    guard trips; its echo from the control topic is ignored (``stats["controls_ignored"]``).

Outputs
-------
:class:`~udfs.schema.ExecReport`
    ACK / FILL / CANCELED / REJECT. Every report's ``position`` is the instrument's portfolio
    position right after it (fills are booked in report order; the engine checks that the
    venue's position and the portfolio's agree after every fill).
:class:`~udfs.schema.Control` ``KILL_TRIPPED``
    When ``peak - equity`` (exact, the risk engine's guard peak) exceeds
    ``RiskConfig.max_drawdown``; the engine is then in ``RiskConfig.drawdown_mode`` (REDUCING
    by default: closing orders still pass) until a global RESUME, which restarts the guard's
    peak at the current equity. The guard runs after every complete batch and after
    every fill, once the portfolio holds (or held) a position.
:class:`~udfs.schema.RiskReport`
    Every ``risk_interval_ms`` of event time. Interval boundaries are multiples of the interval
    (ns since the epoch); the report of boundary ``b`` is emitted when the first market event
    with ``ts_event >= b`` arrives (of any instrument; the engine's clock is the largest market
    ``ts_event`` seen), *before* that event is applied, so it describes the state after every
    event fed before it. At each boundary the current mark of every instrument that has one is
    sampled; when one event crosses several boundaries (a quiet market) every crossed boundary
    is sampled (the quiet intervals are zero-return scenarios) and one report is emitted,
    stamped with the last boundary crossed. VaR/ES 99% are historical simulation of the CURRENT
    positions at the current marks over the last ``var_window`` per-interval mid returns
    (:func:`~udfs.execution.portfolio.position_pnl_scenarios`,
    :func:`~udfs.execution.portfolio.historical_var`,
    :func:`~udfs.execution.portfolio.expected_shortfall`): losses positive; ``scenarios`` says how
    many
    intervals were used (the held instruments' histories aligned on their common most recent
    boundaries). Flat, or a held instrument without two samples yet: ``var_99 = es_99 = 0`` and
    ``scenarios = 0``. ``es_99`` is floored at ``var_99`` (ES >= VaR holds exactly; this only
    removes float rounding). ``positions`` lists every instrument with a venue or a position.
"""

from __future__ import annotations

from collections import deque
from fractions import Fraction

from udfs.config import RiskConfig, VenueConfig
from udfs.execution.portfolio import (
    BoundedIdSet,
    Portfolio,
    expected_shortfall,
    historical_var,
    position_pnl_scenarios,
)
from udfs.execution.risk import OpenLots, RiskEngine, reject_report
from udfs.execution.venue import PaperVenue
from udfs.schema import (
    F_LAST,
    Control,
    ControlCommand,
    ExecKind,
    ExecReport,
    L2Event,
    Order,
    OrderAction,
    RiskReport,
)

__all__ = ["ExecutionEngine", "Output"]

Output = ExecReport | Control | RiskReport
"""What the engine returns, in publication order."""

_NS_PER_MS = 1_000_000
_ALPHA = 0.99

_STAT_KEYS = (
    "market_events",
    "orders_in",
    "new_orders",
    "cancel_requests",
    "duplicates",
    "accepted",
    "rejected",
    "venue_rejects",
    "acks",
    "fills",
    "filled_lots",
    "cancels",
    "controls_in",
    "kills",
    "reduces",
    "resumes",
    "cancel_alls",
    "controls_ignored",
    "kill_tripped",
    "risk_reports",
)


class ExecutionEngine:
    """Deterministic execution sink core; see the module docstring for the contracts.

    ``risk_interval_ms``: event time between risk reports. ``var_window``: how many per-interval
    mid returns (the most recent) the VaR/ES are computed over. ``seen_capacity``: how many
    order keys are remembered for idempotency (oldest forgotten first).
    """

    def __init__(
        self,
        risk_cfg: RiskConfig,
        venue_cfg: VenueConfig,
        *,
        risk_interval_ms: int = 1000,
        var_window: int = 500,
        seen_capacity: int = 100_000,
    ) -> None:
        if risk_interval_ms <= 0:
            raise ValueError(f"risk_interval_ms must be positive, got {risk_interval_ms}")
        if var_window < 1:
            raise ValueError(f"var_window must be >= 1, got {var_window}")
        self.risk_cfg = risk_cfg
        self.venue_cfg = venue_cfg
        self.risk_interval_ns = risk_interval_ms * _NS_PER_MS
        self.var_window = var_window
        self.risk = RiskEngine(risk_cfg, seen_capacity=seen_capacity)
        self.portfolio = Portfolio()
        self.venues: dict[str, PaperVenue] = {}
        self.marks: dict[str, Fraction] = {}
        """current mid per instrument, exact ticks (updated after each complete batch)"""
        self.clock = 0
        """largest market ``ts_event`` seen (ns)"""
        self._next_boundary: int | None = None
        self._mid_history: dict[str, deque[float]] = {}
        """mid sampled at each risk boundary since the instrument got a mark (contiguous)"""
        self._seen = BoundedIdSet(seen_capacity)
        """``"<action>:<order_id>"`` of every order message handled"""
        self.stats: dict[str, int] = dict.fromkeys(_STAT_KEYS, 0)

    # ------------------------------------------------------------------------------ inputs

    def on_market_event(self, ev: L2Event) -> list[Output]:
        """Feed one market record (per instrument in stream order)."""
        self.stats["market_events"] += 1
        out: list[Output] = []
        if ev.ts_event > self.clock:
            out += self._risk_boundaries(ev.ts_event)
            self.clock = ev.ts_event
        venue = self.venues.get(ev.instrument)
        if venue is None:
            venue = self.venues[ev.instrument] = PaperVenue(ev.instrument, self.venue_cfg)
        reports = venue.on_market_event(ev)
        filled = self._book(reports, out)
        if ev.flags & F_LAST:
            bid, ask = venue.book.best_bid(), venue.book.best_ask()
            if bid is not None and ask is not None:
                self.marks[ev.instrument] = Fraction(bid + ask, 2)
            out += self._guard(ev.ts_event)
        elif filled:
            out += self._guard(ev.ts_event)
        return out

    def on_order(self, order: Order) -> list[Output]:
        """Feed one order message (NEW or CANCEL), after its triggering market event."""
        self.stats["orders_in"] += 1
        key = f"{order.action.value}:{order.order_id}"
        if key in self._seen:
            self.stats["duplicates"] += 1
            return []
        self._seen.add(key)
        inst = order.instrument
        venue = self.venues.get(inst)
        out: list[Output] = []
        if order.action is OrderAction.CANCEL:
            self.stats["cancel_requests"] += 1
            self.risk.check(order, None, self.portfolio, order.ts_event)  # advances its clock
            if venue is None:
                self.stats["venue_rejects"] += 1
                out.append(
                    ExecReport(
                        report_id=f"{order.order_id}:cancel-reject",
                        order_id=order.order_id,
                        instrument=inst,
                        kind=ExecKind.REJECT,
                        ts_event=order.ts_event,
                        reason=f"cancel: no market data for {inst} yet (no venue)",
                        side=order.side.value,
                        position=self.portfolio.position(inst),
                        price_exp=order.price_exp,
                        size_exp=order.size_exp,
                    )
                )
                return out
            filled = self._book(venue.submit(order, decision_ts=order.ts_event), out)
            if filled:
                out += self._guard(order.ts_event)
            return out
        self.stats["new_orders"] += 1
        # every check sees the exposure: filled position + resting + in-flight orders
        decision = self.risk.check(
            order,
            venue.book if venue is not None else None,
            self.portfolio,
            order.ts_event,
            OpenLots() if venue is None else OpenLots(*venue.open_lots()),
        )
        if decision.duplicate:  # decided earlier and forgotten by our own window: drop it
            self.stats["duplicates"] += 1
            return []
        if not decision.accepted:
            self.stats["rejected"] += 1
            out.append(reject_report(order, decision, self.portfolio.position(inst)))
            return out
        self.stats["accepted"] += 1
        assert venue is not None  # the risk engine refuses orders without a book
        filled = self._book(venue.submit(order, decision_ts=order.ts_event), out)
        if filled:
            out += self._guard(order.ts_event)
        return out

    def on_control(self, ctrl: Control) -> list[Output]:
        """Feed one control command; it applies to every input fed after it."""
        self.stats["controls_in"] += 1
        cmd = ctrl.command
        if cmd is ControlCommand.KILL_TRIPPED:  # our own trip, echoed by the control topic
            self.stats["controls_ignored"] += 1
            return []
        cancel = self.risk.on_control(ctrl)
        if cmd is ControlCommand.KILL:
            self.stats["kills"] += 1
        elif cmd is ControlCommand.REDUCE:
            self.stats["reduces"] += 1
        elif cmd is ControlCommand.RESUME:
            self.stats["resumes"] += 1
        out: list[Output] = []
        if cancel:
            self.stats["cancel_alls"] += 1
            names = [ctrl.instrument] if ctrl.instrument else sorted(self.venues)
            for name in names:
                venue = self.venues.get(name)
                if venue is not None:
                    self._book(venue.cancel_all(), out)
        return out

    def finish(self, until_ts: int | None = None) -> list[Output]:
        """End of input: no more market data is coming. Every venue is advanced to the last
        market time (the engine clock: the latest ``ts_event`` of any instrument) or to
        ``until_ts`` when later, so the requests that arrived by then resolve on the venue's
        final book. A request arriving after that stays pending (see :meth:`pending`): pass
        e.g. ``until_ts = clock + entry latency`` to flush those too."""
        target = self.clock if until_ts is None else max(self.clock, until_ts)
        out: list[Output] = []
        filled = False
        for name in sorted(self.venues):
            filled |= self._book(self.venues[name].advance_to(target), out)
        if filled:
            out += self._guard(target)
        return out

    # ----------------------------------------------------------------------------- queries

    def positions(self) -> dict[str, int]:
        """Signed lots per instrument (every instrument with a venue or a position), sorted."""
        names = sorted(set(self.venues) | set(self.portfolio.positions))
        return {name: self.portfolio.position(name) for name in names}

    def pnl(self) -> dict[str, float]:
        """realised, unrealised (at the current marks), fees, equity, drawdown (from the
        portfolio's peak; pure: does not move it), quote currency."""
        pf = self.portfolio
        equity = pf.equity_exact(self.marks)
        return {
            "realised": float(pf.realised_exact()),
            "unrealised": float(pf.unrealised_exact(self.marks)),
            "fees": float(pf.fees_exact()),
            "equity": float(equity),
            "drawdown": float(max(pf.peak, equity) - equity),
        }

    def pending(self) -> dict[str, int]:
        """Requests still in flight to each venue (sent, not arrived yet)."""
        return {name: self.venues[name].pending_count for name in sorted(self.venues)}

    def open_orders(self) -> dict[str, list[str]]:
        """Order ids resting at each venue (priority order)."""
        return {
            name: [w.order.order_id for w in self.venues[name].open_orders()]
            for name in sorted(self.venues)
        }

    # --------------------------------------------------------------------------- internals

    def _book(self, reports: list[ExecReport], out: list[Output]) -> bool:
        """Book ``reports`` (fills into the portfolio), count them, append them to ``out``.
        Returns True when there was a fill."""
        filled = False
        for rep in reports:
            kind = rep.kind
            if kind is ExecKind.FILL:
                self.portfolio.apply_fill(rep)
                held = self.portfolio.position(rep.instrument)
                if held != rep.position:
                    raise RuntimeError(
                        f"fill {rep.report_id}: venue position {rep.position} "
                        f"!= portfolio position {held}"
                    )
                self.stats["fills"] += 1
                self.stats["filled_lots"] += rep.fill_qty
                filled = True
            elif kind is ExecKind.ACK:
                self.stats["acks"] += 1
            elif kind is ExecKind.CANCELED:
                self.stats["cancels"] += 1
            elif kind is ExecKind.REJECT:
                self.stats["venue_rejects"] += 1
            out.append(rep)
        return filled

    def _guard(self, ts: int) -> list[Output]:
        """The drawdown guard (only once something was ever filled: before that equity is
        exactly the starting capital)."""
        if not self.portfolio.positions:
            return []
        trip = self.risk.check_drawdown(self.portfolio, self.marks, ts)
        if trip is None:
            return []
        self.stats["kill_tripped"] += 1
        return [trip]

    def _risk_boundaries(self, ts: int) -> list[Output]:
        """Sample the marks at every boundary in ``(clock, ts]`` and emit one report for the
        last of them."""
        step = self.risk_interval_ns
        if self._next_boundary is None:
            self._next_boundary = (ts // step + 1) * step
            return []
        if ts < self._next_boundary:
            return []
        crossed = (ts - self._next_boundary) // step + 1
        last = self._next_boundary + (crossed - 1) * step
        self._next_boundary = last + step
        for name in sorted(self.marks):
            hist = self._mid_history.get(name)
            if hist is None:
                hist = self._mid_history[name] = deque(maxlen=self.var_window + 1)
            mid = float(self.marks[name])
            hist.extend([mid] * min(crossed, self.var_window + 1))
        return [self._risk_report(last)]

    def _risk_report(self, ts: int) -> RiskReport:
        pf = self.portfolio
        var = es = 0.0
        scenarios = 0
        held = {n: p for n, p in pf.positions.items() if p.quantity != 0}
        if held:
            lengths = [len(self._mid_history.get(n, ())) for n in held]
            n_mids = min(lengths)
            if n_mids >= 2 and all(n in self.marks for n in held):
                history = {n: list(self._mid_history[n])[-n_mids:] for n in held}
                pnl = position_pnl_scenarios(held, self.marks, history)
                var = historical_var(pnl, _ALPHA)
                es = max(expected_shortfall(pnl, _ALPHA), var)
                scenarios = n_mids - 1
        equity = pf.mark(self.marks)
        self.stats["risk_reports"] += 1
        return RiskReport(
            ts_event=ts,
            var_99=var,
            es_99=es,
            drawdown=float(pf.drawdown_exact),
            equity=float(equity),
            realised_pnl=float(pf.realised_exact()),
            unrealised_pnl=float(pf.unrealised_exact(self.marks)),
            fees=float(pf.fees_exact()),
            positions=self.positions(),
            scenarios=scenarios,
        )

    def __repr__(self) -> str:
        return (
            f"ExecutionEngine(instruments={sorted(self.venues)}, "
            f"positions={ {k: v for k, v in self.positions().items() if v} }, "
            f"mode={self.risk.mode.value}, clock={self.clock})"
        )
