"""Tests of udfs.market.features: hand-computed cases per formula, window boundaries, and the real
LOBSTER AAPL sample checked against an independent numpy computation from the raw CSV columns.

The LOBSTER orderbook file is the true top-10 book after each message. It is fed to
:class:`OrderBook` two ways -- as a full snapshot batch per row, and as per-row level diffs --
with the executions of the message file as trade records, and every feature row is compared
with what numpy computes straight from the CSV (never through :mod:`udfs.market.features`).
"""

from __future__ import annotations

import csv
import json
import math
import pickle
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from udfs.config import FeatureConfig
from udfs.market.book import OrderBook
from udfs.market.features import FeatureRow, FeatureState, feature_keys, on_event
from udfs.schema import F_LAST, F_SNAPSHOT, Kind, L2Event, Side

DATA = Path(__file__).resolve().parents[2] / "data" / "lobster"
MESSAGES = DATA / "AAPL_2012-06-21_34200000_57600000_message_10.csv"
ORDERBOOK = DATA / "AAPL_2012-06-21_34200000_57600000_orderbook_10.csv"
INSTRUMENT = "AAPL.XNAS"
PRICE_EXP = -4  # LOBSTER prices are dollars * 10_000
# LOBSTER times are seconds after midnight New York time; 2012-06-21 is EDT (UTC-4)
DAY_NS = int(datetime(2012, 6, 21, tzinfo=timezone(timedelta(hours=-4))).timestamp()) * 10**9
TRADE_TYPES = (4, 5)  # visible and hidden executions; direction = resting side
EXACT = {"rel": 1e-12, "abs": 0.0}


# ---------------------------------------------------------------------------------------------
# LOBSTER loading and event construction (test-side; independent of udfs.market.adapters)


def ts_ns(field: str) -> int:
    """'34200.004241176' -> ns since the epoch, from the string (no float on the way)."""
    sec, _, frac = field.partition(".")
    return DAY_NS + int(sec) * 10**9 + int(frac.ljust(9, "0")[:9])


@dataclass
class Lobster:
    ts: np.ndarray  # int64 ns, one per message / orderbook row
    mtype: np.ndarray
    size: np.ndarray
    price: np.ndarray
    direction: np.ndarray
    book: np.ndarray  # (rows, 40): ask_px_1, ask_sz_1, bid_px_1, bid_sz_1, ...

    @property
    def ask_px(self) -> np.ndarray:
        return self.book[:, 0::4]

    @property
    def ask_sz(self) -> np.ndarray:
        return self.book[:, 1::4]

    @property
    def bid_px(self) -> np.ndarray:
        return self.book[:, 2::4]

    @property
    def bid_sz(self) -> np.ndarray:
        return self.book[:, 3::4]


@pytest.fixture(scope="module")
def lob() -> Lobster:
    with MESSAGES.open(newline="") as fh:
        rows = list(csv.reader(fh))
    ts = np.array([ts_ns(r[0]) for r in rows], dtype=np.int64)
    ints = np.array([[int(x) for x in r[1:]] for r in rows], dtype=np.int64)
    book = np.loadtxt(ORDERBOOK, delimiter=",", dtype=np.int64)
    assert book.shape == (len(rows), 40)
    lob = Lobster(ts, ints[:, 0], ints[:, 2], ints[:, 3], ints[:, 4], book)
    # preconditions of the comparison: no empty-level placeholders, never crossed or locked,
    # event time non-decreasing
    assert (lob.bid_px > 0).all() and (lob.ask_px < 9_999_999_999).all()
    assert (lob.ask_px[:, 0] > lob.bid_px[:, 0]).all()
    assert (np.diff(lob.ts) >= 0).all()
    return lob


