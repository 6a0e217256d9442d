"""The Flink function's output does not depend on how the JVM's micro-batcher cut the input.

MicroBatcher.java hands all queued records of one instrument to one Python call; where a batch
ends depends on a size bound, a timer, watermarks and checkpoint barriers, i.e. on timing. Here
the same records (the shipped sample, both instruments, plus refused records: malformed, wrong
key, late) go through :class:`jobs.stream_job.StreamJobFunction` cut into batches of 1, 7 and
1,000 records and at random flush points; features, signals, orders, dead letters, quality,
drift and stats must be byte-identical per topic and instrument (wall-clock fields aside), every
record stamped with its event's exchange time, and every value the text the stdlib's JSON
encoder writes for it (the job's encoders are faster ways to the same bytes).

No JVM: keyed state, context and timers are fakes (dicts); the Java batcher's batch format is
written by :func:`jobs.stream_job.encode_batch`, the inverse of the parser the function uses.
"""

from __future__ import annotations

import json
import random
import re
from collections import defaultdict
from dataclasses import asdict, replace
from itertools import islice

import pytest
from _keyed_state import FakeRuntime

from udfs.config import Config
from udfs.market.adapters.binance import BinanceAdapter
from udfs.market.adapters.lobster import iter_lobster_events
from udfs.market.adapters.sources import SAMPLE_BINANCE, SAMPLE_LOBSTER
from udfs.schema import Order, Signal, decode_record, encode_event, encode_record

pytest.importorskip("pyflink")

from jobs.stream_job import (
    END_OF_INPUT_MS,
    FIELD,
    RECORD,
    ROUTES,
    StreamJobFunction,
    encode_batch,
    parse_batch,
)
from udfs.strategy.trading import Trader

CONFIG = replace(Config(), strategy=replace(Config().strategy, drift_every_rows=150))
"""Small drift windows: the live model's drift rows (udfs.strategy.drift) close several times
per instrument in these records, across batches and restores."""

WALL_CLOCK_FIELDS = ("ts_proc", "ts_dead")
"""Set from the wall clock when a row is made: the only fields allowed to differ."""

Raw = tuple[str, int, int, str]
"""(key, offset, timestamp ms, value) of one Kafka record."""


