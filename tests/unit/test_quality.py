"""Data-quality stage (``udfs.market.quality``) through the stream job's own ``process_record``, on
the shipped real sample (LOBSTER AAPL, 1 minute; Binance USD-M BTCUSDT, 4 minutes).

The clean sample's counts are checked on all of it; a real silence is found and the faults
are injected in the first 65 s of the Binance capture (exchange time 23:57:02.5 to
23:58:07.5: most of one minute and the start of the next, about 38,000 records), so that each
faulted run reads a third of the sample, not all of it (the fast lane, ``make check``); a
faulted run resumes from the clean run's checkpoint before its fault (see :func:`run`).

Every fault is injected into the real event sequence; the test asserts it is counted, on the
right instrument and in the right exchange-time minute (computed from the records involved),
and nowhere else: both instruments run in the same stream and every row of the faulted run is
compared with the clean run's. The clean sample's own counts are checked against independent
reference computations, not assumed to be zero.
"""

from __future__ import annotations

import gzip
import json
import pickle
from collections import Counter
from dataclasses import dataclass, replace
from itertools import accumulate, islice, pairwise
from pathlib import Path
from typing import Any

import pytest

from udfs.config import Config, FeatureConfig, QualityConfig
from udfs.market.adapters.binance import BinanceAdapter
from udfs.market.adapters.lobster import iter_lobster_events
from udfs.market.adapters.sources import SAMPLE_BINANCE, SAMPLE_LOBSTER
from udfs.market.book import OrderBook
from udfs.market.quality import DUP_WINDOW, MINUTE_NS, flush, minute_of
from udfs.pipeline import InstrumentState, RecordSource, process_record
from udfs.schema import (
    F_LAST,
    DeadLetter,
    Kind,
    L2Event,
    QualityRow,
    Reason,
    Side,
    encode_event,
    encode_row,
)

SRC = RecordSource("events", 0, 0)
BOUND_MS = 2000
BOUND_NS = BOUND_MS * 1_000_000
AAPL = "AAPL.XNAS"
BTC = "BTCUSDT.BINANCE_USDM"
FAULTS = (
    "sequence_gaps",
    "resyncs",
    "crossed",
    "locked",
    "stale_gaps",
    "out_of_order",
    "late",
    "duplicates",
)
ROW_FIELDS = {"instrument", "minute_start", "events", "max_gap_ms", "v", *FAULTS}
TICK_BTC = 10_000_000  # 0.1 USDT at price_exp -8

Record = L2Event | tuple[str, str]


_ENCODED: dict[int, bytes] = {}
"""id(event) -> its record, for the sample's events (alive for the whole module)."""


def _encoded(events: list[L2Event]) -> list[L2Event]:
    _ENCODED.update((id(e), encode_event(e)) for e in events)
    return events


@pytest.fixture(scope="module")
def lob() -> list[L2Event]:
    return _encoded(list(iter_lobster_events(*SAMPLE_LOBSTER)))


@pytest.fixture(scope="module")
def btc_sample() -> list[L2Event]:
    """The whole shipped Binance sample."""
    return _encoded(list(BinanceAdapter(list(SAMPLE_BINANCE))))


HEAD_RECEIVED_S = 65


@pytest.fixture(scope="module")
def btc_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample capture's lines received in its first ``HEAD_RECEIVED_S`` seconds: its REST
    snapshot and real messages, exchange time 23:57:02.5 to 23:58:07.5 (two minutes)."""
    with gzip.open(SAMPLE_BINANCE[0], "rb") as fh:
        lines = fh.read().splitlines(keepends=True)
    end = int(lines[0].split(b" ", 1)[0]) + HEAD_RECEIVED_S * 10**9
    path = tmp_path_factory.mktemp("binance") / SAMPLE_BINANCE[0].name
    with gzip.open(path, "wb") as fh:
        fh.writelines(line for line in lines if int(line.split(b" ", 1)[0]) < end)
    return path


@pytest.fixture(scope="module")
def btc(btc_capture: Path) -> list[L2Event]:
    """The events of ``btc_capture``, the faults' stream."""
    events = _encoded(list(BinanceAdapter([btc_capture])))
    assert len({minute_of(e.ts_event) for e in events}) == 2 and len(events) > 30_000
    return events


CHECKPOINT_EVERY = 2_000


@dataclass
class Checkpoint:
    """A run after its first ``position`` records: the states pickled (as the Flink job
    checkpoints them), and how much of each output existed then."""

    position: int
    states: bytes
    rows: int
    live: frozenset[tuple[str, int]]
    dead: int
    features: int


@dataclass
class Run:
    rows: dict[tuple[str, int], dict]
    live: set[tuple[str, int]]
    """rows emitted while processing (a later event closed the minute), not by the final flush"""
    states: dict[str, InstrumentState]
    dead: list[DeadLetter]
    features: list[dict]
    """feature rows in emission order (``ts_proc`` left out: processing time)"""
    feature_at: list[int]
    """for each feature row, the position in the input of the record that made it"""
    dead_at: list[int]
    """for each dead letter, the position in the input of its record"""
    records: list[Record]
    stale_after_ms: int
    checkpoints: list[Checkpoint]

    def faults(self, name: str) -> dict[tuple[str, int], int]:
        return {k: r[name] for k, r in self.rows.items() if r[name]}