def _trade_record(lob: Lobster, i: int) -> L2Event | None:
    if lob.mtype[i] not in TRADE_TYPES:
        return None
    ts = int(lob.ts[i])
    kind = Kind.TRADE if lob.mtype[i] == 4 else Kind.HIDDEN_TRADE  # book leaves both alone
    side = Side.BID if lob.direction[i] == 1 else Side.ASK  # LOBSTER d: 1 buy, -1 sell order
    return L2Event(
        INSTRUMENT,
        "XNAS",
        kind,
        side,
        int(lob.price[i]),
        int(lob.size[i]),
        ts,
        ts,
        price_exp=PRICE_EXP,
        seq=i + 1,
        flags=0,
    )


def _levels(lob: Lobster, i: int) -> tuple[dict[int, int], dict[int, int]]:
    bids = dict(zip(lob.bid_px[i].tolist(), lob.bid_sz[i].tolist(), strict=True))
    asks = dict(zip(lob.ask_px[i].tolist(), lob.ask_sz[i].tolist(), strict=True))
    return bids, asks


def snapshot_stream(lob: Lobster) -> Iterator[L2Event]:
    """Per row: the message's trade (if any), then CLEAR + 20 SNAPSHOT levels, F_LAST last."""
    for i in range(len(lob.ts)):
        trade = _trade_record(lob, i)
        if trade is not None:
            yield trade
        ts = int(lob.ts[i])
        common = {"price_exp": PRICE_EXP, "seq": i + 1, "seq_first": i + 1}
        yield L2Event(
            INSTRUMENT, "XNAS", Kind.CLEAR, Side.NONE, 0, 0, ts, ts, flags=F_SNAPSHOT, **common
        )
        bids, asks = _levels(lob, i)
        levels = [(Side.BID, p, q) for p, q in bids.items()]
        levels += [(Side.ASK, p, q) for p, q in asks.items()]
        for j, (side, px, sz) in enumerate(levels):
            flags = F_SNAPSHOT | (F_LAST if j == len(levels) - 1 else 0)
            yield L2Event(
                INSTRUMENT, "XNAS", Kind.SNAPSHOT, side, px, sz, ts, ts, flags=flags, **common
            )


def diff_stream(lob: Lobster) -> Iterator[L2Event]:
    """Per row: the message's trade (if any), then LEVEL records for the levels that changed
    from the previous row (removals first), chained by seq/seq_prev, F_LAST last. A row that
    changes no visible level gets a no-op LEVEL (best bid re-set to its size)."""
    prev: tuple[dict[int, int], dict[int, int]] = ({}, {})
    for i in range(len(lob.ts)):
        trade = _trade_record(lob, i)
        if trade is not None:
            yield trade
        cur = _levels(lob, i)
        changes: list[tuple[Side, int, int]] = []
        for side, old, new in ((Side.BID, prev[0], cur[0]), (Side.ASK, prev[1], cur[1])):
            changes += [(side, p, 0) for p in old if p not in new]
        for side, old, new in ((Side.BID, prev[0], cur[0]), (Side.ASK, prev[1], cur[1])):
            changes += [(side, p, q) for p, q in new.items() if old.get(p) != q]
        if not changes:
            best = max(cur[0])
            changes.append((Side.BID, best, cur[0][best]))
        ts = int(lob.ts[i])
        for j, (side, px, sz) in enumerate(changes):
            yield L2Event(
                INSTRUMENT,
                "XNAS",
                Kind.LEVEL,
                side,
                px,
                sz,
                ts,
                ts,
                price_exp=PRICE_EXP,
                seq=i + 1,
                seq_first=i + 1,
                seq_prev=i,
                flags=F_LAST if j == len(changes) - 1 else 0,
            )
        prev = cur


def run(
    events: Iterable[L2Event],
    cfg: FeatureConfig,
    book: OrderBook | None = None,
    state: FeatureState | None = None,
) -> list[FeatureRow]:
    book = OrderBook(INSTRUMENT) if book is None else book
    state = FeatureState() if state is None else state
    rows = []
    for ev in events:
        book.apply(ev)
        row = on_event(state, book, ev, cfg)
        if row is not None:
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# independent reference: numpy straight from the CSV columns


