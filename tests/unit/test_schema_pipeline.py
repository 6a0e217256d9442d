"""The schema's validation and the per-record pipeline, on the real LOBSTER sample."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from udfs.config import (
    ConfigError,
    FeatureConfig,
    effective_settings,
    load_config,
    load_config_with_origins,
    topics_env,
)
from udfs.market.adapters.lobster import iter_lobster_events
from udfs.market.adapters.sources import SAMPLE_LOBSTER
from udfs.pipeline import RecordSource, process_record
from udfs.schema import (
    F_LAST,
    Kind,
    L2Event,
    Reason,
    SchemaError,
    Side,
    decode_event,
    encode_event,
)

SRC = RecordSource("events", 0, 0)
BOUND_MS = 2000


@pytest.fixture(scope="module")
def sample_events() -> list[L2Event]:
    return list(iter_lobster_events(*SAMPLE_LOBSTER))


def _good() -> L2Event:
    return L2Event(
        "AAPL.XNAS",
        "XNAS",
        Kind.ADD,
        Side.BID,
        5853300,
        18,
        10,
        10,
        price_exp=-4,
        seq=2,
        seq_prev=1,
    )


def test_round_trip_is_exact_and_versioned(sample_events):
    for ev in sample_events:
        raw = encode_event(ev)
        assert json.loads(raw)["v"] == 1
        assert decode_event(raw) == ev


@pytest.mark.parametrize(
    ("mutate", "field", "reason"),
    [
        (lambda d: d.update(v=99), "v", "unknown schema version 99"),
        (lambda d: d.update(size=-5), "size", "negative size -5"),
        (lambda d: d.update(price=float("nan")), "price", "NaN"),
        (lambda d: d.update(price=1.5), "price", "float"),
        (lambda d: d.update(side="X"), "side", "unknown side"),
        (lambda d: d.update(kind="teleport"), "kind", "unknown kind"),
        (lambda d: d.pop("ts_event"), "ts_event", "missing"),
        (lambda d: d.update(price=0), "price", "positive price"),
        (lambda d: d.update(instrument=""), "instrument", "empty"),
        (lambda d: d.update(extra=1), "extra", "unknown field"),
        (lambda d: d.update(size=True), "size", "expected integer"),
    ],
)
def test_validation_names_field_and_reason(mutate, field, reason):
    d = json.loads(encode_event(_good()))
    mutate(d)
    with pytest.raises(SchemaError) as err:
        decode_event(json.dumps(d))
    assert err.value.field == field
    assert reason in err.value.reason


def test_malformed_json_is_a_record_error():
    with pytest.raises(SchemaError) as err:
        decode_event(b'{"v":1,')
    assert err.value.field == "record"


def _run(records: list[tuple[str, str]]):
    state, features, dead = None, [], []
    for key, raw in records:
        state, res = process_record(state, key, raw, SRC, FeatureConfig(), BOUND_MS)
        features += res.features
        dead += res.dead_letters
    return state, features, dead


def test_sample_through_pipeline_matches_orderbook_and_reconciles(sample_events):
    records = [(e.instrument, encode_event(e).decode()) for e in sample_events]
    state, features, dead = _run(records)
    assert dead == []
    assert state.events_in == len(records) == state.events_processed
    # the last feature row is the book after the last message: orderbook's last row
    last_row = SAMPLE_LOBSTER[1].read_text().strip().splitlines()[-1].split(",")
    assert features[-1]["best_ask"] == int(last_row[0])
    assert features[-1]["best_bid"] == int(last_row[2])
    assert features[-1]["ask_size"] == int(last_row[1])
    assert features[-1]["bid_size"] == int(last_row[3])


def test_bad_records_are_dead_lettered_with_reasons_and_counts_reconcile(sample_events):
    events = sample_events[:300]
    last = events[-1]
    key = last.instrument
    best_ask = min(e.price for e in events if e.side is Side.ASK and e.kind is Kind.SNAPSHOT)
    records = [(e.instrument, encode_event(e).decode()) for e in events]
    good = encode_event(replace(last, seq=last.seq + 1, seq_prev=last.seq, flags=F_LAST))
    bad = [
        (Reason.MALFORMED, b"{oops"),
        (Reason.UNKNOWN_VERSION, good.replace(b'"v":1', b'"v":7')),
        (Reason.SCHEMA, good.replace(b'"size":', b'"size":-').replace(b'"size":--', b'"size":-')),
        (Reason.SCHEMA, good.replace(f'"price":{last.price}'.encode(), b'"price":NaN')),
        (
            Reason.CROSSED_BOOK,
            encode_event(
                replace(
                    last,
                    kind=Kind.LEVEL,
                    side=Side.BID,
                    price=best_ask + 10_000,
                    size=100,
                    seq=last.seq + 1,
                    seq_prev=last.seq,
                    flags=F_LAST,
                )
            ),
        ),
        (
            Reason.SEQUENCE_GAP,
            encode_event(replace(last, seq=last.seq + 50, seq_prev=last.seq + 49, flags=F_LAST)),
        ),
        (
            Reason.LATE,
            encode_event(
                replace(
                    last,
                    ts_event=last.ts_event - 10_000_000_000,
                    seq=last.seq + 1,
                    seq_prev=last.seq,
                    flags=F_LAST,
                )
            ),
        ),
        (Reason.KEY_MISMATCH, encode_event(replace(last, instrument="MSFT.XNAS"))),
    ]
    state, _, dead = _run(records + [(key, raw.decode()) for _, raw in bad])
    assert [d.reason_code for d in dead] == [code for code, _ in bad]
    assert all(d.key == key and d.source == "kafka:events" for d in dead)
    assert "size" in dead[2].reason and "price" in dead[3].reason
    assert state.events_in == len(records) + len(bad)
    assert state.events_in == state.events_processed + state.dead_lettered
    assert state.dead_lettered == len(bad)
    # the book went on: the next real event still applies after all that
    bid = state.book.best_bid()
    nxt = encode_event(
        replace(
            last,
            kind=Kind.ADD,
            side=Side.BID,
            price=bid,
            size=1,
            seq=last.seq + 1,
            seq_prev=last.seq,
            flags=F_LAST,
        )
    )
    state, res = process_record(state, key, nxt.decode(), SRC, FeatureConfig(), BOUND_MS)
    assert res.dead_letters == [] and len(res.features) == 1
    assert state.book.bids.get(bid) == res.features[0]["bid_size"]


def test_config_layers_and_rejects_unknown(tmp_path):
    toml = tmp_path / "bookstream.toml"
    toml.write_text("[kafka]\nport = 29092\n[flink]\nout_of_orderness_ms = 500\n")
    cfg = load_config(toml, env={"BOOKSTREAM_FLINK_OUT_OF_ORDERNESS_MS": "750"})
    assert cfg.kafka.bootstrap_servers == "127.0.0.1:29092"
    assert cfg.flink.out_of_orderness_ms == 750
    toml.write_text("[kafka]\nprot = 1\n")
    with pytest.raises(ConfigError, match="prot"):
        load_config(toml, env={})
    with pytest.raises(ConfigError, match="bogus"):
        load_config(env={"BOOKSTREAM_KAFKA_BOGUS": "1"})


def test_a_run_replaces_every_topic_and_hands_them_on_whole():
    default = load_config(env={}).topics
    run = default.for_run("run.x")
    # what a child process of the run loads is the run's topic set, every topic of it
    own = load_config(env=topics_env(run)).topics
    assert own == run
    assert len(own.names()) == len(default.specs())  # every topic the job reads or writes
    for field_name, name in own.names().items():
        assert name == f"run.x.{field_name}" != default.names()[field_name]
    assert {s.name for s in own.specs()} == set(own.names().values())


@pytest.mark.parametrize(
    ("env", "key", "allowed"),
    [
        ({"BOOKSTREAM_STRATEGY_EXECUTION": "twapp"}, "strategy.execution", "direct, twap, pov"),
        ({"BOOKSTREAM_FLINK_EXECUTION_MODE": "threads"}, "flink.execution_mode", "auto, thread"),
        ({"BOOKSTREAM_LAKE_CATALOG": "hive"}, "lake.catalog", "sql, postgres, rest"),
        ({"BOOKSTREAM_KAFKA_PORT": "70000"}, "kafka.port", "[1, 65535]"),
        ({"BOOKSTREAM_STRATEGY_MODEL_SHARE": "1.5"}, "strategy.model_share", "[0, 1]"),
        ({"BOOKSTREAM_TOPICS_PARTITIONS": "0"}, "topics.partitions", "[1, 10000]"),
        ({"BOOKSTREAM_METRICS_ENABLED": "maybe"}, "metrics.enabled", "true or false"),
    ],
)
def test_a_bad_env_value_is_refused_with_key_value_and_allowed(env, key, allowed):
    value = next(iter(env.values()))
    with pytest.raises(ConfigError) as exc:
        load_config(env=env)
    msg = str(exc.value)
    assert key in msg and value in msg and allowed in msg and next(iter(env)) in msg, msg


def test_a_bad_file_value_is_refused_and_origins_are_reported(tmp_path):
    toml = tmp_path / "bookstream.toml"
    toml.write_text('[flink]\nexecution_mode = "proces"\n')
    with pytest.raises(ConfigError, match=r"flink\.execution_mode .*proces.*auto, thread, process"):
        load_config(toml, env={})
    toml.write_text('[lake]\ncatalog = "postgres"\n')
    cfg, origins = load_config_with_origins(toml, env={"BOOKSTREAM_KAFKA_PORT": "29092"})
    assert cfg.lake.catalog == "postgres" and cfg.kafka.port == 29092
    assert origins["lake.catalog"] == f"file {toml}"
    assert origins["kafka.port"] == "env BOOKSTREAM_KAFKA_PORT"
    assert origins["kafka.host"] == "default"
    assert set(origins) == set(effective_settings(cfg))


def test_a_misspelt_section_in_the_environment_is_refused():
    with pytest.raises(ConfigError, match="BOOKSTREAM_KAFAK_PORT"):
        load_config(env={"BOOKSTREAM_KAFAK_PORT": "1"})


def test_every_json_row_table_follows_its_dataclass():
    """The feature, stats and quality rows are declared once (a dataclass); their history
    columns and the job's encoding follow from it, so adding a field is one edit."""
    import dataclasses

    from udfs.history import streams
    from udfs.market.features import FeatureRow, feature_keys
    from udfs.schema import QualityRow, StatsRow, decode_row, encode_row

    by_name = {s.name: s for s in streams(3)}
    assert by_name["features"].columns == feature_keys(3)
    assert "v" in feature_keys(3) and {f.name for f in dataclasses.fields(FeatureRow)} - {
        "imbalance"
    } <= set(feature_keys(3))
    for table, cls in (("stats", StatsRow), ("quality", QualityRow)):
        assert by_name[table].columns == tuple(f.name for f in dataclasses.fields(cls)), table
    stats = StatsRow(instrument="X", watermark_ms=60_000, events_in=3, ts_proc=5)
    assert decode_row(StatsRow, encode_row(stats)) == stats
    assert json.loads(encode_row(StatsRow(instrument="X", unkeyed_dead=1))) == {
        "instrument": "X",
        "unkeyed_dead": 1,
        "v": 1,
    }
    row = by_name["stats"].decode(encode_row(stats).encode())
    assert row["events_in"] == 3 and row["v"] == 1 and row["book_levels"] is None
    quality = QualityRow(
        instrument="X",
        minute_start=0,
        events=1,
        sequence_gaps=0,
        resyncs=0,
        crossed=0,
        locked=0,
        stale_gaps=0,
        max_gap_ms=0.5,
        out_of_order=0,
        late=0,
        duplicates=0,
    )
    assert by_name["quality"].decode(encode_row(quality).encode()) == dataclasses.asdict(quality)
    with pytest.raises(SchemaError, match="missing"):
        by_name["quality"].decode(b'{"instrument":"X"}')


