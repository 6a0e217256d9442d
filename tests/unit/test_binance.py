"""Binance adapter against real captures: the README's bookTicker ground truth and the diff chain.

The shared captures (``../shared/data/binance``) are the reference; the project's own sample
(``data/binance/usdm/btcusdt_20240718.gz``) keeps the core check runnable without them. The whole
file runs in about 10 s (each full capture verifies in ~1-1.5 s).
"""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from udfs.market.adapters.binance import (
    BinanceAdapter,
    BinanceStats,
    detect_market,
    iter_binance_events,
    parse_decimal,
    verify_binance,
)
from udfs.market.book import OrderBook
from udfs.schema import F_LAST, F_SNAPSHOT, Kind, Side, decode_event, encode_event

PROJECT = Path(__file__).resolve().parents[2]
SHARED = PROJECT.parent / "shared" / "data"
SAMPLE = PROJECT / "data" / "binance" / "usdm" / "btcusdt_20240718.gz"
BN = SHARED / "binance"

DATASETS: dict[str, tuple[str, list[str]]] = {
    "usdm_0808": ("usdm", ["usdm/btcusdt_20240808.gz"]),
    "usdm_0718_0719": ("usdm", ["usdm/btcusdt_20240718.gz", "usdm/btcusdt_20240719.gz"]),
    "spot_0808_0809": ("spot", ["spot/btcusdt_20240808.gz", "spot/btcusdt_20240809.gz"]),
    "cm_0808_0809": ("cm", ["cm/btcusd_perp_20240808.gz", "cm/btcusd_perp_20240809.gz"]),
}

_results: dict[str, dict[str, Any]] = {}


def _shared_or_skip() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent")
    return BN


def _verify(name: str) -> dict[str, Any]:
    """verify_binance of a shared dataset, computed once per test session."""
    if name not in _results:
        base = _shared_or_skip()
        _results[name] = verify_binance([base / f for f in DATASETS[name][1]])
    return _results[name]


def _verify_sample() -> dict[str, Any]:
    """verify_binance of the shipped sample, computed once per test session."""
    if "sample" not in _results:
        _results["sample"] = verify_binance([SAMPLE])
    return _results["sample"]


def _lines(path: Path) -> list[bytes]:
    with gzip.open(path, "rb") as fh:
        return fh.read().splitlines(keepends=True)


def _write(path: Path, lines: list[bytes]) -> Path:
    with gzip.open(path, "wb") as fh:
        fh.writelines(lines)
    return path


# -- ground truth on real data ---------------------------------------------------------------


@pytest.mark.slow  # whole days of capture
@pytest.mark.parametrize("name", list(DATASETS))
def test_shared_dataset_chain_holds_and_checkpoints_match(name: str) -> None:
    res = _verify(name)
    assert res["market"] == DATASETS[name][0]
    assert res["resyncs"] == 0, res["stats"]["resync_details"]
    assert res["diffs_dropped_unsynced"] == 0
    assert res["bad_lines"] == 0
    assert res["book_errors"] == 0, res["book_error_samples"]
    assert res["diffs_applied"] > 1000
    assert res["matched"] == res["checked"], res["mismatches"]
    assert res["ok"] is True
    if DATASETS[name][0] == "usdm":
        # "a few hundred exact checkpoints per capture"
        assert res["checked"] >= 200
        assert res["checked"] - res["checked_late"] > 50  # also tickers arriving after the diff


def test_shipped_sample_verifies_fully() -> None:
    res = _verify_sample()
    assert res["instrument"] == "BTCUSDT.BINANCE_USDM"
    assert res["checked"] > 100
    assert res["matched"] == res["checked"], res["mismatches"]
    assert res["resyncs"] == 0
    assert res["ok"] is True


def test_detect_market(tmp_path: Path) -> None:
    assert detect_market([SAMPLE]) == ("usdm", "BTCUSDT")
    base = _shared_or_skip()
    assert detect_market([base / "spot/btcusdt_20240808.gz"]) == ("spot", "BTCUSDT")
    assert detect_market([base / "cm/btcusd_perp_20240808.gz"]) == ("cm", "BTCUSD_PERP")
    # the second day alone has no snapshot: nothing is ever synced, every diff counted as dropped
    # (its first 3,000 lines, as a capture of their own)
    with gzip.open(base / "usdm/btcusdt_20240719.gz", "rb") as fh:
        head = _write(tmp_path / "btcusdt_20240719.gz", list(itertools.islice(fh, 3_000)))
    stats = BinanceStats()
    events = list(iter_binance_events([head], "usdm", stats=stats))
    assert stats.lines == 3_000
    assert not any(e.kind in (Kind.LEVEL, Kind.SNAPSHOT) for e in events)
    assert stats.diffs_applied == 0
    assert stats.diffs_dropped_unsynced == stats.diffs > 0


# -- the event stream itself -----------------------------------------------------------------


