"""The one L2 event schema of bookstream, versioned, with its validation and serialisation.

Every source (LOBSTER, Binance, ...) is normalised to a flat stream of :class:`L2Event` records,
one price level or trade per record, so that the same record fits a Kafka message, an Iceberg
row and a ClickHouse row. A source message that changes several levels at once (a Binance depth
diff, a snapshot) becomes several records sharing ``seq``; the last one carries ``F_LAST`` and
only after it is the book consistent again (features are computed there, never mid-batch), the
convention of market-by-price feeds such as Databento's MBP.

Field semantics
---------------
``v``           schema version (:data:`SCHEMA_VERSION`), written in every record.
``instrument``  ``SYMBOL.VENUE``, unique across venues; it is the Kafka key.
``venue``       where the data came from (``XNAS`` for LOBSTER/NASDAQ, ``BINANCE_USDM`` ...).
``kind``        see :class:`Kind`.
``side``        ``B``/``A`` for the book side a record changes. For trades (``execute``,
                ``hidden_trade``, ``cross_trade``, ``trade``) it is the side of the *resting*
                order, LOBSTER's convention: the aggressor is the other side.
``price``       integer ticks of ``10**price_exp`` currency units (exact; never a float).
``size``        integer lots of ``10**size_exp`` units. For ``add``/``cancel``/``delete``/
                ``execute`` it is the size *change* of the message (always >= 0); for
                ``level``/``snapshot`` the level's new total size (0 removes the level).
``order_id``    LOBSTER order id, Binance trade id, else 0.
``seq``         exchange sequence id of the batch (Binance ``u``, LOBSTER message number).
``seq_first``   first sequence id the batch covers (Binance ``U``), else ``seq``.
``seq_prev``    the ``seq`` of the batch this one follows in the adapter's synced chain
                (Binance ``pu`` / ``U-1``; for the first diff after a snapshot, the snapshot's
                id; LOBSTER ``k-1``); 0 when the record is not chained (trades, quotes).
``ts_event``    exchange time, ns since the Unix epoch (UTC).
``ts_recv``     time the capture received it, ns (LOBSTER has none: equal to ``ts_event``).
``ts_proc``     time the stream job processed it, ns (0 until then). Carried for latency
                accounting only: no result depends on it.
``flags``       bit set, see ``F_*``.

Bounds (a record outside them is refused with the field and the reason: ``SchemaError``)
------------------------------------------------------------------------------------------
Every integer is a JSON integer (not a float, a string or a boolean) within int64, the type of
its Kafka/Iceberg/ClickHouse column. On top of that: ``price_exp``/``size_exp`` in
:data:`EXP_RANGE` (-18..18: 10**18 is the widest scale an int64 column can carry);
``size``, ``seq``, ``seq_first``, ``seq_prev``, ``ts_recv``, ``ts_proc`` >= 0; ``ts_event`` > 0;
``flags`` only the bits of ``F_*`` (a new bit needs a new schema version); ``kind`` and
``side`` one of their enums (a string); ``instrument`` and ``venue`` at most
:data:`MAX_NAME_LEN` characters, ``instrument`` not empty; book and trade kinds need side B or
A and ``price`` > 0; a ``halt`` carries LOBSTER's code -1, 0 or 1 as ``price``. The trading
records (:func:`decode_record`) follow the same rules field by field from their dataclass types
(integers within int64, floats finite, booleans JSON booleans, enums their values) plus:
quantities and prices >= 0 (a new order needs quantity > 0, a new limit order price > 0),
exponents in :data:`EXP_RANGE`, times >= 0, a signal's ``direction`` -1, 0 or +1.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import msgspec

try:  # orjson parses ~4x faster; the stdlib parser gives the same values
    from orjson import loads as _orjson_loads

    def _loads(raw: bytes | str) -> Any:
        try:
            return _orjson_loads(raw)
        except ValueError:
            # orjson rejects NaN/Infinity literals; the stdlib accepts them, so a NaN price
            # is reported as "price: NaN", not as malformed JSON
            return json.loads(raw)
except ImportError:  # pragma: no cover

    def _loads(raw: bytes | str) -> Any:
        return json.loads(raw)


__all__ = [
    "BOOK_KINDS",
    "EXP_RANGE",
    "F_LAST",
    "F_SNAPSHOT",
    "MAX_NAME_LEN",
    "SCHEMA_VERSION",
    "SUPPORTED_VERSIONS",
    "TRADE_KINDS",
    "ConfigRecord",
    "Control",
    "ControlCommand",
    "DeadLetter",
    "ExecKind",
    "ExecReport",
    "Kind",
    "L2Event",
    "Order",
    "OrderAction",
    "OrderSide",
    "OrderType",
    "Reason",
    "RiskReport",
    "SchemaError",
    "Side",
    "Signal",
    "compact_json",
    "decode_dead_letter",
    "decode_event",
    "decode_record",
    "encode_event",
    "encode_record",
]

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

F_LAST = 1
"""Last record of an atomic batch: the book is consistent after it."""
F_SNAPSHOT = 2
"""Record belongs to a snapshot (``clear`` + ``snapshot`` levels)."""
_KNOWN_FLAGS = F_LAST | F_SNAPSHOT

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EXP_RANGE = range(-18, 19)
"""Allowed ``price_exp``/``size_exp``: ``10**18`` is the widest scale an int64 carries; beyond
it a value could not be rendered or compared without float overflow."""
MAX_NAME_LEN = 64
"""Longest ``instrument``/``venue`` (``SYMBOL.VENUE``)."""


class Kind(StrEnum):
    CLEAR = "clear"
    """Empty the book (start of a snapshot or a re-sync)."""
    SNAPSHOT = "snapshot"
    """One level of a snapshot: set its total size."""
    LEVEL = "level"
    """Set a level's total size (Binance diff; LOBSTER level revealed from deeper in the book)."""
    ADD = "add"
    """LOBSTER 1: new limit order, level size += size."""
    CANCEL = "cancel"
    """LOBSTER 2: partial cancellation, level size -= size."""
    DELETE = "delete"
    """LOBSTER 3: full deletion, level size -= size."""
    EXECUTE = "execute"
    """LOBSTER 4: visible execution, level size -= size, and a trade."""
    HIDDEN_TRADE = "hidden_trade"
    """LOBSTER 5: execution of a hidden order: a trade that leaves the visible book alone."""
    CROSS_TRADE = "cross_trade"
    """LOBSTER 6: auction cross: a trade that leaves the visible book alone."""
    HALT = "halt"
    """LOBSTER 7: trading halt (price -1), quote resumption (0) or trade resumption (1)."""
    TRADE = "trade"
    """A venue trade print (Binance ``@trade``); the book changes through the diffs."""
    BBO = "bbo"
    """Best bid/offer quote (Binance ``@bookTicker``): a check on the book, never applied."""


