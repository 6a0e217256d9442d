"""LOBSTER (NASDAQ TotalView-ITCH reconstruction) message + orderbook files -> :class:`L2Event`.

LOBSTER ships two aligned files per symbol, day and depth ``N``: a message file (one event per
row: time, type, order id, size, price, direction) and an orderbook file whose row ``k`` is the
visible top ``N`` of the book *after* message ``k``. Neither file alone is a complete feed:

* the messages only cover orders inside the requested price range, and orders resting before
  09:30 never appear, so a book built from messages alone is wrong from the first one;
* the orderbook rows are snapshots, but re-emitting a full snapshot per message would hide the
  order flow and make the book trivially "correct".

So the adapter does what a real market-by-price feed handler does:

1. Row 1 becomes a snapshot (``clear`` + ``snapshot`` levels, ``seq=1``). Row 1 is the book
   *after* message 1, so message 1 itself is **not** re-applied (it is already in the
   snapshot) and emits no record.
2. Every message ``k >= 2`` becomes exactly one record (``add``/``cancel``/``delete``/
   ``execute``/``hidden_trade``/``cross_trade``/``halt``) with ``seq=k``.
3. Levels that enter the top ``N`` from deeper in the book cannot be derived from messages (the
   resting orders there were never seen). They are taken from row ``k`` with the frontier rule
   of ``shared/data/README.md``: on each side, the levels at or better than row ``k-1``'s
   ``N``-th level (the whole side when row ``k-1`` showed fewer than ``N``) are *known* and must
   already equal row ``k``; anything of row ``k`` beyond that frontier is new information and is
   emitted as ``level`` records (absolute size; size 0 for a mirrored deep level that row ``k``
   shows is absent) in the same batch as message ``k``. Reveals never touch a known level, so a
   known-level mismatch is a real error: it is counted and logged, never patched -- otherwise
   :func:`verify_lobster` would be a tautology.

Sequence chain: ``seq`` is the message number ``k``. Book records carry ``seq_prev`` = the
``seq`` of the last batch the adapter's book actually applied, which is ``k-1`` whenever message
``k-1`` changed the book. Hidden executions, cross trades and halts do not change the book and
:class:`~udfs.market.book.OrderBook` does not advance its chain on them, so they are emitted
unchained
(``seq_prev=0``, the schema's rule for trades) and the next book record chains to the last book
batch before them. A batch's last record carries ``F_LAST``; a message record followed by
reveals does not.

Refresh (re-sync point): every ``refresh_interval_ms`` of exchange time (``feed`` section of
``udfs/config.py``), after a message's batch, the adapter emits orderbook row ``k`` -- LOBSTER's
full top-``N`` state after message ``k`` -- as a snapshot (``clear`` + ``snapshot`` levels,
``F_SNAPSHOT``, ``seq`` = the chain head, so the next message chains to it), with the deeper
levels its own book holds beyond row ``k``'s ``N``-th (LOBSTER never shows them; keeping them
means a refresh changes nothing for a consumer in sync, e.g. the paper venue's queue positions),
and applies it to its own book too. A consumer that lost a record re-syncs there. The adapter
and every consumer that saw the same records hold the same book: the adapter's book is an
:class:`~udfs.market.book.OrderBook` applying exactly what it emits, refusals included.

Everything is integers: prices are USD*10000 (``price_exp=-4``), sizes are shares, times are
parsed digit by digit into ns (a float has 53 bits: it cannot hold ns since 1970 exactly).

What a line must be (anything else is a bad line, named by file and row)
------------------------------------------------------------------------
* message: 6 comma-separated fields. ``time`` is seconds after midnight, ``0 <= time <
  86400``, digits with an optional fraction of any length and an optional exponent
  (``34200.00426064``, ``43002.632812672004``, ``3.4200e+04``): files written by other tools
  carry float artefacts beyond the nanosecond; the time is rounded to the nanosecond, half to
  even, exactly (no float in between). ``type`` 1-7; ``order_id`` an integer; ``size`` an
  integer >= 0; ``price`` an integer (USD * 10000), > 0 except for a halt (type 7: -1, 0, 1);
  ``direction`` exactly ``1`` or ``-1`` (nothing else is read as a side). Every number is
  within int64.
* orderbook: ``4 * N`` integer fields, the same ``N`` on every row; row ``k`` exists for every
  message row ``k`` and for no other.

A bad line stops that file's stream at that row (the book after it is unknowable until the next
snapshot): the events read before it have been published already and stay published and
counted ("flushed and counted", not "nothing published"); the bad line is reported with file,
row and reason -- to the ``on_bad_line`` callback when one is given (the publisher dead-letters
it and reports the stop in its summary), else as :class:`LobsterFileError`.
"""

