"""One deterministic order for the execution sink's inputs, whatever order Kafka hands them over.

The sink reads three topics -- market events, orders (with heartbeats), controls -- whose
records arrive interleaved as the consumer fetches them. The :class:`Sequencer` buffers them and
feeds the :class:`~udfs.execution.ExecutionEngine` in an order that depends on the records only:

* each instrument's market events keep their stream (partition) order, and so do its orders;
* across queues, the next input is the head with the smallest ``(ts_event, rank, instrument)``,
  rank = control 0, market 1, order 2: an order is fed after every market event stamped at or
  before its decision time, so after the event that triggered it (decision time = trigger time
  plus the feed latency);
* an input is released only when nothing earlier can still arrive: the *safe time* is, over
  the instruments that trade, the smallest of their heartbeat time (a heartbeat says every order
  decided up to its time is published) and the newest market time received for them (the
  events topic is read separately and may lag), or unbounded once the inputs are known to be
  complete (``drain(final=True)``: a bounded run, a replay).

So a live run, a replay and a run restarted from its inputs feed the engine identically.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from udfs.execution import ExecutionEngine, Output
from udfs.schema import Control, L2Event, Order, OrderAction

__all__ = ["Sequencer"]

_CONTROL, _MARKET, _ORDER = 0, 1, 2


@dataclass
class Sequencer:
    engine: ExecutionEngine
    market: dict[str, deque[L2Event]] = field(default_factory=dict)
    orders: dict[str, deque[Order]] = field(default_factory=dict)
    controls: deque[Control] = field(default_factory=deque)
    frontier: dict[str, int] = field(default_factory=dict)
    """instrument -> newest heartbeat time (every order decided up to it is here)"""
    market_seen: dict[str, int] = field(default_factory=dict)
    """instrument -> newest market ``ts_event`` received"""
    fed: int = 0

    def add_market(self, ev: L2Event) -> None:
        self.market.setdefault(ev.instrument, deque()).append(ev)
        if ev.ts_event > self.market_seen.get(ev.instrument, 0):
            self.market_seen[ev.instrument] = ev.ts_event

    def add_order(self, order: Order) -> None:
        if order.action is OrderAction.HEARTBEAT:
            prev = self.frontier.get(order.instrument, 0)
            self.frontier[order.instrument] = max(prev, order.ts_event)
            return
        self.orders.setdefault(order.instrument, deque()).append(order)

    def add_control(self, ctrl: Control) -> None:
        self.controls.append(ctrl)

    def safe_time(self) -> float:
        if not self.frontier:
            return float("-inf")
        return min(min(beat, self.market_seen.get(inst, 0))
                   for inst, beat in self.frontier.items())

    def pending(self) -> int:
        return (sum(len(q) for q in self.market.values())
                + sum(len(q) for q in self.orders.values()) + len(self.controls))

    def _next(self, limit: float) -> tuple[int, str, object] | None:
        best: tuple[int, int, str] | None = None
        choice = None
        if self.controls:
            c = self.controls[0]
            best, choice = (c.ts_event, _CONTROL, ""), (_CONTROL, "", c)
        for inst, q in self.market.items():
            if q:
                key = (q[0].ts_event, _MARKET, inst)
                if best is None or key < best:
                    best, choice = key, (_MARKET, inst, q[0])
        for inst, q in self.orders.items():
            if q:
                key = (q[0].ts_event, _ORDER, inst)
                if best is None or key < best:
                    best, choice = key, (_ORDER, inst, q[0])
        if best is None or best[0] > limit:
            return None
        return choice

    def drain(self, final: bool = False) -> list[Output]:
        """Feed every input that is safe to feed; ``final``: the inputs are complete, feed all
        and let the engine resolve what is in flight."""
        limit = float("inf") if final else self.safe_time()
        out: list[Output] = []
        while (nxt := self._next(limit)) is not None:
            kind, inst, item = nxt
            if kind == _CONTROL:
                self.controls.popleft()
                out += self.engine.on_control(item)
            elif kind == _MARKET:
                self.market[inst].popleft()
                out += self.engine.on_market_event(item)
            else:
                self.orders[inst].popleft()
                out += self.engine.on_order(item)
            self.fed += 1
        if final:
            out += self.engine.finish()
        return out