def run(
    records: list[Record],
    stale_after_ms: int = 5000,
    base: Run | None = None,
    checkpoints: bool = False,
) -> Run:
    """Feed records through process_record (one state per key), collect the quality rows
    (closed minutes while running, then the end-of-input flush) and check the invariants.

    ``checkpoints``: keep a :class:`Checkpoint` every ``CHECKPOINT_EVERY`` records. ``base``: a
    run with checkpoints (the clean one); a faulted run starts from the last of its checkpoints
    before the first record where the two inputs differ, instead of recomputing the same
    records from the start (process_record is a function of the state and the record): the
    fast lane's share of the cost of running the whole sample once per fault."""
    qcfg = QualityConfig(stale_after_ms=stale_after_ms)
    fcfg = FeatureConfig()
    states: dict[str, InstrumentState] = {}
    rows: dict[tuple[str, int], dict] = {}
    live: set[tuple[str, int]] = set()
    dead: list[DeadLetter] = []
    features: list[dict] = []
    feature_at: list[int] = []
    dead_at: list[int] = []
    kept: list[Checkpoint] = []
    start = 0
    if base is not None and base.stale_after_ms == stale_after_ms:
        same = 0  # records that are the base's, in the same order, from the first on
        limit = min(len(records), len(base.records))
        while same < limit and records[same] is base.records[same]:
            same += 1
        resume = [c for c in base.checkpoints if c.position <= same]
        if resume:
            c = resume[-1]
            start, states = c.position, pickle.loads(c.states)
            rows = dict(islice(base.rows.items(), c.rows))  # in emission order
            live = set(c.live)
            dead, dead_at = base.dead[: c.dead], base.dead_at[: c.dead]
            features, feature_at = base.features[: c.features], base.feature_at[: c.features]

    def add(record: QualityRow) -> tuple[str, int]:
        row = json.loads(encode_row(record))  # the wire form
        k = (row["instrument"], row["minute_start"])
        assert k not in rows, f"minute emitted twice: {k}"
        assert set(row) == ROW_FIELDS and row["v"] == 1
        assert row["minute_start"] % MINUTE_NS == 0 and row["events"] > 0
        assert json.loads(json.dumps(row, separators=(",", ":"))) == row
        rows[k] = row
        return k

    for pos in range(start, len(records)):
        if checkpoints and pos % CHECKPOINT_EVERY == 0:
            kept.append(
                Checkpoint(
                    pos, pickle.dumps(states), len(rows), frozenset(live), len(dead), len(features)
                )
            )
        rec = records[pos]
        if isinstance(rec, L2Event):
            key, raw = rec.instrument, _ENCODED.get(id(rec)) or encode_event(rec)
        else:
            key, raw = rec
        state, res = process_record(
            states.get(key), key, raw, SRC, fcfg, BOUND_MS, quality_cfg=qcfg
        )
        if state is not None:
            states[key] = state
        dead += res.dead_letters
        dead_at += [pos] * len(res.dead_letters)
        features += [{k: v for k, v in f.items() if k != "ts_proc"} for f in res.features]
        feature_at += [pos] * len(res.features)
        for row in res.quality:
            live.add(add(row))
    for state in states.values():
        for row in flush(state.quality):
            add(row)
    for key, state in states.items():
        mine = [r for r in rows.values() if r["instrument"] == key]
        assert sum(r["events"] for r in mine) == state.events_in
        assert state.events_in == state.events_processed + state.dead_lettered
        assert sum(r["late"] for r in mine) == sum(
            1 for d in dead if d.key == key and d.reason_code is Reason.LATE
        )
    return Run(
        rows, live, states, dead, features, feature_at, dead_at, records, stale_after_ms, kept
    )


@pytest.fixture(scope="module")
def clean_sample(lob: list[L2Event], btc_sample: list[L2Event]) -> Run:
    return run(lob + btc_sample)


@pytest.fixture(scope="module")
def clean(lob: list[L2Event], btc: list[L2Event]) -> Run:
    """The faults' clean run: AAPL and the head of the Binance capture."""
    return run(lob + btc, checkpoints=True)


def assert_rows_equal_except(got: Run, clean: Run, changes: dict[tuple[str, int], dict]) -> None:
    """Every row of ``got`` equals the clean run's, plus ``changes`` (field -> delta) per key."""
    assert set(got.rows) == set(clean.rows)
    for k, row in got.rows.items():
        want = dict(clean.rows[k])
        for name, delta in changes.get(k, {}).items():
            want[name] += delta
        assert row == want, k


def book_after(events: list[L2Event]) -> OrderBook:
    book = OrderBook(events[0].instrument)
    for ev in events:
        book.apply(ev)
    return book


def newest(events: list[L2Event]) -> int:
    return max(ev.ts_event for ev in events)


def chained_last(events: list[L2Event], start: int) -> int:
    """Index of the first record from ``start`` that closes a chained book batch."""
    return next(
        i
        for i in range(start, len(events))
        if events[i].seq_prev and events[i].is_last and events[i].kind is not Kind.BBO
    )


# -- the clean sample --------------------------------------------------------------------------


def _reference(events: list[L2Event]) -> tuple[Counter, Counter, dict[int, int]]:
    """Independent per-minute counts: events, records older than every earlier one, and the
    longest silence ending in each minute (ns)."""
    count: Counter = Counter()
    ooo: Counter = Counter()
    gap: dict[int, int] = {}
    top = 0
    for ev in events:
        m = minute_of(ev.ts_event)
        count[m] += 1
        if ev.ts_event < top:
            ooo[m] += 1
        elif ev.ts_event > top:
            if top:
                gap[m] = max(gap.get(m, 0), ev.ts_event - top)
            top = ev.ts_event
    return count, ooo, gap