class Side(StrEnum):
    BID = "B"
    ASK = "A"
    NONE = "N"


BOOK_KINDS = frozenset(
    {Kind.SNAPSHOT, Kind.LEVEL, Kind.ADD, Kind.CANCEL, Kind.DELETE, Kind.EXECUTE}
)
"""Kinds that change one price level and so need a side and a positive price."""
TRADE_KINDS = frozenset({Kind.EXECUTE, Kind.HIDDEN_TRADE, Kind.CROSS_TRADE, Kind.TRADE})


class SchemaError(ValueError):
    """A record that does not satisfy the schema; ``field`` and ``reason`` say why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(slots=True)
class L2Event:
    instrument: str
    venue: str
    kind: Kind
    side: Side
    price: int
    size: int
    ts_event: int
    ts_recv: int
    price_exp: int = 0
    size_exp: int = 0
    order_id: int = 0
    seq: int = 0
    seq_first: int = 0
    seq_prev: int = 0
    ts_proc: int = 0
    flags: int = F_LAST
    v: int = SCHEMA_VERSION

    @property
    def is_last(self) -> bool:
        return bool(self.flags & F_LAST)

    def price_decimal_str(self) -> str:
        """Exact decimal rendering of the price, for people (never parsed back as float)."""
        return _scaled_str(self.price, self.price_exp)


def _scaled_str(value: int, exp: int) -> str:
    if exp >= 0:
        return str(value * 10**exp)
    sign = "-" if value < 0 else ""
    digits = str(abs(value)).rjust(-exp + 1, "0")
    return f"{sign}{digits[:exp]}.{digits[exp:]}"


# field -> required python type; the order is the serialised order
_FIELDS: tuple[tuple[str, type], ...] = (
    ("v", int),
    ("instrument", str),
    ("venue", str),
    ("kind", str),
    ("side", str),
    ("price", int),
    ("size", int),
    ("price_exp", int),
    ("size_exp", int),
    ("order_id", int),
    ("seq", int),
    ("seq_first", int),
    ("seq_prev", int),
    ("ts_event", int),
    ("ts_recv", int),
    ("ts_proc", int),
    ("flags", int),
)
_KINDS = {k.value: k for k in Kind}
_SIDES = {s.value: s for s in Side}


_json_str = json.JSONEncoder(ensure_ascii=True).encode

_stdlib_compact_json = json.JSONEncoder(separators=(",", ":")).encode
_msgspec_json = msgspec.json.Encoder().encode
_STDLIB_REPR_FROM, _STDLIB_REPR_BELOW = 1e-4, 1e16
"""Floats whose magnitude is in this range (or zero) are written in positional notation by
both ``float.__repr__`` and msgspec, the same shortest round-trip digits; outside it the
exponent's spelling differs (``1e-05`` vs ``0.00001``, ``1e+16`` vs ``1e16``)."""


