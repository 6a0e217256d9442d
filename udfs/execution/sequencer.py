"""One deterministic order for the execution sink's inputs, whatever order Kafka hands them over.

The sink reads three topics -- market events, orders (with heartbeats), controls -- whose
records arrive interleaved as the consumer fetches them. The :class:`Sequencer` buffers them and
feeds the :class:`~udfs.execution.engine.ExecutionEngine` in an order that depends on the records
only:

* each instrument's market events keep their stream (partition) order, and so do its orders;
* across queues, the next input is the head with the smallest ``(ts_event, rank, instrument)``,
  rank = control 0, market 1, order 2: an order is fed after every market event stamped at or
  before its decision time, so after the event that triggered it (decision time = trigger time
  plus the feed latency);
* an input is released only when nothing earlier can still arrive. The *safe time* is the
  smallest of

  - for every events partition the sink expects data from, the newest exchange time received
    on it minus the lateness bound (a partition is in exchange-time order within that bound:
    the publisher merges its inputs by time); a partition that has delivered nothing yet holds
    everything back -- this is what keeps a fast-read partition from overtaking a slow one;
  - for every instrument seen, its newest heartbeat (every order decided up to the heartbeat's
    time is published), unless its orders partition is read to its end;

  and unbounded once the inputs are known to be complete (``drain(final=True)``);
* a market event the stream job refused before its book -- older than its instrument's newest
  exchange time minus the bound (``late``), implausibly far ahead of it (``future``, the job's
  rule), or keyed to another instrument (``key_mismatch``) -- is skipped: no order came from it,
  and an instrument the job never keys never sends a heartbeat, so waiting for one would hold
  every input back for good.

So a live run, a replay and a run restarted from its inputs feed the engine identically.

What waits in the queues is bounded by the reader, not here: :meth:`Sequencer.read_ahead` names
the partitions read more than a bound past the safe time (``execution.read_ahead_ms``), which the
sink pauses until the safe time catches up; what is fed does not depend on it.

An input that makes the engine raise (it passed the schema, so this is a defect) is set aside
in :attr:`Sequencer.refused` with where it came from (``origin``, given when it was added) and
the exception; the inputs after it are fed as usual. The sink dead-letters it: one record can
never stop the sink, nor every restart after it (its rebuild meets the same record again and
sets it aside again, deterministically).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from udfs.config import FlinkConfig
from udfs.execution.engine import ExecutionEngine, Output
from udfs.schema import Control, L2Event, Order, OrderAction

__all__ = ["Sequencer"]

_CONTROL, _MARKET, _ORDER = 0, 1, 2


@dataclass
class Sequencer:
    engine: ExecutionEngine
    lateness_ns: int = 0
    """the stream job's lateness bound (``flink.out_of_orderness_ms``), in ns"""
    expected_partitions: set[int] = field(default_factory=set)
    """events partitions with data for this sink: each must deliver before anything is fed"""
    market: dict[str, deque[L2Event]] = field(default_factory=dict)
    orders: dict[str, deque[Order]] = field(default_factory=dict)
    controls: deque[Control] = field(default_factory=deque)
    frontier: dict[str, int] = field(default_factory=dict)
    """instrument -> newest heartbeat time (every order decided up to it is here)"""
    instrument_seen: dict[str, int] = field(default_factory=dict)
    """instrument -> newest market ``ts_event`` received (the lateness rule)"""
    partition_seen: dict[int, int] = field(default_factory=dict)
    """events partition -> newest market ``ts_event`` received on it"""
    market_done: set[int] = field(default_factory=set)
    """events partitions read to their end (bounded runs)"""
    order_partition: dict[str, int] = field(default_factory=dict)
    """instrument -> the orders partition its orders come on"""
    orders_done: set[int] = field(default_factory=set)
    """orders partitions read to their end (bounded runs)"""
    expected_order_partitions: set[int] = field(default_factory=set)
    """orders partitions with data for this sink; once all are read to their end, heartbeats
    no longer matter"""
    max_ahead_ns: int = FlinkConfig().max_ahead_ms * 1_000_000
    """the stream job's ``future`` bound (``flink.max_ahead_ms``), in ns"""
    future_confirm: int = FlinkConfig().future_confirm
    """the stream job's ``flink.future_confirm``"""
    future_run: dict[str, tuple[int, int]] = field(default_factory=dict)
    """instrument -> (exchange time, count) of its current run of far-ahead events"""
    fed: int = 0
    late_skipped: int = 0
    origin: dict[int, object] = field(default_factory=dict)
    """id(input) -> where it came from (e.g. topic, partition, offset), for inputs waiting"""
    refused: list[tuple[object, object, str]] = field(default_factory=list)
    """(origin, input, reason) of inputs the engine raised on; the caller takes them"""

    future_skipped: int = 0
    unkeyed_skipped: int = 0

    def add_market(
        self, ev: L2Event, partition: int = 0, origin: object = None, key: str | None = None
    ) -> None:
        """``key``: the record's Kafka key (None: not known, taken as the instrument)."""
        if key is not None and key != ev.instrument:
            self.unkeyed_skipped += 1  # the job dead-lettered it (key_mismatch)
            return
        newest = self.instrument_seen.get(ev.instrument)
        if newest is not None and ev.ts_event > newest + self.max_ahead_ns:
            # the job's future rule, to the letter: skipped unless a run of them agrees
            ts, run = self.future_run.get(ev.instrument, (0, 0))
            run = run + 1 if run and abs(ev.ts_event - ts) <= self.lateness_ns else 1
            self.future_run[ev.instrument] = (ev.ts_event, run)
            if run < self.future_confirm:
                self.future_skipped += 1
                return
        self.future_run.pop(ev.instrument, None)
        if newest is not None and ev.ts_event < newest - self.lateness_ns:
            self.late_skipped += 1  # the job dead-lettered it as late: not a market fact
            return
        if origin is not None:
            self.origin[id(ev)] = origin
        self.market.setdefault(ev.instrument, deque()).append(ev)
        if newest is None or ev.ts_event > newest:
            self.instrument_seen[ev.instrument] = ev.ts_event
        if ev.ts_event > self.partition_seen.get(partition, -(2**63)):
            self.partition_seen[partition] = ev.ts_event

    def add_order(self, order: Order, partition: int = 0, origin: object = None) -> None:
        self.order_partition[order.instrument] = partition
        if order.action is OrderAction.HEARTBEAT:
            prev = self.frontier.get(order.instrument, 0)
            self.frontier[order.instrument] = max(prev, order.ts_event)
            return
        if origin is not None:
            self.origin[id(order)] = origin
        self.orders.setdefault(order.instrument, deque()).append(order)

    def add_control(self, ctrl: Control, origin: object = None) -> None:
        if origin is not None:
            self.origin[id(ctrl)] = origin
        self.controls.append(ctrl)

    def market_complete(self, partition: int) -> None:
        """Every market event of ``partition`` for this run has been added."""
        self.market_done.add(partition)

    def orders_complete(self, partition: int) -> None:
        """Every order and heartbeat of orders ``partition`` for this run has been added."""
        self.orders_done.add(partition)

    def safe_time(self) -> float:
        safe = float("inf")
        for p in self.expected_partitions | set(self.partition_seen):
            if p in self.market_done:
                continue
            seen = self.partition_seen.get(p)
            if seen is None:
                return float("-inf")
            safe = min(safe, seen - self.lateness_ns)
        all_orders_read = bool(self.orders_done) and self.expected_order_partitions <= (
            self.orders_done
        )
        for inst in () if all_orders_read else set(self.instrument_seen) | set(self.frontier):
            part = self.order_partition.get(inst)
            if part is not None and part in self.orders_done:
                continue
            safe = min(safe, self.frontier.get(inst, float("-inf")))
        # nothing seen and nothing complete yet: nothing is known to be safe
        return safe if safe != float("inf") or self.market_done else float("-inf")

    def read_ahead(self, bound_ns: int) -> tuple[set[int], set[int]]:
        """``(events partitions, orders partitions)`` worth not reading for now: the newest input
        received on each is more than ``bound_ns`` past the safe time. What they would deliver
        next can only wait in the queues, so a reader that pauses them (until they are no longer
        returned here) keeps the queues within about ``bound_ns`` of exchange time past the safe
        time, however long its backlog. The order of what is fed does not change (it depends on
        the records only).

        Never a partition whose next input can move the safe time, so pausing cannot stall it:
        not the events partition it stands on, nor the orders partition of an instrument whose
        heartbeat it waits for. While the safe time is minus infinity (an expected events
        partition has not delivered, or an instrument has had no heartbeat yet), the bound counts
        from the oldest input queued, no orders partition is paused (which one will bring the
        missing heartbeat is unknown) and an events partition that has not delivered is never
        paused either."""
        safe = self.safe_time()
        if safe == float("inf"):
            return set(), set()
        finite = safe != float("-inf")
        if finite:
            since = safe
        else:
            heads = [q[0].ts_event for q in self.market.values() if q]
            heads += [q[0].ts_event for q in self.orders.values() if q]
            if not heads:
                return set(), set()
            since = min(heads)
        limit = since + bound_ns
        events = {
            p
            for p, seen in self.partition_seen.items()
            if p not in self.market_done and seen > limit and seen - self.lateness_ns > safe
        }
        if not finite:
            return events, set()
        newest: dict[int, int] = {}
        holders: set[int] = set()
        for inst, part in self.order_partition.items():
            beat = self.frontier.get(inst)
            if beat is None or beat <= safe:
                holders.add(part)  # its instrument's next heartbeat moves the safe time
            queued = self.orders.get(inst)
            ts = max(beat or 0, queued[-1].ts_event if queued else 0)
            newest[part] = max(newest.get(part, ts), ts)
        orders = {
            p
            for p, ts in newest.items()
            if p not in self.orders_done and p not in holders and ts > limit
        }
        return events, orders

    def pending(self) -> int:
        return (
            sum(len(q) for q in self.market.values())
            + sum(len(q) for q in self.orders.values())
            + len(self.controls)
        )

    def _next(self, limit: float) -> tuple[int, str, Control | L2Event | Order] | None:
        best: tuple[int, int, str] | None = None
        choice: tuple[int, str, Control | L2Event | Order] | None = None
        if self.controls:
            c = self.controls[0]
            best, choice = (c.ts_event, _CONTROL, ""), (_CONTROL, "", c)
        for inst, q in self.market.items():
            if q:
                key = (q[0].ts_event, _MARKET, inst)
                if best is None or key < best:
                    best, choice = key, (_MARKET, inst, q[0])
        for inst, oq in self.orders.items():
            if oq:
                key = (oq[0].ts_event, _ORDER, inst)
                if best is None or key < best:
                    best, choice = key, (_ORDER, inst, oq[0])
        if best is None or best[0] > limit:
            return None
        return choice

    def drain(self, final: bool = False) -> list[Output]:
        """Feed every input that is safe to feed; ``final``: the inputs are complete, feed all
        and let the engine resolve what is in flight."""
        limit = float("inf") if final else self.safe_time()
        out: list[Output] = []
        engine = self.engine
        while (nxt := self._next(limit)) is not None:
            _, inst, item = nxt
            origin = self.origin.pop(id(item), None) if self.origin else None
            try:
                if isinstance(item, Control):
                    self.controls.popleft()
                    out += engine.on_control(item)
                elif isinstance(item, L2Event):
                    self.market[inst].popleft()
                    out += engine.on_market_event(item)
                else:
                    self.orders[inst].popleft()
                    out += engine.on_order(item)
            except Exception as exc:  # a defect: set the input aside, never stop on it
                self.refused.append((origin, item, f"{type(exc).__name__}: {exc}"))
                continue
            self.fed += 1
        if final:
            out += self.engine.finish()
        return out
