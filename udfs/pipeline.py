"""What the stream job does to each record, as a pure function of (state, record).

The Flink job (``jobs/stream_job.py``) only moves bytes: it keys records by instrument, keeps
one :class:`InstrumentState` per key in Flink keyed state and calls :func:`process_record`.
Everything that decides an outcome is here, so it is unit-tested without a JVM and gives the
same answer in the job, in a replay and in the one-process benchmark.

Per record, in this order:

1. decode and validate (``malformed`` / ``schema`` / ``unknown_version``);
2. Kafka key must equal the instrument (``key_mismatch``): else the event is on the wrong book;
3. lateness: the instrument's watermark is its newest exchange time minus the configured bound;
   an event older than that is ``late``. The watermark is per instrument and derived from the
   data alone, never from the wall clock or from how fast partitions were read, so a replay
   dead-letters exactly the same events as the live run. An event more than
   ``flink.max_ahead_ms`` *ahead* of the newest exchange time is ``future``: it does not move
   the clock (one bad timestamp would make every later record late), unless
   ``flink.future_confirm`` such records in a row agree that the feed really jumped;
4. apply to the book (``sequence_gap`` / ``crossed_book`` / ``negative_level`` leave the book
   untouched). A record lost upstream puts the book out of sync (``udfs.market.book``): its
   chained records are refused until the feed's next snapshot re-syncs it;
5. features after the last record of a batch, none while the book is out of sync (the next
   row after a re-sync starts afresh: no OFI or return across the gap);
6. data quality (``udfs.market.quality``): every record of an instrument with its outcome is counted
   per exchange-time minute (gaps, re-syncs, crossed/locked books, stale feed, out-of-order,
   late and duplicate events). A minute's row is emitted in :attr:`ProcessResult.quality` once
   the instrument's watermark (step 3) has passed its end, so no record that is not late can
   still land in it and a replay emits the same rows; the job flushes the open minutes at the
   end of input (:func:`udfs.market.quality.flush`);
7. with a trader: signals and orders (``udfs.strategy.trading``), and the live model's drift
   rows (``udfs.strategy.drift``) of the windows the instrument's watermark has closed.

Every record read ends up either processed or dead-lettered, never both and never neither:
``events_in == events_processed + dead_lettered`` holds per instrument. That includes a record
that passes the schema and still makes a step fail (a defect): it is dead-lettered as
``unprocessable`` with the exception, and the stream goes on -- one record can never stop the
job (restarts would meet it again and again).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from udfs.config import Config, FeatureConfig, FlinkConfig, QualityConfig
from udfs.latency import AvailabilityModel
from udfs.market.book import BookError, OrderBook
from udfs.market.features import FeatureState, on_event
from udfs.market.quality import MINUTE_NS, QualityState, close_before, observe
from udfs.schema import (
    DeadLetter,
    DriftRow,
    Kind,
    L2Event,
    Order,
    QualityRow,
    Reason,
    SchemaError,
    Signal,
    decode_event,
    encode_event,
)
from udfs.strategy.trading import Trader, TradingState

__all__ = ["InstrumentState", "ProcessResult", "process_event", "process_events", "process_record"]

_STALE_AFTER_MS = QualityConfig().stale_after_ms
_MAX_AHEAD_MS = FlinkConfig().max_ahead_ms
_FUTURE_CONFIRM = FlinkConfig().future_confirm
_AVAILABILITY = AvailabilityModel.from_config(Config())
"""The default settings' availability model (the stream job passes its configured one)."""

_BBO = Kind.BBO
"""a module constant: a global load is cheaper than an enum attribute per record"""

_BOOK_REASONS = {
    "sequence gap": Reason.SEQUENCE_GAP,
    "crossed book": Reason.CROSSED_BOOK,
    "negative level": Reason.NEGATIVE_LEVEL,
}


