"""Opening a user's source files as one stream of L2 events, whatever the format.

A :class:`Source` yields :class:`~udfs.schema.L2Event` records in feed order and collects the
lines it could not read (with file, line and reason) so the caller can dead-letter them:
``events_in`` counts both. What an input lost beyond its bad lines is reported too
(:meth:`Source.problems`): a LOBSTER file stopped at a bad row (the rest of it is not read), a
Binance capture whose diff chain broke (the diffs after the break are dropped: counted, never
applied).
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from udfs.config import PROJECT_ROOT
from udfs.market.adapters.binance import BinanceAdapter, BinanceStats
from udfs.market.adapters.lobster import LobsterStats, iter_lobster_events
from udfs.schema import L2Event

__all__ = [
    "LOOP_SEAM_NS",
    "SAMPLE_BINANCE",
    "SAMPLE_LOBSTER",
    "BadLine",
    "Source",
    "looped",
    "paced_due_ns",
]

LOOP_SEAM_NS = 10**9
"""Exchange time between the last event of one ``--loop`` pass and the first of the next."""

SAMPLE_LOBSTER = (
    PROJECT_ROOT / "data/lobster/AAPL_2012-06-21_34200000_57600000_message_10.csv",
    PROJECT_ROOT / "data/lobster/AAPL_2012-06-21_34200000_57600000_orderbook_10.csv",
)
SAMPLE_BINANCE = (PROJECT_ROOT / "data/binance/usdm/btcusdt_20240718.gz",)


@dataclass(frozen=True, slots=True)
class BadLine:
    file: str
    line: int
    raw: bytes
    reason: str


@dataclass
class Source:
    """``lobster``: (message file, orderbook file) pairs; ``binance``: captures, each a list of
    files read in order as one stream."""

    lobster: list[tuple[Path, Path]] = field(default_factory=list)
    binance: list[list[Path]] = field(default_factory=list)
    bad_lines: list[BadLine] = field(default_factory=list)
    lobster_stats: list[LobsterStats] = field(default_factory=list)
    binance_stats: list[tuple[str, BinanceStats]] = field(default_factory=list)
    """(instrument, stats) per capture, filled while :meth:`events` runs"""

    @classmethod
    def sample(cls) -> Source:
        return cls(lobster=[SAMPLE_LOBSTER], binance=[list(SAMPLE_BINANCE)])

    def describe(self) -> str:
        parts = [f"lobster {m.name}" for m, _ in self.lobster]
        parts += [f"binance {', '.join(p.name for p in files)}" for files in self.binance]
        return "; ".join(parts)

    def check_files(self) -> None:
        for path in [p for pair in self.lobster for p in pair] + [
            p for files in self.binance for p in files
        ]:
            if not Path(path).is_file():
                raise FileNotFoundError(f"source file not found: {path}")

    def events(self, refresh_interval_ms: int | None = None) -> Iterator[L2Event]:
        """Every event of every input, merged by exchange time the way a live feed would have
        delivered them (each input keeps its own order; a tie goes to the earlier input).
        Instruments that share a Kafka partition then arrive there in time order, which is what
        lets a consumer of several partitions tell when nothing earlier can still come
        (``udfs/execution/sequencer.py``); ``--speed`` pacing needs it too.
        ``refresh_interval_ms``: the adapters' refresh snapshots (``feed`` section of the
        config; None: its default)."""
        inputs: list[Iterator[L2Event]] = []
        for message_file, orderbook_file in self.lobster:
            stats = LobsterStats()
            self.lobster_stats.append(stats)
            inputs.append(
                iter_lobster_events(
                    message_file,
                    orderbook_file,
                    stats=stats,
                    on_bad_line=self._bad_line,
                    refresh_interval_ms=refresh_interval_ms,
                )
            )
        for files in self.binance:
            adapter = BinanceAdapter(files, refresh_interval_ms=refresh_interval_ms)
            adapter.on_bad_line = self._bad_line
            self.binance_stats.append((adapter.instrument, adapter.stats))
            inputs.append(iter(adapter))
        if len(inputs) == 1:
            yield from inputs[0]
        else:
            yield from heapq.merge(*inputs, key=_exchange_time)

    def problems(self) -> dict[str, object]:
        """What the inputs lost besides their bad lines (after :meth:`events` ran): LOBSTER
        files stopped early (``file row N: reason``), Binance chain breaks and the diffs they
        dropped. Empty when nothing was lost."""
        out: dict[str, object] = {}
        stopped = [st.stopped_at for st in self.lobster_stats if st.stopped_at]
        stopped += [f"{inst}: {st.stopped_at}" for inst, st in self.binance_stats if st.stopped_at]
        if stopped:
            out["stopped_early"] = stopped
        breaks = {
            inst: {
                "resyncs": st.resyncs,
                "diffs_dropped_unsynced": st.diffs_dropped_unsynced,
                "first_break": st.resync_details[0] if st.resync_details else "",
            }
            for inst, st in self.binance_stats
            if st.resyncs or st.diffs_dropped_unsynced
        }
        if breaks:
            out["chain_breaks"] = breaks
        return out

    def _bad_line(self, file: str, line: int, raw: bytes, reason: str) -> None:
        self.bad_lines.append(BadLine(file, line, raw, reason))


def _exchange_time(ev: L2Event) -> int:
    return ev.ts_event


def looped(passes: Callable[[], Iterable[L2Event]], loops: int) -> Iterator[L2Event]:
    """The input ``loops`` times over (0: until the consumer stops), for a live session that
    should not run dry. ``passes()`` opens the input again for every pass. Pass ``n`` is pass 0
    moved ``n`` x (the input's span + :data:`LOOP_SEAM_NS`) later, exchange and receive times
    alike, and each instrument's sequence numbers (``seq``, ``seq_first``, ``seq_prev``; 0
    stays 0: "none") ``n`` x (its highest in pass 0 + 1) higher: time and each chain only move
    forward, instruments that share a partition still arrive in time order, and nothing is a
    duplicate of an earlier pass. The seam is short, so an input of one session continues
    without a jump; an input spanning eras (the sample: a 2012 LOBSTER day, a 2024 capture)
    moves its older instruments far ahead at each seam, which the stream job takes as a
    genuine jump (``flink.future_confirm``: the records before it confirms are dead-lettered
    ``future``). Pass 0 is the input unchanged."""
    n = 0
    step_ns = 0
    seq_step: dict[str, int] = {}
    while loops == 0 or n < loops:
        first = last = None
        for ev in passes():
            if n == 0:
                first = ev.ts_event if first is None else min(first, ev.ts_event)
                last = ev.ts_event if last is None else max(last, ev.ts_event)
                seq_step[ev.instrument] = max(seq_step.get(ev.instrument, 0), ev.seq + 1)
                yield ev
                continue
            dt, ds = n * step_ns, n * seq_step.get(ev.instrument, 0)
            yield dataclasses.replace(
                ev,
                ts_event=ev.ts_event + dt,
                ts_recv=ev.ts_recv + dt if ev.ts_recv else 0,
                seq=ev.seq + ds if ev.seq else 0,
                seq_first=ev.seq_first + ds if ev.seq_first else 0,
                seq_prev=ev.seq_prev + ds if ev.seq_prev else 0,
            )
        if n == 0:
            if first is None or last is None:
                return  # an empty input stays empty
            step_ns = last - first + LOOP_SEAM_NS
        n += 1


def paced_due_ns(ts_event: int, state: list[int], max_gap_ns: int) -> int:
    """Exchange time elapsed since the first event (the time ``--speed`` pacing waits for),
    with every gap between consecutive events cut to ``max_gap_ns``: a replay does not sit
    through a closed market, a night between two files or the years between two captures.
    ``state`` is ``[previous exchange time, elapsed]``, empty before the first event."""
    if not state:
        state[:] = [ts_event, 0]
        return 0
    gap = ts_event - state[0]
    if gap > 0:
        state[1] += min(gap, max_gap_ns)
        state[0] = ts_event
    return state[1]
