"""LOBSTER adapter: real data only. The ground truth is LOBSTER's own orderbook file (row k is
the visible book after message k); the verification must pass on every file and must be able
to fail (corrupted copy)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from udfs.market.adapters.lobster import (
    LobsterStats,
    iter_lobster_events,
    parse_lobster_name,
    parse_lobster_time,
    verify_lobster,
)
from udfs.market.book import OrderBook
from udfs.schema import F_LAST, F_SNAPSHOT, Kind, Side, decode_event, encode_event

ROOT = Path(__file__).parents[2]
SAMPLE = ROOT / "data" / "lobster"
SHARED = Path(__file__).parents[2].parent / "shared" / "data" / "lobster"
SHARED_DIRS = [
    "AAPL_2012-06-21_L10_first998",
    # whole trading-day sample files (up to 148k rows): `make test` runs them, `make check` not
    *(
        pytest.param(name, marks=pytest.mark.slow)
        for name in (
            "LOBSTER_SampleFile_AAPL_2012-06-21_1",
            "LOBSTER_SampleFile_AMZN_2012-06-21_1",
            "LOBSTER_SampleFile_GOOG_2012-06-21_1",
            "LOBSTER_SampleFile_GOOG_2012-06-21_10",
        )
    ),
]
MESSAGE_KINDS = {
    Kind.ADD,
    Kind.CANCEL,
    Kind.DELETE,
    Kind.EXECUTE,
    Kind.HIDDEN_TRADE,
    Kind.CROSS_TRADE,
    Kind.HALT,
}


def _pair(folder: Path) -> tuple[Path, Path]:
    return (next(folder.glob("*_message_*.csv")), next(folder.glob("*_orderbook_*.csv")))


def _copy(folder: Path, dest: Path) -> tuple[Path, Path, list[str], list[str]]:
    msg, ob = _pair(folder)
    return (
        dest / msg.name,
        dest / ob.name,
        msg.read_text().splitlines(),
        ob.read_text().splitlines(),
    )


def test_sample_verifies_exactly() -> None:
    msg_path, ob_path = _pair(SAMPLE)
    r = verify_lobster(msg_path, ob_path)
    assert r["checked"] == sum(1 for _ in ob_path.open()) - 1  # 999 rows (first 49 s)
    assert r["matched"] == r["checked"]
    assert r["full_top_n_matched"] == r["checked"]
    assert r["mismatches"] == []
    assert r["book_errors"] == 0
    assert r["frontier_mismatches"] == 0
    assert r["reveals"] > 0  # levels entering the top 10 from deeper in the book do happen


@pytest.mark.parametrize("name", SHARED_DIRS)
def test_shared_files_verify_exactly(name: str) -> None:
    folder = SHARED / name
    if not folder.is_dir():
        pytest.skip(f"shared data absent: {folder}")
    # the whole files (GOOG level 10, 148k rows, takes ~6 s)
    r = verify_lobster(*_pair(folder))
    rows = sum(1 for _ in _pair(folder)[1].open())
    assert r["checked"] == rows - 1
    assert r["matched"] == r["checked"], r["mismatches"][:3]
    assert r["full_top_n_matched"] == r["checked"]
    assert r["book_errors"] == 0
    assert r["frontier_mismatches"] == 0


def test_max_rows_limits_the_run() -> None:
    r = verify_lobster(*_pair(SAMPLE), max_rows=100)
    assert r["checked"] == 99 and r["matched"] == 99


def test_corrupted_size_is_detected(tmp_path: Path) -> None:
    msg_path, ob_path, msgs, rows = _copy(SAMPLE, tmp_path)
    # an order joining row k-1's best bid level: inside the frontier, so only the message
    # stream can explain the level's size and a wrong size must show up
    k = next(
        k
        for k in range(10, len(msgs) + 1)
        if msgs[k - 1].split(",")[1] == "1"
        and msgs[k - 1].split(",")[5] == "1"
        and msgs[k - 1].split(",")[4] == rows[k - 2].split(",")[2]
    )
    parts = msgs[k - 1].split(",")
    parts[3] = str(int(parts[3]) + 1)
    msgs[k - 1] = ",".join(parts)
    msg_path.write_text("\n".join(msgs) + "\n")
    ob_path.write_text("\n".join(rows) + "\n")
    stats = LobsterStats()
    for _ in iter_lobster_events(msg_path, ob_path, stats=stats):
        pass
    assert stats.frontier_mismatches > 0
    r = verify_lobster(msg_path, ob_path)
    assert r["matched"] < r["checked"]
    first = r["mismatches"][0]
    assert first["k"] == k and first["side"] == "B"


def _side_state(book: OrderBook) -> tuple[dict[int, int], dict[int, int]]:
    return dict(book.bids.sizes), dict(book.asks.sizes)


@pytest.mark.parametrize(
    "folder",
    [SAMPLE, pytest.param(SHARED / "LOBSTER_SampleFile_GOOG_2012-06-21_1", marks=pytest.mark.slow)],
)
def test_hidden_executions_never_change_the_book(folder: Path) -> None:
    if not folder.is_dir():
        pytest.skip(f"data absent: {folder}")
    book = OrderBook("X")
    hidden = 0
    before = None
    in_hidden_batch = False
    for ev in iter_lobster_events(*_pair(folder)):
        if ev.kind is Kind.HIDDEN_TRADE:
            hidden += 1
            before = _side_state(book)
            in_hidden_batch = True
            assert ev.side in (Side.BID, Side.ASK) and ev.price > 0 and ev.size > 0
        changed = book.apply(ev)
        if ev.kind is Kind.HIDDEN_TRADE:
            assert changed is False and _side_state(book) == before
        if in_hidden_batch and ev.flags & F_LAST:
            assert _side_state(book) == before  # nor does the batch: no reveals on them
            in_hidden_batch = False
    assert hidden > 0


def test_halts_are_emitted(tmp_path: Path) -> None:
    """The sample files hold no halt; insert LOBSTER's documented halt/quote/resume triple
    (type 7, price -1/0/1, direction -1, orderbook row duplicated) into a copy."""
    msg_path, ob_path, msgs, rows = _copy(SAMPLE, tmp_path)
    at = 500
    t = msgs[at - 1].split(",")[0]
    halts = [f"{t},7,0,0,{code},-1" for code in (-1, 0, 1)]
    msgs[at:at] = halts
    rows[at:at] = [rows[at - 1]] * 3
    msg_path.write_text("\n".join(msgs) + "\n")
    ob_path.write_text("\n".join(rows) + "\n")
    r = verify_lobster(msg_path, ob_path)
    assert r["checked"] == len(rows) - 1 and r["matched"] == r["checked"]
    assert r["by_type"][7] == 3
    book = OrderBook("X")
    seen = []
    for ev in iter_lobster_events(msg_path, ob_path):
        book.apply(ev)
        if ev.kind is Kind.HALT:
            assert ev.side is Side.NONE and ev.size == 0 and ev.is_last
            assert decode_event(encode_event(ev)) == ev
            seen.append((ev.seq, ev.price, book.halted))
    assert seen == [(at + 1, -1, True), (at + 2, 0, False), (at + 3, 1, False)]


def test_event_structure_and_counts() -> None:
    msg_path, ob_path = _pair(SAMPLE)
    n = sum(1 for _ in msg_path.open())
    events = list(iter_lobster_events(msg_path, ob_path))
    # snapshot of row 1: clear + levels, seq 1, F_SNAPSHOT, F_LAST on the last one only
    snap = [e for e in events if e.seq == 1]
    assert snap[0].kind is Kind.CLEAR and snap[0].side is Side.NONE and snap[0].price == 0
    assert all(e.kind is Kind.SNAPSHOT for e in snap[1:])
    assert all(e.flags & F_SNAPSHOT for e in snap)
    assert [e.is_last for e in snap] == [False] * (len(snap) - 1) + [True]
    assert len(snap) == 1 + 20  # row 1 of the sample has 10 levels a side
    # every message k >= 2: exactly one message record, first in its batch; one F_LAST per k
    per_seq = Counter(e.seq for e in events if e.kind in MESSAGE_KINDS)
    assert set(per_seq) == set(range(2, n + 1)) and set(per_seq.values()) == {1}
    lasts = Counter(e.seq for e in events if e.is_last)
    assert set(lasts) == set(range(1, n + 1)) and set(lasts.values()) == {1}
    prev = None
    for e in events:
        if e.seq >= 2 and (prev is None or prev.seq != e.seq):
            assert e.kind in MESSAGE_KINDS
        if e.kind is Kind.LEVEL:
            assert prev is not None and prev.seq == e.seq and not prev.is_last
        prev = e
    for e in events:
        assert e.instrument == "AAPL.XNAS" and e.venue == "XNAS"
        assert e.price_exp == -4 and e.size_exp == 0 and e.ts_recv == e.ts_event
        assert decode_event(encode_event(e)) == e  # every record passes the schema


def test_timestamps_are_exact_ns_utc() -> None:
    assert parse_lobster_time("34200.00426064") == 34_200_004_260_640
    assert parse_lobster_time("57599.999999999") == 57_599_999_999_999
    assert parse_lobster_time("34200") == 34_200 * 10**9
    first = next(iter_lobster_events(*_pair(SAMPLE)))
    # message 1 at 34200.004241176 s after midnight ET on 2012-06-21 (EDT, UTC-4)
    open_utc = int(datetime(2012, 6, 21, 13, 30, tzinfo=UTC).timestamp()) * 10**9
    assert first.ts_event == open_utc + 4_241_176


def test_file_name_and_symbol_override() -> None:
    info = parse_lobster_name("AAPL_2012-06-21_34200000_57600000_message_10.csv")
    assert (info.symbol, info.day.isoformat(), info.depth) == ("AAPL", "2012-06-21", 10)
    with pytest.raises(ValueError):
        parse_lobster_name("aapl.csv")
    ev = next(iter_lobster_events(*_pair(SAMPLE), symbol="aapl2"))
    assert ev.instrument == "AAPL2.XNAS"


def test_adapter_book_and_job_book_agree_when_a_batch_closing_record_is_refused() -> None:
    """The adapter keeps its own book with :meth:`OrderBook.apply` (refusals counted, the record
    still emitted); the stream job refuses the same record and, before, also closed the batch it
    ended -- the adapter's book did not, refused every later message as a sequence gap and so
    diverged from the job's. Closing the batch is now the book's own rule: both agree."""
    from dataclasses import replace

    from udfs.config import FeatureConfig
    from udfs.pipeline import InstrumentState, RecordSource, process_record

    events = list(iter_lobster_events(*_pair(SAMPLE), refresh_interval_ms=0))
    r = next(
        i
        for i in range(len(events) // 2, len(events))
        if events[i].kind is Kind.LEVEL and events[i].is_last
    )
    before = OrderBook(events[0].instrument)
    for ev in events[:r]:
        before.apply(ev)
    ask = before.best_ask()
    assert ask is not None
    crossing = replace(events[r], side=Side.BID, price=ask + 100, size=1)  # refused: crossed
    stream = [*events[:r], crossing, *events[r + 1 :]]

    adapter_book = OrderBook(events[0].instrument)  # what the adapter does with its own book
    refused = 0
    state: InstrumentState | None = None
    dead = []
    for ev in stream:
        try:
            adapter_book.apply(ev)
        except Exception:
            refused += 1
        state, res = process_record(
            state, ev.instrument, encode_event(ev), RecordSource("e", 0, 0), FeatureConfig(), 2000
        )
        dead += res.dead_letters
        if ev.is_last:
            assert state is not None
            assert (adapter_book.bids.sizes, adapter_book.asks.sizes) == (
                state.book.bids.sizes,
                state.book.asks.sizes,
            ), ev.seq
    assert refused == len(dead) == 1
    assert state is not None and state.book.last_seq == adapter_book.last_seq == events[-1].seq


@pytest.mark.parametrize(
    "folder",
    [SAMPLE, *(pytest.param(SHARED / d.values[0], marks=d.marks) for d in SHARED_DIRS[1:4])],
)
def test_refresh_is_the_orderbook_row_and_changes_nothing_for_a_book_in_sync(
    folder: Path,
) -> None:
    """A refresh carries row k exactly as its top N (LOBSTER's full top-N state) and the deeper
    levels the adapter holds, so a consumer in sync has the very same book before and after
    it (the paper venue's queue positions do not move), and it is no re-sync."""
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    msg, ob = _pair(folder)
    rows = [line.split(",") for line in ob.read_text().splitlines()]
    max_rows = 20_000
    stats = LobsterStats()
    book = OrderBook("x")
    before: tuple[dict[int, int], dict[int, int]] | None = None
    refreshes = 0
    last_row = 0
    for ev in iter_lobster_events(
        msg, ob, stats=stats, max_rows=max_rows, refresh_interval_ms=5_000
    ):
        if ev.kind is Kind.CLEAR and ev.seq > 1:
            before = (dict(book.bids.sizes), dict(book.asks.sizes))
        book.apply(ev)
        if ev.is_last and not ev.flags & F_SNAPSHOT:
            last_row = ev.seq
        if ev.is_last and ev.flags & F_SNAPSHOT and before is not None:
            refreshes += 1
            assert (book.bids.sizes, book.asks.sizes) == before
            row = [int(x) for x in rows[last_row - 1]]
            depth = len(row) // 4
            bids, asks = book.top(depth)
            assert asks == [(row[4 * i], row[4 * i + 1]) for i in range(depth) if row[4 * i + 1]]
            assert bids == [
                (row[4 * i + 2], row[4 * i + 3]) for i in range(depth) if row[4 * i + 3]
            ]
            before = None
    assert refreshes == stats.refreshes > 3
    assert book.resyncs == 0 and book.synced