from __future__ import annotations

import logging
import re
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from udfs.config import FeedConfig
from udfs.market.book import BookError, OrderBook, SideBook
from udfs.schema import F_LAST, F_SNAPSHOT, Kind, L2Event, Side

__all__ = [
    "LOBSTER_MAX_TIME_S",
    "LOBSTER_PRICE_EXP",
    "LOBSTER_VENUE",
    "LobsterFileError",
    "LobsterFileInfo",
    "LobsterStats",
    "iter_lobster_events",
    "parse_lobster_name",
    "parse_lobster_time",
    "read_orderbook_rows",
    "verify_lobster",
]

logger = logging.getLogger(__name__)

LOBSTER_VENUE = "XNAS"
LOBSTER_PRICE_EXP = -4
"""LOBSTER prices are USD * 10000."""
_NY = ZoneInfo("America/New_York")
_EMPTY_ASK = 9999999999
_EMPTY_BID = -9999999999
_NAME_RE = re.compile(
    r"^(?P<symbol>[A-Za-z0-9.\-]+)_(?P<date>\d{4}-\d{2}-\d{2})_\d+_\d+_"
    r"(?P<what>message|orderbook)_(?P<depth>\d+)\.csv$"
)
_MESSAGE_KINDS = {
    1: Kind.ADD,
    2: Kind.CANCEL,
    3: Kind.DELETE,
    4: Kind.EXECUTE,
    5: Kind.HIDDEN_TRADE,
    6: Kind.CROSS_TRADE,
    7: Kind.HALT,
}
_MAX_LOGGED_MISMATCHES = 20
LOBSTER_MAX_TIME_S = 86_400
"""A LOBSTER time is seconds after midnight of the file's day: below one day."""
_INT64 = 2**63
_TIME_RE = re.compile(r"(\d+)(?:\.(\d*))?(?:[eE]([+-]?\d{1,4}))?")
_NS = Decimal(1).scaleb(-9)

Level = tuple[int, int]
"""(price, size)."""
Row = tuple[list[Level], list[Level]]
"""(asks, bids), best first, empty levels dropped."""


@dataclass(frozen=True, slots=True)
class LobsterFileInfo:
    """What a LOBSTER file name says: ``AAPL_2012-06-21_34200000_57600000_message_10.csv``."""

    symbol: str
    day: date
    depth: int


class LobsterFileError(ValueError):
    """A bad LOBSTER line: ``file`` (its name), ``row`` (1-based) and ``reason``."""

    def __init__(self, file: str | Path, row: int, reason: str, raw: bytes = b"") -> None:
        super().__init__(f"{Path(file).name} row {row}: {reason}")
        self.file = str(file)
        self.row = row
        self.reason = reason
        self.raw = raw


@dataclass(slots=True)
class LobsterStats:
    """Counters of one adapter run; pass one to :func:`iter_lobster_events` to read them."""

    messages: int = 0
    """Message rows read (including message 1, which the snapshot already contains)."""
    by_type: Counter[int] = field(default_factory=Counter)
    """LOBSTER message type -> count (all rows, message 1 included)."""
    reveals: int = 0
    """``level`` records emitted for levels entering the top N from deeper in the book."""
    frontier_mismatches: int = 0
    """Rows where a known level (within row k-1's frontier) differed from row k: data errors."""
    book_errors: int = 0
    """Records the adapter's own book refused (negative level, crossed book, gap)."""
    refreshes: int = 0
    """Orderbook rows emitted as refresh snapshots (``feed.refresh_interval_ms``)."""
    events: int = 0
    stopped_at: str = ""
    """``file row N: reason`` when a bad line stopped the stream there (else empty)."""


def parse_lobster_name(path: str | Path) -> LobsterFileInfo:
    """Symbol, trading day and depth from a LOBSTER file name (raises ``ValueError``)."""
    name = Path(path).name
    m = _NAME_RE.match(name)
    if m is None:
        raise ValueError(
            f"not a LOBSTER file name: {name!r} "
            "(expected SYM_YYYY-MM-DD_start_end_message|orderbook_N.csv)"
        )
    return LobsterFileInfo(m["symbol"].upper(), date.fromisoformat(m["date"]), int(m["depth"]))