def reference(lob: Lobster, n: int, window_ms: int) -> dict[str, np.ndarray]:
    pb, qb = lob.bid_px[:, 0], lob.bid_sz[:, 0]
    pa, qa = lob.ask_px[:, 0], lob.ask_sz[:, 0]
    cb = np.cumsum(lob.bid_sz[:, :n], axis=1)
    ca = np.cumsum(lob.ask_sz[:, :n], axis=1)
    mid = (pb + pa) / 2
    ofi = np.zeros(len(pb), dtype=np.int64)
    ofi[1:] = (
        (pb[1:] >= pb[:-1]) * qb[1:]
        - (pb[1:] <= pb[:-1]) * qb[:-1]
        - (pa[1:] <= pa[:-1]) * qa[1:]
        + (pa[1:] >= pa[:-1]) * qa[:-1]
    )
    ret = np.zeros(len(pb))
    ret[1:] = np.log1p(np.diff(mid) / mid[:-1])  # ln(mid_t / mid_{t-1}), well conditioned
    is_trade = np.isin(lob.mtype, TRADE_TYPES)
    tsize = np.where(is_trade, lob.size, 0)
    tsigned = np.where(lob.direction == -1, tsize, -tsize)  # d=-1: sell order rests => buy
    lo = np.searchsorted(lob.ts, lob.ts - window_ms * 1_000_000, side="right")
    win = [slice(int(lo[i]), i + 1) for i in range(len(pb))]
    return {
        "best_bid": pb,
        "best_ask": pa,
        "bid_size": qb,
        "ask_size": qa,
        "spread": pa - pb,
        "mid": mid,
        "microprice": (pb * qa + pa * qb) / (qb + qa),
        "imbalance": (cb - ca) / (cb + ca),
        "bid_depth": cb[:, -1],
        "ask_depth": ca[:, -1],
        "ofi": ofi,
        "ofi_window": np.array([ofi[s].sum() for s in win]),
        "rv": np.array([math.sqrt(np.sum(ret[s] ** 2)) for s in win]),
        "trade_volume": np.array([tsize[s].sum() for s in win]),
        "trade_signed_volume": np.array([tsigned[s].sum() for s in win]),
        "trade_count": np.array([is_trade[s].sum() for s in win]),
        "log_ratio": np.log(mid[1:] / mid[:-1]),
    }


INT_FIELDS = (
    "best_bid",
    "best_ask",
    "bid_size",
    "ask_size",
    "spread",
    "bid_depth",
    "ask_depth",
    "trade_volume",
    "trade_signed_volume",
    "trade_count",
)
FLOAT_FIELDS = ("mid", "microprice", "ofi", "ofi_window", "rv")


@pytest.mark.parametrize("stream", [snapshot_stream, diff_stream])
@pytest.mark.parametrize(("n", "window_ms"), [(1, 1000), (5, 1000), (10, 50), (10, 5000)])
def test_lobster_matches_numpy_reference(lob: Lobster, stream, n: int, window_ms: int) -> None:
    cfg = FeatureConfig(depth_levels=n, window_ms=window_ms)
    rows = run(stream(lob), cfg)
    ref = reference(lob, n, window_ms)
    assert len(rows) == len(lob.ts)
    assert [r.seq for r in rows] == list(range(1, len(lob.ts) + 1))
    assert [r.ts_event for r in rows] == lob.ts.tolist()
    for name in INT_FIELDS:
        got = [getattr(r, name) for r in rows]
        assert all(type(v) is int for v in got), name
        assert got == ref[name].tolist(), name
    for name in FLOAT_FIELDS:
        got = np.array([getattr(r, name) for r in rows])
        assert got == pytest.approx(ref[name], **EXACT), name
    imb = np.array([r.imbalance for r in rows])
    assert imb.shape == (len(rows), n)
    assert imb == pytest.approx(ref["imbalance"], **EXACT)
    # the data exercise what is compared: moving prices, evictions, trades of both signs
    assert np.count_nonzero(ref["ofi"]) > 100 and np.count_nonzero(ref["rv"]) > 100
    assert (ref["trade_count"] > 1).any() and (ref["trade_signed_volume"] > 0).any()
    assert (ref["trade_signed_volume"] < 0).any()
    assert (ref["trade_count"] < np.cumsum(np.isin(lob.mtype, TRADE_TYPES))).any()