def compact_json(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"))``: the same text, cheaper (every JSON row the
    stream job writes goes through it; a feature row ~16 -> ~6 µs). A flat dict with str keys
    whose values are floats, ints, bools, None, strs and StrEnum members is written by msgspec:
    the values whose text the two encoders spell alike -- ints, bools, None, printable-ASCII
    strings (nothing for ``ensure_ascii`` to escape but ``"`` and ``\\``), floats that are zero
    or in [1e-4, 1e16) (``float.__repr__``'s positional range: the same shortest round-trip
    digits) -- as they are, every other one as the stdlib's own text for it
    (``msgspec.Raw``). Anything else (nested values, other types) goes to the stdlib encoder,
    built once (``json.dumps`` with any option builds one per call). Pinned against the
    stdlib on every edge and on random values: ``tests/unit/test_schema_pipeline.py``."""
    if type(value) is dict:
        ready = _for_msgspec(value)
        if ready is not None:
            return _msgspec_json(ready).decode()
    return _stdlib_compact_json(value)


def _for_msgspec(d: dict[Any, Any]) -> dict[Any, Any] | None:
    """``d`` (or a copy with some values as the stdlib's text) when msgspec writes it as the
    stdlib would; None when the stdlib must."""
    try:
        keys = "".join(d)  # a key that is not a str: the stdlib's rules
    except TypeError:
        return None
    if not (keys.isascii() and keys.isprintable()):
        return None
    lo, hi = _STDLIB_REPR_FROM, _STDLIB_REPR_BELOW
    out = d
    for key, v in d.items():
        t = type(v)
        if t is float:
            if lo <= abs(v) < hi or v == 0.0:  # NaN and infinities fail both
                continue
        elif t is int or t is bool or v is None:
            continue
        elif t is str or isinstance(v, StrEnum):
            # a StrEnum member: its str is its value, which is what msgspec writes for it
            if v.isascii() and v.isprintable():
                continue
        else:
            return None  # other enums, nested values, subclasses: the stdlib's rules
        if out is d:
            out = dict(d)
        out[key] = msgspec.Raw(_stdlib_compact_json(v).encode())
    return out


def encode_event(e: L2Event) -> bytes:
    """Compact JSON with the schema version first; field order is fixed (stable bytes).

    Written out field by field rather than ``json.dumps(asdict(e))``: this runs once per event
    on the ingest hot path, and the literal is ~4x faster. ``kind``/``side`` are enum values
    (no escaping needed); free text (instrument, venue) goes through the JSON encoder.
    """
    return (
        f'{{"v":{e.v},"instrument":{_json_str(e.instrument)},"venue":{_json_str(e.venue)},'
        f'"kind":"{e.kind.value}","side":"{e.side.value}","price":{e.price},"size":{e.size},'
        f'"price_exp":{e.price_exp},"size_exp":{e.size_exp},"order_id":{e.order_id},'
        f'"seq":{e.seq},"seq_first":{e.seq_first},"seq_prev":{e.seq_prev},'
        f'"ts_event":{e.ts_event},"ts_recv":{e.ts_recv},"ts_proc":{e.ts_proc},'
        f'"flags":{e.flags}}}'
    ).encode()


def _check_int(name: str, value: Any) -> int:
    # bool is an int subclass in Python; a JSON true is not a number here
    if type(value) is int:
        if not INT64_MIN <= value <= INT64_MAX:
            raise SchemaError(name, f"{value} is outside int64")
        return value
    if isinstance(value, float):
        if math.isnan(value):
            raise SchemaError(name, "NaN is not a valid integer")
        if math.isinf(value):
            raise SchemaError(name, "infinity is not a valid integer")
        raise SchemaError(name, f"expected integer ticks/lots, got float {value!r}")
    raise SchemaError(name, f"expected integer, got {type(value).__name__} {value!r}")


def validate_fields(d: dict[str, Any]) -> L2Event:  # noqa: C901 - one check per field rule
    """Turn a decoded dict into an :class:`L2Event`, or raise :class:`SchemaError` naming the
    first offending field and the reason."""
    if not isinstance(d, dict):
        raise SchemaError("record", f"expected a JSON object, got {type(d).__name__}")
    if "v" not in d:
        raise SchemaError("v", "missing schema version")
    version = d["v"]
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise SchemaError(
            "v", f"unknown schema version {version!r} (supported: {sorted(SUPPORTED_VERSIONS)})"
        )
    unknown = set(d) - {name for name, _ in _FIELDS}
    if unknown:
        raise SchemaError(sorted(unknown)[0], "unknown field")
    values: dict[str, Any] = {}
    for name, typ in _FIELDS:
        if name not in d:
            raise SchemaError(name, "missing")
        value = d[name]
        if typ is int:
            values[name] = _check_int(name, value)
        elif not isinstance(value, str):
            raise SchemaError(name, f"expected string, got {type(value).__name__} {value!r}")
        else:
            values[name] = value
    if not values["instrument"]:
        raise SchemaError("instrument", "empty")
    for name in ("instrument", "venue"):
        if len(values[name]) > MAX_NAME_LEN:
            raise SchemaError(name, f"longer than {MAX_NAME_LEN} characters")
    for name in ("price_exp", "size_exp"):
        if values[name] not in EXP_RANGE:
            raise SchemaError(
                name, f"{values[name]} is outside {EXP_RANGE.start}..{EXP_RANGE.stop - 1}"
            )
    for name in ("seq", "seq_first", "seq_prev", "ts_recv", "ts_proc"):
        if values[name] < 0:
            raise SchemaError(name, f"negative: {values[name]}")
    if values["flags"] & ~_KNOWN_FLAGS or values["flags"] < 0:
        raise SchemaError("flags", f"unknown flag bits in {values['flags']}")
    kind = _KINDS.get(values["kind"])
    if kind is None:
        raise SchemaError("kind", f"unknown kind {values['kind']!r}")
    side = _SIDES.get(values["side"])
    if side is None:
        raise SchemaError("side", f"unknown side {values['side']!r}")
    values["kind"], values["side"] = kind, side
    if values["size"] < 0:
        raise SchemaError("size", f"negative size {values['size']}")
    if kind in BOOK_KINDS or kind in TRADE_KINDS:
        if side is Side.NONE:
            raise SchemaError("side", f"{kind.value} needs side B or A")
        if values["price"] <= 0:
            raise SchemaError(
                "price", f"{kind.value} needs a positive price, got {values['price']}"
            )
    if kind is Kind.HALT and values["price"] not in (-1, 0, 1):
        raise SchemaError("price", f"halt code must be -1, 0 or 1, got {values['price']}")
    if values["ts_event"] <= 0:
        raise SchemaError("ts_event", f"not a valid exchange time: {values['ts_event']}")
    return L2Event(**values)


_Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
_NonNegative = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]
_Exp = Annotated[int, msgspec.Meta(ge=EXP_RANGE.start, le=EXP_RANGE.stop - 1)]


class _WireEvent(msgspec.Struct, forbid_unknown_fields=True):
    """The schema's per-field bounds as a typed decoder (the fields of :data:`_FIELDS`, every
    one required, nothing else allowed): msgspec checks them while it parses. Bounds only; the
    messages are :func:`validate_fields`'s (see :func:`decode_event`). Current version only: a
    record of another supported version takes the dict path."""

    v: Annotated[int, msgspec.Meta(ge=SCHEMA_VERSION, le=SCHEMA_VERSION)]
    instrument: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_LEN)]
    venue: Annotated[str, msgspec.Meta(max_length=MAX_NAME_LEN)]
    kind: Kind
    side: Side
    price: _Int64
    size: _NonNegative
    price_exp: _Exp
    size_exp: _Exp
    order_id: _Int64
    seq: _NonNegative
    seq_first: _NonNegative
    seq_prev: _NonNegative
    ts_event: Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)]
    ts_recv: _NonNegative
    ts_proc: _NonNegative
    flags: Annotated[int, msgspec.Meta(ge=0, le=_KNOWN_FLAGS)]


_decode_wire_event = msgspec.json.Decoder(_WireEvent).decode


def decode_event(raw: bytes | str) -> L2Event:
    """Parse one serialised record; :class:`SchemaError` names the field and reason.

    The common case -- a well-formed current-version record -- is parsed and bounds-checked in
    one pass by a typed decoder (msgspec, ~4x the dict path). Anything it refuses goes through
    the dict path (:func:`validate_fields`), which gives the precise error (or accepts the rare
    valid record the typed decoder does not, e.g. a lone surrogate in a name), so what is
    accepted and every refusal's message are exactly the dict path's."""
    try:
        w = _decode_wire_event(raw)
    except msgspec.MsgspecError:
        pass
    else:
        kind, side, price = w.kind, w.side, w.price
        if not (
            ((kind in BOOK_KINDS or kind in TRADE_KINDS) and (side is Side.NONE or price <= 0))
            or (kind is Kind.HALT and price not in (-1, 0, 1))
        ):
            return L2Event(
                w.instrument,
                w.venue,
                kind,
                side,
                price,
                w.size,
                w.ts_event,
                w.ts_recv,
                w.price_exp,
                w.size_exp,
                w.order_id,
                w.seq,
                w.seq_first,
                w.seq_prev,
                w.ts_proc,
                w.flags,
                w.v,
            )
    try:
        d = _loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:  # orjson and json errors are ValueErrors
        raise SchemaError("record", f"malformed JSON: {exc}") from exc
    return validate_fields(d)


# ---------------------------------------------------------------------------------------------
# dead letters


class Reason(StrEnum):
    """Why a record was dead-lettered (``reason_code``); ``reason`` adds the detail."""

    MALFORMED = "malformed"
    """Not parseable at all (bad JSON, bad source line)."""
    SCHEMA = "schema"
    """Parseable, but a field is missing or invalid (names the field)."""
    UNKNOWN_VERSION = "unknown_version"
    LATE = "late"
    """Exchange time behind the instrument's watermark (newest exchange time minus the bound)."""
    FUTURE = "future"
    """Exchange time implausibly far ahead of the instrument's newest one (``flink.max_ahead_ms``):
    one record must not move the instrument's clock, or every later record would be late."""
    SEQUENCE_GAP = "sequence_gap"
    CROSSED_BOOK = "crossed_book"
    NEGATIVE_LEVEL = "negative_level"
    KEY_MISMATCH = "key_mismatch"
    """Kafka key differs from the record's instrument (it would land on the wrong book)."""
    UNPROCESSABLE = "unprocessable"
    """The record passed the schema yet made the stage fail (``reason`` names the exception):
    a defect to report. The record is set aside so that the stage goes on (no poison pill)."""


DEAD_LETTER_VERSION = 1
MAX_DEAD_RAW_CHARS = 100_000
"""``raw`` of a dead letter is cut to this many characters (the cut is said at its end)."""
MAX_DEAD_REASON_CHARS = 2_000


def _clip(text: str, limit: int) -> str:
    if type(text) is not str or len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text)} characters, cut]"