@dataclass(slots=True)
class InstrumentState:
    """Everything kept per instrument between records (Flink keyed state)."""

    instrument: str
    book: OrderBook
    features: FeatureState = field(default_factory=FeatureState)
    trading: TradingState = field(default_factory=TradingState)
    quality: QualityState = field(default_factory=QualityState)
    max_ts_event: int = 0
    future_ts: int = 0
    """Exchange time of the last record refused as ``future`` (0: none pending)."""
    future_run: int = 0
    """Consecutive ``future`` records agreeing with each other (a genuine jump at
    ``flink.future_confirm``)."""
    events_in: int = 0
    events_processed: int = 0
    dead_lettered: int = 0

    def __post_init__(self) -> None:
        if not self.quality.instrument:
            self.quality.instrument = self.instrument

    @classmethod
    def new(cls, instrument: str) -> InstrumentState:
        return cls(instrument=instrument, book=OrderBook(instrument))


@dataclass(slots=True)
class ProcessResult:
    features: list[dict] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    """orders and heartbeats for the orders topic"""
    quality: list[QualityRow] = field(default_factory=list)
    """rows of the instrument's minutes closed by this record (``udfs.market.quality``)"""
    drift: list[DriftRow] = field(default_factory=list)
    """the live model's drift rows of the windows this record closed (``udfs.strategy.drift``)"""
    feature_ns: int = 0
    """wall clock when this record's features were computed (0: none), for the latency trace"""

    def reset(self) -> None:
        """Empty again, for the next record (the batch loop reuses one result per batch). A
        list that holds something is replaced, not cleared: the caller may still hold it.
        Spelled out per list: a loop over the names (getattr/setattr) took 5x as long, ~0.45 µs
        more per record on this machine."""
        if self.features:
            self.features = []
        if self.dead_letters:
            self.dead_letters = []
        if self.signals:
            self.signals = []
        if self.orders:
            self.orders = []
        if self.quality:
            self.quality = []
        if self.drift:
            self.drift = []
        self.feature_ns = 0


class RecordSource(NamedTuple):
    """Where a record was read (named in its dead letter). A named tuple, not a frozen
    dataclass: the batch loop makes one per record, and a frozen dataclass's ``__init__``
    (``object.__setattr__`` per field) costs twice as much."""

    topic: str
    partition: int
    offset: int


def _dead(
    src: RecordSource, key: str, code: Reason, reason: str, raw: bytes | str, ts_event: int = 0
) -> DeadLetter:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return DeadLetter(
        source=f"kafka:{src.topic}",
        partition=src.partition,
        offset=src.offset,
        key=key,
        reason_code=code,
        reason=reason,
        raw=text,
        stage="features",
        ts_event=ts_event,
        ts_dead=time.time_ns(),
    )


def _refuse(
    state: InstrumentState | None,
    result: ProcessResult,
    src: RecordSource,
    key: str,
    raw: bytes | str,
    code: Reason,
    reason: str,
    ts_event: int = 0,
) -> None:
    """Dead-letter the record. A record refused before a book exists for its key has no state
    to count it in (nor an instrument-minute: it is left out of the quality counters too)."""
    result.dead_letters.append(_dead(src, key, code, reason, raw, ts_event))
    if state is not None:
        state.events_in += 1
        state.dead_lettered += 1


