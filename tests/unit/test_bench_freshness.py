"""The Feast bench's freshness arithmetic (jobs/bench.py): the pusher's trace lines joined with
the poller's sightings into per-hop stamps, the hop percentiles, and the push rate of the
pushes while the job ran. Pure functions over hand-made stamps (ns)."""

from __future__ import annotations

import json

import pytest

from jobs.bench import (
    FRESHNESS_HOPS,
    FRESHNESS_STAMPS,
    freshness_hops,
    freshness_samples,
    push_rate,
)
from jobs.feast_store import trace_line
from jobs.kafka_io import KafkaRecord

MS = 1_000_000
T0 = 1_800_000_000_000 * MS  # a wall-clock ns, ms-aligned


def _record(ts_ms: int) -> KafkaRecord:
    return KafkaRecord("features", 0, 0, b"k", b"{}", ts_ms)


def _row(inst: str, ts_event: int, ts_recv: int, ts_proc: int) -> dict:
    return {"instrument": inst, "ts_event": ts_event, "ts_recv": ts_recv, "ts_proc": ts_proc}


def _push(read_ns: int, pushed_ns: int, pairs: list) -> dict:
    """A trace line as the pusher writes it, read back as the bench does."""
    return json.loads(trace_line(read_ns, pushed_ns, pairs))


def test_trace_line_keeps_the_newest_row_per_instrument_with_its_stamps() -> None:
    pairs = [
        (_record(T0 // MS + 5), _row("A", 1, T0, T0 + 2 * MS)),
        (_record(T0 // MS + 6), _row("B", 7, T0, T0 + 3 * MS)),
        (_record(T0 // MS + 9), _row("A", 2, T0 + MS, T0 + 8 * MS)),
    ]
    line = _push(T0 + 10 * MS, T0 + 12 * MS, pairs)
    assert line["rows"] == 3
    assert line["read_ns"] == T0 + 10 * MS
    assert line["pushed_ns"] == T0 + 12 * MS
    assert sorted(line["newest"]) == [
        ["A", 2, T0 + MS, T0 + 8 * MS, T0 // MS + 9],
        ["B", 7, T0, T0 + 3 * MS, T0 // MS + 6],
    ]


def test_samples_join_sightings_with_the_first_push_of_each_value() -> None:
    a1 = (_record(T0 // MS + 4), _row("A", 1, T0, T0 + 3 * MS))
    b9 = (_record(T0 // MS + 41), _row("B", 9, T0 + 20 * MS, T0 + 40 * MS))
    warm = (_record(5), _row("C", 3, 17, T0 + 40 * MS))  # received before the paced input
    pushes = [
        _push(T0 + 10 * MS, T0 + 12 * MS, [a1]),
        _push(T0 + 50 * MS, T0 + 52 * MS, [a1]),  # the same value again: its first push counts
        _push(T0 + 60 * MS, T0 + 70 * MS, [b9]),
        _push(T0 + 61 * MS, T0 + 71 * MS, [warm]),
    ]
    seen = {
        ("A", 1): T0 + 13 * MS,
        ("B", 9): T0 + 75 * MS,
        ("C", 3): T0 + 80 * MS,
        ("D", 4): T0 + 80 * MS,  # never in the trace (another pusher's write): left out
    }
    samples = freshness_samples(seen, pushes, since_ns=T0)
    assert len(FRESHNESS_STAMPS) == len(FRESHNESS_HOPS) + 1
    assert samples == [
        (T0, T0 + 3 * MS, T0 + 4 * MS, T0 + 10 * MS, T0 + 12 * MS, T0 + 13 * MS),
        (T0 + 20 * MS, T0 + 40 * MS, T0 + 41 * MS, T0 + 60 * MS, T0 + 70 * MS, T0 + 75 * MS),
    ]


def test_hops_are_the_differences_of_consecutive_stamps_and_add_up_end_to_end() -> None:
    # 100 samples: the job hop i ms (0..99), every other hop 1 ms
    samples = [(T0, *(T0 + (i + k) * MS for k in range(5))) for i in range(100)]
    hops = freshness_hops(samples)
    assert hops["n"] == 100
    assert hops["job"]["p50"] == pytest.approx(49.5)
    assert hops["job"]["p99"] == pytest.approx(98.01)
    assert hops["job"]["max"] == pytest.approx(99.0)
    for hop in FRESHNESS_HOPS[1:]:
        assert hops[hop] == {"n": 100, "p50": 1.0, "p99": 1.0, "max": 1.0}
    assert hops["end_to_end"]["p50"] == pytest.approx(53.5)
    assert hops["end_to_end"]["max"] == pytest.approx(103.0)


def test_hops_of_no_sample_are_empty_not_an_error() -> None:
    hops = freshness_hops([])
    assert hops["n"] == 0
    assert hops["end_to_end"] == {"n": 0, "p50": None, "p99": None, "max": None}


def test_push_rate_counts_only_the_pushes_of_the_paced_input_over_their_span() -> None:
    def push(read_ms: int, pushed_ms: int, rows: int, instruments: int) -> dict:
        newest = [[f"I{k}", 1, 0, 0, 0] for k in range(instruments)]
        return {"read_ns": T0 + read_ms * MS, "pushed_ns": T0 + pushed_ms * MS, "rows": rows,
                "newest": newest}  # fmt: skip

    pushes = [
        push(-9_000, -8_000, 10_000, 3),  # the warm-up catch-up, before the paced input
        push(1_000, 1_100, 500, 3),
        push(1_600, 1_700, 400, 2),
        push(3_000, 3_000 + 1_000, 1_100, 3),
    ]
    rate = push_rate(pushes, since_ns=T0)
    assert rate["pushes"] == 3
    assert rate["rows"] == 2_000
    assert rate["redis_writes"] == 8
    assert rate["span_s"] == pytest.approx(3.0)  # first read 1.0 s -> last push 4.0 s
    assert rate["rows_per_s"] == pytest.approx(2_000 / 3.0)
    assert rate["busy_share"] == pytest.approx(1.2 / 3.0)
    assert rate["push_ms"]["max"] == pytest.approx(1_000.0)


def test_push_rate_without_a_push_in_the_window() -> None:
    assert push_rate([], since_ns=T0)["rows_per_s"] is None