@dataclass(slots=True)
class DeadLetter:
    """A record the pipeline refused, with where it came from and why. ``source`` is
    ``kafka:<topic>`` (``partition``/``offset`` set) or ``file:<path>`` (``offset`` = line)."""

    source: str
    partition: int
    offset: int
    key: str
    reason_code: Reason
    reason: str
    raw: str
    stage: str
    """Which stage refused it: ``ingest`` (publisher), ``features`` (the Flink job),
    ``execution`` (execution sink), ``history`` (history sink) or ``replay``."""
    ts_event: int = 0
    ts_dead: int = 0
    """Processing time of the decision, ns (information only)."""
    v: int = DEAD_LETTER_VERSION

    def __post_init__(self) -> None:
        # a refused record near Kafka's size limit must not make a dead letter beyond it (the
        # dead letter itself would then fail to publish and stop the stage): bound both texts
        self.raw = _clip(self.raw, MAX_DEAD_RAW_CHARS)
        self.reason = _clip(self.reason, MAX_DEAD_REASON_CHARS)

    def to_json(self) -> str:
        return compact_json({name: getattr(self, name) for name in self.__dataclass_fields__})


def _json_object(raw: bytes | str) -> dict[str, Any]:
    """``raw`` parsed as one JSON object, or :class:`SchemaError` (malformed, or not an object)."""
    try:
        d = _loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SchemaError("record", f"malformed JSON: {exc}") from exc
    if not isinstance(d, dict):
        raise SchemaError("record", "expected a JSON object")
    return d


