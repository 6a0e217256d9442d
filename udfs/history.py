"""The history's tables: one per stream, their columns derived from the one schema module.

Pure (pyarrow, no Iceberg or Kafka import): which topic feeds which table, the columns of each
table and how one Kafka record becomes one row. ``jobs/lake.py`` turns these definitions into
Iceberg tables and ``jobs/history_sink.py`` moves the records.

Every table has, besides the record's own fields (same names, same order as on the wire):

* ``event_time`` -- the record's exchange time as an Iceberg ``timestamp`` (microseconds, UTC):
  the day partition and what analysts filter on. The exact nanoseconds stay in ``ts_event``
  (or the record's own time field);
* ``_partition``, ``_offset`` -- where the record sits in its Kafka topic: the replay reads
  events back in exactly this order, and a divergence names a record by them.

Prices and sizes stay integer ticks/lots with their exponents, as on the wire; money figures
of the trading records are floats as on the wire.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import pyarrow as pa

from udfs.market.features import FeatureRow, feature_columns
from udfs.schema import (
    ConfigRecord,
    Control,
    DeadLetter,
    DriftRow,
    ExecReport,
    L2Event,
    Order,
    QualityRow,
    RiskReport,
    SchemaError,
    Signal,
    StatsRow,
    decode_dead_letter,
    decode_event,
    decode_record,
)

__all__ = [
    "PROVENANCE_COLUMNS",
    "Stream",
    "fit_rows",
    "rows_to_table",
    "streams",
]

PROVENANCE_COLUMNS = ("event_time", "_partition", "_offset")

_ARROW: dict[type, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
}


def _arrow_type(tp: Any) -> pa.DataType:
    if isinstance(tp, type) and issubclass(tp, Enum):
        return pa.string()
    if isinstance(tp, type) and tp in _ARROW:
        return _ARROW[tp]
    origin = typing.get_origin(tp)
    if origin in (dict, list) or tp in (dict, list):
        return pa.string()  # nested values are stored as their JSON text
    if isinstance(tp, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _arrow_type(args[0])
    raise TypeError(f"no column type for {tp!r}")


def _dataclass_fields(cls: type) -> list[tuple[str, pa.DataType]]:
    hints = typing.get_type_hints(cls)
    return [(f.name, _arrow_type(hints[f.name])) for f in dataclasses.fields(cls)]


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return value


@dataclass(frozen=True)
class Stream:
    """One stream's history table."""

    name: str
    """the table's name inside the lake's namespace (``bookstream.<name>``)"""
    topic_field: str
    """which ``TopicsConfig`` field feeds it"""
    fields: tuple[tuple[str, pa.DataType], ...]
    """the record's own columns, in wire order"""
    decode: Callable[[bytes], dict[str, Any]]
    """one Kafka value -> {column: value}; raises :class:`SchemaError` naming the field"""
    time_ns: Callable[[dict[str, Any]], int]
    """the row's exchange time in ns (-> ``event_time``)"""
    partition_by_instrument: bool = False
    """also partition by ``instrument`` (the big per-instrument streams)"""
    sort_by: tuple[str, ...] = ("event_time",)

    @property
    def arrow_schema(self) -> pa.Schema:
        return pa.schema(
            [
                *self.fields,
                ("event_time", pa.timestamp("us")),
                ("_partition", pa.int32()),
                ("_offset", pa.int64()),
            ]
        )

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.fields)


def _record_decoder(cls: type, decode: Callable[[bytes], Any]) -> Callable[[bytes], dict]:
    names = [f.name for f in dataclasses.fields(cls)]

    def to_row(raw: bytes) -> dict[str, Any]:
        rec = decode(raw)
        return {n: _plain(getattr(rec, n)) for n in names}

    return to_row


def _json_decoder(
    fields: Iterable[tuple[str, pa.DataType]], required: Iterable[str]
) -> Callable[[bytes], dict]:
    """Rows the job writes as JSON objects (features, stats, quality), columns from their
    dataclass: a missing required key (a field without default) or a value of the wrong kind
    is a :class:`SchemaError`."""
    fields = tuple(fields)
    required = frozenset(required)
    integers = {n for n, t in fields if pa.types.is_integer(t)}
    floats = {n for n, t in fields if pa.types.is_floating(t)}
    strings = {n for n, t in fields if pa.types.is_string(t)}
    booleans = {n for n, t in fields if pa.types.is_boolean(t)}

    def to_row(raw: bytes) -> dict[str, Any]:
        try:
            d = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SchemaError("record", f"malformed JSON: {exc}") from exc
        if not isinstance(d, dict):
            raise SchemaError("record", "expected a JSON object")
        missing = required - d.keys()
        if missing:
            raise SchemaError(sorted(missing)[0], "missing")
        row = {}
        for name, _t in fields:
            value = d.get(name)
            if value is not None:
                # pyarrow would silently truncate 1.5 into an int64 column: refuse it here
                if name in integers and (type(value) is not int or not -(2**63) <= value < 2**63):
                    raise SchemaError(name, f"expected an int64 integer, got {value!r}")
                if name in floats and not (
                    (type(value) is float and math.isfinite(value))
                    or (type(value) is int and -(2**63) <= value < 2**63)
                ):
                    raise SchemaError(name, f"expected a finite number, got {value!r}")
                if name in strings and not isinstance(value, str):
                    raise SchemaError(name, f"expected a string, got {value!r}")
                if name in booleans and type(value) is not bool:
                    raise SchemaError(name, f"expected true or false, got {value!r}")
            row[name] = value
        return row

    return to_row


