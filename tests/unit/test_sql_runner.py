"""Tests of jobs/sql.py and the sql/ library on a small hand-made lake (pyiceberg + chDB, no
Kafka): the shipped MergeTree DDL equals the DDL generated from udfs/history.py, the query text
rules, hand-computed OHLCV bars and quality totals (exact open/close by time then offset,
re-stored trades counted once, the last quality row of a minute winning), the clear error of a
table that is not in the lake, time travel by snapshot id and by commit time, and the
clickhouse-connect load path (incremental) answered by chDB's MergeTree."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from jobs.lake import ensure_table, history_streams, open_catalog
from jobs.sql import (
    DDL_DIR,
    SQL_DIR,
    ChdbClient,
    SqlError,
    SqlSession,
    ddl_statements,
    list_queries,
    load_into_clickhouse,
    query_rows,
    read_query,
    run_sql,
    sql_command,
)
from udfs.config import Config, load_config
from udfs.history import rows_to_table

INST = "TEST.XTST"
M0 = 1_700_000_040_000_000_000  # a minute boundary (ns)
M1 = M0 + 60_000_000_000
PE, SE = -2, -3  # ticks of 0.01, lots of 0.001


def _event(
    kind: str, ts: int, price: int, size: int, seq: int, side: str = "A", order_id: int = 0
) -> dict:
    return {
        "instrument": INST,
        "venue": "XTST",
        "kind": kind,
        "side": side,
        "price": price,
        "size": size,
        "ts_event": ts,
        "ts_recv": ts + 7,
        "price_exp": PE,
        "size_exp": SE,
        "order_id": order_id,
        "seq": seq,
        "seq_first": seq,
        "seq_prev": 0,
        "ts_proc": 0,
        "flags": 1,
        "v": 1,
    }


# (row, kafka offset); stored out of time order on purpose
EVENTS_1 = [
    (_event("execute", M0 + 5_000, 10_000, 5, seq=1), 0),
    (_event("add", M0 + 6_000, 20_000, 9, seq=2, side="B"), 1),  # not a trade
    (_event("trade", M0 + 9_000, 10_050, 3, seq=0, order_id=77), 2),
    (_event("hidden_trade", M0 + 9_000, 9_990, 2, seq=4), 3),  # same ns: later offset closes
    (_event("trade", M0 + 1_000, 10_010, 1, seq=0, order_id=76), 4),  # earliest: the open
]
EVENTS_2 = [
    (_event("trade", M0 + 9_000, 10_050, 3, seq=0, order_id=77), 5),  # stored again: once
    (_event("cross_trade", M1 + 2_000, 10_100, 10, seq=5), 6),
    (_event("execute", M1 + 1_000, 10_080, 4, seq=6), 7),
]


def _quality(minute: int, events: int, gaps: int, locked: int, gap_ms: float) -> dict:
    return {
        "instrument": INST,
        "minute_start": minute,
        "events": events,
        "sequence_gaps": gaps,
        "resyncs": 0,
        "crossed": 0,
        "locked": locked,
        "stale_gaps": 0,
        "max_gap_ms": gap_ms,
        "out_of_order": 1,
        "late": 0,
        "duplicates": 0,
        "v": 1,
    }


QUALITY = [
    (_quality(M0, 10, 1, 0, 12.0), 0),
    (_quality(M1, 5, 0, 1, 30.0), 1),
    (_quality(M0, 12, 2, 0, 15.0), 2),  # M0 emitted again, complete: this row wins
]


def _append(cfg: Config, name: str, rows: list[tuple[dict, int]]) -> None:
    stream = next(s for s in history_streams(cfg) if s.name == name)
    table = ensure_table(open_catalog(cfg), cfg, stream)
    table.append(rows_to_table(stream, [r for r, _ in rows], [0] * len(rows), [o for _, o in rows]))


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("sqllake")
    cfg = load_config(
        env={
            "BOOKSTREAM_LAKE_ROOT": str(root / "lake"),
            "BOOKSTREAM_STATE_DIR": str(root / "state"),
        }
    )
    catalog = open_catalog(cfg)
    for stream in history_streams(cfg):
        if stream.name != "control":  # control stays missing
            ensure_table(catalog, cfg, stream)
    _append(cfg, "events", EVENTS_1)
    t_between = int(time.time() * 1000)
    time.sleep(0.05)
    _append(cfg, "events", EVENTS_2)
    _append(cfg, "quality", QUALITY)
    return {"cfg": cfg, "between_ms": t_between}


# ------------------------------------------------------------------------------ DDL and text


def test_shipped_ddl_equals_generated():
    generated = ddl_statements()
    shipped = {p.stem: p.read_text() for p in DDL_DIR.glob("*.sql")}
    assert sorted(shipped) == sorted(generated), "run `bookstream sql --write-ddl`"
    for name, text in generated.items():
        assert shipped[name] == text, (
            f"sql/clickhouse/{name}.sql drifted from udfs/history.py:"
            " run `bookstream sql --write-ddl`"
        )


def test_ddl_types_follow_history_schema():
    ddl = ddl_statements(depth_levels=3)
    assert "`imbalance_3` Nullable(Float64)" in " ".join(ddl["features"].split())
    assert "imbalance_4" not in ddl["features"]
    events = " ".join(ddl["events"].split())
    assert "`instrument` LowCardinality(String)" in events
    assert "`price` Nullable(Int64)" in events
    assert "`event_time` DateTime64(6, 'UTC')" in events
    assert "`_partition` Int32" in events
    assert "ORDER BY (instrument, event_time, _partition, _offset)" in events
    assert "PARTITION BY toDate(event_time)" in events
    assert "ORDER BY (event_time, _partition, _offset)" in ddl["risk"]  # no instrument column


def test_read_query_rules(tmp_path: Path):
    name, sql = read_query("ohlcv_1m")
    assert name == "ohlcv_1m" and sql == read_query("ohlcv_1m.sql")[1]
    assert read_query(str(SQL_DIR / "tca.sql"))[0] == "tca"
    assert read_query("SELECT 1;\n-- done\n") == ("query", "SELECT 1")
    assert read_query("SELECT ';' AS a -- ; here\n")[1].startswith("SELECT ';'")
    with pytest.raises(SqlError, match="2 statements"):
        read_query("SELECT 1; SELECT 2")
    f = tmp_path / "two.sql"
    f.write_text("-- x\nSELECT 1;\n/* ; */ SELECT 2;\n")
    with pytest.raises(SqlError, match="one query per file"):
        read_query(str(f))
    with pytest.raises(SqlError, match="no such SQL file"):
        read_query("nope_not_there.sql")
    with pytest.raises(SqlError, match="no query"):
        read_query("-- only a comment")


def test_every_library_file_is_documented():
    entries = dict(list_queries())
    files = sorted(p.name for p in SQL_DIR.glob("*.sql"))
    assert sorted(entries) == files and len(files) >= 7
    for f in files:
        assert entries[f], f"{f}: no first comment line"
        text = (SQL_DIR / f).read_text()
        assert "-- Columns:" in text, f"{f}: the header names no columns"
        read_query(f)  # one statement


# ---------------------------------------------------------------------------- queries


def _bar(rows: list[dict], minute_ns: int) -> dict:
    return next(r for r in rows if int(r["minute"].timestamp()) * 10**9 == minute_ns)


@pytest.mark.parametrize("engine", ["lake", "mergetree"])
def test_ohlcv_hand_computed(lake, engine):
    rows = query_rows(lake["cfg"], "ohlcv_1m", engine=engine)
    assert len(rows) == 2 and {r["instrument"] for r in rows} == {INST}
    b0 = _bar(rows, M0)
    # minute 0 trades by time: 10010x1 (t+1us), 10000x5 (t+5us), 10050x3 and 9990x2 (t+9us,
    # offsets 2 then 3: 9990 closes); the re-stored 10050x3 (offset 5) counts once
    assert (b0["open_ticks"], b0["high_ticks"], b0["low_ticks"], b0["close_ticks"]) == (
        10_010,
        10_050,
        9_990,
        9_990,
    )
    assert (b0["open"], b0["high"], b0["low"], b0["close"]) == (100.10, 100.50, 99.90, 99.90)
    assert b0["volume_lots"] == 11 and b0["volume"] == pytest.approx(0.011)
    assert b0["trades"] == 4
    ticks_x_lots = 10_010 * 1 + 10_000 * 5 + 10_050 * 3 + 9_990 * 2
    assert b0["vwap"] == pytest.approx(ticks_x_lots / 11 / 100, rel=1e-12)
    assert b0["notional"] == pytest.approx(ticks_x_lots / 100 / 1000, rel=1e-12)
    b1 = _bar(rows, M1)
    assert (b1["open_ticks"], b1["close_ticks"], b1["volume_lots"], b1["trades"]) == (
        10_080,
        10_100,
        14,
        2,
    )
    assert (b1["price_exp"], b1["size_exp"]) == (PE, SE)


@pytest.mark.parametrize("engine", ["lake", "mergetree"])
def test_quality_report_last_row_wins(lake, engine):
    rows = query_rows(lake["cfg"], "data_quality_report", engine=engine)
    assert [r["row_kind"] for r in rows] == ["minute", "minute", "total"]
    m0, m1, total = rows
    assert int(m0["minute"].timestamp()) * 10**9 == M0 and total["minute"] is None
    assert (m0["events"], m0["sequence_gaps"], m0["max_gap_ms"]) == (12, 2, 15.0)
    assert (m1["events"], m1["locked"], m1["issues"]) == (5, 1, 2)
    assert (
        total["minutes"],
        total["events"],
        total["sequence_gaps"],
        total["locked"],
        total["out_of_order"],
        total["max_gap_ms"],
    ) == (2, 17, 2, 1, 2, 30.0)
    assert total["issues"] == 5
    assert total["issues_per_1k_events"] == pytest.approx(5 / 17 * 1000)


def test_every_library_file_runs_on_a_sparse_lake(lake):
    """Tables that exist but hold nothing (signals, orders, ...) give empty results, no error."""
    for f, _about in list_queries():
        query_rows(lake["cfg"], f)


def test_missing_table_is_a_clear_error(lake):
    with pytest.raises(SqlError, match=r"bookstream\.control: no such table in the lake"):
        run_sql(lake["cfg"], "SELECT count() FROM bookstream.control")
    with pytest.raises(SqlError, match=r"bookstream\.control: no such table in the lake"):
        run_sql(lake["cfg"], "SELECT command FROM bookstream.control", engine="mergetree")


def test_formats_and_cli(lake, capsys):
    cfg = lake["cfg"]
    q = "SELECT kind, count() AS n FROM bookstream.events GROUP BY kind ORDER BY kind"
    assert run_sql(cfg, q, "csv").splitlines()[:2] == ['"kind","n"', '"add",1']
    table = run_sql(cfg, q, "table")
    assert "kind" in table.splitlines()[0] and "cross_trade" in table
    doc = json.loads(run_sql(cfg, q, "json"))
    assert doc["columns"] == ["kind", "n"] and doc["row_count"] == 5
    assert doc["rows"][0] == {"kind": "add", "n": 1}
    assert run_sql(cfg, "SELECT 1 WHERE 0", "table") == "(0 rows)\n"
    with pytest.raises(SqlError, match="Syntax error"):
        sql_command(cfg, "SELECT 1 +")
    assert sql_command(cfg, None, list_files=True) == 0
    assert "ohlcv_1m.sql" in capsys.readouterr().out


def test_time_travel(lake):
    """What sql/README.md promises: snapshots in system.iceberg_history, reads as of a snapshot
    id or of a commit time."""
    cfg = lake["cfg"]
    with SqlSession(cfg) as s:
        snaps = (
            s.arrow(
                "SELECT snapshot_id FROM system.iceberg_history WHERE table = 'events' "
                "ORDER BY made_current_at"
            )
            .column("snapshot_id")
            .to_pylist()
        )
        assert len(snaps) == 2
        count = "SELECT count() AS n FROM bookstream.events"
        assert s.arrow(count).column("n")[0].as_py() == len(EVENTS_1) + len(EVENTS_2)
        first = s.arrow(f"{count} SETTINGS iceberg_snapshot_id = {snaps[0]}")
        assert first.column("n")[0].as_py() == len(EVENTS_1)
        as_of = s.arrow(f"{count} SETTINGS iceberg_timestamp_ms = {lake['between_ms']}")
        assert as_of.column("n")[0].as_py() == len(EVENTS_1)
    # the same through the analysts' path: checked, its SETTINGS applied before the seal
    for setting in (
        f"iceberg_snapshot_id = {snaps[0]}",
        f"iceberg_timestamp_ms = {lake['between_ms']}",
    ):
        assert query_rows(cfg, f"{count} SETTINGS {setting}") == [{"n": len(EVENTS_1)}]
    history = "SELECT count() AS n FROM system.iceberg_history WHERE table = 'events'"
    assert query_rows(cfg, history) == [{"n": 2}]


def test_load_into_clickhouse_incremental(lake):
    """The clickhouse-connect path, with chDB answering the client's three calls."""
    cfg = lake["cfg"]
    with SqlSession(cfg) as s:
        client = ChdbClient(s)
        first = load_into_clickhouse(cfg, client, database="server")
        assert first["events"] == len(EVENTS_1) + len(EVENTS_2)
        assert first["quality"] == len(QUALITY) and first["control"] == 0
        again = load_into_clickhouse(cfg, client, database="server")
        assert set(again.values()) == {0}
        cols = "instrument, kind, price, size, ts_event, event_time, _partition, _offset"
        lake_rows = s.arrow(f"SELECT {cols} FROM bookstream.events ORDER BY _offset").to_pylist()
        server_rows = s.arrow(f"SELECT {cols} FROM server.events ORDER BY _offset").to_pylist()
        assert server_rows == lake_rows
        _append(cfg, "events", [(_event("trade", M1 + 9_000, 10_090, 1, 0, order_id=99), 8)])
        assert load_into_clickhouse(cfg, client, database="server", tables=["events"]) == {
            "events": 1
        }
        n = s.arrow("SELECT count() AS n FROM server.events").column("n")[0].as_py()
        assert n == len(EVENTS_1) + len(EVENTS_2) + 1
