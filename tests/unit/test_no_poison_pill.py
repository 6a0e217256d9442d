"""No poison pill (issue 9 section 1): for arbitrary bytes and arbitrary JSON on each input of
each stage, no exception escapes and ``in == processed + dead_lettered`` holds.

Property tests (hypothesis) over the functions each stage calls per record: the schema's
decoders, the Flink job's per-record path, the execution sink's decode + sequencer + engine,
the history sink's decoders and column fit, the replay's stored-row conversion and the source
adapters' line readers. Example counts are modest so the unit suite stays fast; the regression
tests below them pin the exact records the review found.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs.execution_sink import _decode, _take_refused, decode_input
from jobs.kafka_io import KafkaRecord
from jobs.replay import _control_value, _event_of, rows_to_inputs
from udfs.config import load_config
from udfs.execution.engine import ExecutionEngine
from udfs.execution.sequencer import Sequencer
from udfs.history import fit_rows, rows_to_table, streams
from udfs.market.adapters.binance import BinanceAdapter
from udfs.market.adapters.lobster import parse_lobster_time, parse_message_line
from udfs.market.adapters.sources import SAMPLE_LOBSTER, Source
from udfs.pipeline import RecordSource, process_record
from udfs.schema import (
    EXP_RANGE,
    ConfigRecord,
    Control,
    ControlCommand,
    DeadLetter,
    ExecKind,
    ExecReport,
    Kind,
    L2Event,
    Order,
    OrderAction,
    OrderSide,
    OrderType,
    Reason,
    RiskReport,
    SchemaError,
    Side,
    Signal,
    decode_dead_letter,
    decode_event,
    decode_record,
    encode_event,
    encode_record,
    validate_fields,
)
from udfs.schema import _loads as _loads  # the parser of the dict path
from udfs.strategy.trading import Trader

CFG = load_config()
FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
INT64 = 2**63

# ---- strategies -------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["10", "add", "B", "A", "BUY", "new", "kill", "LIMIT", "1e30", "NaN"])
    | st.sampled_from([0, -1, 1, 308, -308, 10**7, 2**63, 2**63 - 1, -(2**63), 2**64, 1e30])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)

EVENT = L2Event(
    instrument="AAPL.XNAS",
    venue="XNAS",
    kind=Kind.ADD,
    side=Side.BID,
    price=5_850_000,
    size=100,
    ts_event=1_340_285_400_000_000_000,
    ts_recv=1_340_285_400_000_000_000,
    price_exp=-4,
    seq=2,
    seq_first=2,
    seq_prev=1,
)
ORDER = Order(
    order_id="o-1",
    instrument="AAPL.XNAS",
    strategy="s",
    action=OrderAction.NEW,
    side=OrderSide.BUY,
    order_type=OrderType.LIMIT,
    price=5_850_000,
    quantity=10,
    price_exp=-4,
    size_exp=0,
    ts_event=1_340_285_400_000_000_001,
    source_seq=2,
)
CONTROL = Control(command=ControlCommand.KILL, instrument="", reason="op", ts_event=1)
TEMPLATES: dict[type, dict[str, Any]] = {
    L2Event: json.loads(encode_event(EVENT)),
    Order: json.loads(encode_record(ORDER)),
    Control: json.loads(encode_record(CONTROL)),
    ExecReport: json.loads(
        encode_record(ExecReport("r", "o", "AAPL.XNAS", ExecKind.FILL, 1, fill_qty=1))
    ),
    Signal: json.loads(encode_record(Signal("AAPL.XNAS", "s", 1, 1, 0.5, 1))),
    RiskReport: json.loads(
        encode_record(RiskReport(1, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, {"AAPL.XNAS": 3}, 2))
    ),
    DeadLetter: json.loads(
        DeadLetter("kafka:t", 0, 1, "k", Reason.SCHEMA, "why", "raw", "features").to_json()
    ),
    ConfigRecord: json.loads(encode_record(ConfigRecord("p", "0" * 64, "{}", 1, "h", 2))),
}


def mutated(template: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The valid record with some fields replaced by arbitrary JSON, some deleted, maybe one
    unknown field added: records that are nearly right are the ones that get past checks."""
    names = sorted(template)
    return st.builds(
        lambda changes, dropped: {
            k: v for k, v in {**template, **changes}.items() if k not in dropped
        },
        st.dictionaries(st.sampled_from([*names, "extra"]), json_values, max_size=3),
        st.sets(st.sampled_from(names), max_size=1),
    )