def test_lobster_log_return_is_plain_log_ratio(lob: Lobster) -> None:
    """rv's returns are ln(mid_t / mid_{t-1}) (looser tolerance: the plain ratio loses digits)."""
    ref = reference(lob, 1, 10**9)  # the window covers the whole sample
    rows = run(snapshot_stream(lob), FeatureConfig(depth_levels=1, window_ms=10**9))
    assert rows[-1].rv == pytest.approx(math.sqrt(np.sum(ref["log_ratio"] ** 2)), rel=1e-9)


def test_lobster_state_pickles_mid_stream(lob: Lobster) -> None:
    cfg = FeatureConfig(depth_levels=5, window_ms=1000)
    events = list(diff_stream(lob))
    whole = run(events, cfg)
    book, state = OrderBook(INSTRUMENT), FeatureState()
    half = len(events) // 2
    first = run(events[:half], cfg, book, state)
    book, state = pickle.loads(pickle.dumps((book, state)))
    assert len(state.rv_win) > 0 and len(state.trade_win) > 0
    assert len(pickle.dumps(state)) < 4096
    assert first + run(events[half:], cfg, book, state) == whole


# ---------------------------------------------------------------------------------------------
# hand-computed cases

T0 = 1_700_000_000_000_000_000


def lvl(
    side: Side, px: int, sz: int, ts: int = T0, last: bool = True, kind: Kind = Kind.LEVEL
) -> L2Event:
    return L2Event(
        "X.TEST",
        "TEST",
        kind,
        side,
        px,
        sz,
        ts,
        ts + 7,
        price_exp=-2,
        size_exp=-3,
        seq=1,
        flags=F_LAST if last else 0,
    )


def trade(kind: Kind, side: Side, sz: int, ts: int = T0, last: bool = False) -> L2Event:
    return L2Event("X.TEST", "TEST", kind, side, 100, sz, ts, ts, flags=F_LAST if last else 0)


class Feed:
    def __init__(self, n: int = 3, window_ms: int = 60_000, lateness_ns: int = 0) -> None:
        self.cfg = FeatureConfig(depth_levels=n, window_ms=window_ms)
        self.book = OrderBook("X.TEST")
        self.state = FeatureState()
        self.lateness_ns = lateness_ns

    def __call__(self, ev: L2Event) -> FeatureRow | None:
        self.book.apply(ev)
        return on_event(self.state, self.book, ev, self.cfg, self.lateness_ns)

    def batch(self, *evs: L2Event) -> FeatureRow | None:
        out = [self(ev) for ev in evs]
        assert all(r is None for r in out[:-1])
        return out[-1]


def two_level_book(f: Feed) -> FeatureRow | None:
    """bids 100 x 5, 99 x 7; asks 101 x 3, 102 x 4."""
    return f.batch(
        lvl(Side.BID, 100, 5, last=False),
        lvl(Side.BID, 99, 7, last=False),
        lvl(Side.ASK, 101, 3, last=False),
        lvl(Side.ASK, 102, 4),
    )


def test_two_level_book_formulas() -> None:
    row = two_level_book(Feed(n=3))
    assert row is not None
    assert (row.best_bid, row.best_ask, row.bid_size, row.ask_size) == (100, 101, 5, 3)
    assert row.spread == 1
    assert row.mid == 100.5
    assert row.microprice == pytest.approx((100 * 3 + 101 * 5) / 8, **EXACT)  # 100.625
    assert row.microprice == 100.625
    # k=1: (5-3)/8; k=2: (12-7)/19; k=3: only two levels per side, same as k=2
    assert row.imbalance == pytest.approx((0.25, 5 / 19, 5 / 19), **EXACT)
    assert (row.bid_depth, row.ask_depth) == (12, 7)
    assert (row.ofi, row.ofi_window, row.rv) == (0.0, 0.0, 0.0)
    assert (row.trade_volume, row.trade_signed_volume, row.trade_count) == (0, 0, 0)
    assert (row.ts_event, row.ts_recv, row.seq, row.price_exp, row.size_exp) == (
        T0,
        T0 + 7,
        1,
        -2,
        -3,
    )


