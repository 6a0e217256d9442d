"""The Flink stream job, bounded, over the shipped LOBSTER sample plus eight bad records.

One job run (module fixture) over unique topics; the tests then read what came out of Kafka:

* the dead-letter topic holds exactly the eight injected records, each with its reason code and
  pointing (partition/offset) at the record on the events topic;
* the features match LOBSTER's own orderbook file (read here with ``csv``, not the adapter);
* the job's stats reconcile: ``events_in == events_processed + dead_lettered``.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from it_helpers import config_for, read_at, read_json, read_topic, topic_env

from jobs.kafka_io import create_topics, delete_topics, end_offsets, make_producer
from jobs.publish import publish
from jobs.stream_job import build_stream_job
from udfs.config import Config
from udfs.market.adapters.sources import SAMPLE_LOBSTER, Source
from udfs.pipeline import InstrumentState, RecordSource, process_record
from udfs.schema import F_LAST, Kind, L2Event, Side, decode_dead_letter, encode_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

AAPL = "AAPL.XNAS"
FUTURE_NS = (time.time_ns() // 1_000_000 + 2 * 3_600_000) * 1_000_000
MESSAGE_FILE, ORDERBOOK_FILE = SAMPLE_LOBSTER


@dataclass
class Injected:
    name: str
    raw: bytes
    reason_code: str
    reason_has: tuple[str, ...]
    partition: int = -1
    offset: int = -1


@dataclass
class JobRun:
    cfg: Config
    published: int
    injected: list[Injected]


def _sample_state(cfg: Config) -> tuple[InstrumentState, L2Event]:
    """The pure pipeline's state after the sample (for the chain and the book's edges)."""
    state = None
    last = None
    for ev in Source(lobster=[SAMPLE_LOBSTER]).events():
        state, _ = process_record(
            state,
            ev.instrument,
            encode_event(ev),
            RecordSource("x", 0, 0),
            cfg.features,
            cfg.flink.out_of_orderness_ms,
        )
        last = ev
    assert state is not None and last is not None
    return state, last


def _bad_records(cfg: Config) -> list[Injected]:
    state, last = _sample_state(cfg)
    book = state.book
    last_seq, ts = book.last_seq, last.ts_event
    best_bid, best_ask = book.best_bid(), book.best_ask()
    assert best_bid is not None and best_ask is not None and last_seq > 1

    def add(**kw) -> L2Event:
        base = L2Event(
            instrument=AAPL,
            venue="XNAS",
            kind=Kind.ADD,
            side=Side.BID,
            price=best_bid,
            size=100,
            ts_event=ts,
            ts_recv=ts,
            price_exp=-4,
            order_id=1,
            seq=last_seq + 1,
            seq_first=last_seq + 1,
            seq_prev=last_seq,
            flags=F_LAST,
        )
        return replace(base, **kw)

    valid = encode_event(add())
    assert b'"v":1,' in valid and f'"price":{best_bid},'.encode() in valid
    bound_ms = cfg.flink.out_of_orderness_ms
    return [
        Injected("malformed JSON", valid[:40], "malformed", ("malformed JSON",)),
        Injected("schema v99", valid.replace(b'"v":1,', b'"v":99,'), "unknown_version", ("99",)),
        Injected("negative size", encode_event(add(size=-5)), "schema", ("size", "negative")),
        Injected(
            "NaN price",
            valid.replace(f'"price":{best_bid},'.encode(), b'"price":NaN,'),
            "schema",
            ("price", "NaN"),
        ),
        # a LEVEL bid above the best ask, correctly chained: only the crossing is wrong
        Injected(
            "crossed book",
            encode_event(add(kind=Kind.LEVEL, price=best_ask + 100)),
            "crossed_book",
            ("crossed book",),
        ),
        # an otherwise valid add whose seq_prev does not continue the chain
        Injected(
            "sequence gap",
            encode_event(add(seq=last_seq + 7, seq_first=last_seq + 7, seq_prev=last_seq + 5)),
            "sequence_gap",
            ("sequence gap",),
        ),
        # an otherwise valid, correctly chained add 10 s older than the newest event: only the
        # lateness check can refuse it
        Injected(
            "late",
            encode_event(add(ts_event=ts - 10_000_000_000, ts_recv=ts - 10_000_000_000)),
            "late",
            (f"bound {bound_ms} ms",),
        ),
        # stamped two hours ahead of this machine's clock (Kafka 4 refuses more than one hour
        # by default, KIP-1030; our topics accept it) and years ahead of the instrument's
        # newest exchange time: only the job's future check can refuse it
        Injected(
            "future",
            encode_event(add(ts_event=FUTURE_NS, ts_recv=FUTURE_NS)),
            "future",
            ("ahead of the newest", f"bound {cfg.flink.max_ahead_ms} ms"),
        ),
    ]


def _produce_bad(cfg: Config, bad: list[Injected], ts_ms: dict[str, int]) -> None:
    producer = make_producer(cfg)
    errors: list[str] = []

    for rec in bad:

        def on_delivery(err, msg, rec=rec) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                rec.partition, rec.offset = msg.partition(), msg.offset()

        producer.produce(
            cfg.topics.events,
            key=AAPL,
            value=rec.raw,
            timestamp=ts_ms[rec.name],
            on_delivery=on_delivery,
        )
    assert producer.flush(30) == 0
    assert not errors, errors
    assert all(r.offset >= 0 for r in bad)


@pytest.fixture(scope="module")
def job_run(tmp_path_factory) -> Iterator[JobRun]:
    env = topic_env(
        "job", BOOKSTREAM_FLINK_CHECKPOINT_DIR=str(tmp_path_factory.mktemp("checkpoints"))
    )
    cfg = config_for(env)
    assert cfg.flink.out_of_orderness_ms == 2000, "the late record assumes the default bound"
    create_topics(cfg)
    try:
        start = end_offsets(cfg, cfg.topics.events)
        pub = publish(cfg, Source(lobster=[SAMPLE_LOBSTER]), progress=False)
        assert pub.dead_lettered == 0 and pub.published > 0
        bad = _bad_records(cfg)
        _, last = _sample_state(cfg)
        ts_ms = {b.name: last.ts_event // 1_000_000 for b in bad}
        ts_ms["late"] = (last.ts_event - 10_000_000_000) // 1_000_000
        ts_ms["future"] = FUTURE_NS // 1_000_000
        _produce_bad(cfg, bad, ts_ms)
        job = build_stream_job(
            cfg, bounded=True, group_id=f"it-{cfg.topics.events}", start_offsets=start
        )
        # a StatementSet (execute() returns a TableResult to wait on) or a
        # StreamExecutionEnvironment (execute() blocks until a bounded job ends)
        result = job.execute()
        if hasattr(result, "wait"):
            result.wait()
        yield JobRun(cfg=cfg, published=pub.published, injected=bad)
    finally:
        delete_topics(cfg, [s.name for s in cfg.topics.specs()])


def test_dead_letters_are_exactly_the_injected_records(job_run: JobRun) -> None:
    cfg = job_run.cfg
    dead = [decode_dead_letter(r.value) for r in read_topic(cfg, cfg.topics.dead_letter)]
    assert [d.reason_code.value for d in dead] == [b.reason_code for b in job_run.injected], [
        (d.reason_code.value, d.reason) for d in dead
    ]
    for d, bad in zip(dead, job_run.injected, strict=True):
        assert d.stage == "features", bad.name
        assert d.key == AAPL, bad.name
        assert d.source == f"kafka:{cfg.topics.events}", bad.name
        assert (d.partition, d.offset) == (bad.partition, bad.offset), bad.name
        for fragment in bad.reason_has:
            assert fragment in d.reason, (bad.name, d.reason)
        # the coordinates lead back to the very record that was refused
        on_topic = read_at(cfg, cfg.topics.events, d.partition, d.offset)
        assert on_topic == bad.raw, bad.name
        assert d.raw.encode() == bad.raw, bad.name


def _orderbook_rows() -> list[list[int]]:
    with open(ORDERBOOK_FILE, newline="") as fh:
        return [[int(x) for x in row] for row in csv.reader(fh) if row]


def _message_types() -> list[int]:
    with open(MESSAGE_FILE, newline="") as fh:
        return [int(row[1]) for row in csv.reader(fh) if row]


def test_features_match_lobster_orderbook(job_run: JobRun) -> None:
    cfg = job_run.cfg
    rows = [f for f in read_json(cfg, cfg.topics.features) if f["instrument"] == AAPL]
    by_seq: dict[int, dict] = {}
    for f in rows:
        prev = by_seq.setdefault(f["seq"], f)
        # an at-least-once sink may repeat a row, never change it
        assert {k: v for k, v in prev.items() if k != "ts_proc"} == {
            k: v for k, v in f.items() if k != "ts_proc"
        }, f["seq"]
    book_rows = _orderbook_rows()
    types = _message_types()
    assert len(book_rows) == len(types)
    n = len(types)
    # one row per LOBSTER message (the snapshot is seq 1); none for the injected records
    assert sorted(by_seq) == list(range(1, n + 1))
    book_changing = [k for k in range(2, n + 1) if types[k - 1] in (1, 2, 3, 4)]
    assert len(book_changing) > 900
    for k in book_changing:
        f = by_seq[k]
        # LOBSTER orderbook row: ask px, ask sz, bid px, bid sz, ... (level 1 first)
        ask_px, ask_sz, bid_px, bid_sz = book_rows[k - 1][:4]
        assert (f["best_bid"], f["best_ask"], f["bid_size"], f["ask_size"]) == (
            bid_px,
            ask_px,
            bid_sz,
            ask_sz,
        ), f"message {k}"
        assert f["imbalance_1"] == pytest.approx(
            (bid_sz - ask_sz) / (bid_sz + ask_sz), rel=1e-12, abs=1e-15
        ), f"message {k}"


def test_stats_reconcile(job_run: JobRun) -> None:
    cfg = job_run.cfg
    stats = [s for s in read_json(cfg, cfg.topics.stats) if s.get("instrument") == AAPL]
    assert stats, "no stats row for AAPL"
    assert not any("unkeyed_dead" in s for s in stats)
    last = stats[-1]
    assert last["events_in"] == last["events_processed"] + last["dead_lettered"]
    assert last["events_in"] == job_run.published + len(job_run.injected)
    assert last["dead_lettered"] == len(job_run.injected)


def test_model_signals_in_the_stream_equal_offline_scoring(job_run: JobRun) -> None:
    """The traded and the shadow ONNX model, scored inside the Flink job, give exactly the
    signals an offline pass over the job's own feature rows gives (same model files, same
    change-only rule), and the traded/shadow flags follow the A/B split."""
    from udfs.schema import Signal, decode_record
    from udfs.strategy.model import ModelState, OnnxModel, model_signal
    from udfs.strategy.signals import model_traded

    cfg = job_run.cfg
    rows = [json.loads(r.value) for r in read_topic(cfg, cfg.topics.features)]
    rows = [r for r in rows if r["instrument"] == AAPL]
    streamed = [decode_record(Signal, r.value) for r in read_topic(cfg, cfg.topics.signals)]
    traded_arm = model_traded(AAPL, cfg.strategy.model_share)
    for path, traded in (
        (cfg.strategy.model_path, traded_arm),
        (cfg.strategy.shadow_model_path, False),
    ):
        model = OnnxModel.load(path)
        state = ModelState()
        offline = [
            s
            for row in rows
            if (s := model_signal(model, state, row, cfg.strategy, traded)) is not None
        ]
        online = [s for s in streamed if s.strategy == f"onnx:{model.name}"]
        assert len(offline) > 5, path
        assert [(s.seq, s.direction, s.traded) for s in online] == [
            (s.seq, s.direction, s.traded) for s in offline
        ], path
        for a, b in zip(online, offline, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-6), (path, a.seq)


def test_orders_carry_deterministic_ids_and_follow_the_traded_signals(job_run: JobRun) -> None:
    from udfs.schema import Order, OrderAction, Signal, decode_record
    from udfs.strategy.orders import order_id

    cfg = job_run.cfg
    orders = [decode_record(Order, r.value) for r in read_topic(cfg, cfg.topics.orders)]
    new = [o for o in orders if o.action is OrderAction.NEW]
    assert new, "the trading stage sent no order on the sample"
    traded = {
        (s.seq, s.strategy)
        for s in (decode_record(Signal, r.value) for r in read_topic(cfg, cfg.topics.signals))
        if s.traded
    }
    feed_ns = cfg.venue.feed_latency_ms * 1_000_000
    for o in new:
        # the id is re-derived from the order's own inputs: a replay re-creates it
        assert o.order_id == order_id(o.strategy, o.instrument, o.source_seq, o.ts_event - feed_ns)
        assert (o.source_seq, o.strategy) in traded, o
    assert len({o.order_id for o in new}) == len(new)
    assert any(o.action is OrderAction.HEARTBEAT for o in orders)


def test_every_output_record_is_stamped_with_its_events_exchange_time(job_run: JobRun) -> None:
    """Per topic, on the broker: the Kafka timestamp is the exchange time (ms) of the event that
    produced the record, never the wall clock (the sample is from 2012)."""
    cfg = job_run.cfg
    events = {(r.partition, r.offset): r.timestamp_ms for r in read_topic(cfg, cfg.topics.events)}
    inputs = set(events.values())
    by_topic = {
        name: read_topic(cfg, getattr(cfg.topics, name))
        for name in ("features", "dead_letter", "stats", "quality", "signals", "orders")
    }
    for name in ("features", "dead_letter", "stats", "quality", "signals", "orders"):
        assert by_topic[name], f"no {name} records: the test covers nothing there"
    for r in by_topic["features"]:
        assert r.timestamp_ms == json.loads(r.value)["ts_event"] // 1_000_000
    for r in by_topic["signals"]:
        assert r.timestamp_ms == json.loads(r.value)["ts_event"] // 1_000_000
    for r in by_topic["orders"]:
        # an order's ts_event is its decision time: exchange time plus the feed latency
        assert r.timestamp_ms in inputs
        assert r.timestamp_ms <= json.loads(r.value)["ts_event"] // 1_000_000
    for r in by_topic["dead_letter"]:
        d = decode_dead_letter(r.value)  # the refused record's own timestamp
        assert r.timestamp_ms == events[(d.partition, d.offset)]
    for r in by_topic["quality"]:
        assert r.timestamp_ms in inputs
    for r in by_topic["stats"]:
        row = json.loads(r.value)
        # a minute's counters: stamped with the minute's end in exchange time
        assert r.timestamp_ms == row.get("watermark_ms", -1) or r.timestamp_ms in inputs