def _feature_fields(depth_levels: int) -> tuple[tuple[str, pa.DataType], ...]:
    """The feature row's columns (:func:`udfs.market.features.feature_columns`)."""
    return tuple((name, _arrow_type(tp)) for name, tp in feature_columns(depth_levels))


def _required(cls: type) -> tuple[str, ...]:
    """The fields of a row dataclass that have no default: a row without one is refused."""
    missing = dataclasses.MISSING
    return tuple(
        f.name
        for f in dataclasses.fields(cls)
        if f.default is missing and f.default_factory is missing
    )


def _trading_stream(name: str, cls: type) -> Stream:
    """A trading record's table: topic field = table name, time = its ``ts_event``."""
    return Stream(
        name,
        name,
        tuple(_dataclass_fields(cls)),
        _record_decoder(cls, lambda raw: decode_record(cls, raw)),
        lambda r: r["ts_event"],
    )


def _row_stream(name: str, cls: type, time_ns: Callable[[dict[str, Any]], int]) -> Stream:
    """A JSON row's table (the job's stats, quality minutes, drift windows): topic field =
    table name, every field of ``cls`` without a default required."""
    fields = tuple(_dataclass_fields(cls))
    return Stream(name, name, fields, _json_decoder(fields, _required(cls)), time_ns)


def streams(depth_levels: int) -> tuple[Stream, ...]:
    """Every history table, for a job computing ``depth_levels`` of imbalance."""
    feature_fields = _feature_fields(depth_levels)
    return (
        Stream(
            "events",
            "events",
            tuple(_dataclass_fields(L2Event)),
            _record_decoder(L2Event, decode_event),
            lambda r: r["ts_event"],
            partition_by_instrument=True,
            sort_by=("instrument", "ts_event"),
        ),
        Stream(
            "features",
            "features",
            feature_fields,
            # every key of a field without default (imbalance_<k>: the optional depth)
            _json_decoder(
                feature_fields,
                [k for k in _required(FeatureRow) if k in dict(feature_fields)],
            ),
            lambda r: r["ts_event"],
            partition_by_instrument=True,
            sort_by=("instrument", "ts_event"),
        ),
        Stream(
            "dead_letters",
            "dead_letter",
            tuple(_dataclass_fields(DeadLetter)),
            _record_decoder(DeadLetter, decode_dead_letter),
            lambda r: r["ts_event"] or r["ts_dead"],
        ),
        _row_stream(
            "stats", StatsRow, lambda r: (r["watermark_ms"] or 0) * 1_000_000 or (r["ts_proc"] or 0)
        ),
        *(
            _trading_stream(name, cls)
            for name, cls in (
                ("signals", Signal),
                ("orders", Order),
                ("executions", ExecReport),
                ("control", Control),
                ("risk", RiskReport),
                ("config", ConfigRecord),
            )
        ),
        _row_stream("quality", QualityRow, lambda r: r["minute_start"]),
        # the stream job's drift rows; `bookstream model drift` writes its own model_drift
        _row_stream("drift", DriftRow, lambda r: r["window_to_ns"]),
    )


def rows_to_table(
    stream: Stream, rows: list[dict[str, Any]], partitions: list[int], offsets: list[int]
) -> pa.Table:
    """Decoded rows (+ their Kafka positions) as an Arrow table of ``stream.arrow_schema``,
    column by column, sorted by ``stream.sort_by`` so a time-range read touches few pages."""
    schema = stream.arrow_schema
    cols: list[pa.Array] = []
    for name, typ in stream.fields:
        cols.append(pa.array([r[name] for r in rows], type=typ))
    event_us = [max(stream.time_ns(r), 0) // 1000 for r in rows]
    cols.append(pa.array(event_us, type=pa.timestamp("us")))
    cols.append(pa.array(partitions, type=pa.int32()))
    cols.append(pa.array(offsets, type=pa.int64()))
    table = pa.Table.from_arrays(cols, schema=schema)
    keys = [(c, "ascending") for c in (*stream.sort_by, "_partition", "_offset")]
    return table.sort_by(keys)


def fit_rows(
    stream: Stream, rows: list[dict[str, Any]], partitions: list[int], offsets: list[int]
) -> tuple[list[dict[str, Any]], list[int], list[int], list[tuple[int, int, str]]]:
    """Split decoded rows into those that fit ``stream``'s columns and those that do not:
    (rows, partitions, offsets, [(partition, offset, reason)]). A row fits when it converts
    alone (:func:`rows_to_table` of that one row), so the rule is pyarrow's own."""
    kept: tuple[list[dict[str, Any]], list[int], list[int]] = ([], [], [])
    misfits: list[tuple[int, int, str]] = []
    for row, p, o in zip(rows, partitions, offsets, strict=True):
        try:
            rows_to_table(stream, [row], [p], [o])
        except (ValueError, TypeError, OverflowError, KeyError, ArithmeticError) as exc:
            misfits.append((p, o, f"does not fit the {stream.name} table: {exc}"))
            continue
        kept[0].append(row)
        kept[1].append(p)
        kept[2].append(o)
    return (*kept, misfits)