def _midnight_ns(day: date) -> int:
    """ns since the epoch of midnight America/New_York on ``day`` (DST-aware, exact)."""
    dt = datetime(day.year, day.month, day.day, tzinfo=_NY)
    return int(dt.timestamp()) * 1_000_000_000  # whole seconds: exact in a float


def parse_lobster_time(text: str) -> int:
    """LOBSTER ``seconds[.fraction][e[+-]exp]`` after midnight -> integer ns.

    Up to 9 decimals is exact digit surgery (the files LOBSTER writes). More decimals or an
    exponent (float artefacts of other writers, ``43002.632812672004``) are rounded to the
    nanosecond half to even, in exact decimal arithmetic. Raises ``ValueError`` for anything
    else (sign, spaces inside, ``nan``, ``inf``, empty) and for a time outside ``[0,
    86400)`` s."""
    m = _TIME_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not a LOBSTER time (seconds after midnight): {text!r}")
    sec, frac, exp = m.groups()
    if exp is None and (frac is None or len(frac) <= 9):
        ns = int(sec) * 1_000_000_000 + (int(frac.ljust(9, "0")) if frac else 0)
    else:
        exact = Decimal(f"{sec}.{frac or '0'}e{exp or 0}")
        if exact >= LOBSTER_MAX_TIME_S:  # checked before rounding: keeps the arithmetic small
            raise ValueError(f"LOBSTER time {text!r} is not below {LOBSTER_MAX_TIME_S} s")
        ns = int((exact / _NS).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    if ns >= LOBSTER_MAX_TIME_S * 1_000_000_000:
        raise ValueError(f"LOBSTER time {text!r} is not below {LOBSTER_MAX_TIME_S} s")
    return ns


def _lobster_int(name: str, text: str) -> int:
    """A strict int64 field (no sign but ``-``, no spaces, no ``_``, no decimals)."""
    digits = text[1:] if text[:1] == "-" else text
    # str.isdigit on ASCII text (the files are decoded as ASCII): a cheaper fullmatch of -?\d+
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
        raise ValueError(f"{name} is not an integer: {text[:40]!r}")
    value = int(text)
    if not -_INT64 <= value < _INT64:
        raise ValueError(f"{name} {value} is outside int64")
    return value


def parse_message_line(line: str) -> tuple[int, int, int, int, int, int]:
    """One message line -> (time ns after midnight, type, order id, size, price, direction),
    or ``ValueError`` with the reason (see the module docstring for the rules)."""
    parts = line.rstrip("\r\n").split(",")
    if len(parts) != 6:
        raise ValueError(f"expected 6 columns, got {len(parts)}")
    ts = parse_lobster_time(parts[0])
    mtype = _lobster_int("type", parts[1])
    if mtype not in _MESSAGE_KINDS:
        raise ValueError(f"unknown LOBSTER type {mtype}")
    order_id = _lobster_int("order_id", parts[2])
    size = _lobster_int("size", parts[3])
    price = _lobster_int("price", parts[4])
    direction = _lobster_int("direction", parts[5])
    if direction not in (1, -1):
        raise ValueError(f"direction must be 1 (buy) or -1 (sell), got {direction}")
    if size < 0:
        raise ValueError(f"negative size {size}")
    if mtype == 7:
        if price not in (-1, 0, 1):
            raise ValueError(f"halt price must be -1, 0 or 1, got {price}")
    elif price <= 0:
        raise ValueError(f"price must be positive, got {price}")
    return ts, mtype, order_id, size, price, direction


def _parse_row(line: str) -> Row:
    """One orderbook line -> (asks, bids), dropping LOBSTER's dummy empty levels
    (``ValueError`` for a line that is not ``4 * N`` integers)."""
    texts = line.split(",")
    if len(texts) % 4:
        raise ValueError(f"expected 4 * N columns, got {len(texts)}")
    vals = [_lobster_int("orderbook field", x) for x in texts]
    for i in range(1, len(vals), 2):
        if vals[i] < 0:
            raise ValueError(f"negative size {vals[i]} in column {i + 1}")
    asks = [
        (vals[i], vals[i + 1])
        for i in range(0, len(vals), 4)
        if vals[i] != _EMPTY_ASK and vals[i + 1] > 0
    ]
    bids = [
        (vals[i], vals[i + 1])
        for i in range(2, len(vals), 4)
        if vals[i] != _EMPTY_BID and vals[i + 1] > 0
    ]
    for p, _ in asks + bids:
        if p <= 0:
            raise ValueError(f"price must be positive, got {p}")
    return asks, bids


def read_orderbook_rows(
    orderbook_file: str | Path, max_rows: int | None = None
) -> Iterator[tuple[int, Row]]:
    """Yield ``(depth, (asks, bids))`` per orderbook row. Consecutive identical lines (hidden
    executions, halts) are parsed once: most of a 34 MB file is repeated rows' parsing cost.
    A bad row raises :class:`LobsterFileError` naming the file and the row."""
    last_line: str | None = None
    last_row: Row = ([], [])
    depth = 0
    with open(orderbook_file, "rb") as fh:
        for i, raw in enumerate(fh):
            if max_rows is not None and i >= max_rows:
                return
            try:
                line = raw.decode("ascii").rstrip("\r\n")
                if not line:
                    raise ValueError("empty line (every message row needs its orderbook row)")
                if line != last_line:
                    last_row = _parse_row(line)
                    last_line = line
                row_depth = (line.count(",") + 1) // 4
                if depth and row_depth != depth:
                    raise ValueError(f"{row_depth} levels, earlier rows have {depth}")
            except (ValueError, UnicodeDecodeError) as exc:
                raise LobsterFileError(orderbook_file, i + 1, str(exc)) from None
            depth = row_depth
            yield depth, last_row


def _is_better_eq(is_bid: bool, price: int, limit: int) -> bool:
    return price >= limit if is_bid else price <= limit


def _known_range(prev: list[Level], cur: list[Level], depth: int) -> tuple[int | None, int | None]:
    """(frontier, reach) of one side: ``frontier`` is row k-1's N-th price (None: the whole
    side is known), ``reach`` row k's N-th price (None: row k shows the whole side)."""
    frontier = prev[-1][0] if len(prev) >= depth else None
    reach = cur[-1][0] if len(cur) >= depth else None
    return frontier, reach


def _book_slice(
    side: SideBook, limit: int | None, strictly_worse_than: int | None = None
) -> list[Level]:
    """Book levels at or better than ``limit`` (None: no limit) and, when given, strictly worse
    than ``strictly_worse_than``; best first."""
    prices = side.prices
    sizes = side.sizes
    if side.is_bid:
        lo = 0 if limit is None else bisect_left(prices, limit)
        hi = (
            len(prices) if strictly_worse_than is None else bisect_left(prices, strictly_worse_than)
        )
        return [(p, sizes[p]) for p in reversed(prices[lo:hi])]
    lo = 0 if strictly_worse_than is None else bisect_right(prices, strictly_worse_than)
    hi = len(prices) if limit is None else bisect_right(prices, limit)
    return [(p, sizes[p]) for p in prices[lo:hi]]


def _tighter(is_bid: bool, a: int | None, b: int | None) -> int | None:
    """The more restrictive of two 'at or better than' limits (None = unlimited)."""
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b) if is_bid else min(a, b)


