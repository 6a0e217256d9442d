"""The analysts' SQL library (sql/*.sql) on a real live run's history (the ``demo_history``
fixture: publish -> Flink job -> execution sink -> history sink, in a lake of its own).

Every file of sql/ runs (the list is the directory, so a new file is covered), on the Iceberg
tables read in place and on MergeTree copies made by the shipped sql/clickhouse DDL, with the
same result. Each library query's numbers are then recomputed independently, in Python, from
the tables as pyiceberg reads them (and cross-checked against the demo's own summary, which the
pipeline measured on the Kafka topics): bars from the raw trade events, spread statistics from
the feature rows with numpy's percentiles, funnel counts from the signals/orders/executions
rows, TCA from the fills joined to their triggering feature row, latencies with
numpy.quantile(method="linear"), dead-letter groups and quality rows. ``bookstream sql`` is run
as a command in its three formats."""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
import subprocess
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
from it_helpers import BOOKSTREAM, run_cli

from jobs.kafka_io import drain_topic, make_producer
from jobs.lake import open_catalog
from jobs.sql import (
    DDL_DIR,
    SQL_DIR,
    ChdbClient,
    SqlSession,
    load_into_clickhouse,
    query_rows,
    read_query,
)
from udfs.config import PROJECT_ROOT
from udfs.market.adapters.sources import SAMPLE_BINANCE
from udfs.schema import TRADE_KINDS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

LIBRARY = sorted(p.stem for p in SQL_DIR.glob("*.sql"))
TABLES = ("events", "features", "dead_letters", "signals", "orders", "executions", "quality")
MINUTE_NS, HOUR_NS = 60_000_000_000, 3_600_000_000_000


def _run_all(cfg, engine: str, ddl: dict[str, str] | None = None) -> tuple[dict, dict]:
    with SqlSession(cfg, engine, ddl=ddl) as s:
        return {name: s.arrow(read_query(name)[1]).to_pylist() for name in LIBRARY}, s.copied


@pytest.fixture(scope="module")
def lake(demo_history) -> dict[str, pd.DataFrame]:
    """The history tables as pyiceberg reads them (independent of chDB)."""
    cfg = demo_history.cfg
    catalog = open_catalog(cfg)
    return {
        name: catalog.load_table(f"{cfg.lake.namespace}.{name}").scan().to_arrow().to_pandas()
        for name in TABLES
    }


@pytest.fixture(scope="module")
def results(demo_history) -> dict[str, list[dict]]:
    return _run_all(demo_history.cfg, "lake")[0]


@pytest.fixture(scope="module")
def mergetree(demo_history) -> tuple[dict, dict]:
    shipped = {p.stem: p.read_text() for p in DDL_DIR.glob("*.sql")}
    return _run_all(demo_history.cfg, "mergetree", ddl=shipped)


def _close(a, b, rel: float = 1e-9) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)
    return a == b


def _assert_rows_equal(got: list[dict], want: list[dict], what: str) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} rows, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert list(g) == list(w), f"{what} row {i}: columns {list(g)} != {list(w)}"
        bad = {k: (g[k], w[k]) for k in g if not _close(g[k], w[k])}
        assert not bad, f"{what} row {i} ({g.get('instrument')}): {bad}"


# --------------------------------------------------------------------------- every file


@pytest.mark.parametrize("name", LIBRARY)
def test_library_file_same_on_iceberg_and_mergetree(name, results, mergetree):
    """Runs as shipped on both engines, with the same result."""
    _assert_rows_equal(mergetree[0][name], results[name], f"{name} (MergeTree vs Iceberg)")


def test_mergetree_copies_hold_every_row(mergetree, lake):
    copied = mergetree[1]
    for name in TABLES:
        assert copied[name] == len(lake[name]), name


def test_load_into_clickhouse_path(demo_history, lake):
    """The clickhouse-connect route (answered by chDB): every row, then nothing more."""
    cfg = demo_history.cfg
    with SqlSession(cfg) as s:
        client = ChdbClient(s)
        loaded = load_into_clickhouse(cfg, client, database="server")
        for name in TABLES:
            assert loaded[name] == len(lake[name]), name
        assert set(load_into_clickhouse(cfg, client, database="server").values()) == {0}
        sums = (
            "SELECT count() AS n, sum(price) AS p, sum(size) AS s, sum(_offset) AS o FROM {}.events"
        )
        assert (
            s.arrow(sums.format("server")).to_pylist()
            == s.arrow(sums.format("bookstream")).to_pylist()
        )