def process_event(
    state: InstrumentState,
    ev: L2Event,
    cfg: FeatureConfig,
    out_of_orderness_ms: int,
    stale_after_ms: int = _STALE_AFTER_MS,
    max_ahead_ms: int = _MAX_AHEAD_MS,
    future_confirm: int = _FUTURE_CONFIRM,
) -> tuple[dict | None, tuple[Reason, str] | None]:
    """Steps 3-6 for an already decoded event: (feature row or None, refusal or None). The
    event and its outcome are counted in ``state.quality`` (closing minutes is the caller's:
    :func:`process_record`)."""
    stale_ns = stale_after_ms * 1_000_000
    bound_ns = out_of_orderness_ms * 1_000_000
    newest = state.max_ts_event
    if newest and ev.ts_event > newest + max_ahead_ms * 1_000_000:
        # far ahead: one record must not move the clock; a run of them that agree may
        if state.future_run and abs(ev.ts_event - state.future_ts) <= bound_ns:
            state.future_run += 1
        else:
            state.future_run = 1
        state.future_ts = ev.ts_event
        if state.future_run < future_confirm:
            # its exchange time is not trusted: counted in the instrument's current minute
            observe(state.quality, None, Reason.FUTURE, None, 0)
            ahead_ms = (ev.ts_event - newest) / 1e6
            return None, (
                Reason.FUTURE,
                f"exchange time {ev.ts_event} is {ahead_ms:.3f} ms ahead of the newest "
                f"{newest} (bound {max_ahead_ms} ms; {state.future_run} such in a row, "
                f"{future_confirm} make a genuine jump)",
            )
        # a genuine jump: the clock moves now, whatever the book makes of this record (the run
        # dropped before it has usually broken its chain: without this, the book's refusal left
        # the clock behind and the next run of far-ahead records began again)
        state.max_ts_event = newest = ev.ts_event
    state.future_run = 0
    if ev.ts_event < newest - bound_ns:
        observe(state.quality, ev, Reason.LATE, state.book, stale_ns)
        behind_ms = (state.max_ts_event - ev.ts_event) / 1e6
        return None, (
            Reason.LATE,
            f"exchange time {ev.ts_event} is {behind_ms:.3f} ms behind "
            f"the newest {state.max_ts_event} (bound "
            f"{out_of_orderness_ms} ms)",
        )
    book = state.book
    try:
        book.apply(ev)
    except BookError as exc:
        code = _BOOK_REASONS.get(exc.reason, Reason.SCHEMA)
        observe(state.quality, ev, code, book, stale_ns)
        return None, (code, str(exc))
    observe(state.quality, ev, None, book, stale_ns)
    if ev.ts_event > state.max_ts_event:
        state.max_ts_event = ev.ts_event
    if ev.kind is _BBO:
        return None, None  # a quote checks the book, it does not move the features
    row = on_event(state.features, book, ev, cfg, bound_ns, emit=book.synced)
    return (row.to_dict() if row is not None else None), None


def process_record(
    state: InstrumentState | None,
    key: str,
    raw: bytes | str,
    src: RecordSource,
    cfg: FeatureConfig,
    out_of_orderness_ms: int,
    trader: Trader | None = None,
    quality_cfg: QualityConfig | None = None,
    max_ahead_ms: int = _MAX_AHEAD_MS,
    future_confirm: int = _FUTURE_CONFIRM,
    availability: AvailabilityModel = _AVAILABILITY,
    result: ProcessResult | None = None,
) -> tuple[InstrumentState | None, ProcessResult]:
    """Steps 1-6 for one Kafka record, then the trading stage (``udfs.strategy.trading``) on each
    feature row when a ``trader`` is given. ``state`` is None for a key seen for the first
    time. Returns the (possibly new) state and what to emit: ``result`` when one is given
    (emptied first: the batch loop reuses one, saving its lists per record), else a new one."""
    if result is None:
        result = ProcessResult()
    else:
        result.reset()
    stale_after_ms = quality_cfg.stale_after_ms if quality_cfg is not None else _STALE_AFTER_MS

    try:
        ev = decode_event(raw)
    except Exception as exc:  # SchemaError; anything else is a defect, and no poison pill
        if isinstance(exc, SchemaError):
            code = {"record": Reason.MALFORMED, "v": Reason.UNKNOWN_VERSION}.get(
                exc.field, Reason.SCHEMA
            )
            why = str(exc)
        else:
            code, why = Reason.UNPROCESSABLE, f"{type(exc).__name__}: {exc}"
        _refuse(state, result, src, key, raw, code, why)
        if state is not None:  # no trustworthy exchange time: the instrument's current minute
            observe(state.quality, None, code, None, 0)
        return state, result
    if ev.instrument != key:
        _refuse(
            state,
            result,
            src,
            key,
            raw,
            Reason.KEY_MISMATCH,
            f"instrument: {ev.instrument!r} does not match the Kafka key {key!r}",
            ev.ts_event,
        )
        if state is not None:  # another instrument's record: not this one's exchange time
            observe(state.quality, None, Reason.KEY_MISMATCH, None, 0)
        return state, result
    if state is None:
        state = InstrumentState.new(ev.instrument)
    try:
        return state, _process_decoded(
            state,
            ev,
            cfg,
            out_of_orderness_ms,
            trader,
            stale_after_ms,
            result,
            src,
            key,
            raw,
            max_ahead_ms,
            future_confirm,
            availability,
        )
    except Exception as exc:  # no record may stop the job: set it aside
        result.features.clear()
        result.signals.clear()
        result.orders.clear()
        result.drift.clear()
        result.dead_letters.clear()
        _refuse(
            state,
            result,
            src,
            key,
            raw,
            Reason.UNPROCESSABLE,
            f"{type(exc).__name__}: {exc}",
            ev.ts_event,
        )
        return state, result


