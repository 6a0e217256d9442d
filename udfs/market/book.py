"""The order-book builder: pure Python, integer ticks and lots, no float anywhere.

One :class:`OrderBook` per instrument. It applies :class:`~udfs.schema.L2Event` records and
checks, on the way, what a consistent feed guarantees:

* the sequence chain (``seq_prev`` of a new batch equals the ``seq`` of the last applied one,
  records of one batch share ``seq``) -- a break is a :class:`BookError` ``sequence gap``;
* a level never goes below zero (``cancel`` of more than rests there);
* the book never crosses (best bid > best ask) -- the offending record is refused.

A refused record leaves the book exactly as it was, so the caller can dead-letter it and go on
(a refused record that closes the open batch still closes it, so the chain goes on).

Sync: a record that chains to something the book never saw (``seq`` ahead of the chain head)
means records were lost: the book is *out of sync* (:attr:`OrderBook.synced` False, counted in
:attr:`OrderBook.gaps`) and stays so -- refusing every chained record that does not continue
its chain -- until a snapshot (``clear`` + ``snapshot`` levels) replaces it, or a chained record
turns out to continue the chain after all (the refused one was a stray). A snapshot that
replaces an out-of-sync book, or one that does not continue the chain head (the adapter lost
the venue's chain and rebuilt its book), is a *re-sync* (:attr:`OrderBook.resyncs`); a snapshot
at the chain head of an in-sync book is a feed's periodic refresh and replaces the book with the
same one.
Each side keeps a dict price -> size and a sorted list of prices (``bisect``): updates of an
existing level are O(1), a new or removed level costs a memmove over a few hundred ints.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass, field

from udfs.schema import BOOK_KINDS, F_LAST, Kind, L2Event, Side

__all__ = ["BookError", "OrderBook", "SideBook"]

# module constants: a global load is cheaper than an enum attribute on the per-record path
_BOOK_KINDS = BOOK_KINDS
_CLEAR, _SNAPSHOT, _LEVEL, _ADD, _HALT = Kind.CLEAR, Kind.SNAPSHOT, Kind.LEVEL, Kind.ADD, Kind.HALT
_BID = Side.BID


class BookError(ValueError):
    """An event the book cannot apply; ``reason`` is a short machine-readable cause."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class SideBook:
    is_bid: bool
    sizes: dict[int, int] = field(default_factory=dict)
    prices: list[int] = field(default_factory=list)
    """ascending; the best bid is the last, the best ask the first."""

    def set(self, price: int, size: int) -> None:
        if size > 0:
            if price not in self.sizes:
                insort(self.prices, price)
            self.sizes[price] = size
        elif price in self.sizes:
            del self.sizes[price]
            del self.prices[bisect_left(self.prices, price)]

    def get(self, price: int) -> int:
        return self.sizes.get(price, 0)

    def clear(self) -> None:
        self.sizes.clear()
        self.prices.clear()

    def best(self) -> int | None:
        if not self.prices:
            return None
        return self.prices[-1] if self.is_bid else self.prices[0]

    def top(self, n: int) -> list[tuple[int, int]]:
        """The best ``n`` levels, best first, as (price, size)."""
        prices = self.prices[: -n - 1 : -1] if self.is_bid else self.prices[:n]
        sizes = self.sizes
        return [(p, sizes[p]) for p in prices]

    def __len__(self) -> int:
        return len(self.prices)