def as_bytes(d: Any) -> bytes:
    return json.dumps(d).encode()


def record_bytes(template: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, arbitrary JSON, and mutations of a valid record."""
    return (
        st.binary(max_size=60)
        | json_values.map(as_bytes)
        | mutated(template).map(as_bytes)
        | st.just(as_bytes(template))
    )


# ---- the schema ------------------------------------------------------------------------------


def _bounded_event(ev: L2Event) -> None:
    for name, value in asdict(ev).items():
        if isinstance(value, int):
            assert -INT64 <= value < INT64, name
    assert ev.price_exp in EXP_RANGE and ev.size_exp in EXP_RANGE
    assert decode_event(encode_event(ev)) == ev  # whatever it accepts, it can write back


@FAST
@given(record_bytes(TEMPLATES[L2Event]))
def test_decode_event_accepts_or_names_the_field(raw: bytes) -> None:
    try:
        ev = decode_event(raw)
    except SchemaError as exc:
        assert exc.field and exc.reason
        return
    _bounded_event(ev)


def _dict_path(raw: bytes | str) -> L2Event:
    """The schema's reference decoder (as it was before the typed one): parse to a dict (orjson,
    the stdlib where orjson refuses), then :func:`validate_fields`."""
    try:
        d = _loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SchemaError("record", f"malformed JSON: {exc}") from exc
    return validate_fields(d)


def _outcome(decode: Any, raw: bytes | str) -> tuple[str, Any]:
    try:
        return "event", decode(raw)
    except SchemaError as exc:
        return "refused", (exc.field, exc.reason)


EDGE_VALUES = st.sampled_from(
    [
        "",
        "\U0001f4c8" * 64,  # 64 characters (non-BMP): the longest name allowed
        "\U0001f4c8" * 65,
        "x" * 64,
        "x" * 65,
        "\ud800",  # a lone surrogate: the stdlib parser takes it, orjson and msgspec do not
        "N",
        "halt",
        "bbo",
        "level",
        True,
        1.0,
        -0.0,
        -1,
        0,
        2,
        3,
        4,
        18,
        19,
        -18,
        -19,
        2**63 - 1,
        2**63,
        -(2**63),
        -(2**63) - 1,
    ]
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(
    st.dictionaries(
        st.sampled_from([*TEMPLATES[L2Event], "extra"]), EDGE_VALUES | json_scalars, max_size=3
    ),
    st.sets(st.sampled_from(sorted(TEMPLATES[L2Event])), max_size=1),
    st.sampled_from(["", ', "price": 7', ', "kind": "zzz"', ', "v": 2']),
    st.booleans(),
    st.sampled_from(list(Kind)),
    st.sampled_from(list(Side)),
    st.integers(min_value=-2, max_value=2),
)
def test_typed_event_decoder_agrees_with_the_dict_path(
    changes: dict[str, Any],
    dropped: set[str],
    duplicate: str,
    as_text: bool,
    kind: Kind,
    side: Side,
    price: int,
) -> None:
    """decode_event's typed fast path accepts exactly what the dict path accepts, with the same
    event, and every refusal names the same field with the same reason (a duplicate key: the
    last one counts in both). Every kind, side and a few prices around the rules' edges."""
    base = {**TEMPLATES[L2Event], "kind": kind.value, "side": side.value, "price": price}
    record = {k: v for k, v in {**base, **changes}.items() if k not in dropped}
    text = json.dumps(record, ensure_ascii=False)
    if duplicate and text.endswith("}"):
        text = text[:-1] + duplicate + "}"
    raw: bytes | str = text if as_text else text.encode("utf-8", "surrogatepass")
    assert _outcome(decode_event, raw) == _outcome(_dict_path, raw)