def process_events(
    events: Iterable[L2Event],
    cfg: FeatureConfig,
    out_of_orderness_ms: int,
    trader: Trader | None = None,
    states: dict[str, InstrumentState | None] | None = None,
    topic: str = "events",
) -> tuple[dict[str, InstrumentState | None], ProcessResult]:
    """:func:`process_record` over decoded ``events`` outside the job: each serialised as the
    publisher sends it, keyed by its instrument as the job keys it, event ``i`` at offset ``i``
    of one partition of ``topic`` (the reference a job's output is compared with). ``states``
    (instrument -> state, updated in place) is where each instrument starts; returns them and
    everything emitted, in order."""
    states = {} if states is None else states
    out = ProcessResult()
    for i, ev in enumerate(events):
        key = ev.instrument
        states[key], res = process_record(
            states.get(key),
            key,
            encode_event(ev),
            RecordSource(topic, 0, i),
            cfg,
            out_of_orderness_ms,
            trader,
        )
        out.features += res.features
        out.dead_letters += res.dead_letters
        out.signals += res.signals
        out.orders += res.orders
        out.quality += res.quality
        out.drift += res.drift
    return states, out


def _process_decoded(
    state: InstrumentState,
    ev: L2Event,
    cfg: FeatureConfig,
    out_of_orderness_ms: int,
    trader: Trader | None,
    stale_after_ms: int,
    result: ProcessResult,
    src: RecordSource,
    key: str,
    raw: bytes | str,
    max_ahead_ms: int = _MAX_AHEAD_MS,
    future_confirm: int = _FUTURE_CONFIRM,
    availability: AvailabilityModel = _AVAILABILITY,
) -> ProcessResult:
    """Steps 3-6 and trading for a decoded event of ``state``'s instrument."""
    row, refusal = process_event(
        state, ev, cfg, out_of_orderness_ms, stale_after_ms, max_ahead_ms, future_confirm
    )
    quality = state.quality
    if state.max_ts_event >= quality.close_at:
        # the instrument's watermark entered a new minute: the minutes wholly before it are
        # final (no record that is not late can land there any more), emit their rows
        bound_ns = out_of_orderness_ms * 1_000_000
        watermark = state.max_ts_event - bound_ns
        watermark_minute = watermark - watermark % MINUTE_NS
        result.quality = close_before(quality, watermark_minute)
        quality.close_at = watermark_minute + MINUTE_NS + bound_ns
    if refusal is not None:
        _refuse(state, result, src, key, raw, *refusal, ev.ts_event)
        return result
    if row is not None:
        # event time the live path could first use the row (deterministic: replay-safe)
        row["ts_avail"] = availability.ts_avail(ev.instrument, row["seq"], row["ts_event"])
        # the features are done: their time, before trading (the orders' latency trace)
        row["ts_proc"] = result.feature_ns = time.time_ns()
        if trader is not None:
            result.signals, result.orders = trader.on_features(state.trading, row, ev)
            if trader.drift is not None:
                watermark = state.max_ts_event - out_of_orderness_ms * 1_000_000
                result.drift = trader.on_drift(state.trading, row, watermark)
        result.features.append(row)
    # counted last: a step that raised above leaves the record to the dead-letter count
    state.events_in += 1
    state.events_processed += 1
    return result
