"""The trading blotter a desk watches: orders with their state, fills, positions, PnL, the risk
mode and the order -> ack / fill latencies, folded from the trading topics' records (orders,
executions, risk, control). Pure: the live page (jobs/live_page.py) feeds it and serves
:meth:`Blotter.snapshot`.

Latencies are in event time (a report's venue time minus its order's decision time), so a
replay shows the latencies the live run modelled. Prices are exact: integer ticks rendered
with their exponent as decimal text, never through a float.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from decimal import Decimal

from udfs.schema import (
    Control,
    ControlCommand,
    ExecKind,
    ExecReport,
    Order,
    OrderAction,
    RiskReport,
)

ROWS_SHOWN = 200
"""Newest orders kept for the table."""
LATENCY_WINDOW = 10_000
"""Newest latencies kept for the percentiles."""


def decimal_text(units: int, exp: int) -> str:
    """``units`` x 10^``exp`` as exact decimal text (ticks -> price)."""
    return format(Decimal(units).scaleb(exp).normalize(), "f") if units else "0"


def percentiles_ms(values_ns: deque[int]) -> dict[str, float | int | None]:
    """p50/p95/p99/max in milliseconds (nearest rank: the ceil(q n)-th smallest), and n."""
    if not values_ns:
        return {"p50": None, "p95": None, "p99": None, "max": None, "n": 0}
    ordered = sorted(values_ns)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * n) - 1)] / 1e6

    return {
        "p50": rank(0.5),
        "p95": rank(0.95),
        "p99": rank(0.99),
        "max": ordered[-1] / 1e6,
        "n": n,
    }


@dataclass
class OrderRow:
    order_id: str
    instrument: str
    side: str
    price: str
    quantity: int
    ts_event: int
    status: str = "sent"
    filled: int = 0
    reason: str = ""


@dataclass
class Blotter:
    drawdown_mode: str = "REDUCING"
    """The mode a KILL_TRIPPED (the sink's own drawdown guard) puts trading in."""
    orders: OrderedDict[str, OrderRow] = field(default_factory=OrderedDict)
    sent_at: dict[str, int] = field(default_factory=dict)
    """order id -> decision time (ns), for latencies; dropped when the order is done"""
    counts: dict[str, int] = field(
        default_factory=lambda: {"orders": 0, "acks": 0, "rejects": 0, "fills": 0, "cancels": 0}
    )
    filled_lots: int = 0
    mode: str = "ACTIVE"
    mode_reason: str = ""
    pnl: dict[str, float] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)
    ack_latency_ns: deque[int] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    fill_latency_ns: deque[int] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    early: dict[str, list[ExecReport]] = field(default_factory=dict)
    """reports read before their order, by order id (bounded)"""
    last_event_ns: int = 0
    version: int = 0
    """Bumped by every change: the page pushes a snapshot only when it moved."""

    def on_order(self, order: Order) -> None:
        if order.action is not OrderAction.NEW:
            return  # cancels and heartbeats change no row by themselves
        self.counts["orders"] += 1
        self.orders[order.order_id] = OrderRow(
            order_id=order.order_id,
            instrument=order.instrument,
            side=order.side.value,
            price=decimal_text(order.price, order.price_exp),
            quantity=order.quantity,
            ts_event=order.ts_event,
        )
        self.sent_at[order.order_id] = order.ts_event
        while len(self.orders) > ROWS_SHOWN:
            self.orders.popitem(last=False)
        self._touch(order.ts_event)
        for rep in self.early.pop(order.order_id, []):
            self._apply_report(rep)

    def on_report(self, rep: ExecReport) -> None:
        if rep.order_id not in self.sent_at and rep.order_id not in self.orders:
            # read before its order (the two topics are read side by side): held until the
            # order arrives; an order id never seen stays out of the figures
            held = self.early.setdefault(rep.order_id, [])
            held.append(rep)
            while len(self.early) > LATENCY_WINDOW:
                self.early.pop(next(iter(self.early)))
            return
        self._apply_report(rep)

    def _apply_report(self, rep: ExecReport) -> None:
        row = self.orders.get(rep.order_id)
        sent = self.sent_at.get(rep.order_id)
        if rep.kind is ExecKind.ACK:
            self.counts["acks"] += 1
            if sent is not None:
                self.ack_latency_ns.append(rep.ts_event - sent)
        elif rep.kind is ExecKind.REJECT:
            self.counts["rejects"] += 1
            self.sent_at.pop(rep.order_id, None)
        elif rep.kind is ExecKind.FILL:
            self.counts["fills"] += 1
            self.filled_lots += rep.fill_qty
            if sent is not None:
                self.fill_latency_ns.append(rep.ts_event - sent)
            if rep.leaves_qty == 0:
                self.sent_at.pop(rep.order_id, None)
        elif rep.kind is ExecKind.CANCELED:
            self.counts["cancels"] += 1
            self.sent_at.pop(rep.order_id, None)
        if row is not None:
            row.status = {
                "ack": "working",
                "fill": "filled" if rep.leaves_qty == 0 else "partial",
            }.get(rep.kind.value, rep.kind.value)
            row.filled += rep.fill_qty
            row.reason = rep.reason
        self._touch(rep.ts_event)

    def on_risk(self, report: RiskReport) -> None:
        self.pnl = {
            "equity": report.equity,
            "realised": report.realised_pnl,
            "unrealised": report.unrealised_pnl,
            "fees": report.fees,
            "drawdown": report.drawdown,
            "var_99": report.var_99,
        }
        self.positions = dict(report.positions)
        self._touch(report.ts_event)

    def on_control(self, ctrl: Control) -> None:
        mode = {
            ControlCommand.KILL: "HALTED",
            ControlCommand.REDUCE: "REDUCING",
            ControlCommand.RESUME: "ACTIVE",
            ControlCommand.KILL_TRIPPED: self.drawdown_mode,
        }.get(ctrl.command)
        if mode is not None and not ctrl.instrument:  # global modes; per-instrument in reasons
            self.mode, self.mode_reason = mode, f"{ctrl.command.value}: {ctrl.reason}"
        self._touch(ctrl.ts_event)

    def _touch(self, ts: int) -> None:
        self.last_event_ns = max(self.last_event_ns, ts)
        self.version += 1

    def snapshot(self) -> dict[str, object]:
        """What the page shows, JSON-ready; orders newest first."""
        return {
            "version": self.version,
            "mode": self.mode,
            "mode_reason": self.mode_reason,
            "counts": dict(self.counts),
            "filled_lots": self.filled_lots,
            "pnl": dict(self.pnl),
            "positions": dict(sorted(self.positions.items())),
            "latency_ms": {
                "order_to_ack": percentiles_ms(self.ack_latency_ns),
                "order_to_fill": percentiles_ms(self.fill_latency_ns),
            },
            "last_event_ns": self.last_event_ns,
            "orders": [vars(row).copy() for row in reversed(self.orders.values())],
        }