@dataclass(slots=True)
class OrderBook:
    instrument: str
    bids: SideBook = field(default_factory=lambda: SideBook(is_bid=True))
    asks: SideBook = field(default_factory=lambda: SideBook(is_bid=False))
    last_seq: int = 0
    """``seq`` of the last applied chained record (0: no chain yet)."""
    batch_open: bool = False
    """A batch was started and its ``F_LAST`` record has not arrived yet."""
    halted: bool = False
    applied: int = 0
    synced: bool = True
    """False from a lost record (a chain break ahead of the head) until a snapshot."""
    gaps: int = 0
    """Times the book went out of sync."""
    resyncs: int = 0
    """Snapshots that replaced an out-of-sync book or did not continue the chain head."""
    in_snapshot: bool = False
    """A snapshot batch is being applied."""
    snapshot_resyncs: bool = False
    """The snapshot being applied is a re-sync (decided at its first record)."""

    def side(self, side: Side) -> SideBook:
        return self.bids if side is Side.BID else self.asks

    def best_bid(self) -> int | None:
        return self.bids.best()

    def best_ask(self) -> int | None:
        return self.asks.best()

    def check_sequence(self, ev: L2Event) -> None:
        """Raise ``sequence gap`` unless ``ev`` continues the chain. Unchained records
        (``seq_prev == 0`` and not a continuation) and a book without a chain yet pass."""
        if ev.kind is Kind.CLEAR or ev.kind is Kind.SNAPSHOT:
            return
        if self.batch_open:
            if ev.seq != self.last_seq:
                self._lost(ev)
                raise BookError(
                    "sequence gap", f"batch seq {self.last_seq} still open, got seq {ev.seq}"
                )
            return
        if ev.seq_prev and self.last_seq and ev.seq_prev != self.last_seq:
            self._lost(ev)
            raise BookError(
                "sequence gap",
                f"expected seq_prev {self.last_seq}, got {ev.seq_prev} (seq {ev.seq})",
            )

    def _lost(self, ev: L2Event) -> None:
        """A chain break: a record ahead of the head means records were lost (out of sync); one
        at or behind it is a replay and changes nothing."""
        if ev.seq > self.last_seq and self.synced:
            self.synced = False
            self.gaps += 1

    def apply(self, ev: L2Event) -> bool:
        """Apply one record. Returns True when it changed the book. Raises :class:`BookError`
        (book untouched) for a gap, a negative level or a crossed book."""
        kind = ev.kind
        if kind not in _BOOK_KINDS and kind is not _CLEAR:
            if kind is _HALT:
                self.halted = ev.price == -1
            return False
        try:  # free in CPython 3.11 unless it raises
            self.check_sequence(ev)
            if kind is _CLEAR:
                self._snapshot_starts(ev)
                self.bids.clear()
                self.asks.clear()
            else:
                if kind is _SNAPSHOT and not self.in_snapshot:
                    self._snapshot_starts(ev)
                # side() and get(), inlined: this runs per record
                book_side = self.bids if ev.side is _BID else self.asks
                old = book_side.sizes.get(ev.price, 0)
                if kind is _LEVEL or kind is _SNAPSHOT:
                    new = ev.size
                elif kind is _ADD:
                    new = old + ev.size
                else:  # cancel, delete, execute reduce the level
                    new = old - ev.size
                    if new < 0:
                        raise BookError(
                            "negative level",
                            f"{kind.value} of {ev.size} at "
                            f"{ev.price} on {ev.side.value} where {old} rests",
                        )
                if new > old and kind is not _SNAPSHOT:
                    self._check_not_crossing(ev.side, ev.price)
                book_side.set(ev.price, new)
        except BookError:
            if ev.flags & F_LAST and self.batch_open and ev.seq == self.last_seq:
                # the batch's closing record was refused: close the batch so the chain goes on
                self.batch_open = False
            raise
        if ev.seq:
            if ev.seq_prev and not self.synced and not self.batch_open:
                self.synced = True  # it continues the chain: the refused record was a stray
            self.last_seq = ev.seq
        self.batch_open = not (ev.flags & F_LAST)
        if self.in_snapshot and (
            not self.batch_open or (kind is not _CLEAR and kind is not _SNAPSHOT)
        ):
            self.in_snapshot = False  # the snapshot is complete: the book is in sync
            if self.snapshot_resyncs:
                self.resyncs += 1
                self.snapshot_resyncs = False
            self.synced = True
        self.applied += 1
        return True

    def _snapshot_starts(self, ev: L2Event) -> None:
        """A re-sync unless it is a refresh at the chain head of a book in sync."""
        self.snapshot_resyncs = bool(self.last_seq) and (
            not self.synced or self.batch_open or ev.seq != self.last_seq
        )
        self.in_snapshot = True

    def _check_not_crossing(self, side: Side, price: int) -> None:
        if side is Side.BID:
            ask = self.asks.best()
            if ask is not None and price > ask:
                raise BookError("crossed book", f"bid {price} above best ask {ask}")
        else:
            bid = self.bids.best()
            if bid is not None and price < bid:
                raise BookError("crossed book", f"ask {price} below best bid {bid}")

    def top(self, n: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(bids, asks), best first."""
        return self.bids.top(n), self.asks.top(n)