def _known_diff(
    side: SideBook, prev: list[Level], cur: list[Level], depth: int
) -> tuple[list[Level], list[Level]] | None:
    """Compare the known part of one side (within row k-1's frontier, as far as row k reaches)
    with row k. Returns None when equal, else (expected, got)."""
    is_bid = side.is_bid
    frontier, reach = _known_range(prev, cur, depth)
    if frontier is None:
        expected = cur
    else:
        expected = [lv for lv in cur if _is_better_eq(is_bid, lv[0], frontier)]
    got = _book_slice(side, _tighter(is_bid, frontier, reach))
    if got == expected:
        return None
    return expected, got


class _Adapter:
    """Mirror book + frontier rule; see the module docstring."""

    def __init__(
        self,
        message_file: str | Path,
        orderbook_file: str | Path,
        symbol: str | None,
        stats: LobsterStats,
        max_rows: int | None,
        on_bad_line: Callable[[str, int, bytes, str], None] | None = None,
        refresh_interval_ms: int = 0,
    ) -> None:
        info = parse_lobster_name(message_file)
        self.symbol = (symbol or info.symbol).upper()
        self.instrument = f"{self.symbol}.{LOBSTER_VENUE}"
        self.midnight = _midnight_ns(info.day)
        self.depth = info.depth
        self.message_file = Path(message_file)
        self.orderbook_file = Path(orderbook_file)
        self.stats = stats
        self.max_rows = max_rows
        self.mirror = OrderBook(self.instrument)
        self.on_bad_line = on_bad_line
        self.refresh_ns = refresh_interval_ms * 1_000_000

    def _event(
        self,
        kind: Kind,
        side: Side,
        price: int,
        size: int,
        ts: int,
        seq: int,
        seq_prev: int,
        flags: int,
        order_id: int = 0,
    ) -> L2Event:
        return L2Event(
            instrument=self.instrument,
            venue=LOBSTER_VENUE,
            kind=kind,
            side=side,
            price=price,
            size=size,
            ts_event=ts,
            ts_recv=ts,
            price_exp=LOBSTER_PRICE_EXP,
            size_exp=0,
            order_id=order_id,
            seq=seq,
            seq_first=seq,
            seq_prev=seq_prev,
            flags=flags,
        )

    def _apply(self, ev: L2Event) -> bool:
        """Apply to the mirror exactly as a downstream OrderBook would; a refusal is counted
        (the book stays as it was, identically downstream) and the event is still emitted."""
        try:
            return self.mirror.apply(ev)
        except BookError as exc:
            self.stats.book_errors += 1
            if self.stats.book_errors <= _MAX_LOGGED_MISMATCHES:
                logger.warning(
                    "%s seq %d: book refused %s: %s", self.instrument, ev.seq, ev.kind.value, exc
                )
            return False

    def _snapshot(self, row: Row, ts: int, seq: int = 1) -> list[L2Event]:
        asks, bids = row
        evs = [self._event(Kind.CLEAR, Side.NONE, 0, 0, ts, seq, 0, F_SNAPSHOT)]
        evs += [self._event(Kind.SNAPSHOT, Side.BID, p, s, ts, seq, 0, F_SNAPSHOT) for p, s in bids]
        evs += [self._event(Kind.SNAPSHOT, Side.ASK, p, s, ts, seq, 0, F_SNAPSHOT) for p, s in asks]
        evs[-1].flags |= F_LAST
        return evs

    def _refresh_row(self, row: Row) -> Row:
        """Row k (LOBSTER's top N) and, beyond its N-th level, the deeper levels the adapter's
        book holds: the whole book of a consumer in sync (its top N equals row k on every
        shared file), so a refresh changes nothing for one."""
        sides = []
        for levels, book_side in ((row[0], self.mirror.asks), (row[1], self.mirror.bids)):
            if len(levels) >= self.depth:  # a full row: the side goes on beyond it
                deeper = _book_slice(book_side, None, strictly_worse_than=levels[-1][0])
                sides.append(levels + deeper)
            else:  # row k shows the whole side
                sides.append(list(levels))
        return sides[0], sides[1]

    def _message_event(
        self, k: int, ts: int, mtype: int, order_id: int, size: int, price: int, direction: int
    ) -> L2Event:
        kind = _MESSAGE_KINDS[mtype]  # parse_message_line refused unknown types
        if kind is Kind.HALT:
            # price is LOBSTER's code: -1 halt, 0 quoting resumes, 1 trading resumes
            return self._event(kind, Side.NONE, price, 0, ts, k, 0, F_LAST)
        # LOBSTER's direction is the side of the resting order (1 buy -> bid). For a cross
        # trade (type 6, auction) there is no resting side; LOBSTER's direction is passed
        # through as written and must not be read as the aggressor side.
        side = Side.BID if direction == 1 else Side.ASK
        if kind is Kind.HIDDEN_TRADE or kind is Kind.CROSS_TRADE:
            return self._event(kind, side, price, size, ts, k, 0, F_LAST, order_id)
        return self._event(kind, side, price, size, ts, k, self.mirror.last_seq, F_LAST, order_id)

    def _reveals(self, prev: Row, cur: Row, k: int, ts: int, chain: int) -> list[L2Event]:
        """Check the known region against row k (count, never patch) and return the level
        records for row k's levels beyond the frontier that the mirror does not already hold."""
        out: list[L2Event] = []
        mismatch = False
        depth = self.depth
        for side_enum, book_side, p_lv, c_lv in (
            (Side.BID, self.mirror.bids, prev[1], cur[1]),
            (Side.ASK, self.mirror.asks, prev[0], cur[0]),
        ):
            diff = _known_diff(book_side, p_lv, c_lv, depth)
            if diff is not None:
                mismatch = True
                if self.stats.frontier_mismatches < _MAX_LOGGED_MISMATCHES:
                    logger.warning(
                        "%s row %d %s: known levels differ from LOBSTER: expected %s, book has %s",
                        self.instrument,
                        k,
                        side_enum.value,
                        diff[0],
                        diff[1],
                    )
            frontier, reach = _known_range(p_lv, c_lv, depth)
            if frontier is None:
                continue  # row k-1 showed the whole side: nothing is new information
            is_bid = book_side.is_bid
            shown = {p: s for p, s in c_lv if not _is_better_eq(is_bid, p, frontier)}
            held = dict(_book_slice(book_side, reach, strictly_worse_than=frontier))
            # removals first: a stale deep level must never make a revealed one look crossed
            for p in held:
                if p not in shown:
                    out.append(self._event(Kind.LEVEL, side_enum, p, 0, ts, k, chain, 0))
            for p, s in shown.items():
                if held.get(p) != s:
                    out.append(self._event(Kind.LEVEL, side_enum, p, s, ts, k, chain, 0))
        if mismatch:
            self.stats.frontier_mismatches += 1
        return out

    def run(self) -> Iterator[L2Event]:
        try:
            yield from self._run()
        except LobsterFileError as exc:
            self.stats.stopped_at = str(exc)
            logger.error("%s: stopped at a bad line: %s", self.instrument, exc)
            if self.on_bad_line is None:
                raise
            self.on_bad_line(exc.file, exc.row, exc.raw, exc.reason)

    def _run(self) -> Iterator[L2Event]:
        stats = self.stats
        rows = read_orderbook_rows(self.orderbook_file, self.max_rows)
        prev: Row | None = None
        refresh_at = 0
        k = 0
        with open(self.message_file, "rb") as fh:
            for k, raw in enumerate(fh, start=1):
                if self.max_rows is not None and k > self.max_rows:
                    break
                try:
                    line = raw.decode("ascii")
                    t, mtype, order_id, size, price, direction = parse_message_line(line)
                except (ValueError, UnicodeDecodeError) as exc:
                    raise LobsterFileError(self.message_file, k, str(exc), raw) from None
                try:
                    row_depth, row = next(rows)
                except StopIteration:
                    raise LobsterFileError(
                        self.orderbook_file,
                        k,
                        f"missing: the orderbook file ends before message row {k} of "
                        f"{self.message_file.name} (the pair is misaligned)",
                    ) from None
                if k == 1 and row_depth != self.depth:
                    logger.info(
                        "%s: orderbook has %d levels, file name says %d; using %d",
                        self.instrument,
                        row_depth,
                        self.depth,
                        row_depth,
                    )
                    self.depth = row_depth
                ts = self.midnight + t
                stats.messages += 1
                stats.by_type[mtype] += 1
                if prev is None:
                    # row 1 is the book after message 1: snapshot it; message 1 is inside it
                    for ev in self._snapshot(row, ts):
                        self._apply(ev)
                        stats.events += 1
                        yield ev
                    prev = row
                    refresh_at = ts + self.refresh_ns
                    continue
                chain = self.mirror.last_seq  # the batch this one follows in the chain
                msg = self._message_event(k, ts, mtype, order_id, size, price, direction)
                applied = self._apply(msg)
                reveals = self._reveals(prev, row, k, ts, chain)
                if reveals:
                    msg.flags = 0
                    if applied:
                        # what apply() would have left had it seen flags=0 (batch still open)
                        self.mirror.batch_open = True
                    reveals[-1].flags = F_LAST
                stats.events += 1
                yield msg
                for ev in reveals:
                    self._apply(ev)
                    stats.reveals += 1
                    stats.events += 1
                    yield ev
                prev = row
                if self.refresh_ns and ts >= refresh_at:
                    # a re-sync point: row k is the whole top N after message k
                    for ev in self._snapshot(self._refresh_row(row), ts, self.mirror.last_seq):
                        self._apply(ev)
                        stats.events += 1
                        yield ev
                    stats.refreshes += 1
                    refresh_at = ts + self.refresh_ns
        if self.max_rows is None or k <= self.max_rows:
            extra = next(rows, None)
            if extra is not None:
                raise LobsterFileError(
                    self.orderbook_file,
                    stats.messages + 1,
                    f"extra row: {self.message_file.name} has only {stats.messages} messages "
                    "(the pair is misaligned)",
                )
        logger.info(
            "%s: %d messages, types %s, %d reveals, %d frontier mismatches, %d book errors",
            self.instrument,
            stats.messages,
            dict(stats.by_type),
            stats.reveals,
            stats.frontier_mismatches,
            stats.book_errors,
        )