@pytest.fixture(scope="module")
def records() -> list[Raw]:
    lob = list(iter_lobster_events(*SAMPLE_LOBSTER))[:6000]
    btc = list(islice(BinanceAdapter(list(SAMPLE_BINANCE)), 6000))  # parse no further
    merged = sorted(lob + btc, key=lambda e: e.ts_event)
    out: list[Raw] = []
    for i, ev in enumerate(merged):
        out.append((ev.instrument, i, ev.ts_event // 1_000_000, encode_event(ev).decode()))
        if i in (100, 5000):  # refused records: not JSON, another instrument's, late
            out.append((ev.instrument, -1, ev.ts_event // 1_000_000, "{not json\x1e\x1f\n"))
            other = merged[0].instrument if ev.instrument != merged[0].instrument else "X"
            out.append((other, -1, ev.ts_event // 1_000_000, encode_event(ev).decode()))
        if i == 7000:
            late = replace(ev, ts_event=ev.ts_event - 60_000_000_000)
            out.append((ev.instrument, -1, late.ts_event // 1_000_000, encode_event(late).decode()))
    return [(k, n, ts, v) for n, (k, _, ts, v) in enumerate(out)]


def _cut(records: list[Raw], size: int, rng: random.Random | None) -> list[tuple[str, list]]:
    """Batches as MicroBatcher.java forms them: per key in arrival order, a key's batch goes
    out at ``size`` records, and every queued batch at a flush (timer, watermark, barrier:
    here at random points when ``rng`` is given) and at the end of input."""
    queued: dict[str, list] = {}
    batches: list[tuple[str, list]] = []
    for key, offset, ts, value in records:
        queued.setdefault(key, []).append((0, offset, ts, 1_000 + offset, value))
        if len(queued[key]) >= size:
            batches.append((key, queued.pop(key)))
        elif rng is not None and rng.random() < 0.02:
            batches.extend(queued.items())
            queued.clear()
    batches.extend(queued.items())
    return batches


WALL_CLOCK = re.compile(r'("(?:' + "|".join(WALL_CLOCK_FIELDS) + r')":)\d+')


def _run(records: list[Raw], size: int, rng: random.Random | None = None) -> dict:
    """Every routed record out, per (route, key) in order: its timestamp and its value's exact
    text with the wall-clock fields' values set to 0."""
    cfg = CONFIG
    rt = FakeRuntime()
    fn = StreamJobFunction(cfg, Trader.load(cfg), snapshot_every=500)
    fn.open(rt)
    out: dict[tuple[str, str], list] = defaultdict(list)

    def collect(strings) -> None:
        for batch in strings:
            for record in batch.split(RECORD):
                route, key, ts, _hops, value = record.split(FIELD, 4)
                out[(ROUTES[int(route)], key)].append((ts, WALL_CLOCK.sub(r"\g<1>0", value)))

    for n, (key, batch) in enumerate(_cut(records, size, rng)):
        if n % 50 == 49:
            fn = StreamJobFunction(cfg, Trader.load(cfg), snapshot_every=500)
            fn.open(rt)  # a restore: a new instance over the same keyed state
        rt.keys["key"] = key
        text = encode_batch(batch)
        assert list(parse_batch(text)) == batch
        collect(fn.process_element(text, rt))
    for ts, key in sorted(rt.timers):  # end of input: every timer in time order
        rt.keys["key"] = key
        collect(fn.on_timer(ts, rt))
    return dict(out)


@pytest.fixture(scope="module")
def one_by_one(records: list[Raw]) -> dict:
    return _run(records, 1)


def test_reference_run_covers_every_output_topic(one_by_one: dict) -> None:
    routes = {route for route, _ in one_by_one}
    assert routes == set(ROUTES)
    dead = [
        json.loads(v) for (r, _), rows in one_by_one.items() if r == "dead_letter" for _, v in rows
    ]
    assert {d["reason_code"] for d in dead} >= {"malformed", "key_mismatch", "late"}


@pytest.mark.parametrize("size", [7, 1000])
def test_batch_size_does_not_change_any_output(
    records: list[Raw], one_by_one: dict, size: int
) -> None:
    assert _run(records, size) == one_by_one


@pytest.mark.parametrize("seed", [1, 2])
def test_flush_timing_does_not_change_any_output(
    records: list[Raw], one_by_one: dict, seed: int
) -> None:
    assert _run(records, 1000, random.Random(seed)) == one_by_one


def test_records_carry_their_events_exchange_time(records: list[Raw], one_by_one: dict) -> None:
    event_ms = {ts for _, _, ts, _ in records}
    for (route, _key), rows in one_by_one.items():
        for ts, value in rows:
            if route == "stats" and "watermark_ms" in value:
                # a minute's counters: stamped with the minute's end in exchange time
                assert int(ts) == json.loads(value)["watermark_ms"] or int(ts) in event_ms
            elif ts != str(END_OF_INPUT_MS):
                assert int(ts) in event_ms, (route, value[:200])


def test_values_with_separators_survive_the_batch_format() -> None:
    batch = [(3, 9, None, 5, "a\x1e\x1f\nb"), (3, 10, 7, 6, "\U0001f600x"), (0, 0, 1, 1, "")]
    assert list(parse_batch(encode_batch(batch))) == batch


def test_values_are_the_stdlib_encoders_bytes(one_by_one: dict) -> None:
    """Each row's text is ``json.dumps(..., separators=(",", ":"))`` of its fields in order and
    each trading record's ``json.dumps(asdict(record), ...)``: what the job wrote before its
    encoders were made cheaper (``udfs.schema.compact_json``, ``encode_record``)."""
    kinds = {"signals": Signal, "orders": Order}
    seen = defaultdict(int)
    for (route, _key), rows in one_by_one.items():
        for _ts, value in rows:
            assert json.dumps(json.loads(value), separators=(",", ":")) == value, route
            if route in kinds:
                record = decode_record(kinds[route], value)
                reference = json.dumps(asdict(record), separators=(",", ":")).encode()
                assert encode_record(record) == reference
            seen[route] += 1
    assert set(seen) == set(ROUTES)


def test_every_order_carries_its_latency_trace_in_order(records: list[Raw]) -> None:
    """The trace of each order (udfs.latency): the batch's read, its entry into Python, the
    features, the traded signal and the order, each stamp at or after the one before; the
    hops and tick-to-order the execution sink takes from it are the stamps' differences."""
    import time

    from udfs.latency import HOPS, job_hops, parse_hops_trace

    cfg = Config()
    rt = FakeRuntime()
    fn = StreamJobFunction(cfg, Trader.load(cfg), snapshot_every=500)
    fn.open(rt)
    traces: list[tuple[int, ...]] = []
    for key, batch in _cut(records, 7, None):
        rt.keys["key"] = key
        read_ns = time.time_ns()
        text = encode_batch([(p, o, ts, read_ns, v) for p, o, ts, _read, v in batch])
        for out in fn.process_element(text, rt):
            for record in out.split(RECORD):
                route, _key, _ts, hops, value = record.split(FIELD, 4)
                if ROUTES[int(route)] == "orders" and '"action":"new"' in value:
                    trace = parse_hops_trace(f"{hops},{time.time_ns()}")  # + the Java sink's
                    assert trace is not None, hops
                    assert trace[0] == read_ns
                    traces.append(trace)
    assert len(traces) > 10
    for trace in traces:
        signal = trace[3]  # 0: an order of no traded signal of this record (a POV child)
        stamps = [t for t in trace if t]
        assert stamps == sorted(stamps) and len(stamps) == len(trace) - (signal == 0), trace
        hops, tick_to_order = job_hops(0, trace)
        expected = ["read_feature", "feature_signal", "signal_order", "order_out"]
        if not signal:
            expected = ["read_feature", "order_out"]
        assert [h for h, _ in hops] == expected
        assert {h for h, _ in hops} <= set(HOPS)
        assert tick_to_order == trace[-1] - trace[0]
        if signal:
            assert tick_to_order == sum(ns for _, ns in hops)
