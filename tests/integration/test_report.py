"""``bookstream report`` on a real run (``demo_history``): every number the page shows is
recomputed here from the lake's Iceberg tables, read with pyiceberg and computed with
pandas/numpy (not with the report's own functions nor the analysts' SQL), restricted to the
run's Kafka positions as recorded in ``runs/<run_id>.json``.

How: each shown number is an element with ``data-key`` (its path in the JSON the page embeds)
and ``data-value``; the test checks that the text is that value, that the page shows no other
number, and that every value in the JSON equals its recomputation. Energy comes from the demo's
own summary (the fixture's), divided by the lake's events and fills; the replay verdict from
the run's recorded verdict, or "not verified"."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from fractions import Fraction
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from jobs.lake import open_catalog
from jobs.report import write_report
from udfs.report import fmt

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


class _Page(HTMLParser):
    """Shown values (data-key, data-value, text), the embedded JSON, and the text outside
    both (scripts and styles aside)."""

    def __init__(self) -> None:
        super().__init__()
        self.shown: list[tuple[str, str, str]] = []
        self.data = ""
        self.other = ""
        self._stack: list[tuple[str, list | None]] = []

    def handle_starttag(self, tag, attrs) -> None:
        a = dict(attrs)
        entry = [a["data-key"], a["data-value"], ""] if "data-key" in a else None
        if a.get("id") == "report-data":
            entry = ["#data", "", ""]
        elif tag == "style" or a.get("class") == "fixed":  # CSS; an axis end fixed at 0 or 1
            entry = ["#style", "", ""]
        self._stack.append((tag, entry))

    def handle_endtag(self, tag) -> None:
        while self._stack:
            t, entry = self._stack.pop()
            if entry is not None:
                if entry[0] == "#data":
                    self.data = entry[2]
                elif entry[0] != "#style":
                    self.shown.append(tuple(entry))
            if t == tag:
                break

    def handle_startendtag(self, tag, attrs) -> None:
        pass

    def handle_data(self, data) -> None:
        for _t, entry in reversed(self._stack):
            if entry is not None:
                entry[2] += data
                return
        self.other += " " + data


def _at(doc, key: str):
    for part in key.split("."):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def _same(a, b, key: str) -> None:
    if isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None, key
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), f"{key}: {a} != {b}"
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{key}: {len(a)} != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{key}.{i}")
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{key}: {sorted(a)} != {sorted(b)}"
        for k in a:
            _same(a[k], b[k], f"{key}.{k}")
    else:
        assert a == b, f"{key}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def report(demo_history, tmp_path_factory) -> tuple[dict, _Page, dict]:
    # in process (what `bookstream report --out F` calls): the interpreter and its imports
    # (chDB, pyiceberg: ~13 s on a loaded machine) are the test run's already
    out = tmp_path_factory.mktemp("report") / "report.html"
    printed = write_report(demo_history.cfg, out)
    page = _Page()
    page.feed(out.read_text())
    return printed, page, json.loads(page.data)


@pytest.fixture(scope="module")
def run_rows(demo_history) -> dict[str, pd.DataFrame]:
    """The run's rows of each table, by the offsets the demo recorded (pyiceberg + pandas)."""
    cfg = demo_history.cfg
    run = json.loads((cfg.lake_dir / "runs" / "latest.json").read_text())
    assert run["run_id"] == demo_history.summary["run_id"]
    topic_of = {
        "events": cfg.topics.events,
        "features": cfg.topics.features,
        "orders": cfg.topics.orders,
        "executions": cfg.topics.executions,
        "risk": cfg.topics.risk,
        "quality": cfg.topics.quality,
    }
    catalog = open_catalog(cfg)
    out = {}
    for table, topic in topic_of.items():
        fields = ("instrument", "_partition", "_offset") if table == "events" else ("*",)
        df = (
            catalog.load_table(f"{cfg.lake.namespace}.{table}")
            .scan(selected_fields=fields)
            .to_arrow()
            .to_pandas()
        )
        keep = np.zeros(len(df), dtype=bool)
        for p, start in run["from"][topic].items():
            end = run["to"][topic][p]
            keep |= (
                (df["_partition"] == int(p)) & (df["_offset"] >= start) & (df["_offset"] < end)
            ).to_numpy()
        out[table] = df[keep].sort_values(["_partition", "_offset"], kind="stable")
    return out


def _minute_text(ns: int) -> str:
    return pd.Timestamp(ns, unit="ns").strftime("%Y-%m-%d %H:%M")