def test_clean_sample_counts_are_the_real_ones(
    clean_sample: Run, lob: list[L2Event], btc_sample: list[L2Event]
) -> None:
    clean, btc = clean_sample, btc_sample
    for inst, events in ((AAPL, lob), (BTC, btc)):
        count, ooo, gap = _reference(events)
        mine = {m: r for (i, m), r in clean.rows.items() if i == inst}
        assert sorted(mine) == sorted(count)
        for m, row in mine.items():
            assert row["events"] == count[m]
            assert row["out_of_order"] == ooo[m]
            assert row["max_gap_ms"] == round(gap.get(m, 0) / 1e6, 3)
            # no gap, re-sync, crossed or locked book, stale feed, late or duplicate event
            assert [row[f] for f in FAULTS if f != "out_of_order"] == [0] * 7, row
    # what the real data has: AAPL one minute, in order, longest silence 1.946 s; BTCUSDT four
    # minutes with 2043 records behind the newest (trades/tickers vs diffs, at most 24 ms)
    assert len([k for k in clean.rows if k[0] == AAPL]) == 1
    assert [r["out_of_order"] for k, r in sorted(clean.rows.items()) if k[0] == BTC] == [
        1066,
        267,
        710,
        0,
    ]
    assert clean.rows[(AAPL, minute_of(lob[0].ts_event))]["max_gap_ms"] == 1946.277
    assert clean.dead == []
    # the duplicate window stays bounded
    assert all(len(st.quality.seen) <= DUP_WINDOW for st in clean.states.values())
    assert len(clean.states[BTC].quality.seen) == DUP_WINDOW
    # a minute is emitted as soon as the instrument's watermark (newest exchange time - bound)
    # has left it, the others at the end of input: BTCUSDT's last record is 0.456 s into its
    # fourth minute, so its third one is still open then
    watermark = newest(btc) - BOUND_NS
    assert clean.live == {
        (BTC, m) for i, m in clean.rows if i == BTC and m + MINUTE_NS <= watermark
    }
    assert len(clean.live) == 2


def test_replay_gives_identical_rows(clean: Run, lob: list[L2Event], btc: list[L2Event]) -> None:
    again = run(lob + btc)
    assert json.dumps(sorted(again.rows.items())) == json.dumps(sorted(clean.rows.items()))


def test_stale_threshold_below_the_real_longest_silence_finds_it(btc: list[L2Event]) -> None:
    _, _, gap = _reference(btc)
    longest_minute, longest = max(gap.items(), key=lambda kv: kv[1])
    # the head's one silence above 90 ms (the next longest is 90 ms: a silence must be longer
    # than the threshold to be stale; Binance times are whole milliseconds)
    assert longest == 91_000_000
    newest_to = list(accumulate((e.ts_event for e in btc), max))
    silences = sorted(b - a for a, b in pairwise(newest_to) if b > a)
    assert silences[-2:] == [90_000_000, longest]
    res = run(btc, stale_after_ms=90)
    assert res.faults("stale_gaps") == {(BTC, longest_minute): 1}
    assert res.rows[(BTC, longest_minute)]["max_gap_ms"] == 91.0


# -- sequence gaps ------------------------------------------------------------------------------


