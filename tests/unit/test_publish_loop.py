"""``publish --loop`` / ``live --loop``: the input again and again, each pass after the one before
(udfs.market.adapters.sources.looped), and ``--speed`` pacing that skips long gaps
(paced_due_ns), on the repo's real sample."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from udfs.config import load_config
from udfs.market.adapters.sources import (
    LOOP_SEAM_NS,
    SAMPLE_BINANCE,
    SAMPLE_LOBSTER,
    Source,
    looped,
    paced_due_ns,
)
from udfs.pipeline import process_events
from udfs.schema import L2Event

HEAD = 6_000  # events of each input: its opening snapshot, trades and features


def _lobster() -> Iterator[L2Event]:
    return itertools.islice(Source(lobster=[SAMPLE_LOBSTER]).events(), HEAD)


def _binance() -> Iterator[L2Event]:
    return itertools.islice(Source(binance=[list(SAMPLE_BINANCE)]).events(), HEAD)


def _features(events: list[L2Event]) -> tuple[list[dict], list]:
    cfg = load_config()
    _, out = process_events(
        events, cfg.features, cfg.flink.out_of_orderness_ms, topic=cfg.topics.events
    )
    return out.features, out.dead_letters


@pytest.mark.parametrize("passes", [_lobster, _binance], ids=["lobster", "binance"])
def test_each_pass_follows_the_last_one(passes) -> None:
    once = list(passes())
    twice = list(looped(passes, 2))
    assert twice[: len(once)] == once  # pass 0 is the input unchanged
    second = twice[len(once) :]
    assert len(second) == len(once)
    span = max(e.ts_event for e in once) - min(e.ts_event for e in once)
    # time never goes back across the seam; each chain only moves forward
    assert min(e.ts_event for e in second) == max(e.ts_event for e in once) + LOOP_SEAM_NS
    assert min(e.seq for e in second if e.seq) > max(e.seq for e in once)
    for a, b in zip(once, second, strict=True):
        assert b.ts_event - a.ts_event == span + LOOP_SEAM_NS
        assert (b.instrument, b.price, b.size, b.side, b.kind, b.flags) == (
            a.instrument,
            a.price,
            a.size,
            a.side,
            a.kind,
            a.flags,
        )


@pytest.mark.parametrize("passes", [_lobster, _binance], ids=["lobster", "binance"])
def test_the_stream_job_takes_the_second_pass_like_the_first(passes) -> None:
    """Through the job's own per-record logic: no dead letter in either pass (no duplicate, no
    lateness, no sequence gap at the seam), and the second pass's book features are the first
    pass's, moved by the pass's shift (the book re-syncs at the pass's opening snapshot)."""
    once = list(passes())
    rows, dead = _features(list(looped(passes, 2)))
    assert dead == []
    first_rows, _ = _features(once)
    assert len(rows) == 2 * len(first_rows) and first_rows
    shift = None
    for a, b in zip(first_rows, rows[len(first_rows) :], strict=True):
        shift = shift or b["ts_event"] - a["ts_event"]
        assert b["ts_event"] - a["ts_event"] == shift
        for key in ("best_bid", "best_ask", "spread", "mid", "microprice", "imbalance"):
            if key in a:
                assert b[key] == a[key], (key, a, b)


def test_an_empty_input_stays_empty() -> None:
    assert list(looped(lambda: iter(()), 0)) == []


def test_pacing_cuts_long_gaps_only() -> None:
    state: list[int] = []
    ms = 1_000_000
    ts = [0, 5 * ms, 5 * ms, 10_000 * ms, 10_003 * ms, 9 * 10**18]
    due = [paced_due_ns(t, state, 1000 * ms) for t in ts]
    # gaps of 5 ms and 3 ms kept; 9,995 ms and ~300 years each paced as 1 s
    assert due == [0, 5 * ms, 5 * ms, 1005 * ms, 1008 * ms, 2008 * ms]