def _expected(demo_history, rows: dict[str, pd.DataFrame]) -> dict:
    cfg = demo_history.cfg
    capital = cfg.sizing.capital
    summary = demo_history.summary

    # equity: the sink's risk reports in time order
    risk = rows["risk"].drop_duplicates("ts_event").sort_values("ts_event")
    eq = risk["equity"].to_numpy(dtype=float)
    ts = risk["ts_event"].to_numpy(dtype=np.int64)
    peak = np.maximum.accumulate(np.concatenate([[0.0], eq]))[1:]
    dd = peak - eq
    rets = np.diff(np.concatenate([[0.0], eq])) / capital
    per_year = cfg.report.seconds_per_year / (np.diff(ts)[np.diff(ts) > 0].min() / 1e9)
    downside = np.sqrt(np.mean(np.minimum(rets, 0.0) ** 2))

    # fills, exact: total-cost-basis accounting (independent of the report's average cost)
    ex = rows["executions"].drop_duplicates("report_id")
    fills = ex[ex["kind"] == "fill"].sort_values(["ts_event", "_partition", "_offset"])
    held: dict[str, tuple[int, Fraction]] = {}  # lots, cost of the open lots in ticks x lots
    realised: list[Fraction] = []
    notional = Fraction(0)
    for f in fills.itertuples():
        scale = Fraction(10) ** (int(f.price_exp) + int(f.size_exp))
        signed = int(f.fill_qty) if f.side == "BUY" else -int(f.fill_qty)
        notional += int(f.fill_price) * int(f.fill_qty) * scale
        lots, cost = held.get(f.instrument, (0, Fraction(0)))
        if lots == 0 or (lots > 0) == (signed > 0):
            held[f.instrument] = (lots + signed, cost + signed * int(f.fill_price))
            continue
        closing = min(abs(signed), abs(lots)) * (1 if signed > 0 else -1)
        basis = cost * Fraction(-closing, lots)  # the closed lots' share of the cost
        realised.append((-closing * int(f.fill_price) - basis) * scale)
        rest = signed - closing
        lots, cost = lots + closing, cost - basis
        if rest:
            lots, cost = rest, Fraction(rest * int(f.fill_price))
        held[f.instrument] = (lots, cost)
    # the sink's own realised PnL agrees (every fill came before its last risk report)
    assert float(sum(realised)) == pytest.approx(risk["realised_pnl"].iloc[-1], abs=1e-9)

    # orders and their fate
    orders = rows["orders"][rows["orders"]["action"] == "new"].drop_duplicates("order_id")
    rejected = ex[(ex["kind"] == "reject") & ~ex["reason"].str.startswith("cancel:")]
    n_orders = len(orders)
    assert n_orders == summary["orders_sent"]

    # TCA: each fill against the mid of its order's triggering feature row
    feats = rows["features"].drop_duplicates(["instrument", "seq", "ts_event", "ts_recv"])
    o = orders.set_index("order_id")
    decision = feats.set_index(["instrument", "seq", "ts_recv"])["mid"]
    tca = []
    for f in fills.itertuples():
        order = o.loc[f.order_id]
        key = (f.instrument, order["source_seq"], order["trigger_ts_recv"])
        mid = decision.get(key, (f.book_bid + f.book_ask) / 2)
        sign = 1 if f.side == "BUY" else -1
        ticks = sign * (f.fill_price - mid)
        units = 10.0 ** int(f.price_exp) * f.fill_qty * 10.0 ** int(f.size_exp)
        tca.append(
            {
                "instrument": f.instrument,
                "ticks": ticks,
                "bps": ticks / mid * 10_000,
                "shortfall": ticks * units,
                "arrival": mid * units,
                "fee": f.fee,
                "latency_ms": (f.ts_event - order["ts_event"]) / 1e6,
            }
        )
    t = pd.DataFrame(tca)
    counts, edges = np.histogram(t["bps"], bins=cfg.report.histogram_bins)
    lat = np.sort(t["latency_ms"].to_numpy())

    # feature freshness: the newest row's age on a grid, per instrument
    step = cfg.report.freshness_step_ms * 1_000_000
    ages = []
    for _name, g in sorted(feats.groupby("instrument")):
        times = np.sort(g["ts_event"].to_numpy(dtype=np.int64))
        grid = np.arange(times[0], times[-1] + 1, step)
        ages.append(grid - times[np.searchsorted(times, grid, side="right") - 1])
    ages_ms = np.concatenate(ages) / 1e6

    # spread and depth per instrument and hour
    spread = []
    fs = feats[feats["spread"].notna()]
    for (name, hour), g in fs.groupby(
        [fs["instrument"], fs["ts_event"] // 3_600_000_000_000], sort=True
    ):
        s = g["spread"].to_numpy(dtype=float)
        lot = 10.0 ** -int(g["size_exp"].iloc[0])
        spread.append(
            {
                "instrument": name,
                "hour": pd.Timestamp(hour * 3_600_000_000_000, unit="ns").strftime(
                    "%Y-%m-%d %H:00"
                ),
                "updates": len(g),
                "avg_spread_ticks": s.mean(),
                "median_spread_ticks": np.quantile(s, 0.5),
                "p95_spread_ticks": np.quantile(s, 0.95),
                "avg_spread_bps": (g["spread"] / g["mid"]).mean() * 10_000,
                "avg_bid_depth": g["bid_depth"].mean() / lot,
                "avg_ask_depth": g["ask_depth"].mean() / lot,
            }
        )

    # data quality: the last stored row per instrument and minute
    counters = [
        "sequence_gaps",
        "resyncs",
        "crossed",
        "locked",
        "stale_gaps",
        "out_of_order",
        "late",
        "duplicates",
    ]
    qual = (
        rows["quality"]
        .sort_values(["_partition", "_offset"])
        .drop_duplicates(["instrument", "minute_start"], keep="last")
        .sort_values(["instrument", "minute_start"])
    )
    qual = qual.assign(issues=qual[counters].sum(axis=1))
    cells = [
        {
            "instrument": r.instrument,
            "minute": _minute_text(r.minute_start),
            "events": int(r.events),
            "issues": int(r.issues),
            "issues_per_1k_events": r.issues / r.events * 1000,
        }
        for r in qual.itertuples()
    ]
    totals = [
        {
            "instrument": name,
            "minutes": len(g),
            "events": int(g["events"].sum()),
            "issues": int(g["issues"].sum()),
            "out_of_order": int(g["out_of_order"].sum()),
            "sequence_gaps": int(g["sequence_gaps"].sum()),
            "stale_gaps": int(g["stale_gaps"].sum()),
            "max_gap_ms": float(g["max_gap_ms"].max()),
        }
        for name, g in qual.groupby("instrument", sort=True)
    ]

    events = len(rows["events"])
    assert events == summary["events_in"]  # the sample has no bad line
    energy = summary["energy"]
    by_instrument = defaultdict(list)
    for r in tca:
        by_instrument[r["instrument"]].append(r)
    return {
        "run_id": summary["run_id"],
        "instruments": sorted(rows["events"]["instrument"].unique()),
        "kpis": {
            "pnl": risk["equity"].iloc[-1],
            "realised_pnl": risk["realised_pnl"].iloc[-1],
            "unrealised_pnl": risk["unrealised_pnl"].iloc[-1],
            "fees": risk["fees"].iloc[-1],
            "sharpe": rets.mean() / rets.std(ddof=1) * math.sqrt(per_year),
            "sortino": rets.mean() / downside * math.sqrt(per_year),
            "max_drawdown": dd.max(),
            "max_drawdown_of_capital": dd.max() / capital,
            "hit_ratio": sum(1 for r in realised if r > 0) / len(realised),
            "traded_notional": float(notional),
            "turnover": float(notional) / capital,
            "slippage_bps": t["shortfall"].sum() / t["arrival"].sum() * 10_000,
            "orders": n_orders,
            "fills": len(fills),
            "fill_rate": orders["order_id"].isin(fills["order_id"]).sum() / n_orders,
            "reject_rate": orders["order_id"].isin(rejected["order_id"]).sum() / n_orders,
            "latency_p50_ms": np.quantile(lat, 0.5),
            "latency_p95_ms": np.quantile(lat, 0.95),
            "latency_p99_ms": np.quantile(lat, 0.99),
            "freshness_p50_ms": np.quantile(ages_ms, 0.5),
            "freshness_p95_ms": np.quantile(ages_ms, 0.95),
            "freshness_p99_ms": np.quantile(ages_ms, 0.99),
            "events": events,
        },
        "equity": {
            "t": ts.tolist(),
            "equity": eq.tolist(),
            "drawdown": dd.tolist(),
            "observations": len(eq),
            "periods_per_year": per_year,
            "first_time": pd.Timestamp(ts[0], unit="ns").strftime("%Y-%m-%d %H:%M:%S"),
            "last_time": pd.Timestamp(ts[-1], unit="ns").strftime("%Y-%m-%d %H:%M:%S"),
            "min": min(eq.min(), 0.0),
            "max": max(eq.max(), 0.0),
        },
        "drawdown": {"min": min(-dd.max(), 0.0), "max": 0.0},
        "slippage_hist": {
            "edges": edges.tolist(),
            "counts": counts.tolist(),
            "count_max": int(counts.max()),
        },
        "latency_cdf": {
            "ms": lat.tolist(),
            "p": (np.arange(1, len(lat) + 1) / len(lat)).tolist(),
            "x_min": 0.0,
            "x_max": lat[-1],
        },
        "tca_by_instrument": [
            {
                "instrument": name,
                "fills": len(g),
                "avg_slippage_ticks": float(np.mean([r["ticks"] for r in g])),
                "slippage_bps": sum(r["shortfall"] for r in g)
                / sum(r["arrival"] for r in g)
                * 10_000,
                "shortfall": sum(r["shortfall"] for r in g),
                "fees": sum(r["fee"] for r in g),
            }
            for name, g in sorted(by_instrument.items())
        ],
        "latency_by_instrument": [
            {
                "instrument": name,
                "fills": len(g),
                "p50_ms": np.quantile([r["latency_ms"] for r in g], 0.5),
                "p95_ms": np.quantile([r["latency_ms"] for r in g], 0.95),
                "p99_ms": np.quantile([r["latency_ms"] for r in g], 0.99),
                "max_ms": max(r["latency_ms"] for r in g),
            }
            for name, g in sorted(by_instrument.items())
        ],
        "spread_hourly": spread,
        "quality": {
            "instruments": sorted(qual["instrument"].unique()),
            "minutes": sorted({c["minute"] for c in cells}),
            "cells": cells,
            "totals": totals,
        },
        "energy": {
            "cpu_s_total": energy["cpu_s_total"],
            "cpu_s": energy["cpu_s"],
            "kwh": energy["kwh"],
            "g_co2e": energy["g_co2e"],
            "kwh_per_1k_events": energy["kwh"] * 1000 / events,
            "g_co2e_per_1k_events": energy["g_co2e"] * 1000 / events,
            "kwh_per_trade": energy["kwh"] / len(fills),
            "g_co2e_per_trade": energy["g_co2e"] / len(fills),
            "method": energy["method"],
        },
    }


def test_every_number_of_the_report_is_recomputed_from_the_lake(
    report, run_rows, demo_history
) -> None:
    printed, _page, model = report
    assert printed["run_id"] == demo_history.summary["run_id"]
    expected = _expected(demo_history, run_rows)
    for key, value in expected.items():
        _same(model[key], value, key)
    # the energy per 1,000 events is the demo's own figure (same events, same fills)
    for name in ("kwh_per_1k_events", "g_co2e_per_1k_events", "kwh_per_trade"):
        assert model["energy"][name] == pytest.approx(demo_history.summary["energy"][name])
    # the replay verdict: the run's newest recorded one (a replay test may have run first)
    verdict = demo_history.cfg.lake_dir / "runs" / f"{model['run_id']}.replay.json"
    recorded = json.loads(verdict.read_text()) if verdict.is_file() else None
    assert model["replay"] == recorded
    assert set(model) == {*expected, "replay"}


def test_the_page_shows_only_those_numbers(report) -> None:
    _printed, page, model = report
    assert len(page.shown) > 100
    keys = set()
    for key, value, text in page.shown:
        shown = _at(model, key)
        assert (json.loads(value) if value else None) == shown, key
        assert text == fmt(shown), key
        keys.add(key.split(".")[0])
    # every section of the model is on the page
    assert {"kpis", "energy", "equity", "drawdown", "slippage_hist", "latency_cdf"} <= keys
    assert {"tca_by_instrument", "latency_by_instrument", "spread_hourly", "quality"} <= keys
    if model["replay"] is None:
        assert "not verified" in page.other
    else:
        assert "replay" in keys
    # any other digit on the page is a fixed label (p50, "per 1,000", gCO2e)
    stray = set(re.findall(r"[\w.,:/-]*\d[\w.,:/-]*", page.other))
    assert stray <= {"p50", "p95", "p99", "gCO2e", "1,000"}, stray