def test_depth_is_top_n_only() -> None:
    row = two_level_book(Feed(n=1))
    assert row is not None
    assert (row.bid_depth, row.ask_depth, row.imbalance) == (5, 3, (0.25,))


def test_ofi_each_case() -> None:
    f = Feed()
    two_level_book(f)
    steps = [
        # (record, expected e, why)
        (lvl(Side.BID, 100, 8), 3),  # same bid px: qb - qb' = 8 - 5; ask same: -3 + 3
        (lvl(Side.ASK, 101, 0), 3),  # ask px up 101 -> 102: + qa' = +3
        (lvl(Side.BID, 101, 2), 2),  # bid px up 100 -> 101: + qb = +2
        (lvl(Side.BID, 101, 0), -2),  # bid px down 101 -> 100: - qb' = -2
        (lvl(Side.ASK, 101, 6), -6),  # ask px down 102 -> 101: - qa = -6
        (lvl(Side.ASK, 101, 1), 5),  # same ask px: -qa + qa' = -1 + 6
        (trade(Kind.TRADE, Side.ASK, 1, last=True), 0),  # book unchanged
    ]
    total = 0
    for ev, e in steps:
        row = f(ev)
        assert row is not None
        total += e
        assert (row.ofi, row.ofi_window) == (e, total), ev


def test_rv_from_mid_log_returns() -> None:
    f = Feed(n=1)
    two_level_book(f)  # mid 100.5
    r1 = f(lvl(Side.ASK, 101, 0))  # ask 102: mid 101
    r2 = f(lvl(Side.BID, 99, 9))  # deeper level: mid unchanged
    r3 = f(lvl(Side.ASK, 101, 3))  # mid 100.5
    assert r1 is not None and r2 is not None and r3 is not None
    a = math.log(101 / 100.5)
    assert r1.rv == pytest.approx(abs(a), **EXACT)
    assert r2.rv == pytest.approx(abs(a), **EXACT)
    assert r3.rv == pytest.approx(math.sqrt(a * a + math.log(100.5 / 101) ** 2), **EXACT)


def test_trade_flow_signs_and_non_last_records() -> None:
    f = Feed()
    two_level_book(f)
    # side is the RESTING side: ask resting => buyer-initiated => +size
    assert f(lvl(Side.ASK, 101, 2, last=False, kind=Kind.EXECUTE)) is None  # +2, book 101 x 1
    assert f(trade(Kind.TRADE, Side.BID, 3)) is None  # -3
    assert f(trade(Kind.HIDDEN_TRADE, Side.ASK, 4)) is None  # +4
    row = f(trade(Kind.CROSS_TRADE, Side.BID, 1, last=True))  # -1
    assert row is not None
    assert (row.trade_volume, row.trade_signed_volume, row.trade_count) == (10, 2, 4)
    assert row.ask_size == 1
    assert f.state.trades == 4


def test_no_row_with_an_empty_side_but_trades_still_count() -> None:
    f = Feed()
    assert f(lvl(Side.BID, 100, 5)) is None  # asks empty
    assert f(trade(Kind.TRADE, Side.ASK, 4, last=True)) is None
    row = f(lvl(Side.ASK, 101, 3))
    assert row is not None
    assert (row.trade_volume, row.trade_signed_volume, row.trade_count) == (4, 4, 1)
    assert row.ofi == 0.0  # first feature event: no previous levels
    assert (f.state.events, f.state.rows) == (3, 1)