def test_a_switch_reads_true_and_false_from_the_file_and_the_environment(tmp_path):
    toml = tmp_path / "bookstream.toml"
    toml.write_text("[metrics]\nenabled = false\n")
    assert load_config(toml, env={}).metrics.enabled is False
    assert load_config(toml, env={"BOOKSTREAM_METRICS_ENABLED": "yes"}).metrics.enabled is True
    toml.write_text("[metrics]\nenabled = 1\n")  # a number is no switch in a file
    with pytest.raises(ConfigError, match=r"metrics\.enabled"):
        load_config(toml, env={})
    toml.write_text("[kafka]\nport = true\n")  # nor a switch a number
    with pytest.raises(ConfigError, match=r"kafka\.port"):
        load_config(toml, env={})


def test_a_reused_result_starts_every_record_empty() -> None:
    """The batch loop hands ``process_record`` one result per batch: ``reset`` must empty every
    list field (a new field the reset forgets would be written again after every record), and
    replace a list rather than clear it (the previous record's caller may still hold it)."""
    from dataclasses import fields

    from udfs.pipeline import ProcessResult

    result = ProcessResult()
    lists = [f.name for f in fields(ProcessResult) if isinstance(getattr(result, f.name), list)]
    assert {"features", "dead_letters", "signals", "orders", "quality", "drift"} <= set(lists)
    held = {}
    for name in lists:
        getattr(result, name).append(name)
        held[name] = getattr(result, name)
    result.feature_ns = 7
    result.reset()
    assert all(getattr(result, name) == [] for name in lists)
    assert all(held[name] == [name] for name in lists)  # what a caller held is untouched
    assert result.feature_ns == 0