def iter_lobster_events(
    message_file: str | Path,
    orderbook_file: str | Path,
    symbol: str | None = None,
    *,
    stats: LobsterStats | None = None,
    max_rows: int | None = None,
    on_bad_line: Callable[[str, int, bytes, str], None] | None = None,
    refresh_interval_ms: int | None = None,
) -> Iterator[L2Event]:
    """Stream a LOBSTER message/orderbook pair as :class:`L2Event` records (see module doc).

    ``symbol`` overrides the one in the file name; the instrument is ``SYMBOL.XNAS``. Pass a
    :class:`LobsterStats` to read the counters after (or during) iteration. ``max_rows`` stops
    after that many message rows (tests, benchmarks). A bad line (see the module docstring)
    ends the stream there: it goes to ``on_bad_line(file, row, raw, reason)`` when given, else
    raises :class:`LobsterFileError`. ``refresh_interval_ms``: how often an orderbook row is
    emitted as a refresh snapshot (None: ``FeedConfig``'s, 0: never).
    """
    adapter = _Adapter(
        message_file,
        orderbook_file,
        symbol,
        stats if stats is not None else LobsterStats(),
        max_rows,
        on_bad_line,
        FeedConfig().refresh_interval_ms if refresh_interval_ms is None else refresh_interval_ms,
    )
    return adapter.run()