def test_dropped_record_is_one_gap_in_the_minute_it_is_seen(
    lob: list[L2Event], btc: list[L2Event], clean: Run
) -> None:
    # AAPL: drop one chained message; every later chained record is then refused by the book
    k = chained_last(lob, len(lob) // 2)
    nxt = next(i for i in range(k + 1, len(lob)) if lob[i].seq_prev)
    res = run(lob[:k] + lob[k + 1 :] + btc)
    assert res.faults("sequence_gaps") == {(AAPL, minute_of(lob[nxt].ts_event)): 1}
    refused = [d for d in res.dead if d.reason_code is Reason.SEQUENCE_GAP]
    assert len(refused) > 100  # the cascade is dead-lettered record by record...
    assert res.faults("duplicates") == {}  # ...but it is one gap, and no record is a replay
    assert (
        res.rows[(BTC, minute_of(btc[0].ts_event))] == clean.rows[(BTC, minute_of(btc[0].ts_event))]
    )

    # BTCUSDT: drop a whole diff (every record of one seq) in its second minute
    m1 = sorted(m for i, m in clean.rows if i == BTC)[1]
    last = chained_last(btc, next(i for i, e in enumerate(btc) if e.ts_event >= m1 + 2 * 10**9))
    first = last
    while btc[first - 1].seq == btc[last].seq and btc[first - 1].kind is Kind.LEVEL:
        first -= 1
    nxt = next(i for i in range(last + 1, len(btc)) if btc[i].seq_prev)
    res = run(lob + btc[:first] + btc[last + 1 :], base=clean)
    assert res.faults("sequence_gaps") == {(BTC, minute_of(btc[nxt].ts_event)): 1}
    assert res.faults("duplicates") == {}
    assert (
        res.rows[(AAPL, minute_of(lob[0].ts_event))]
        == clean.rows[(AAPL, minute_of(lob[0].ts_event))]
    )


# -- duplicates ---------------------------------------------------------------------------------


def test_duplicates_are_counted_once_and_leave_the_book_alone(
    lob: list[L2Event], btc: list[L2Event], clean: Run
) -> None:
    # AAPL: a chained message sent twice (the book refuses the copy: its seq_prev is behind the
    # chain head, dead-lettered as sequence_gap) and an unchained hidden execution sent twice
    k = next(
        i
        for i in range(len(lob) // 2, len(lob))
        if lob[i].kind is Kind.ADD and lob[i].seq_prev and lob[i].is_last
    )
    h = next(i for i in range(k + 1, len(lob)) if lob[i].kind is Kind.HIDDEN_TRADE)
    events = [*lob[: k + 1], lob[k], *lob[k + 1 : h + 1], lob[h], *lob[h + 1 :]]
    res = run(events + btc)
    minute = minute_of(lob[k].ts_event)
    assert minute == minute_of(lob[h].ts_event)
    assert_rows_equal_except(res, clean, {(AAPL, minute): {"events": 2, "duplicates": 2}})
    assert [d.reason_code for d in res.dead] == [Reason.SEQUENCE_GAP]
    assert res.states[AAPL].book.top(10) == clean.states[AAPL].book.top(10)

    # BTCUSDT: an at-least-once replay of 40 records (diff levels of several batches, part of
    # the still open batch, tickers, trades) right after themselves
    m1 = sorted(m for i, m in clean.rows if i == BTC)[1]
    i = next(j for j, e in enumerate(btc) if e.ts_event >= m1 + 3 * 10**9)
    run_ = btc[i : i + 40]
    assert {e.kind for e in run_} >= {Kind.LEVEL, Kind.BBO}
    assert len({e.seq for e in run_ if e.kind is Kind.LEVEL}) > 1
    assert all(minute_of(e.ts_event) == m1 for e in run_)
    res = run(lob + btc[: i + 40] + run_ + btc[i + 40 :], base=clean)
    assert_rows_equal_except(res, clean, {(BTC, m1): {"events": 40, "duplicates": 40}})
    assert res.states[BTC].book.bids.sizes == clean.states[BTC].book.bids.sizes
    assert res.states[BTC].book.asks.sizes == clean.states[BTC].book.asks.sizes

    # a diff level re-sent 1,500 records later, still within the lateness bound (the feed runs
    # at ~2,000 records/s there): older than the fingerprint window, recognised by its seq
    newest_to = list(accumulate((e.ts_event for e in btc), max))  # newest of btc[: j + 1]
    r = next(
        j
        for j in range(len(btc) // 3, len(btc))
        if btc[j].kind is Kind.LEVEL
        and btc[j].ts_event == newest_to[j]
        and btc[j + DUP_WINDOW + 500].ts_event - btc[j].ts_event < BOUND_NS - 10**8
    )
    at = r + DUP_WINDOW + 500
    res = run(lob + btc[:at] + [btc[r]] + btc[at:], base=clean)
    assert_rows_equal_except(
        res, clean, {(BTC, minute_of(btc[r].ts_event)): {"events": 1, "duplicates": 1}}
    )
    assert [d.reason_code for d in res.dead] == [Reason.SEQUENCE_GAP]  # the book's view of it


# -- out of order and late ---------------------------------------------------------------------


def _trade_at_running_max(btc: list[L2Event], after: int, before: int) -> int:
    """A trade whose exchange time equals the newest before it (so it is neither out of order
    nor a new newest: moving it changes nothing for the other records)."""
    top = newest(btc[:after])
    for j in range(after, before):
        if btc[j].kind is Kind.TRADE and btc[j].ts_event == top:
            return j
        top = max(top, btc[j].ts_event)
    raise AssertionError("no candidate trade")


def test_swapped_records_are_out_of_order_in_their_own_minute(
    lob: list[L2Event], btc: list[L2Event], clean: Run
) -> None:
    # AAPL (in exchange-time order): a hidden execution handed on after the next record
    h = next(
        i
        for i in range(len(lob) // 2, len(lob) - 1)
        if lob[i].kind is Kind.HIDDEN_TRADE and lob[i + 1].ts_event > lob[i].ts_event
    )
    res = run([*lob[:h], lob[h + 1], lob[h], *lob[h + 2 :], *btc])
    assert_rows_equal_except(res, clean, {(AAPL, minute_of(lob[h].ts_event)): {"out_of_order": 1}})
    assert res.dead == []

    # BTCUSDT: a trade of the last 1.5 s of minute 1 handed on after the first record of
    # minute 2 (within the 2 s bound): out of order in minute 1, its own, not in minute 2
    m1, m2 = sorted(m for i, m in clean.rows if i == BTC)
    first_m2 = next(i for i, e in enumerate(btc) if e.ts_event >= m2)
    r = _trade_at_running_max(
        btc, next(i for i, e in enumerate(btc) if e.ts_event >= m2 - 1_500_000_000), first_m2
    )
    assert minute_of(btc[r].ts_event) == m1
    assert btc[first_m2].ts_event - btc[r].ts_event < BOUND_NS
    moved = btc[:r] + btc[r + 1 : first_m2 + 1] + [btc[r]] + btc[first_m2 + 1 :]
    res = run(lob + moved, base=clean)
    assert_rows_equal_except(res, clean, {(BTC, m1): {"out_of_order": 1}})


def test_late_record_is_dead_lettered_and_counted_where_it_arrives(
    lob: list[L2Event], btc: list[L2Event], clean: Run
) -> None:
    """A late record's own minute may be emitted already, and an emitted row is final: it is
    counted in the minute the instrument has reached when it arrives, always -- whether its
    own minute is already closed or not."""
    m1, m2 = sorted(m for i, m in clean.rows if i == BTC)
    first_m2 = next(i for i, e in enumerate(btc) if e.ts_event >= m2)
    # (a trade's own time, how far the feed is past it when the trade arrives):
    # 1.4 s before minute 2, arrives 4 s later (minute 1 closed by then);
    # 4.4 s before minute 2, arrives with the first record of minute 2 (minute 1 still open)
    for from_s, arrive in ((1.5, "plus_4s"), (4.5, "first_of_m2")):
        r = _trade_at_running_max(
            btc,
            next(i for i, e in enumerate(btc) if e.ts_event >= m2 - int(from_s * 10**9)),
            first_m2,
        )
        assert minute_of(btc[r].ts_event) == m1
        if arrive == "plus_4s":
            j = next(
                i
                for i in range(r, len(btc))
                if btc[i].ts_event >= btc[r].ts_event + BOUND_NS + 2 * 10**9
            )
            assert btc[j].ts_event - BOUND_NS >= m2  # the watermark has left minute 1
        else:
            j = first_m2
            assert btc[j].ts_event - BOUND_NS < m2  # the watermark is still in minute 1
        j += 1
        top = newest(btc[:j])
        assert top - btc[r].ts_event > BOUND_NS and minute_of(top) == m2
        res = run(lob + btc[:r] + btc[r + 1 : j] + [btc[r]] + btc[j:], base=clean)
        assert [(d.key, d.reason_code, d.ts_event) for d in res.dead] == [
            (BTC, Reason.LATE, btc[r].ts_event)
        ]
        assert_rows_equal_except(
            res, clean, {(BTC, m1): {"events": -1}, (BTC, m2): {"events": 1, "late": 1}}
        )


# -- crossed and locked books ------------------------------------------------------------------


def _standalone(after: L2Event, ts: int, **changes: Any) -> L2Event:
    """A one-record batch that continues the chain where ``after`` left it (seq = seq_prev =
    the chain head), so the next real batch still chains."""
    return replace(
        after,
        seq_prev=after.seq,
        seq_first=after.seq,
        flags=F_LAST,
        ts_event=ts,
        order_id=0,
        **changes,
    )


def test_crossing_level_is_refused_and_counted_crossed(
    lob: list[L2Event], btc: list[L2Event], clean: Run
) -> None:
    # AAPL: a bid 5 ticks above the best ask
    k = chained_last(lob, len(lob) // 2)
    ask = book_after(lob[: k + 1]).best_ask()
    bad = _standalone(
        lob[k], newest(lob[: k + 1]), kind=Kind.ADD, side=Side.BID, price=ask + 500, size=100
    )
    res = run([*lob[: k + 1], bad, *lob[k + 1 :], *btc])
    minute = minute_of(bad.ts_event)
    assert_rows_equal_except(res, clean, {(AAPL, minute): {"events": 1, "crossed": 1}})
    assert [d.reason_code for d in res.dead] == [Reason.CROSSED_BOOK]

    # BTCUSDT: an ask level 3 ticks below the best bid, in minute 2
    m2 = sorted(m for i, m in clean.rows if i == BTC)[1]
    k = chained_last(btc, next(i for i, e in enumerate(btc) if e.ts_event >= m2 + 3 * 10**9))
    bid = book_after(btc[: k + 1]).best_bid()
    bad = _standalone(
        btc[k],
        newest(btc[: k + 1]),
        kind=Kind.LEVEL,
        side=Side.ASK,
        price=bid - 3 * TICK_BTC,
        size=10**8,
    )
    res = run(lob + btc[: k + 1] + [bad] + btc[k + 1 :], base=clean)
    assert minute_of(bad.ts_event) == m2
    assert_rows_equal_except(res, clean, {(BTC, m2): {"events": 1, "crossed": 1}})
    assert [d.reason_code for d in res.dead] == [Reason.CROSSED_BOOK]


def test_locked_book_is_counted_once_per_episode(
    lob: list[L2Event], btc: list[L2Event], clean: Run
) -> None:
    # a bid at the best ask price (the book allows it: locked, not crossed), taken away again
    for events, inst, kind_add, kind_del, size, at in (
        (lob, AAPL, Kind.ADD, Kind.DELETE, 100, len(lob) // 2),
        (btc, BTC, Kind.LEVEL, Kind.LEVEL, 0, len(btc) // 2),
    ):
        k = chained_last(events, at)
        ask = book_after(events[: k + 1]).best_ask()
        ts = newest(events[: k + 1])
        lock = _standalone(events[k], ts, kind=kind_add, side=Side.BID, price=ask, size=100)
        unlock = _standalone(events[k], ts, kind=kind_del, side=Side.BID, price=ask, size=size)
        faulted = [*events[: k + 1], lock, unlock, *events[k + 1 :]]
        res = run(faulted + (btc if inst == AAPL else lob))
        minute = minute_of(ts)
        assert_rows_equal_except(res, clean, {(inst, minute): {"events": 2, "locked": 1}})
        assert res.dead == []
        assert res.states[inst].book.top(20) == clean.states[inst].book.top(20)


# -- stale feed --------------------------------------------------------------------------------


def _without_span(events: list[L2Event], start: int, end: int) -> tuple[list[L2Event], int, int]:
    """``events`` without those of exchange time in [start, end); also (last time before the
    hole, first time after it)."""
    kept = [e for e in events if not start <= e.ts_event < end]
    resume = next(i for i, e in enumerate(kept) if e.ts_event >= end)
    return kept, newest(kept[:resume]), kept[resume].ts_event


def test_removed_time_span_is_a_stale_gap_where_the_feed_resumes(
    lob: list[L2Event], btc: list[L2Event], clean: Run
) -> None:
    # AAPL: 6 s of the feed missing (also breaks its chain: the outage is a gap as well)
    t0 = lob[len(lob) // 3].ts_event
    kept, before, after = _without_span(lob, t0, t0 + 6 * 10**9)
    res = run(kept + btc)
    minute = minute_of(after)
    assert res.faults("stale_gaps") == {(AAPL, minute): 1}
    assert res.rows[(AAPL, minute)]["max_gap_ms"] == round((after - before) / 1e6, 3) > 6000
    assert res.faults("sequence_gaps") == {(AAPL, minute): 1}

    # BTCUSDT: 6 s missing across the boundary of minutes 1 and 2: the silence is counted in
    # minute 2, where the feed resumes, with its length
    m2 = sorted(m for i, m in clean.rows if i == BTC)[1]
    kept, before, after = _without_span(btc, m2 - 3 * 10**9, m2 + 3 * 10**9)
    assert minute_of(before) == m2 - MINUTE_NS and minute_of(after) == m2
    res = run(lob + kept, base=clean)
    assert res.faults("stale_gaps") == {(BTC, m2): 1}
    assert res.rows[(BTC, m2)]["max_gap_ms"] == round((after - before) / 1e6, 3) > 6000
    assert res.faults("sequence_gaps") == {(BTC, m2): 1}
    assert (
        res.rows[(AAPL, minute_of(lob[0].ts_event))]
        == clean.rows[(AAPL, minute_of(lob[0].ts_event))]
    )


# -- re-sync ------------------------------------------------------------------------------------


def _dec(v: int) -> str:
    return f"{v // 10**8}.{v % 10**8:08d}"


def test_binance_chain_break_and_new_snapshot_is_one_resync(
    tmp_path: Path, btc_capture: Path, lob: list[L2Event], btc: list[L2Event], clean: Run
) -> None:
    """At the raw capture level: one depth diff lost (the adapter sees ``pu`` != previous ``u``,
    withholds the book), then a new REST snapshot -- the true book at a later diff's ``u`` --
    from which the adapter re-syncs by Binance's rules."""
    with gzip.open(btc_capture, "rb") as fh:
        lines = fh.read().splitlines(keepends=True)
    diffs = [n for n, line in enumerate(lines) if b'"depthUpdate"' in line]
    drop = diffs[len(diffs) // 2]
    resync_at = diffs[len(diffs) // 2 + 40]
    recv, text = lines[resync_at].split(b" ", 1)
    data = json.loads(text)["data"]
    assert data["b"] or data["a"]
    # the true book right after that diff, from the clean capture
    adapter = BinanceAdapter([btc_capture])
    book = OrderBook(adapter.instrument)
    for ev in adapter:
        book.apply(ev)
        if ev.kind is Kind.LEVEL and ev.is_last and ev.seq == data["u"]:
            break
    snapshot = {
        "lastUpdateId": data["u"],
        "E": data["E"],
        "T": data["T"],
        "bids": [[_dec(p), _dec(s)] for p, s in book.bids.top(len(book.bids))],
        "asks": [[_dec(p), _dec(s)] for p, s in book.asks.top(len(book.asks))],
    }
    faulted = (
        lines[:drop]
        + lines[drop + 1 : resync_at + 1]
        + [recv + b" " + json.dumps(snapshot).encode() + b"\n"]
        + lines[resync_at + 1 :]
    )
    path = tmp_path / "btcusdt_resync.gz"
    with gzip.open(path, "wb") as fh:
        fh.writelines(faulted)
    adapter = BinanceAdapter([path], refresh_interval_ms=0)  # the venue's snapshots only
    events = list(adapter)
    assert adapter.stats.resyncs == 1 and adapter.stats.snapshots == 2
    assert sum(e.kind is Kind.CLEAR for e in events) == 2

    res = run(lob + events)
    assert res.faults("resyncs") == {(BTC, minute_of(data["T"] * 1_000_000)): 1}
    # the adapter withheld the broken chain: no gap reached the book, and the re-synced book
    # ends exactly where the clean one does
    assert res.faults("sequence_gaps") == {} and res.dead == []
    assert res.states[BTC].book.bids.sizes == clean.states[BTC].book.bids.sizes
    assert res.states[BTC].book.asks.sizes == clean.states[BTC].book.asks.sizes
    # the first snapshot of an instrument is its start, not a re-sync
    assert clean.faults("resyncs") == {}


# -- records without an instrument-minute --------------------------------------------------------


def test_unreadable_records_count_as_events_only_and_never_before_state(
    lob: list[L2Event], clean: Run
) -> None:
    k = len(lob) // 2
    bad: list[Record] = [
        (AAPL, "{oops"),  # malformed, the key has a book
        (AAPL, encode_event(replace(lob[k], instrument="MSFT.XNAS")).decode()),
    ]
    res = run([("GOOG.XNAS", "{oops"), *lob[:k], *bad, *lob[k:]])
    assert "GOOG.XNAS" not in res.states and not any(i == "GOOG.XNAS" for i, _ in res.rows)
    assert len(res.dead) == 3
    minute = minute_of(lob[0].ts_event)
    assert res.rows[(AAPL, minute)] == {
        **clean.rows[(AAPL, minute)],
        "events": clean.rows[(AAPL, minute)]["events"] + 2,
    }


# -- the Flink function's wiring (no JVM: fake keyed state, context and timers) -------------------


class _Keys:
    key = ""


class _Value:
    def __init__(self, keys: _Keys) -> None:
        self.keys, self.data = keys, {}

    def value(self) -> Any:
        raw = self.data.get(self.keys.key)
        return None if raw is None else pickle.loads(raw)

    def update(self, value: Any) -> None:
        self.data[self.keys.key] = pickle.dumps(value)


class _List:
    def __init__(self, keys: _Keys) -> None:
        self.keys, self.data = keys, {}

    def get(self) -> list:
        return list(self.data.get(self.keys.key, []))

    def add(self, value: Any) -> None:
        self.data.setdefault(self.keys.key, []).append(value)

    def add_all(self, values: list) -> None:
        self.data.setdefault(self.keys.key, []).extend(values)

    def clear(self) -> None:
        self.data[self.keys.key] = []


class _Runtime:
    def __init__(self) -> None:
        self.keys = _Keys()
        self.value, self.list = _Value(self.keys), _List(self.keys)
        self.values: dict[str, _Value] = {"instrument_snapshot": self.value}
        self.timers: set[tuple[int, str]] = set()

    def get_state(self, desc: Any) -> _Value:
        return self.values.setdefault(desc.get_name(), _Value(self.keys))

    def get_list_state(self, _desc: Any) -> _List:
        return self.list


class _Ctx:
    def __init__(self, rt: _Runtime) -> None:
        self.rt, self.ts = rt, 0

    def get_current_key(self) -> str:
        return self.rt.keys.key

    def timestamp(self) -> int:
        return self.ts

    def timer_service(self) -> _Ctx:
        return self

    def register_event_time_timer(self, ts: int) -> None:
        self.rt.timers.add((ts, self.rt.keys.key))


def test_flink_function_emits_quality_rows_and_flushes_at_end_of_input(
    lob: list[L2Event], btc: list[L2Event], clean: Run
) -> None:
    pytest.importorskip("pyflink")
    from jobs.stream_job import (
        END_OF_INPUT_MS,
        FIELD,
        QUALITY,
        RECORD,
        StreamJobFunction,
        encode_batch,
    )

    cfg = Config()
    rt = _Runtime()
    ctx = _Ctx(rt)
    records = [(e.instrument, encode_event(e).decode(), e.ts_event // 1_000_000) for e in lob + btc]
    half = len(lob) + len(btc) // 2
    rows: list[dict] = []

    def collect(out: Any) -> None:
        for batch in out:
            for record in batch.split(RECORD):
                route, key, _ts, _hops, value = record.split(FIELD, 4)
                if route == QUALITY:
                    row = json.loads(value)
                    assert key == row["instrument"]
                    rows.append(row)

    fn = None
    for n, (key, raw, ts_ms) in enumerate(records):
        if n in (0, half):
            # a new instance over the same keyed state half-way: a restore from a checkpoint
            # (pickled snapshot + replay of the records logged since)
            fn = StreamJobFunction(cfg, None, snapshot_every=5000)
            fn.open(rt)
        rt.keys.key, ctx.ts = key, ts_ms
        collect(fn.process_element(encode_batch([(0, n, ts_ms, 0, raw)]), ctx))
    assert {(r["instrument"], r["minute_start"]) for r in rows} == clean.live
    assert (END_OF_INPUT_MS, AAPL) in rt.timers and (END_OF_INPUT_MS, BTC) in rt.timers
    # end of input: Flink fires every pending timer in time order, END_OF_INPUT_MS last
    for ts, key in sorted(rt.timers):
        rt.keys.key = key
        collect(fn.on_timer(ts, ctx))
    assert {(r["instrument"], r["minute_start"]): r for r in rows} == clean.rows
    assert len(rows) == len(clean.rows)


def test_flink_function_restores_a_state_pickled_before_the_quality_stage(
    lob: list[L2Event],
) -> None:
    pytest.importorskip("pyflink")
    from jobs.stream_job import StreamJobFunction

    old = run(lob[:100]).states[AAPL]
    del old.quality  # what unpickling a snapshot of the previous InstrumentState gives
    rt = _Runtime()
    rt.keys.key = AAPL
    rt.value.update(old)
    fn = StreamJobFunction(Config(), None)
    fn.open(rt)
    state = fn._state_of(AAPL)
    assert state is not None and state.quality.instrument == AAPL
    rt.list.add(encode_event(lob[100]).decode())
    fn.open(rt)
    state = fn._state_of(AAPL)  # the logged record replays onto the fresh counters
    assert sum(b.events for b in state.quality.minutes.values()) == 1


# -- a record far in the future, a lost record: re-sync instead of silence ----------------------


def test_one_record_an_hour_ahead_is_future_and_moves_no_clock(
    lob: list[L2Event], btc: list[L2Event], clean: Run
) -> None:
    """Before: it became the instrument's newest exchange time and every later record of the
    instrument was late. Now it is dead-lettered as ``future``; nothing else changes."""
    i = len(lob) // 4
    bogus = replace(
        lob[i], kind=Kind.HIDDEN_TRADE, seq_prev=0, order_id=987654321, ts_event=lob[i].ts_event
    )
    bogus.ts_event += 3_600 * 10**9
    res = run([*lob[:i], bogus, *lob[i:], *btc])
    assert [d.reason_code for d in res.dead] == [Reason.FUTURE]
    assert "ahead of the newest" in res.dead[0].reason
    assert res.features == clean.features
    # counted as an event of the instrument's current minute (its own time is not trusted)
    assert_rows_equal_except(res, clean, {(AAPL, minute_of(newest(lob[:i]))): {"events": 1}})


def test_a_run_of_far_ahead_records_is_a_genuine_jump(lob: list[L2Event]) -> None:
    """``future_confirm`` records in a row that agree move the clock (a feed that resumed after
    a long halt); a single one never does."""
    state = None
    cfg = FeatureConfig()
    for ev in lob[:50]:
        state, _ = process_record(state, AAPL, encode_event(ev), SRC, cfg, BOUND_MS)
    jump = 3_600 * 10**9
    codes = []
    for j, ev in enumerate(lob[50:60]):
        moved = replace(ev, kind=Kind.HIDDEN_TRADE, seq_prev=0, order_id=10**9 + j)
        moved.ts_event += jump
        state, res = process_record(
            state, AAPL, encode_event(moved), SRC, cfg, BOUND_MS, future_confirm=3
        )
        codes.append([d.reason_code for d in res.dead_letters])
    assert codes[:3] == [[Reason.FUTURE], [Reason.FUTURE], []]
    assert all(c == [] for c in codes[3:])
    assert state is not None and state.max_ts_event == lob[59].ts_event + jump


def test_a_genuine_jump_moves_the_clock_even_when_the_book_refuses_its_record(
    lob: list[L2Event],
) -> None:
    """The next session of a chained feed (the soak's second copy of the LOBSTER day): the
    records before the confirming one are dropped, so the book refuses it as a gap. Before, the
    clock stayed behind and every later run of records began a new ``future`` run (thousands of
    records per instrument lost); now the jump is taken at the confirming record, the book is
    out of sync and re-syncs at its next snapshot."""
    state = None
    cfg = FeatureConfig()
    for ev in lob[:50]:
        state, _ = process_record(state, AAPL, encode_event(ev), SRC, cfg, BOUND_MS)
    jump = 86_400 * 10**9
    codes = []
    for ev in lob[50:60]:
        state, res = process_record(
            state,
            AAPL,
            encode_event(replace(ev, ts_event=ev.ts_event + jump)),
            SRC,
            cfg,
            BOUND_MS,
            future_confirm=3,
        )
        codes.append([d.reason_code for d in res.dead_letters])
    assert codes[:2] == [[Reason.FUTURE], [Reason.FUTURE]]
    assert all(Reason.FUTURE not in c for c in codes[2:]), codes
    assert state is not None and state.max_ts_event >= lob[52].ts_event + jump


def _check_resync(events: list[L2Event], inst: str, first: int, last: int) -> None:
    """Records ``first..last`` of ``events`` lost: one gap, one re-sync at the next refresh,
    nothing refused after it, no row from the out-of-sync book, the clean book from then on."""
    faulted = [i for i in range(len(events)) if not first <= i <= last]
    clean_run = run(events, checkpoints=True)
    res = run([events[i] for i in faulted], base=clean_run)
    # by record index (of ``events``): the feature row each record made, its dead letter
    clean_rows = dict(zip(clean_run.feature_at, clean_run.features, strict=True))
    rows = {faulted[at]: row for at, row in zip(res.feature_at, res.features, strict=True)}
    dead = {faulted[at]: d for at, d in zip(res.dead_at, res.dead, strict=True)}
    nxt = next(i for i in range(last + 1, len(events)) if events[i].seq_prev)  # gap seen here
    refresh = next(i for i in range(last + 1, len(events)) if events[i].kind is Kind.CLEAR)
    end = next(i for i in range(refresh, len(events)) if events[i].is_last)  # its last record
    # quality: one gap where it is seen, one re-sync where the snapshot completes
    assert res.faults("sequence_gaps") == {(inst, minute_of(events[nxt].ts_event)): 1}
    assert res.faults("resyncs") == {(inst, minute_of(events[end].ts_event)): 1}
    assert clean_run.faults("resyncs") == {}  # a refresh of a book in sync is no re-sync
    # refused: chained records between the gap and the re-sync, nothing else
    assert dead and set(dead) <= set(range(nxt, refresh))
    assert all(d.reason_code is Reason.SEQUENCE_GAP for d in dead.values())
    # rows: the clean ones before the loss; none from the gap to the re-sync
    assert {i: r for i, r in rows.items() if i < first} == {
        i: r for i, r in clean_rows.items() if i < first
    }
    assert not [i for i in rows if nxt <= i < end]
    # from the re-sync on: the clean book (the adapter's, which every consumer in sync holds)
    assert end in rows and rows[end]["ofi"] == 0.0  # nothing to difference against
    book_fields = ("best_bid", "best_ask", "bid_size", "ask_size", "bid_depth", "ask_depth")
    after = [i for i in rows if i >= end]
    assert len(after) > 10 and set(after) == {i for i in clean_rows if i >= end}
    for i in after:
        assert [rows[i][k] for k in book_fields] == [clean_rows[i][k] for k in book_fields]
        assert [rows[i][f"imbalance_{n}"] for n in range(1, 6)] == [
            clean_rows[i][f"imbalance_{n}"] for n in range(1, 6)
        ]
    book, clean_book = res.states[inst].book, clean_run.states[inst].book
    assert book.synced and book.resyncs == 1 and book.gaps == 1
    assert (book.bids.sizes, book.asks.sizes) == (clean_book.bids.sizes, clean_book.asks.sizes)


def test_lost_lobster_record_resyncs_at_the_next_orderbook_row_refresh() -> None:
    """Before: every later chained record of the day was refused (``sequence_gap``) and the
    book never recovered. Now the adapter's next refresh (an orderbook row, LOBSTER's full top
    N) re-syncs it; features are withheld in between."""
    events = _encoded(list(iter_lobster_events(*SAMPLE_LOBSTER, refresh_interval_ms=5_000)))
    k = chained_last(events, len(events) // 3)
    _check_resync(events, AAPL, k, k)


def test_lost_binance_diff_resyncs_at_the_next_refresh(btc_capture: Path) -> None:
    """Before: the rest of the capture was refused (12,775 of 14,997 records in the review's
    run). Now the adapter's next refresh -- its own book, which every consumer that saw all
    records holds -- re-syncs it."""
    events = _encoded(list(BinanceAdapter([btc_capture], refresh_interval_ms=20_000)))
    last = chained_last(events, len(events) // 3)
    first = last
    while events[first - 1].seq == events[last].seq and events[first - 1].kind is Kind.LEVEL:
        first -= 1
    _check_resync(events, BTC, first, last)