@FAST
@given(st.sampled_from([Order, Control, ExecReport, Signal, RiskReport, ConfigRecord]), st.data())
def test_decode_record_accepts_or_names_the_field(cls: type, data: st.DataObject) -> None:
    raw = data.draw(record_bytes(TEMPLATES[cls]))
    try:
        rec = decode_record(cls, raw)
    except SchemaError:
        return
    for name, value in asdict(rec).items():
        if type(value) is int:
            assert -INT64 <= value < INT64, name
        if type(value) is float:
            assert math.isfinite(value), name
    assert decode_record(cls, encode_record(rec)) == rec


@FAST
@given(record_bytes(TEMPLATES[DeadLetter]))
def test_decode_dead_letter_accepts_or_names_the_field(raw: bytes) -> None:
    with contextlib.suppress(SchemaError):
        decode_dead_letter(raw)


# ---- the Flink job's per-record path --------------------------------------------------------


@FAST
@given(
    st.lists(
        st.tuples(st.sampled_from(["AAPL.XNAS", "X"]), record_bytes(TEMPLATES[L2Event])),
        max_size=12,
    )
)
def test_stream_job_record_path_never_raises_and_counts_reconcile(
    records: list[tuple[str, bytes]],
) -> None:
    trader = Trader(CFG)
    states: dict[str, Any] = {}
    dead = 0
    for offset, (key, raw) in enumerate(records):
        state, result = process_record(
            states.get(key),
            key,
            raw,
            RecordSource("events", 0, offset),
            CFG.features,
            CFG.flink.out_of_orderness_ms,
            trader,
            CFG.quality,
        )
        states[key] = state
        for letter in result.dead_letters:
            assert letter.stage == "features" and letter.offset == offset and letter.reason
        dead += len(result.dead_letters)
    processed = sum(s.events_processed for s in states.values() if s is not None)
    assert len(records) == processed + dead
    for s in states.values():
        if s is not None:
            assert s.events_in == s.events_processed + s.dead_lettered


# ---- the execution sink ---------------------------------------------------------------------


def _record(topic: str, partition: int, offset: int, value: bytes | None) -> KafkaRecord:
    """A record as the sink's one Kafka reading loop hands it over."""
    return KafkaRecord(topic, partition, offset, b"AAPL.XNAS", value, 0)


SINK_INPUTS = st.one_of(
    st.tuples(st.just(CFG.topics.events), record_bytes(TEMPLATES[L2Event])),
    st.tuples(st.just(CFG.topics.orders), record_bytes(TEMPLATES[Order])),
    st.tuples(st.just(CFG.topics.control), record_bytes(TEMPLATES[Control])),
    st.tuples(st.just(CFG.topics.orders), st.none()),
)


@FAST
@given(st.lists(SINK_INPUTS, max_size=12))
def test_execution_sink_inputs_never_raise_and_counts_reconcile(
    inputs: list[tuple[str, bytes | None]],
) -> None:
    engine = ExecutionEngine(CFG.risk, CFG.venue)
    seq = Sequencer(engine, lateness_ns=CFG.flink.out_of_orderness_ms * 1_000_000)
    dead: list[DeadLetter] = []
    heartbeats = 0
    for offset, (topic, value) in enumerate(inputs):
        msg = _record(topic, 0, offset, value)
        if _decode(seq, CFG, msg, dead):
            rec = decode_input(CFG, topic, value)
            heartbeats += isinstance(rec, Order) and rec.action is OrderAction.HEARTBEAT
    seq.drain(final=True)
    set_aside = _take_refused(seq, dead)
    assert all(d.stage == "execution" and d.source.startswith("kafka:") for d in dead)
    assert len(inputs) == seq.fed + seq.late_skipped + heartbeats + len(dead)
    assert set_aside <= len(dead)