# ----------------------------------------------------------------------- OHLCV bars


def test_ohlcv_equals_bars_recomputed_from_trade_events(results, lake):
    ev = lake["events"]
    trades = ev[ev["kind"].isin([k.value for k in TRADE_KINDS])]
    assert len(trades) > 100
    trades = trades.sort_values(["ts_event", "_partition", "_offset"], kind="stable")
    bars: dict[tuple, dict] = {}
    for t in trades.itertuples(index=False):
        key = (t.instrument, int(t.ts_event) // MINUTE_NS)
        price, size = int(t.price), int(t.size)
        b = bars.get(key)
        if b is None:
            b = bars[key] = {
                "open": price,
                "high": price,
                "low": price,
                "lots": 0,
                "n": 0,
                "ps": 0,
                "pe": int(t.price_exp),
                "se": int(t.size_exp),
            }
        b["high"], b["low"], b["close"] = max(b["high"], price), min(b["low"], price), price
        b["lots"] += size
        b["ps"] += price * size
        b["n"] += 1
    rows = results["ohlcv_1m"]
    got = {(r["instrument"], int(r["minute"].timestamp()) // 60): r for r in rows}
    assert sorted(got) == sorted(bars) and len(rows) == len(bars)
    for key, b in bars.items():
        r, tick, lot = got[key], 10 ** -b["pe"], 10 ** -b["se"]
        assert (r["open_ticks"], r["high_ticks"], r["low_ticks"], r["close_ticks"]) == (
            b["open"],
            b["high"],
            b["low"],
            b["close"],
        ), key
        assert (r["open"], r["high"], r["low"], r["close"]) == (
            b["open"] / tick,
            b["high"] / tick,
            b["low"] / tick,
            b["close"] / tick,
        ), key
        assert (r["volume_lots"], r["trades"]) == (b["lots"], b["n"]), key
        assert r["volume"] == pytest.approx(b["lots"] / lot, rel=1e-12)
        assert r["vwap"] == pytest.approx(b["ps"] / b["lots"] / tick, rel=1e-12)
        assert r["notional"] == pytest.approx(b["ps"] / tick / lot, rel=1e-12)
        assert (r["price_exp"], r["size_exp"]) == (b["pe"], b["se"])


# ---------------------------------------------------------------- spread and depth


def test_spread_depth_equal_numpy_recomputation(results, lake):
    f = lake["features"].sort_values(
        ["instrument", "ts_event", "_partition", "_offset"], kind="stable"
    )
    # the file's documented rule: a row stored twice (same instrument, seq, ts_event, ts_recv)
    # counts once -- a Flink restart's re-emission, or a feed refresh at the head of the chain
    f = f[f["spread"].notna()].drop_duplicates(["instrument", "seq", "ts_event", "ts_recv"])
    assert len(f) > 100
    f = f.assign(hour=f["ts_event"] // HOUR_NS)
    rows = {
        (r["instrument"], int(r["hour"].timestamp()) * 10**9 // HOUR_NS): r
        for r in results["spread_depth_hourly"]
    }
    expected_keys = set()
    for inst, g_inst in f.groupby("instrument"):
        ts = g_inst["ts_event"].to_numpy()
        nxt = np.append(ts[1:], ts[-1])
        g_inst = g_inst.assign(weight=np.minimum(nxt, (ts // HOUR_NS + 1) * HOUR_NS) - ts)
        for hour, g in g_inst.groupby("hour"):
            expected_keys.add((inst, hour))
            r = rows[(inst, hour)]
            spread = g["spread"].to_numpy(dtype=float)
            tick, lot = 10.0 ** -int(g["price_exp"].iloc[0]), 10.0 ** -int(g["size_exp"].iloc[0])
            w = g["weight"].to_numpy(dtype=float)
            want = {
                "updates": len(g),
                "avg_spread_ticks": spread.mean(),
                "median_spread_ticks": np.quantile(spread, 0.5, method="linear"),
                "p95_spread_ticks": np.quantile(spread, 0.95, method="linear"),
                "max_spread_ticks": spread.max(),
                "twa_spread_ticks": (spread * w).sum() / w.sum() if w.sum() else None,
                "avg_spread": spread.mean() / tick,
                "median_spread": np.quantile(spread, 0.5, method="linear") / tick,
                "p95_spread": np.quantile(spread, 0.95, method="linear") / tick,
                "avg_spread_bps": (g["spread"] / g["mid"]).mean() * 10_000,
                "avg_bid_size": g["bid_size"].mean() / lot,
                "avg_ask_size": g["ask_size"].mean() / lot,
                "avg_bid_depth": g["bid_depth"].mean() / lot,
                "avg_ask_depth": g["ask_depth"].mean() / lot,
            }
            for k, v in want.items():
                assert _close(
                    float(r[k]) if r[k] is not None else None, None if v is None else float(v)
                ), (inst, hour, k, r[k], v)
    assert set(rows) == expected_keys


# ------------------------------------------------------------------------ funnel


def _order_outcomes(ex: pd.DataFrame) -> dict[str, dict]:
    out: dict[str, dict] = defaultdict(
        lambda: {
            "acked": False,
            "rejected": False,
            "risk": False,
            "fills": 0,
            "lots": 0,
            "canceled": False,
        }
    )
    for r in ex.itertuples(index=False):
        o = out[r.order_id]
        if r.kind == "ack":
            o["acked"] = True
        elif r.kind == "reject" and not r.reason.startswith("cancel:"):
            o["rejected"] = True
            o["risk"] = o["risk"] or r.report_id.endswith(":risk-reject")
        elif r.kind == "fill":
            o["fills"] += 1
            o["lots"] += int(r.fill_qty)
        elif r.kind == "canceled":
            o["canceled"] = True
    return out


def test_funnel_equals_table_counts_and_demo_summary(results, lake, demo_history):
    sig, orders, ex = lake["signals"], lake["orders"], lake["executions"]
    new = orders[orders["action"] == "new"]
    assert len(sig) > 0 and len(new) > 0
    outcome = _order_outcomes(ex)
    want: dict[tuple, dict] = defaultdict(lambda: defaultdict(int))
    for s in sig.itertuples(index=False):
        w = want[(s.instrument, s.strategy)]
        w["signals"] += 1
        w["traded_signals"] += bool(s.traded)
        w["directional_signals"] += bool(s.traded) and s.direction != 0
    for o in new.drop_duplicates("order_id").itertuples(index=False):
        w, oc = want[(o.instrument, o.strategy)], outcome[o.order_id]
        w["orders"] += 1
        w["acked"] += oc["acked"]
        w["rejected"] += oc["rejected"]
        w["risk_rejected"] += oc["risk"]
        w["filled_orders"] += oc["fills"] > 0
        w["fills"] += oc["fills"]
        w["filled_lots"] += oc["lots"]
        w["canceled"] += oc["canceled"]
    rows = {(r["instrument"], r["strategy"]): r for r in results["signal_order_fill_funnel"]}
    assert sorted(rows) == sorted(want)
    for key, w in want.items():
        r = rows[key]
        for col in (
            "signals",
            "traded_signals",
            "directional_signals",
            "orders",
            "acked",
            "rejected",
            "risk_rejected",
            "filled_orders",
            "fills",
            "filled_lots",
            "canceled",
        ):
            assert r[col] == w[col], (key, col, r[col], w[col])
        if w["orders"]:
            assert r["fill_rate"] == pytest.approx(w["filled_orders"] / w["orders"])
    summary = demo_history.summary
    total = {
        c: sum(r[c] for r in rows.values()) for c in ("signals", "orders", "risk_rejected", "fills")
    }
    assert total["signals"] == summary["signals_out"]
    assert total["orders"] == summary["orders_sent"]
    assert total["risk_rejected"] == summary["orders_rejected"]
    assert total["fills"] == summary["fills"] > 0


# ----------------------------------------------------------------------------- TCA


def test_tca_recomputed_from_fills_and_decision_rows(results, lake, demo_history):
    ex, orders, feats = lake["executions"], lake["orders"], lake["features"]
    fills = ex[ex["kind"] == "fill"]
    new = orders[orders["action"] == "new"].set_index("order_id")
    mid_at = {
        (f.instrument, int(f.seq), int(f.ts_recv)): float(f.mid)
        for f in feats.itertuples(index=False)
    }
    rows = {r["report_id"]: r for r in results["tca"]}
    assert sorted(rows) == sorted(fills["report_id"]) and len(rows) > 0
    for f in fills.itertuples(index=False):
        r, o = rows[f.report_id], new.loc[f.order_id]
        tick, lot = 10 ** -int(f.price_exp), 10 ** -int(f.size_exp)
        mid = mid_at.get((f.instrument, int(o["source_seq"]), int(o["trigger_ts_recv"])))
        source = "features" if mid is not None else "fill_book"
        if mid is None:
            mid = (int(f.book_bid) + int(f.book_ask)) / 2
        sign = 1 if f.side == "BUY" else -1
        slip = sign * (int(f.fill_price) - mid)
        qty = int(f.fill_qty) / lot
        assert r["fee"] == f.fee  # the fill's own fee, exactly
        assert (r["instrument"], r["order_id"], r["strategy"], r["side"], r["arrival_source"]) == (
            f.instrument,
            f.order_id,
            o["strategy"],
            f.side,
            source,
        )
        assert r["fill_qty"] == pytest.approx(qty) and r["order_qty"] == pytest.approx(
            int(o["quantity"]) / lot
        )
        assert r["fill_price"] == pytest.approx(int(f.fill_price) / tick, rel=1e-12)
        assert r["arrival_mid"] == pytest.approx(mid / tick, rel=1e-12)
        assert r["slippage_ticks"] == pytest.approx(slip, rel=1e-12, abs=1e-9)
        assert r["slippage_bps"] == pytest.approx(slip / mid * 1e4, rel=1e-9, abs=1e-12)
        assert r["shortfall"] == pytest.approx(slip / tick * qty, rel=1e-9, abs=1e-12)
        assert r["total_cost"] == pytest.approx(slip / tick * qty + f.fee, rel=1e-9, abs=1e-12)
    fees = sum(r["fee"] for r in rows.values())
    assert fees == pytest.approx(demo_history.summary["pnl_detail"]["fees"], abs=1e-5)


# ------------------------------------------------------------------------- latency


def test_fill_latency_percentiles_equal_numpy(results, lake):
    ex, orders = lake["executions"], lake["orders"]
    decided = dict(
        zip(
            orders[orders["action"] == "new"]["order_id"],
            orders[orders["action"] == "new"]["ts_event"],
            strict=True,
        )
    )
    lat: dict[str, list[float]] = defaultdict(list)
    for f in ex[ex["kind"] == "fill"].itertuples(index=False):
        lat[f.instrument].append((int(f.ts_event) - int(decided[f.order_id])) / 1e6)
    rows = {r["instrument"]: r for r in results["fill_latency"]}
    assert sorted(rows) == sorted(lat) and rows
    for inst, values in lat.items():
        r, v = rows[inst], np.array(values)
        assert r["fills"] == len(v)
        assert (r["min_ms"], r["max_ms"]) == (v.min(), v.max())
        assert r["avg_ms"] == pytest.approx(v.mean(), rel=1e-12)
        for col, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
            assert v.min() <= r[col] <= v.max()
            assert r[col] == pytest.approx(np.quantile(v, q, method="linear"), rel=1e-12), col
        assert r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]


# -------------------------------------------------------------------- dead letters


def test_dead_letter_groups_equal_table_rows(results, lake, demo_history):
    dl = lake["dead_letters"]
    rows = results["dead_letter_reasons"]
    assert sum(r["dead_letters"] for r in rows) == len(dl) == demo_history.summary["dead_lettered"]
    got = {
        (f"{r['source_kind']}:{r['source_name']}", r["stage"], r["reason_code"]): r for r in rows
    }
    groups = dl.groupby(["source", "stage", "reason_code"])
    assert sorted(got) == sorted(groups.groups)
    for key, g in groups:
        r = got[key]
        assert r["dead_letters"] == len(g)
        assert (r["first_offset"], r["last_offset"]) == (g["offset"].min(), g["offset"].max())
        assert r["keys"] == g["key"].nunique()
        assert r["partitions"] == sorted(g["partition"].unique().tolist())
        first = g.sort_values(["partition", "offset"], kind="stable").iloc[0]
        assert r["first_reason"] == first["reason"]
    by_reason: dict[str, int] = defaultdict(int)
    for r in rows:
        by_reason[r["reason_code"]] += r["dead_letters"]
    assert dict(by_reason) == demo_history.summary["dead_letter_reasons"]
    counts = [r["dead_letters"] for r in rows]
    assert counts == sorted(counts, reverse=True)


def test_dead_letter_reasons_on_real_ingest_refusals(kafka_topics, tmp_path):
    """The demo's sample has no bad input: here two captures with garbage lines go through the
    real publisher (ingest dead letters: file, line, reason) and the real history sink."""
    lake_root = tmp_path / "lake"
    cfg, env = kafka_topics("sqldead", BOOKSTREAM_LAKE_ROOT=str(lake_root))
    with gzip.open(SAMPLE_BINANCE[0], "rb") as fh:
        lines = fh.readlines()[:3000]
    garbage = {
        "a": {
            11: b"not a capture line\n",
            500: b'1721347020984480942 {"stream":\n',
            2000: b"\x00\x01 binary\n",
        },
        "b": {42: b"truncated {\n"},
    }
    paths = {}
    for name, bad in garbage.items():
        patched = list(lines)
        for line_no in sorted(bad):  # 1-based line numbers in the patched file
            patched.insert(line_no - 1, bad[line_no])
        paths[name] = tmp_path / f"capture_{name}.gz"
        with gzip.open(paths[name], "wb") as fh:
            fh.writelines(patched)
    pub, _p, _e = run_cli(
        ["publish", "--binance", str(paths["a"]), "--binance", str(paths["b"]), "--no-progress"],
        env,
    )
    assert pub["dead_lettered"] == 4
    run_cli(["history-sink", "--bounded", "--only", "dead_letters"], env)
    # a stage restarted from its last checkpoint refuses the same records again: each one is
    # on the topic (and in the table) twice, and still counts once
    producer = make_producer(cfg)
    for rec in drain_topic(cfg, cfg.topics.dead_letter):
        producer.produce(cfg.topics.dead_letter, key=rec.key, value=rec.value)
    assert producer.flush(30) == 0
    run_cli(["history-sink", "--bounded", "--only", "dead_letters"], env)

    rows = query_rows(cfg, "dead_letter_reasons")
    table = (
        open_catalog(cfg)
        .load_table(f"{cfg.lake.namespace}.dead_letters")
        .scan()
        .to_arrow()
        .to_pandas()
    )
    assert len(table) == 8
    assert [
        (
            r["source_kind"],
            r["source_name"],
            r["stage"],
            r["reason_code"],
            r["dead_letters"],
            r["first_offset"],
            r["last_offset"],
            r["partitions"],
        )
        for r in rows
    ] == [
        ("file", str(paths["a"]), "ingest", "malformed", 3, 11, 2000, [-1]),
        ("file", str(paths["b"]), "ingest", "malformed", 1, 42, 42, [-1]),
    ]
    for r, name in zip(rows, ("a", "b"), strict=True):
        first = table[(table["source"] == f"file:{paths[name]}")].sort_values("offset").iloc[0]
        assert r["first_reason"] == first["reason"] and r["first_reason"]
        assert first["raw"] == garbage[name][min(garbage[name])].decode(errors="replace").rstrip(
            "\n"
        )


# ------------------------------------------------------------------------- quality


def test_quality_report_equals_last_rows_per_minute(results, lake):
    q = lake["quality"].sort_values(["_partition", "_offset"], kind="stable")
    last = q.drop_duplicates(["instrument", "minute_start"], keep="last")
    rows = results["data_quality_report"]
    counters = (
        "events",
        "sequence_gaps",
        "resyncs",
        "crossed",
        "locked",
        "stale_gaps",
        "out_of_order",
        "late",
        "duplicates",
    )
    want: list[tuple] = []
    for inst, g in last.sort_values(["instrument", "minute_start"]).groupby("instrument"):
        for m in g.itertuples(index=False):
            want.append(
                (inst, "minute", int(m.minute_start), *(int(getattr(m, c)) for c in counters))
            )
        want.append((inst, "total", None, *(int(g[c].sum()) for c in counters)))
    got = [
        (
            r["instrument"],
            r["row_kind"],
            None if r["minute"] is None else int(r["minute"].timestamp()) * 10**9,
            *(r[c] for c in counters),
        )
        for r in rows
    ]
    assert got == want
    gaps = [r["max_gap_ms"] for r in rows]
    want_gaps = []
    for _inst, g in last.sort_values(["instrument", "minute_start"]).groupby("instrument"):
        want_gaps += [*g["max_gap_ms"].tolist(), g["max_gap_ms"].max()]
    assert gaps == want_gaps
    for r in rows:
        issues = sum(r[c] for c in counters if c != "events")
        assert r["issues"] == issues


def test_quality_of_the_demo_matches_its_raw_events(demo_history, results, lake):
    """The stream's quality rows against the raw events table: every event counted once, in
    its instrument, and the out-of-order events recounted from the stream order."""
    totals = {
        r["instrument"]: r for r in results["data_quality_report"] if r["row_kind"] == "total"
    }
    events = lake["events"].sort_values(["_partition", "_offset"], kind="stable")
    assert set(totals) == set(events["instrument"]) == set(demo_history.summary["instruments"])
    bound = demo_history.cfg.flink.out_of_orderness_ms * 1_000_000
    for inst, g in events.groupby("instrument"):
        assert totals[inst]["events"] == len(g)
        newest, out_of_order = None, 0
        for ts in g["ts_event"].tolist():
            if newest is not None and newest - bound <= ts < newest:
                out_of_order += 1
            newest = ts if newest is None else max(newest, ts)
        assert totals[inst]["out_of_order"] == out_of_order
    assert sum(t["out_of_order"] for t in totals.values()) > 0  # Binance's few ms of disorder


# ----------------------------------------------------------------------------- CLI


def _bookstream(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BOOKSTREAM), *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_json(demo_history, results):
    doc, _proc, _s = run_cli(["sql", "fill_latency", "--format", "json"], demo_history.env)
    assert doc["row_count"] == len(results["fill_latency"]) > 0
    want = [{k: v for k, v in r.items()} for r in results["fill_latency"]]
    _assert_rows_equal(doc["rows"], want, "bookstream sql --format json")


def test_cli_csv_and_table(demo_history, results):
    proc = _bookstream(["sql", "ohlcv_1m.sql", "--format", "csv"], demo_history.env)
    assert proc.returncode == 0, proc.stderr
    parsed = list(csv.DictReader(io.StringIO(proc.stdout)))
    bars = results["ohlcv_1m"]
    assert len(parsed) == len(bars)
    for p, b in zip(parsed, bars, strict=True):
        assert p["instrument"] == b["instrument"]
        assert int(p["open_ticks"]) == b["open_ticks"] and int(p["trades"]) == b["trades"]
        assert p["minute"] == b["minute"].strftime("%Y-%m-%d %H:%M:%S")

    proc = _bookstream(["sql", str(SQL_DIR / "signal_order_fill_funnel.sql")], demo_history.env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "instrument" in lines[0] and "strategy" in lines[0] and "fill_rate" in lines[0]
    body = "\n".join(lines[1:])
    for r in results["signal_order_fill_funnel"]:
        assert r["strategy"] in body and r["instrument"] in body

    proc = _bookstream(["sql", "--list"], demo_history.env)
    assert proc.returncode == 0
    assert [ln.split()[0] for ln in proc.stdout.splitlines()] == [f"{n}.sql" for n in LIBRARY]


def test_cli_query_error_exits_2_with_clickhouse_message(demo_history):
    proc = _bookstream(["sql", "SELECT no_such_column FROM bookstream.events"], demo_history.env)
    assert proc.returncode == 2
    assert "no_such_column" in proc.stderr and "Code: 47" in proc.stderr