@pytest.mark.parametrize("window_ms", [1, 250])
def test_window_evicts_exactly_at_boundary(window_ms: int) -> None:
    w = window_ms * 1_000_000
    f = Feed(n=1, window_ms=window_ms)
    two_level_book(f)  # at T0: the first feature event, no OFI, no return
    t1 = T0 + 10 * w  # the first book is long gone by then
    f(trade(Kind.TRADE, Side.BID, 5, ts=t1))
    row = f(lvl(Side.ASK, 101, 0, ts=t1))  # ask up: ofi +3, mid 100.5 -> 101
    assert row is not None
    a = abs(math.log(101 / 100.5))
    assert (row.ofi_window, row.trade_signed_volume, row.trade_count) == (3.0, -5, 1)
    assert row.rv == pytest.approx(a, **EXACT)
    # a no-op at t1 + W - 1: everything from t1 still in (t1 + W - 1 - W, t1 + W - 1]
    row = f(lvl(Side.BID, 100, 5, ts=t1 + w - 1))
    assert row is not None
    assert (row.ofi, row.ofi_window, row.trade_volume, row.trade_count) == (0.0, 3.0, 5, 1)
    assert row.rv == pytest.approx(a, **EXACT)
    # at t1 + W: ts_value <= ts - W, evicted
    row = f(lvl(Side.BID, 100, 5, ts=t1 + w))
    assert row is not None
    assert (row.ofi_window, row.rv, row.trade_volume, row.trade_signed_volume, row.trade_count) == (
        0.0,
        0.0,
        0,
        0,
        0,
    )
    assert not f.state.ofi_win and not f.state.rv_win and not f.state.trade_win


def test_first_book_event_evicted_at_boundary() -> None:
    f = Feed(n=1, window_ms=1)
    two_level_book(f)
    row = f(lvl(Side.BID, 100, 9, ts=T0 + 999_999))  # ofi +4 at T0 + 999_999
    assert row is not None and row.ofi_window == 4.0
    row = f(lvl(Side.BID, 100, 8, ts=T0 + 1_999_998))  # ofi -1; +4 still in (edge - 1)
    assert row is not None and (row.ofi, row.ofi_window) == (-1.0, 3.0)
    row = f(lvl(Side.BID, 100, 8, ts=T0 + 1_999_999))  # the +4 leaves exactly now
    assert row is not None and row.ofi_window == -1.0


def test_to_dict_order_units_and_json() -> None:
    row = two_level_book(Feed(n=2))
    assert row is not None
    d = row.to_dict()
    expected_keys = [
        "instrument",
        "ts_event",
        "ts_recv",
        "seq",
        "price_exp",
        "size_exp",
        "best_bid",
        "best_ask",
        "bid_size",
        "ask_size",
        "spread",
        "mid",
        "microprice",
        "imbalance_1",
        "imbalance_2",
        "bid_depth",
        "ask_depth",
        "ofi",
        "ofi_window",
        "rv",
        "trade_volume",
        "trade_signed_volume",
        "trade_count",
        "ts_proc",
        "ts_avail",
        "v",
        "best_bid_px",
        "best_ask_px",
        "spread_px",
        "mid_px",
        "microprice_px",
        "bid_size_qty",
        "ask_size_qty",
        "bid_depth_qty",
        "ask_depth_qty",
        "trade_volume_qty",
        "trade_signed_volume_qty",
    ]
    assert list(d) == expected_keys == list(feature_keys(2))
    assert json.loads(json.dumps(d)) == d
    assert all(type(v) in (str, int, float) for v in d.values())
    # price_exp -2, size_exp -3
    assert (d["best_bid_px"], d["best_ask_px"], d["spread_px"]) == (1.0, 1.01, 0.01)
    assert d["mid_px"] == pytest.approx(1.005, **EXACT)
    assert d["microprice_px"] == pytest.approx(1.00625, **EXACT)
    assert (d["bid_size_qty"], d["ask_size_qty"]) == (0.005, 0.003)
    assert (d["bid_depth_qty"], d["ask_depth_qty"]) == (0.012, 0.007)
    assert (d["imbalance_1"], d["imbalance_2"]) == (0.25, 5 / 19)