def test_execution_sink_refuses_the_reviewed_poison_pills() -> None:
    """Each of these made the sink raise (and every restart after it)."""
    order = json.loads(encode_record(ORDER))
    control = json.loads(encode_record(CONTROL))
    pills = [
        (CFG.topics.orders, {**order, "quantity": "10"}),
        (CFG.topics.orders, {**order, "quantity": math.inf}),
        (CFG.topics.orders, {**order, "quantity": 1e30}),
        (CFG.topics.orders, {**order, "price": math.nan}),
        (CFG.topics.control, {**control, "ts_event": "1"}),
        (CFG.topics.events, {**TEMPLATES[L2Event], "kind": ["add"]}),
        (CFG.topics.events, {**TEMPLATES[L2Event], "side": {"B": 1}}),
        (CFG.topics.events, {**TEMPLATES[L2Event], "price_exp": 10**7}),
    ]
    seq = Sequencer(ExecutionEngine(CFG.risk, CFG.venue))
    dead: list[DeadLetter] = []
    for offset, (topic, d) in enumerate(pills):
        assert not _decode(seq, CFG, _record(topic, 0, offset, json.dumps(d).encode()), dead)
    assert [d.offset for d in dead] == list(range(len(pills)))
    assert all(d.reason_code is Reason.SCHEMA for d in dead)


def test_engine_failure_is_set_aside_with_its_origin() -> None:
    """An input that passes the schema but makes the engine raise is dead-lettered as
    unprocessable with its topic/partition/offset; the inputs after it are still fed."""

    class Fragile(ExecutionEngine):
        def on_control(self, ctrl: Control) -> list:
            if ctrl.reason == "boom":
                raise ZeroDivisionError("boom")
            return super().on_control(ctrl)

    seq = Sequencer(Fragile(CFG.risk, CFG.venue))
    for offset, reason in enumerate(["boom", "fine"]):
        ctrl = Control(ControlCommand.KILL, reason=reason, ts_event=offset + 1)
        assert _decode(seq, CFG, _record(CFG.topics.control, 0, offset, encode_record(ctrl)), [])
    seq.drain(final=True)
    dead: list[DeadLetter] = []
    assert _take_refused(seq, dead) == 1
    assert seq.fed == 1
    (letter,) = dead
    assert (letter.source, letter.offset, letter.reason_code) == (
        f"kafka:{CFG.topics.control}",
        0,
        Reason.UNPROCESSABLE,
    )
    assert "ZeroDivisionError: boom" in letter.reason


# ---- the history sink -----------------------------------------------------------------------

STREAMS = {s.name: s for s in streams(CFG.features.depth_levels)}
_TABLE_TEMPLATES = {
    "events": TEMPLATES[L2Event],
    "orders": TEMPLATES[Order],
    "control": TEMPLATES[Control],
    "executions": TEMPLATES[ExecReport],
    "signals": TEMPLATES[Signal],
    "risk": TEMPLATES[RiskReport],
    "dead_letters": TEMPLATES[DeadLetter],
    "config": TEMPLATES[ConfigRecord],
    "stats": {"instrument": "AAPL.XNAS", "watermark_ms": 60_000, "events_in": 3},
    "quality": {"instrument": "AAPL.XNAS", "minute_start": 60_000_000_000, "events": 3},
    "drift": {
        "instrument": "AAPL.XNAS",
        "model": "book_lr_v1",
        "model_version": "1",
        "feature": "imbalance_1",
        "psi": 0.3,
        "threshold": 0.25,
        "alert": True,
        "rows": 1000,
        "window_from_ns": 1,
        "window_to_ns": 2,
    },
    "features": {"instrument": "AAPL.XNAS", "ts_event": 1, "seq": 2, "spread": 100, "mid": 1.5},
}


@FAST
@given(st.sampled_from(sorted(STREAMS)), st.data())
def test_history_rows_decode_fit_or_are_refused(name: str, data: st.DataObject) -> None:
    stream = STREAMS[name]
    values = data.draw(st.lists(record_bytes(_TABLE_TEMPLATES[name]), max_size=6))
    rows, refused = [], 0
    for raw in values:
        try:
            rows.append(stream.decode(raw))
        except (SchemaError, ValueError, TypeError, KeyError, UnicodeDecodeError):
            refused += 1
    kept, _, _, misfits = fit_rows(stream, rows, [0] * len(rows), list(range(len(rows))))
    rows_to_table(stream, kept, [0] * len(kept), list(range(len(kept))))  # never raises
    assert len(values) == len(kept) + len(misfits) + refused


