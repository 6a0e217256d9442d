"""Opening a user's source files as one stream of L2 events, whatever the format.

A :class:`Source` yields :class:`~udfs.schema.L2Event` records in feed order and collects the
lines it could not read (with file, line and reason) so the caller can dead-letter them:
``events_in`` counts both. What an input lost beyond its bad lines is reported too
(:meth:`Source.problems`): a LOBSTER file stopped at a bad row (the rest of it is not read), a
Binance capture whose diff chain broke (the diffs after the break are dropped: counted, never
applied).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from udfs.config import PROJECT_ROOT
from udfs.market.adapters.binance import BinanceAdapter, BinanceStats
from udfs.market.adapters.lobster import LobsterStats, iter_lobster_events
from udfs.schema import L2Event

__all__ = ["SAMPLE_BINANCE", "SAMPLE_LOBSTER", "BadLine", "Source"]

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
