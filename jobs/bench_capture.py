"""``make bench`` stage "capture" (issue 11 §4): the pure core from a raw Binance capture to the
exact book and features, against hftbacktest's own raw-capture converter on the same file in
the same process, one after the other.

    core         ``Source(binance=[[capture]]).events()`` (the gzip lines, the JSON, the
                 Binance sync rules, exact integer ticks: the publisher's adapter) into
                 :class:`udfs.market.book.OrderBook` and :func:`udfs.market.features.on_event`
                 (stage (a)'s loop), no Kafka
    hftbacktest  ``hftbacktest.data.utils.binancefutures.convert`` on the same file: gzip
                 lines, JSON, float rows into a numpy array, then its numba passes (latency
                 correction, event-order correction, validation); no book, no sync check

Level rows (the issue's unit): every record the adapter emits from the capture, one per price
level of a depth diff or snapshot (the REST snapshot and the adapter's own refresh snapshots),
one per trade, one per side of a ``bookTicker``: what the book and the features consume. The
converter's rows are counted from its output the same way (one per level, per trade, per
ticker side with ``opt="t"``, so it reads the same streams the core reads).

Times are best of ``repeats`` passes, CPU seconds of this process (``time.process_time``) and
wall; the machine is shared, so the ratio is taken on CPU time. hftbacktest is warmed up first
on the capture's first lines (numba compiles its passes on the first call; the warm-up's time
is reported on its own and is not in its figure).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import itertools
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from udfs.config import FeatureConfig

__all__ = [
    "Pass",
    "best_pass",
    "capture_core_pass",
    "per_second",
    "print_capture",
    "speedup",
    "stage_capture",
]


@dataclass(frozen=True)
class Pass:
    """One timed pass over a capture: ``rows`` out, wall and CPU seconds."""

    rows: int
    wall_s: float
    cpu_s: float
    features: int = 0


def per_second(rows: int, seconds: float) -> float:
    """``rows`` per second; 0 for no time measured (never a division by zero)."""
    return rows / seconds if seconds > 0 else 0.0


def best_pass(passes: Iterable[Pass]) -> Pass:
    """The pass with the least CPU time (the figure least disturbed by other processes)."""
    return min(passes, key=lambda p: (p.cpu_s, p.wall_s))


def speedup(ours: Pass, theirs: Pass) -> float:
    """How many times faster ``ours`` handles the same capture than ``theirs``, on CPU time
    (> 1: ours is faster). Time on the same file, not rows/s: the two count rows alike (see
    the module's docstring), but the ratio then does not depend on that."""
    return theirs.cpu_s / ours.cpu_s if ours.cpu_s > 0 else 0.0


def _timed(fn: Callable[[], tuple[int, int]]) -> Pass:
    wall, cpu = time.perf_counter(), time.process_time()
    rows, features = fn()
    return Pass(rows, time.perf_counter() - wall, time.process_time() - cpu, features)


def capture_core_pass(capture: Path, cfg: FeatureConfig) -> Pass:
    """Raw capture -> exact book + features (:func:`jobs.bench.core_pass`, stage (a)'s loop,
    fed lazily from the file), timed from opening the file. Its level rows are the adapter's
    records, as its own stats count them."""
    from jobs.bench import core_pass
    from udfs.market.adapters.sources import Source

    def run() -> tuple[int, int]:
        source = Source(binance=[[capture]])
        features = core_pass(source.events(), cfg)
        return sum(st.events for _, st in source.binance_stats), features

    return _timed(run)


def _convert(capture: Path, buffer_rows: int) -> int:
    from hftbacktest.data.utils import binancefutures

    # it prints its progress; the bench's stdout carries one JSON line
    with contextlib.redirect_stdout(io.StringIO()):
        data = binancefutures.convert(str(capture), opt="t", buffer_size=buffer_rows)
    return len(data)


def hftbacktest_pass(capture: Path, buffer_rows: int) -> Pass:
    return _timed(lambda: (_convert(capture, buffer_rows), 0))


def _head(capture: Path, lines: int, dest: Path) -> Path:
    """The first ``lines`` lines of a gzip capture, gzip again (the warm-up's input)."""
    with gzip.open(capture, "rb") as src, gzip.open(dest, "wb") as out:
        out.writelines(itertools.islice(src, lines))
    return dest


def stage_capture(capture: str, repeats: str = "3", warmup_lines: str = "5000") -> dict[str, Any]:
    """Child stage: both sides on ``capture``, alternating, best of ``repeats`` each."""
    from importlib.metadata import version

    from udfs.config import load_config

    path = Path(capture)
    cfg = load_config().features
    with tempfile.TemporaryDirectory() as tmp:
        head = _head(path, int(warmup_lines), Path(tmp) / "head.gz")
        warm = hftbacktest_pass(head, 1_000_000)  # numba compiles here
        capture_core_pass(head, cfg)
    core: list[Pass] = []
    theirs: list[Pass] = []
    buffer_rows = 0
    for _ in range(int(repeats)):
        core.append(capture_core_pass(path, cfg))
        # the converter needs a preallocated array: room for every row the core counted
        # (it emits no refresh snapshots, so fewer), plus a margin
        buffer_rows = buffer_rows or core[0].rows * 2 + 100_000
        theirs.append(hftbacktest_pass(path, buffer_rows))
    ours, other = best_pass(core), best_pass(theirs)
    return {
        "capture": str(path),
        "repeats": int(repeats),
        "hftbacktest_version": version("hftbacktest"),
        "core": asdict(ours),
        "hftbacktest": asdict(other),
        "hftbacktest_warmup": {"lines": int(warmup_lines), **asdict(warm)},
        "core_rows_per_s": per_second(ours.rows, ours.cpu_s),
        "core_rows_per_wall_s": per_second(ours.rows, ours.wall_s),
        "hftbacktest_rows_per_s": per_second(other.rows, other.cpu_s),
        "core_over_hftbacktest": speedup(ours, other),
        "core_over_hftbacktest_wall": (other.wall_s / ours.wall_s) if ours.wall_s > 0 else 0.0,
        "all_cpu_s": {"core": [p.cpu_s for p in core], "hftbacktest": [p.cpu_s for p in theirs]},
    }


def print_capture(cap: dict[str, Any]) -> None:
    """The stage's figures as ``make bench`` prints them (nothing for a stage not run)."""
    if "skipped" in cap:
        print(f"\ncapture: skipped, {cap['skipped']}")
        return
    if not cap:
        return
    core_rows, core_ratio = cap["core_rows_per_s"], cap["core_over_hftbacktest"]
    c, h, w = cap["core"], cap["hftbacktest"], cap["hftbacktest_warmup"]
    print(
        f"\nraw capture -> exact book + features vs hftbacktest {cap['hftbacktest_version']}'s "
        f"converter, same file ({Path(cap['capture']).name}), best of {cap['repeats']} "
        "(CPU s; wall beside it):"
    )
    print(
        f"  core (adapter + book + features)  {c['rows']:>9,} level rows  {c['cpu_s']:6.2f} s "
        f"(wall {c['wall_s']:.2f})  {core_rows:>11,.0f} rows/s  {c['features']:,} feature rows"
    )
    print(
        f"  hftbacktest convert(opt='t')      {h['rows']:>9,} rows        {h['cpu_s']:6.2f} s "
        f"(wall {h['wall_s']:.2f})  {cap['hftbacktest_rows_per_s']:>11,.0f} rows/s"
    )
    print(
        f"  core / hftbacktest: {core_ratio:.2f}x on CPU time, "
        f"{cap['core_over_hftbacktest_wall']:.2f}x on wall (hftbacktest warmed up first: numba "
        f"compile on {w['lines']:,} lines took {w['cpu_s']:.2f} s CPU, not counted)"
    )