def test_history_row_that_does_not_fit_its_column_is_refused() -> None:
    stats = STREAMS["stats"]
    good = stats.decode(b'{"instrument":"A","watermark_ms":1,"events_in":1}')
    # decodes (an int64 integer), but its event_time (ms -> ns) cannot be represented
    too_late = stats.decode(b'{"instrument":"A","watermark_ms":9300000000000000,"events_in":1}')
    with pytest.raises(OverflowError):
        rows_to_table(stats, [good, too_late], [0, 0], [0, 1])
    kept, _, offs, misfits = fit_rows(stats, [good, too_late], [0, 0], [0, 1])
    assert kept == [good] and offs == [0] and [m[1] for m in misfits] == [1]
    # and pyarrow's silent truncation of a float into an integer column is refused at decode
    with pytest.raises(SchemaError, match="watermark_ms"):
        stats.decode(b'{"instrument":"A","watermark_ms":1.5}')


# ---- the replay -----------------------------------------------------------------------------


@FAST
@given(st.lists(mutated({**TEMPLATES[L2Event], "_partition": 0, "_offset": 5}), max_size=6))
def test_replay_event_rows_convert_or_are_dead_lettered(rows: list[dict[str, Any]]) -> None:
    events, dead = rows_to_inputs(STREAMS["events"], rows, "bookstream.events.v1", _event_of)
    assert len(rows) == len(events) + len(dead)
    assert all(d.stage == "replay" for d in dead)


@FAST
@given(st.lists(mutated({**TEMPLATES[Control], "_partition": 0, "_offset": 5}), max_size=6))
def test_replay_control_rows_convert_or_are_dead_lettered(rows: list[dict[str, Any]]) -> None:
    values, dead = rows_to_inputs(STREAMS["control"], rows, "c", _control_value)
    assert len(rows) == len(values) + len(dead)


# ---- the source adapters (the publisher's inputs) -------------------------------------------


@FAST
@given(st.text(max_size=60) | st.lists(json_scalars.map(str), min_size=6, max_size=6).map(",".join))
def test_lobster_message_line_parses_or_is_refused(line: str) -> None:
    try:
        ts, mtype, _oid, size, _price, direction = parse_message_line(line)
    except ValueError:
        return
    assert 0 <= ts < 86_400 * 10**9 and 1 <= mtype <= 7 and direction in (1, -1) and size >= 0


@FAST
@given(st.text(max_size=30))
def test_lobster_time_parses_or_is_refused(text: str) -> None:
    with contextlib.suppress(ValueError):
        assert 0 <= parse_lobster_time(text) < 86_400 * 10**9


SAMPLE_MESSAGES = SAMPLE_LOBSTER[0].read_bytes().splitlines()[:200]
SAMPLE_ROWS = SAMPLE_LOBSTER[1].read_bytes().splitlines()[:200]


@settings(FAST, max_examples=20)
@given(
    st.sampled_from(["message", "orderbook"]),
    st.integers(min_value=0, max_value=len(SAMPLE_MESSAGES) - 1),
    st.binary(max_size=40) | st.text(max_size=40).map(str.encode),
)
def test_lobster_file_with_any_bad_line_flushes_and_names_it(
    tmp_path_factory: Any, which: str, index: int, junk: bytes
) -> None:
    """One line of a real LOBSTER pair replaced by anything: the publisher's source never
    raises; either the line happens to be valid or the stream stops exactly there with the
    file and row named, and the events before it are the ones of the intact file."""
    folder = Path(tmp_path_factory.mktemp("lob"))
    messages, rows = list(SAMPLE_MESSAGES), list(SAMPLE_ROWS)
    target = messages if which == "message" else rows
    target[index] = junk.replace(b"\n", b" ").replace(b"\r", b" ")
    msg, ob = folder / SAMPLE_LOBSTER[0].name, folder / SAMPLE_LOBSTER[1].name
    msg.write_bytes(b"\n".join(messages) + b"\n")
    ob.write_bytes(b"\n".join(rows) + b"\n")
    src = Source(lobster=[(msg, ob)])
    events = list(src.events())
    assert len(src.bad_lines) <= 1
    if src.bad_lines:
        (bad,) = src.bad_lines
        assert bad.file == str(msg if which == "message" else ob) or "misaligned" in bad.reason
        assert src.problems()["stopped_early"]
        assert all(ev.seq < bad.line for ev in events)