def test_events_follow_the_schema_and_chain() -> None:
    adapter = BinanceAdapter([SAMPLE], refresh_interval_ms=0)  # the venue's own records only
    events = list(adapter)
    assert adapter.stats.events == len(events)
    # snapshot: CLEAR then levels, seq = lastUpdateId, only the last one F_LAST
    first_clear = next(i for i, e in enumerate(events) if e.kind is Kind.CLEAR)
    clear = events[first_clear]
    assert clear.side is Side.NONE and clear.price == 0 and clear.flags == F_SNAPSHOT
    snap = [e for e in events if e.kind is Kind.SNAPSHOT]
    assert len(snap) == 2000 and all(e.seq == clear.seq for e in snap)
    assert snap[-1].flags == F_LAST | F_SNAPSHOT
    assert all(e.flags == F_SNAPSHOT for e in snap[:-1])
    # diffs: deletions first in a batch, one F_LAST per batch, seq_prev chains batch to batch
    prev_seq = clear.seq
    batch: list[Any] = []
    for e in events:
        assert e.price_exp == e.size_exp == -8
        if e.kind is not Kind.LEVEL:
            continue
        batch.append(e)
        if e.flags & F_LAST:
            assert {x.seq for x in batch} == {e.seq}
            assert all(x.seq_prev == prev_seq for x in batch)
            sizes = [x.size for x in batch]
            assert sizes == sorted(sizes, key=bool)  # zeros, then non-zeros
            assert all(not x.flags & F_LAST for x in batch[:-1])
            prev_seq, batch = e.seq, []
    assert batch == []
    trades = [e for e in events if e.kind is Kind.TRADE]
    assert trades and all(e.order_id > 0 and e.seq_prev == 0 for e in trades)
    bbo = [e for e in events if e.kind is Kind.BBO]
    assert len(bbo) == 2 * adapter.stats.tickers
    assert all(
        b.side is Side.BID and a.side is Side.ASK and a.flags == F_LAST and b.seq == a.seq
        for b, a in zip(bbo[::2], bbo[1::2], strict=True)
    )
    # every record survives the wire format
    for e in events[::50]:
        assert decode_event(encode_event(e)) == e


def test_values_are_exact_and_times_are_ns() -> None:
    lines = _lines(SAMPLE)
    trade_line = next(ln for ln in lines if b"@trade" in ln)
    recv, raw = trade_line.split(b" ", 1)
    data = json.loads(raw)["data"]
    trade = next(e for e in BinanceAdapter([SAMPLE]) if e.kind is Kind.TRADE)
    assert trade.order_id == data["t"]
    assert trade.price == parse_decimal(data["p"])
    assert trade.price_decimal_str() == f"{data['p']}000000"  # "63943.90" -> 2 + 6 decimals
    assert trade.ts_event == data["T"] * 1_000_000
    assert trade.ts_recv == int(recv)
    assert trade.side is (Side.BID if data["m"] else Side.ASK)


def test_parse_decimal_is_exact() -> None:
    assert parse_decimal("61837.63000000") == 6_183_763_000_000
    assert parse_decimal("0.00000001") == 1
    assert parse_decimal("0.000") == 0
    assert parse_decimal("1000") == 100_000_000_000
    assert parse_decimal("0.1") + parse_decimal("0.2") == parse_decimal("0.3")
    assert parse_decimal("1.1234567800") == 112_345_678  # extra zeros are fine
    for bad in ("1.123456789", "-1.5", "abc", "1.2.3", ""):
        with pytest.raises(ValueError):
            parse_decimal(bad)


# -- failure modes are counted, never silent -------------------------------------------------