def verify_lobster(
    message_file: str | Path, orderbook_file: str | Path, *, max_rows: int | None = None
) -> dict[str, object]:
    """Rebuild the book from the adapter's events only, with a fresh :class:`OrderBook`, and
    check it against every orderbook row ``k >= 2``.

    ``matched`` counts rows whose known region (at or better than row k-1's N-th level, as far
    as row k reaches) equals row k exactly -- the README's ground truth, which the reveals can
    never satisfy by construction since they stay outside it. ``full_top_n_matched`` counts rows
    whose whole top N equals row k (this one the reveals help with). ``book_errors`` counts
    records the fresh book refused.
    """
    stats = LobsterStats()
    events = iter_lobster_events(message_file, orderbook_file, stats=stats, max_rows=max_rows)
    rows = read_orderbook_rows(orderbook_file, max_rows)
    book: OrderBook | None = None
    prev: Row | None = None
    depth = 0
    checked = matched = full = book_errors = 0
    mismatches: list[dict[str, object]] = []
    for ev in events:
        if book is None:
            book = OrderBook(ev.instrument)
        try:
            book.apply(ev)
        except BookError:
            book_errors += 1
        if not ev.flags & F_LAST or (ev.flags & F_SNAPSHOT and prev is not None):
            continue  # mid-batch, or a refresh (a copy of the row just checked)
        depth, row = next(rows)
        if ev.seq <= 1 or prev is None:
            prev = row
            continue
        checked += 1
        ok = True
        for side_enum, book_side, p_lv, c_lv in (
            (Side.BID, book.bids, prev[1], row[1]),
            (Side.ASK, book.asks, prev[0], row[0]),
        ):
            diff = _known_diff(book_side, p_lv, c_lv, depth)
            if diff is not None:
                ok = False
                if len(mismatches) < 20:
                    mismatches.append(
                        {"k": ev.seq, "side": side_enum.value, "expected": diff[0], "got": diff[1]}
                    )
        matched += ok
        bids, asks = book.top(depth)
        full += bids == row[1] and asks == row[0]
        prev = row
    return {
        "checked": checked,
        "matched": matched,
        "full_top_n_matched": full,
        "mismatches": mismatches,
        "book_errors": book_errors,
        "depth": depth,
        "messages": stats.messages,
        "by_type": dict(stats.by_type),
        "reveals": stats.reveals,
        "frontier_mismatches": stats.frontier_mismatches,
    }