BINANCE_LINES = st.one_of(
    st.binary(max_size=60),
    st.builds(
        lambda recv, payload: f"{recv} ".encode() + json.dumps(payload).encode(),
        st.integers(min_value=0, max_value=2**64),
        st.one_of(
            json_values,
            st.builds(
                lambda d: {"stream": "btcusdt@trade", "data": d},
                mutated(
                    {
                        "e": "trade",
                        "E": 1,
                        "T": 1,
                        "s": "BTCUSDT",
                        "t": 5,
                        "p": "1.5",
                        "q": "2",
                        "m": True,
                    }
                ),
            ),
            st.builds(
                lambda d: {"stream": "btcusdt@depth", "data": d},
                mutated(
                    {
                        "e": "depthUpdate",
                        "E": 1,
                        "T": 1,
                        "s": "BTCUSDT",
                        "U": 1,
                        "u": 2,
                        "pu": 0,
                        "b": [["1.0", "2"]],
                        "a": [["2.0", "1"]],
                    }
                ),
            ),
            mutated({"lastUpdateId": 1, "E": 1, "T": 1, "bids": [["1.0", "2"]], "asks": []}),
        ),
    ),
)


@FAST
@given(st.lists(BINANCE_LINES, max_size=8))
def test_binance_capture_lines_never_raise(tmp_path_factory: Any, lines: list[bytes]) -> None:
    path = Path(tmp_path_factory.mktemp("cap")) / "cap.txt"
    path.write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n")
    adapter = BinanceAdapter([path], market="usdm", symbol="BTCUSDT")
    bad: list[int] = []
    adapter.on_bad_line = lambda _f, n, _raw, _why: bad.append(n)
    events = list(adapter)
    assert len(bad) == adapter.stats.bad_lines
    for ev in events:
        _bounded_event(ev)


@pytest.mark.parametrize("field", ["price_exp", "size_exp"])
@pytest.mark.parametrize("exp", [19, -19, 308, -308, 10**7])
def test_huge_exponents_are_refused_at_decode(field: str, exp: int) -> None:
    """An exponent of magnitude >= 308 raised OverflowError past the handlers, and 10**7 cost
    40 s of CPU for one record: refused at decode now, before anything scales by it."""
    with pytest.raises(SchemaError, match=field):
        decode_event(as_bytes({**TEMPLATES[L2Event], field: exp}))


@pytest.mark.parametrize(
    ("field", "value"), [("kind", ["add"]), ("side", {"B": 1}), ("kind", 1), ("side", None)]
)
def test_enum_given_as_list_or_object_is_a_schema_error(field: str, value: Any) -> None:
    """A list or an object as ``kind``/``side`` raised TypeError past the SchemaError
    handlers (unhashable in the enum lookup)."""
    with pytest.raises(SchemaError, match=field):
        decode_event(as_bytes({**TEMPLATES[L2Event], field: value}))


def test_dead_letter_of_a_huge_record_stays_small() -> None:
    """A refused record near Kafka's size limit would make a dead letter beyond it, which then
    fails to publish and stops the stage: raw and reason are cut, and say so."""
    huge = "x" * 2_000_000
    _state, result = process_record(
        None,
        "AAPL.XNAS",
        as_bytes({**TEMPLATES[L2Event], "venue": huge}),
        RecordSource("events", 0, 7),
        CFG.features,
        CFG.flink.out_of_orderness_ms,
    )
    (letter,) = result.dead_letters
    assert len(letter.to_json()) < 110_000
    assert letter.raw.endswith("characters, cut]") and letter.reason.startswith("venue")
    assert decode_dead_letter(letter.to_json()).offset == 7