def test_to_dict_positive_exponents() -> None:
    ev = L2Event("Y.TEST", "TEST", Kind.LEVEL, Side.BID, 7, 3, T0, T0, price_exp=1, size_exp=2)
    f = Feed(n=1)
    f(ev)
    row = f(L2Event("Y.TEST", "TEST", Kind.LEVEL, Side.ASK, 9, 1, T0, T0, price_exp=1, size_exp=2))
    assert row is not None
    d = row.to_dict()
    assert (d["best_bid_px"], d["best_ask_px"], d["mid_px"]) == (70.0, 90.0, 80.0)
    assert (d["bid_size_qty"], d["ask_size_qty"]) == (300.0, 100.0)
    assert type(d["best_bid_px"]) is float


def test_lobster_real_units(lob: Lobster) -> None:
    rows = run(snapshot_stream(lob), FeatureConfig())
    d = rows[0].to_dict()
    assert d["best_bid_px"] == lob.bid_px[0, 0] / 10_000 == 585.33
    assert d["best_ask_px"] == 585.94
    assert d["mid_px"] == pytest.approx((585.33 + 585.94) / 2, **EXACT)


# ---------------------------------------------------------------------------------------------
# windows on real Binance captures: exchange time steps back (trade and depth streams
# interleave), checked against a brute-force recomputation of every row

BINANCE = Path(__file__).resolve().parents[3] / "shared" / "data" / "binance"
BINANCE_CAPTURES = {
    "usdm_0808": ["usdm/btcusdt_20240808.gz"],
    "usdm_0718_0719": ["usdm/btcusdt_20240718.gz", "usdm/btcusdt_20240719.gz"],
    "spot_0808_0809": ["spot/btcusdt_20240808.gz", "spot/btcusdt_20240809.gz"],
    "cm_0808_0809": ["cm/btcusd_perp_20240808.gz", "cm/btcusd_perp_20240809.gz"],
}


def _brute_window_sums(
    val_ts: np.ndarray, vals: np.ndarray, upto: np.ndarray, row_ts: np.ndarray, w: int
) -> np.ndarray:
    """For each row j: the sum of ``vals[i]`` over the values that arrived with or before the
    row (``i < upto[j]``) stamped in ``(row_ts[j] - w, row_ts[j]]``. The scan of row j starts at
    the first value whose running maximum exchange time is after ``row_ts[j] - w``: every value
    before it is stamped at or before its running maximum, so it is out of the window -- a
    shortcut that assumes nothing about the order."""
    if len(val_ts) == 0:
        return np.zeros(len(row_ts), dtype=vals.dtype)
    run_max = np.maximum.accumulate(val_ts)
    start = np.searchsorted(run_max, row_ts - w, side="right")
    out = np.zeros(len(row_ts), dtype=vals.dtype)
    for j in range(len(row_ts)):
        s, e = start[j], upto[j]
        if s < e:
            t = val_ts[s:e]
            out[j] = vals[s:e][(t > row_ts[j] - w) & (t <= row_ts[j])].sum()
    return out