def test_broken_chain_is_a_resync_not_a_match(tmp_path: Path) -> None:
    lines = _lines(SAMPLE)
    snap_at = next(i for i, ln in enumerate(lines) if b"lastUpdateId" in ln)
    diff_idx = [i for i, ln in enumerate(lines) if b"depthUpdate" in ln and i > snap_at]
    victim = diff_idx[len(diff_idx) // 2]
    victim_u = json.loads(lines[victim].split(b" ", 1)[1])["data"]["u"]
    broken = _write(tmp_path / "btcusdt_20240718.gz", lines[:victim] + lines[victim + 1 :])

    full = _verify_sample()
    res = verify_binance([broken])
    assert res["resyncs"] == 1
    assert res["ok"] is False
    assert res["diffs_dropped_unsynced"] > 0
    # every diff is accounted for: applied before the gap, or dropped-and-counted after it
    assert res["diffs_applied"] + res["diffs_dropped_unsynced"] == full["diffs_applied"] - 1
    assert res["diffs_applied"] < full["diffs_applied"] // 2 + 10
    # the checkpoints after the break are not counted as matches: fewer checks, none wrong
    assert res["checked"] < full["checked"]
    assert res["matched"] == res["checked"]
    # nothing for the book is emitted past the gap
    levels = [e for e in BinanceAdapter([broken]) if e.kind is Kind.LEVEL]
    assert max(e.seq for e in levels) < victim_u


def test_malformed_lines_are_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = _lines(SAMPLE)
    garbage = [
        b"1721347021281597999 {not json\n",
        b"no-timestamp-here\n",
        b'1721347021281597999 {"stream":"x","data":{"e":"nope"}}\n',
    ]
    mixed = lines[:100] + garbage[:2] + lines[100:200] + garbage[2:] + lines[200:]
    path = _write(tmp_path / "mixed.gz", mixed)
    with caplog.at_level("WARNING", logger="udfs.market.adapters.binance"):
        res = verify_binance([path])
    assert res["bad_lines"] == 3
    samples = res["stats"]["bad_line_samples"]
    assert samples[0].startswith("mixed.gz:101:") and samples[1].startswith("mixed.gz:102:")
    assert samples[2].startswith("mixed.gz:203:")
    assert "bad Binance line mixed.gz:101" in caplog.text
    assert res["stats"]["lines"] == len(mixed)
    # the rest of the stream is unaffected
    assert res["resyncs"] == 0 and res["checked"] > 100 and res["matched"] == res["checked"]
    assert res["ok"] is False  # because of the bad lines


def test_empty_diff_keeps_the_emitted_chain(tmp_path: Path) -> None:
    """Hand-made futures capture with an empty diff in the middle (the real data has none)."""

    def diff(
        recv: int, first: int, last: int, pu: int, b: list[list[str]], a: list[list[str]]
    ) -> bytes:
        data = {
            "e": "depthUpdate",
            "E": 1_700_000_000_000 + recv,
            "T": 1_700_000_000_000 + recv,
            "s": "BTCUSDT",
            "U": first,
            "u": last,
            "pu": pu,
            "b": b,
            "a": a,
        }
        return f"{recv} {json.dumps({'stream': 'btcusdt@depth@0ms', 'data': data})}\n".encode()

    snap = {"lastUpdateId": 100, "E": 1, "T": 1, "bids": [["10.0", "1"]], "asks": [["11.0", "2"]]}
    lines = [
        diff(1, 90, 95, 89, [["10.0", "5"]], []),  # stale, u < lastUpdateId
        f"2 {json.dumps(snap)}\n".encode(),
        diff(3, 98, 102, 95, [["10.5", "1"]], [["11.0", "0"]]),  # straddles 100
        diff(4, 103, 104, 102, [], []),  # empty
        diff(5, 105, 106, 104, [["11.5", "3"], ["10.5", "0"]], [["12.0", "1"]]),
    ]
    path = _write(tmp_path / "btcusdt_x.gz", lines)
    adapter = BinanceAdapter([path])
    assert adapter.market == "usdm"
    events = list(adapter)
    assert adapter.stats.diffs_empty == 1 and adapter.stats.diffs_applied == 3
    assert adapter.stats.diffs_dropped_stale == 1 and adapter.stats.resyncs == 0
    assert adapter.chain_u == 106
    last = [e for e in events if e.seq == 106]
    assert [(e.side, e.price, e.size) for e in last] == [
        (Side.BID, 1_050_000_000, 0),
        (Side.BID, 1_150_000_000, 300_000_000),
        (Side.ASK, 1_200_000_000, 100_000_000),
    ]
    assert all(e.seq_prev == 102 and e.seq_first == 105 for e in last)  # skips the empty 104
    book = OrderBook(adapter.instrument)
    for e in events:
        book.apply(e)  # no sequence gap, no crossed book
    assert book.top(5) == (
        [(1_150_000_000, 300_000_000), (1_000_000_000, 100_000_000)],
        [(1_200_000_000, 100_000_000)],
    )


def test_refresh_is_the_adapters_book_at_the_chain_head() -> None:
    """Every ``refresh_interval_ms`` of exchange time the adapter emits its own book as a
    snapshot whose ``seq`` is the last diff's, so the next diff chains to it: a consumer in sync
    keeps the very same book (no re-sync), one that lost a record re-syncs there."""
    adapter = BinanceAdapter([SAMPLE], refresh_interval_ms=30_000)
    book = OrderBook(adapter.instrument)
    before = None
    last_diff_seq = 0
    refreshes = []
    expect_prev = None
    for ev in adapter:
        if ev.kind is Kind.CLEAR and last_diff_seq:
            before = (dict(book.bids.sizes), dict(book.asks.sizes))
            assert ev.seq == last_diff_seq and ev.flags == F_SNAPSHOT
        book.apply(ev)
        if ev.kind is Kind.LEVEL:
            if expect_prev is not None:
                assert ev.seq_prev == expect_prev  # the diff after a refresh chains to it
                expect_prev = None
            if ev.is_last:
                last_diff_seq = ev.seq
        if ev.is_last and ev.kind is Kind.SNAPSHOT and before is not None:
            assert (book.bids.sizes, book.asks.sizes) == before
            refreshes.append(ev.ts_event)
            expect_prev, before = ev.seq, None
    assert len(refreshes) == adapter.stats.refreshes >= 3
    assert all(b - a >= 30_000_000_000 for a, b in itertools.pairwise(refreshes))
    assert book.resyncs == 0 and book.synced and adapter.stats.book_refused == 0