def decode_dead_letter(raw: bytes | str) -> DeadLetter:
    """Inverse of :meth:`DeadLetter.to_json`; raises :class:`SchemaError` naming the field."""
    d = _json_object(raw)
    if d.get("v", DEAD_LETTER_VERSION) != DEAD_LETTER_VERSION or type(d.get("v", 1)) is not int:
        raise SchemaError("v", f"unknown dead-letter version {d.get('v')!r}")
    code = d.get("reason_code")
    if type(code) is not str or code not in _REASONS:
        raise SchemaError("reason_code", f"unknown reason code {code!r}")
    d["reason_code"] = _REASONS[code]
    hints = _FIELD_HINTS[DeadLetter]
    for name, value in d.items():
        if name == "reason_code":
            continue
        hint = hints.get(name)
        if hint is None:
            raise SchemaError(name, "unknown field")
        d[name] = _check_value(name, hint, value)
    try:
        return DeadLetter(**d)
    except TypeError as exc:
        raise SchemaError("record", str(exc)) from exc


# ---------------------------------------------------------------------------------------------
# trading records: signals, orders, execution reports, control commands
#
# Prices stay integer ticks of 10**price_exp and quantities integer lots of 10**size_exp, as in
# the L2 events of the same instrument. Every id is derived from the inputs (see
# udfs/strategy/orders.py),
# so a replay or a restart re-creates the same ids and downstream dedupe works.