def test_compact_json_is_the_stdlibs_text() -> None:
    """``compact_json`` takes msgspec for flat dicts it writes identically and the stdlib for
    the rest: the text is ``json.dumps(..., separators=(",", ":"))``'s on each side of every
    edge (float notation, escaping, enums, nesting, keys) and on random values."""
    import random
    import struct

    from udfs.schema import Reason, Side, compact_json

    def stdlib(value: object) -> str:
        return json.dumps(value, separators=(",", ":"))

    below = struct.unpack("d", struct.pack("Q", struct.unpack("Q", struct.pack("d", 1e-4))[0] - 1))
    floats = [0.0, -0.0, 1e-4, -1e-4, below[0], 1e-5, 5e-324, 1e15, 9999999999999998.0, 1e16]
    floats += [-1e16, 1.7976931348623157e308, float("nan"), float("inf"), -float("inf"), 0.1]
    strings = [chr(c) for c in range(128)] + ["é", "\u2028", "\ud800", 'a"b\\c', ""]
    values: list[object] = [*floats, *strings, 2**64, -(2**63) - 1, True, False, None]
    values += [Reason.CROSSED_BOOK, Side.BID, [1, 2.5], {"k": 1e-7}, (1,)]
    for value in values:
        assert compact_json({"v": value, "n": 1}) == stdlib({"v": value, "n": 1}), repr(value)
    for key in ["é", "\x7f", "a b", 1, 2.5, None, True]:
        assert compact_json({key: 1}) == stdlib({key: 1}), repr(key)
    rnd = random.Random(11)
    for _ in range(20_000):
        x = struct.unpack("d", struct.pack("Q", rnd.getrandbits(64)))[0]
        y = rnd.choice((1, -1)) * 10 ** rnd.uniform(-5, 17)
        text = "".join(chr(rnd.randint(0, 130)) for _ in range(rnd.randint(0, 12)))
        row = {"x": x, "y": y, "s": text, "i": rnd.getrandbits(70) - 2**69}
        assert compact_json(row) == stdlib(row), row