@pytest.mark.slow  # whole shared captures: `make test` runs it, `make check` not
@pytest.mark.parametrize("name", list(BINANCE_CAPTURES))
def test_binance_windows_hold_exactly_what_arrived_in_their_span(name: str) -> None:
    from udfs.config import FlinkConfig
    from udfs.market.adapters.binance import BinanceAdapter
    from udfs.market.book import BookError

    if not BINANCE.is_dir():
        pytest.skip(f"shared data folder {BINANCE} is absent")
    cfg = FeatureConfig()
    w = cfg.window_ms * 1_000_000
    lateness = FlinkConfig().out_of_orderness_ms * 1_000_000
    book = OrderBook("x")
    state = FeatureState()
    trades: list[tuple[int, int, int]] = []  # (ts, size, signed) in arrival order
    rows: list[tuple[FeatureRow, int]] = []  # (row, trades arrived so far)
    newest = 0
    back = 0
    for ev in BinanceAdapter([BINANCE / f for f in BINANCE_CAPTURES[name]]):
        if ev.kind is Kind.BBO:
            continue
        assert ev.ts_event >= newest - lateness  # no record the stream job would refuse as late
        back = max(back, newest - ev.ts_event)
        newest = max(newest, ev.ts_event)
        try:
            book.apply(ev)
        except BookError:
            continue
        if ev.kind is Kind.TRADE:
            signed = ev.size if ev.side is Side.ASK else -ev.size
            trades.append((ev.ts_event, ev.size, signed))
        row = on_event(state, book, ev, cfg, lateness_ns=lateness)
        if row is not None:
            rows.append((row, len(trades)))
    assert back > 0  # the premise: exchange time does step back within one instrument
    assert len(rows) > 10_000

    row_ts = np.array([r.ts_event for r, _ in rows], dtype=np.int64)
    # per row: its own OFI and squared mid log return against the previous row (as defined)
    ofi = np.array([r.ofi for r, _ in rows], dtype=np.int64)
    mid2 = np.array([r.best_bid + r.best_ask for r, _ in rows], dtype=np.float64)
    r2 = np.zeros(len(rows))
    r2[1:] = np.log1p((mid2[1:] - mid2[:-1]) / mid2[:-1]) ** 2
    upto_rows = np.arange(1, len(rows) + 1)  # a row's own value is in its window
    want_ofi = _brute_window_sums(row_ts, ofi, upto_rows, row_ts, w)
    want_rv = np.sqrt(_brute_window_sums(row_ts, r2, upto_rows, row_ts, w))
    t_ts = np.array([t for t, _, _ in trades], dtype=np.int64)
    upto_trades = np.array([n for _, n in rows], dtype=np.int64)
    want_vol = _brute_window_sums(t_ts, np.array([s for _, s, _ in trades]), upto_trades, row_ts, w)
    want_signed = _brute_window_sums(
        t_ts, np.array([s for _, _, s in trades]), upto_trades, row_ts, w
    )
    want_count = _brute_window_sums(
        t_ts, np.ones(len(trades), dtype=np.int64), upto_trades, row_ts, w
    )

    got_ofi = np.array([r.ofi_window for r, _ in rows])
    got_rv = np.array([r.rv for r, _ in rows])
    got_vol = np.array([r.trade_volume for r, _ in rows])
    got_signed = np.array([r.trade_signed_volume for r, _ in rows])
    got_count = np.array([r.trade_count for r, _ in rows])
    assert np.array_equal(got_ofi, want_ofi), np.flatnonzero(got_ofi != want_ofi)[:10]
    assert np.array_equal(got_vol, want_vol), np.flatnonzero(got_vol != want_vol)[:10]
    assert np.array_equal(got_signed, want_signed)
    assert np.array_equal(got_count, want_count), np.flatnonzero(got_count != want_count)[:10]
    np.testing.assert_allclose(got_rv, want_rv, rtol=1e-9, atol=1e-15)


def test_window_of_an_out_of_order_row_sees_neither_later_values_nor_loses_its_own() -> None:
    """A row stamped before values that arrived ahead of it: they are not in its window
    (look-ahead), and a value that a FIFO would already have evicted is still in it."""
    w = 1_000_000  # 1 ms
    f = Feed(n=1, window_ms=1, lateness_ns=w)
    two_level_book(f)  # T0
    f(trade(Kind.TRADE, Side.ASK, 2, ts=T0 + 100))
    f(trade(Kind.TRADE, Side.BID, 3, ts=T0 + w + 500))  # moves time on by more than W
    # arrives after, stamped before the 3-lot trade: its window is (T0 + 200 - W, T0 + 200]
    row = f(trade(Kind.TRADE, Side.ASK, 5, ts=T0 + 200, last=True))
    assert row is not None
    assert (row.trade_volume, row.trade_signed_volume, row.trade_count) == (7, 7, 2)