TRADING_VERSION = 1


class OrderSide(StrEnum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def sign(self) -> int:
        return 1 if self is OrderSide.BUY else -1


class OrderType(StrEnum):
    LIMIT = "LIMIT"
    MARKET = "MARKET"


class OrderAction(StrEnum):
    NEW = "new"
    CANCEL = "cancel"
    HEARTBEAT = "heartbeat"
    """Not an order: the trading stage has published every order of this instrument decided up
    to ``ts_event``. The execution sink advances its market clock to it (the orders topic's
    event-time frontier), so market data and orders meet in the same order live and in a
    replay."""


class ExecKind(StrEnum):
    ACK = "ack"
    """Accepted by risk and resting (or about to trade) at the venue."""
    REJECT = "reject"
    """Refused by pre-trade risk or the venue; ``reason`` says why."""
    CANCELED = "canceled"
    FILL = "fill"
    """A (partial) execution; ``leaves_qty`` 0 means the order is done."""


class ControlCommand(StrEnum):
    KILL = "kill"
    """Trading HALTED: no new order accepted from the next event on (cancels still pass)."""
    REDUCE = "reduce"
    """Trading REDUCING: only orders that close exposure are accepted (cancels pass)."""
    RESUME = "resume"
    """Trading ACTIVE again."""
    CANCEL_ALL = "cancel_all"
    KILL_TRIPPED = "kill_tripped"
    """Emitted by the sink itself when a guard (drawdown) trips: trading goes to
    ``RiskConfig.drawdown_mode`` (REDUCING by default)."""


@dataclass(slots=True)
class Signal:
    """A strategy's or model's view after a feature row. ``traded`` is False for shadow models:
    recorded, never turned into orders."""

    instrument: str
    strategy: str
    ts_event: int
    """exchange time of the feature row (= of the event) that produced the signal"""
    seq: int
    """``seq`` of that event"""
    score: float
    """strategy's raw score (e.g. model probability of an up move, or an imbalance)"""
    direction: int
    """-1, 0, +1: the side the strategy wants to be on"""
    traded: bool = True
    model_version: str = ""
    v: int = TRADING_VERSION


@dataclass(slots=True)
class Order:
    order_id: str
    instrument: str
    strategy: str
    action: OrderAction
    side: OrderSide
    order_type: OrderType
    price: int
    """limit price in ticks (0 for market orders)"""
    quantity: int
    """lots"""
    price_exp: int
    size_exp: int
    ts_event: int
    """decision time (exchange time of the triggering event)"""
    source_seq: int
    """``seq`` of the triggering event"""
    parent_id: str = ""
    """set on child slices (TWAP/POV) of a parent order"""
    reduce_only: bool = False
    tif: str = "GTC"
    trigger_ts_recv: int = 0
    """receive time of the triggering event (its ``ts_recv``): tick-to-order latency is measured
    from here to the order's publish time"""
    v: int = TRADING_VERSION


@dataclass(slots=True)
class ExecReport:
    report_id: str
    order_id: str
    instrument: str
    kind: ExecKind
    ts_event: int
    """venue time of the report (exchange time + latencies)"""
    reason: str = ""
    side: str = ""
    fill_price: int = 0
    fill_qty: int = 0
    leaves_qty: int = 0
    fee: float = 0.0
    """in quote currency units (price units x size units), positive = paid"""
    liquidity: str = ""
    """``maker`` / ``taker`` on fills"""
    book_bid: int = 0
    book_ask: int = 0
    book_bid_size: int = 0
    book_ask_size: int = 0
    """the book the venue decided on (audit of fill realism)"""
    queue_ahead: int = 0
    """size ahead of the order at its price when the fill was decided (resting orders)"""
    position: int = 0
    """position in lots after this report"""
    price_exp: int = 0
    size_exp: int = 0
    v: int = TRADING_VERSION


@dataclass(slots=True)
class Control:
    command: ControlCommand
    instrument: str = ""
    """empty: every instrument"""
    reason: str = ""
    ts_event: int = 0
    v: int = TRADING_VERSION


@dataclass(slots=True)
class RiskReport:
    """Risk figures of the current positions, published every ``risk_interval_ms`` of event
    time by the execution sink (historical simulation; money in quote currency)."""

    ts_event: int
    var_99: float
    """one-interval 99% value at risk (positive = loss)"""
    es_99: float
    """expected shortfall beyond it"""
    drawdown: float
    equity: float
    realised_pnl: float
    unrealised_pnl: float
    fees: float
    positions: dict[str, int] = field(default_factory=dict)
    """instrument -> lots"""
    scenarios: int = 0
    """how many historical intervals the VaR/ES were computed over"""
    v: int = TRADING_VERSION


@dataclass(slots=True)
class ConfigRecord:
    """One process's effective configuration when it started (config topic): the audit trail
    of configuration changes. Two starts of the same ``process`` with different
    ``config_hash`` are a change; ``settings`` says what it was."""

    process: str
    """which stage started (``exec-sink``, ``history-sink``, ``stream-job``, ``publish``)"""
    config_hash: str
    """SHA-256 (hex) of ``settings``"""
    settings: str
    """the effective settings as one JSON object ``{"section.field": value}`` (sorted keys,
    compact), secrets redacted (``udfs.audit.redacted_settings``)"""
    ts_event: int
    """wall clock of the start, ns (a configuration has no exchange time)"""
    host: str = ""
    pid: int = 0
    v: int = TRADING_VERSION


def encode_record(
    record: Signal | Order | ExecReport | Control | RiskReport | ConfigRecord,
) -> bytes:
    """Stable JSON (fields in declaration order) for the trading records. The same text as
    ``json.dumps(asdict(record), separators=(",", ":"))``: the records are flat (enum values
    are strings, ``RiskReport.positions`` a dict of ints), so asdict's deep copy is only cost."""
    return compact_json(
        {name: getattr(record, name) for name in record.__dataclass_fields__}
    ).encode()


_TRADING_ENUMS: dict[type, dict[str, type]] = {
    Order: {"action": OrderAction, "side": OrderSide, "order_type": OrderType},
    ExecReport: {"kind": ExecKind},
    Control: {"command": ControlCommand},
    Signal: {},
    RiskReport: {},
    ConfigRecord: {},
}
_EXP_FIELDS = frozenset({"price_exp", "size_exp"})
_SIGNED_INT_FIELDS = frozenset({"position", "direction", "partition"})
"""integers of the trading records that may be negative (everything else is >= 0)"""


def _check_value(name: str, hint: str, value: Any) -> Any:  # noqa: C901 - one branch per type
    """One field of a trading record against its declared type (a string annotation under
    ``from __future__ import annotations``)."""
    if hint == "int":
        value = _check_int(name, value)
        if name in _EXP_FIELDS:
            if value not in EXP_RANGE:
                raise SchemaError(
                    name, f"{value} is outside {EXP_RANGE.start}..{EXP_RANGE.stop - 1}"
                )
        elif value < 0 and name not in _SIGNED_INT_FIELDS:
            raise SchemaError(name, f"negative: {value}")
        return value
    if hint == "float":
        if type(value) is int:
            if not INT64_MIN <= value <= INT64_MAX:
                raise SchemaError(name, f"{value} is outside int64")
            return float(value)
        if type(value) is not float:
            raise SchemaError(name, f"expected a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise SchemaError(name, f"not a finite number: {value!r}")
        return value
    if hint == "str":
        if type(value) is not str:
            raise SchemaError(name, f"expected string, got {type(value).__name__} {value!r}")
        return value
    if hint == "bool":
        if type(value) is not bool:
            raise SchemaError(name, f"expected a JSON boolean, got {value!r}")
        return value
    if hint == "dict[str, int]":
        if type(value) is not dict:
            raise SchemaError(name, f"expected an object, got {type(value).__name__}")
        return {k: _check_int(f"{name}.{k}", v) for k, v in value.items()}
    return value  # enums: checked by the caller


def _check_trading(cls: type, d: dict[str, Any]) -> None:
    """Record-specific rules beyond the field types (see the module docstring)."""
    if cls is Order and d.get("action") is OrderAction.NEW:
        quantity, price = d.get("quantity", 0), d.get("price", 0)
        if quantity <= 0:
            raise SchemaError("quantity", f"a new order needs quantity > 0, got {quantity}")
        if d.get("order_type") is OrderType.LIMIT and price <= 0:
            raise SchemaError("price", f"a new limit order needs price > 0, got {price}")
    if cls is Signal and d.get("direction") not in (-1, 0, 1):
        raise SchemaError("direction", f"must be -1, 0 or 1, got {d.get('direction')}")


_TradingRecord = TypeVar(
    "_TradingRecord", Signal, Order, ExecReport, Control, RiskReport, ConfigRecord
)


def decode_record(cls: type[_TradingRecord], raw: bytes | str) -> _TradingRecord:
    """Inverse of :func:`encode_record`; raises :class:`SchemaError` naming the field."""
    d = _json_object(raw)
    version = d.get("v")
    if type(version) is not int or version != TRADING_VERSION:
        raise SchemaError("v", f"unknown schema version {version!r}")
    for name, enum in _TRADING_ENUMS[cls].items():
        value = d.get(name)
        if type(value) is not str:
            raise SchemaError(name, f"invalid {name} {value!r}")
        try:
            d[name] = enum(value)
        except ValueError as exc:
            raise SchemaError(name, f"invalid {name} {value!r}") from exc
    hints = _FIELD_HINTS[cls]
    for name, value in d.items():
        hint = hints.get(name)
        if hint is None:
            raise SchemaError(name, "unknown field")
        d[name] = _check_value(name, hint, value)
    _check_trading(cls, d)
    try:
        return cls(**d)
    except TypeError as exc:
        raise SchemaError("record", str(exc)) from exc


# ---------------------------------------------------------------------------------------------
# rows the stream job writes as JSON objects (the feature row is udfs.market.features.FeatureRow)

STATS_VERSION = 1
QUALITY_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsRow:
    """The stream job's counters of one instrument at an event-time minute (stats topic), or,
    with ``unkeyed_dead`` alone, one refused record of a key that has no book yet. A field that
    is ``None`` is left out of the JSON object."""

    instrument: str
    watermark_ms: int | None = None
    """the event-time minute boundary whose timer emitted the row"""
    events_in: int | None = None
    events_processed: int | None = None
    dead_lettered: int | None = None
    signals: int | None = None
    orders: int | None = None
    book_levels: int | None = None
    unkeyed_dead: int | None = None
    ts_proc: int | None = None
    """wall clock of the job when it emitted the row, ns"""
    v: int = STATS_VERSION


@dataclass(frozen=True, slots=True, kw_only=True)
class QualityRow:
    """Data-quality counters of one instrument and exchange-time minute
    (``udfs.market.quality`` says what each counts)."""

    instrument: str
    minute_start: int
    """ns, a multiple of 60e9"""
    events: int
    sequence_gaps: int
    resyncs: int
    crossed: int
    locked: int
    stale_gaps: int
    max_gap_ms: float
    out_of_order: int
    late: int
    duplicates: int
    v: int = QUALITY_VERSION


DRIFT_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class DriftRow:
    """The population stability index of one input feature of the live model over one window
    of an instrument's feature rows, against the model card's training deciles
    (``udfs.strategy.drift``); the stream's counterpart of a ``bookstream model drift`` row.
    ``alert``: ``psi`` above ``threshold`` (``strategy.drift_psi_alert``): the alert record."""

    instrument: str
    model: str
    model_version: str
    feature: str
    psi: float | None
    """None: no value of the feature in the window (every one NaN)"""
    threshold: float
    alert: bool
    rows: int
    """feature rows in the window"""
    window_from_ns: int
    """exchange time, inclusive: the lake command over ``[window_from_ns, window_to_ns)`` and
    this instrument reads exactly the window's rows"""
    window_to_ns: int
    """exchange time, exclusive"""
    v: int = DRIFT_VERSION


def encode_row(row: StatsRow | QualityRow | DriftRow) -> str:
    """A row as one JSON object, fields in declaration order, ``None`` fields left out."""
    return compact_json(
        {f: v for f in row.__dataclass_fields__ if (v := getattr(row, f)) is not None}
    )


_Row = TypeVar("_Row", StatsRow, QualityRow, DriftRow)


def decode_row(cls: type[_Row], raw: bytes | str) -> _Row:
    """Inverse of :func:`encode_row`; raises :class:`SchemaError` naming the field."""
    d = _json_object(raw)
    try:
        return cls(**d)
    except TypeError as exc:
        raise SchemaError("record", str(exc)) from exc


_FIELD_HINTS: dict[type, dict[str, str]] = {
    cls: {f.name: str(f.type) for f in fields(cls)} for cls in (*_TRADING_ENUMS, DeadLetter)
}
_REASONS = {r.value: r for r in Reason}
