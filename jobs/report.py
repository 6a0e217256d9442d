"""``bookstream report [--run ID] --out report.html``: one self-contained HTML page of a run.

A run is what ``bookstream demo`` or a stopped ``bookstream live`` session recorded in
``<lake root>/runs/<run_id>.json``: the Kafka offsets ``[from, to)`` it wrote on every topic
(a session's on its own topic set, named in the record; ``latest``: the newest run). Every
history table is read through chDB with ``bookstream.<table>`` narrowed to those positions
(:class:`jobs.sql.SqlSession` ``row_filters``), so the analysts' library (``sql/tca.sql``,
``fill_latency.sql``, ``signal_order_fill_funnel.sql``, ``spread_depth_hourly.sql``,
``data_quality_report.sql``) runs unchanged over the run alone; the figures are computed by the
pure ``udfs/report.py``.

Beside the lake's tables, two records of the run sit next to its offsets:

* ``<run_id>.summary.json``: the demo's (or session's) summary, written at its end; the
  report takes the run's CPU seconds and energy (``energy``: kWh, gCO2e, method) from it and
  divides them by the run's events and fills as the lake holds them;
* ``<run_id>.replay.json``: the verdict of the newest ``bookstream replay --run ID --verify``
  of the run. Without one the page says "not verified" (a replay takes minutes: the report
  does not run one).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

from jobs.runs import load_run
from jobs.sql import SqlSession, read_query
from udfs.config import Config
from udfs.history import streams
from udfs.report import (
    Fill,
    drawdowns,
    ecdf,
    freshness_ages,
    histogram,
    hit_ratio,
    quantile,
    realised_per_fill,
    render_html,
    returns_of,
    sharpe,
    sortino,
    traded_notional,
)

__all__ = ["build_model", "run_filters", "time_text", "write_report"]

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def time_text(ns: int, unit: str = "s") -> str:
    """Exchange time (ns) as UTC text: ``s`` seconds, ``m`` minutes, ``h`` the hour."""
    t = _EPOCH + timedelta(microseconds=ns // 1000)
    return t.strftime(
        {"s": "%Y-%m-%d %H:%M:%S", "m": "%Y-%m-%d %H:%M", "h": "%Y-%m-%d %H:00"}[unit]
    )


def _dt_ns(value: datetime) -> int:
    """A naive-UTC or aware datetime from a query as ns since the epoch."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def run_config(cfg: Config, run: dict) -> Config:
    """``cfg`` with the run's own topic set when it recorded one (a live session's)."""
    if "topics" not in run:
        return cfg
    return dataclasses.replace(cfg, topics=dataclasses.replace(cfg.topics, **run["topics"]))


def run_filters(cfg: Config, run: dict) -> dict[str, str]:
    """table -> the ClickHouse condition selecting the run's rows (Kafka positions)."""
    out = {}
    for stream in streams(cfg.features.depth_levels):
        topic = getattr(cfg.topics, stream.topic_field)
        ends = run["to"].get(topic, {})
        parts = [
            f"(_partition = {int(p)} AND _offset >= {int(a)} AND _offset < {int(ends.get(p, a))})"
            for p, a in sorted(run["from"].get(topic, {}).items())
            if ends.get(p, a) > a
        ]
        out[stream.name] = " OR ".join(parts) if parts else "0"
    return out


def _axis(ys: list[float]) -> dict[str, float]:
    """What a line plot's y axis spans (0 always inside): udfs.report.line_svg's labels."""
    return {"min": min([*ys, 0.0]), "max": max([*ys, 0.0])}


_FILLS = """
SELECT instrument, side, fill_price, fill_qty, price_exp, size_exp, fee, ts_event, order_id,
       _partition, _offset
FROM bookstream.executions
WHERE kind = 'fill'
ORDER BY _partition, _offset
LIMIT 1 BY report_id
"""
_ORDER_TIMES = """
SELECT order_id, ts_event FROM bookstream.orders WHERE action = 'new'
ORDER BY _partition, _offset LIMIT 1 BY order_id
"""
_RISK = """
SELECT ts_event, equity, realised_pnl, unrealised_pnl, fees, _partition, _offset
FROM bookstream.risk ORDER BY _partition, _offset LIMIT 1 BY ts_event
"""
_FEATURE_TIMES = (
    "SELECT instrument, ts_event FROM bookstream.features ORDER BY instrument, ts_event"
)
_EVENTS = "SELECT instrument, count() AS n FROM bookstream.events GROUP BY instrument"


def _query_run(cfg: Config, filters: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    library = (
        "tca",
        "fill_latency",
        "signal_order_fill_funnel",
        "spread_depth_hourly",
        "data_quality_report",
    )
    own = {
        "fills": _FILLS,
        "order_times": _ORDER_TIMES,
        "risk": _RISK,
        "feature_times": _FEATURE_TIMES,
        "events": _EVENTS,
    }
    with SqlSession(cfg, row_filters=filters) as s:
        out = {name: s.arrow(read_query(name)[1]).to_pylist() for name in library}
        out.update({name: s.arrow(sql).to_pylist() for name, sql in own.items()})
    return out


def _trading_kpis(cfg: Config, rows: dict[str, list[dict[str, Any]]]) -> tuple[dict, dict]:
    """KPIs of PnL, risk-adjusted return and trading; the equity curve."""
    capital = cfg.sizing.capital
    risk = sorted(rows["risk"], key=lambda r: (r["ts_event"], r["_partition"], r["_offset"]))
    equity = [float(r["equity"]) for r in risk]
    times = [int(r["ts_event"]) for r in risk]
    steps = [b - a for a, b in pairwise(times) if b > a]
    per_year = cfg.report.seconds_per_year / (min(steps) / 1e9) if steps else None
    rets = returns_of(equity, capital)
    dd = drawdowns(equity)
    last = risk[-1] if risk else {}
    fills_rows = sorted(rows["fills"], key=lambda r: (r["ts_event"], r["_partition"], r["_offset"]))
    fills = [
        Fill(
            r["instrument"],
            r["side"],
            int(r["fill_price"]),
            int(r["fill_qty"]),
            int(r["price_exp"]),
            int(r["size_exp"]),
        )
        for r in fills_rows
    ]
    notional = float(traded_notional(fills))
    funnel = rows["signal_order_fill_funnel"]
    orders = sum(int(r["orders"]) for r in funnel)
    tca = rows["tca"]
    arrival = sum(r["arrival_notional"] for r in tca if r["arrival_notional"] is not None)
    shortfall = sum(r["shortfall"] for r in tca if r["arrival_notional"] is not None)
    kpis = {
        "pnl": last.get("equity"),
        "realised_pnl": last.get("realised_pnl"),
        "unrealised_pnl": last.get("unrealised_pnl"),
        "fees": last.get("fees"),
        "sharpe": sharpe(rets, per_year) if per_year else None,
        "sortino": sortino(rets, per_year) if per_year else None,
        "max_drawdown": max(dd, default=None),
        "max_drawdown_of_capital": max(dd) / capital if dd else None,
        "hit_ratio": hit_ratio(realised_per_fill(fills)),
        "traded_notional": notional,
        "turnover": notional / capital,
        "slippage_bps": shortfall / arrival * 10_000 if arrival else None,
        "orders": orders,
        "fills": len(fills),
        "fill_rate": sum(int(r["filled_orders"]) for r in funnel) / orders if orders else None,
        "reject_rate": sum(int(r["rejected"]) for r in funnel) / orders if orders else None,
    }
    curve = {
        "t": times,
        "equity": equity,
        "drawdown": dd,
        "observations": len(equity),
        "periods_per_year": per_year,
        "first_time": time_text(times[0]) if times else None,
        "last_time": time_text(times[-1]) if times else None,
        **_axis(equity),
    }
    return kpis, curve


def _latencies(rows: dict[str, list[dict[str, Any]]]) -> list[float]:
    decided = {r["order_id"]: int(r["ts_event"]) for r in rows["order_times"]}
    return [
        (int(f["ts_event"]) - decided[f["order_id"]]) / 1e6
        for f in rows["fills"]
        if f["order_id"] in decided
    ]


def _freshness(cfg: Config, rows: dict[str, list[dict[str, Any]]]) -> list[float]:
    by_instrument: dict[str, list[int]] = defaultdict(list)
    for r in rows["feature_times"]:
        by_instrument[r["instrument"]].append(int(r["ts_event"]))
    step = cfg.report.freshness_step_ms * 1_000_000
    return [
        age / 1e6
        for name in sorted(by_instrument)
        for age in freshness_ages(by_instrument[name], step)
    ]


def _tca_by_instrument(tca: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in tca:
        groups[r["instrument"]].append(r)
    out = []
    for name in sorted(groups):
        g = groups[name]
        arrival = sum(r["arrival_notional"] for r in g)
        shortfall = sum(r["shortfall"] for r in g)
        out.append(
            {
                "instrument": name,
                "fills": len(g),
                "avg_slippage_ticks": sum(r["slippage_ticks"] for r in g) / len(g),
                "slippage_bps": shortfall / arrival * 10_000 if arrival else None,
                "shortfall": shortfall,
                "fees": sum(r["fee"] for r in g),
            }
        )
    return out


def _quality(rows: list[dict[str, Any]]) -> dict[str, Any]:
    minutes_rows = [r for r in rows if r["row_kind"] == "minute"]
    cells = [
        {
            "instrument": r["instrument"],
            "minute": time_text(_dt_ns(r["minute"]), "m"),
            "events": int(r["events"]),
            "issues": int(r["issues"]),
            "issues_per_1k_events": r["issues_per_1k_events"],
        }
        for r in minutes_rows
    ]
    totals = [
        {
            k: r[k]
            for k in (
                "instrument",
                "minutes",
                "events",
                "issues",
                "out_of_order",
                "sequence_gaps",
                "stale_gaps",
                "max_gap_ms",
            )
        }
        for r in rows
        if r["row_kind"] == "total"
    ]
    minute_ns = sorted({_dt_ns(r["minute"]) for r in minutes_rows})
    return {
        "instruments": sorted({c["instrument"] for c in cells}),
        "minutes": [time_text(m, "m") for m in minute_ns],
        "cells": cells,
        "totals": totals,
    }


def _energy(cfg: Config, run_id: str, events: int, fills: int) -> dict[str, Any] | None:
    path = cfg.lake_dir / "runs" / f"{run_id}.summary.json"
    if not path.is_file():
        return None
    recorded = json.loads(path.read_text()).get("energy")
    if not recorded:
        return None
    kwh, g = float(recorded["kwh"]), float(recorded["g_co2e"])
    return {
        "cpu_s_total": recorded.get("cpu_s_total"),
        "cpu_s": recorded.get("cpu_s"),
        "kwh": kwh,
        "g_co2e": g,
        "kwh_per_1k_events": kwh * 1000 / events if events else None,
        "g_co2e_per_1k_events": g * 1000 / events if events else None,
        "kwh_per_trade": kwh / fills if fills else None,
        "g_co2e_per_trade": g / fills if fills else None,
        "method": recorded.get("method"),
    }


def _replay(cfg: Config, run_id: str) -> dict[str, Any] | None:
    path = cfg.lake_dir / "runs" / f"{run_id}.replay.json"
    return json.loads(path.read_text()) if path.is_file() else None


def build_model(cfg: Config, run_id: str = "latest") -> dict[str, Any]:
    """Every figure of the report of one recorded run, as plain JSON values."""
    run = load_run(cfg, run_id)
    cfg = run_config(cfg, run)
    rows = _query_run(cfg, run_filters(cfg, run))
    kpis, curve = _trading_kpis(cfg, rows)
    latencies = _latencies(rows)
    ages = _freshness(cfg, rows)
    events = sum(int(r["n"]) for r in rows["events"])
    kpis.update(
        {
            "latency_p50_ms": quantile(latencies, 0.5),
            "latency_p95_ms": quantile(latencies, 0.95),
            "latency_p99_ms": quantile(latencies, 0.99),
            "freshness_p50_ms": quantile(ages, 0.5),
            "freshness_p95_ms": quantile(ages, 0.95),
            "freshness_p99_ms": quantile(ages, 0.99),
            "events": events,
        }
    )
    slippage = [r["slippage_bps"] for r in rows["tca"] if r["slippage_bps"] is not None]
    edges, counts = histogram(slippage, cfg.report.histogram_bins)
    xs, ps = ecdf(latencies)
    return {
        "run_id": run["run_id"],
        "instruments": sorted(r["instrument"] for r in rows["events"]),
        "kpis": kpis,
        "equity": curve,
        "drawdown": _axis([-d for d in curve["drawdown"]]),
        "slippage_hist": {"edges": edges, "counts": counts, "count_max": max(counts, default=0)},
        "latency_cdf": {
            "ms": xs,
            "p": ps,
            "x_min": min([*xs[:1], 0.0]),
            "x_max": xs[-1] if xs else None,
        },
        "tca_by_instrument": _tca_by_instrument(rows["tca"]),
        "latency_by_instrument": [
            {k: r[k] for k in ("instrument", "fills", "p50_ms", "p95_ms", "p99_ms", "max_ms")}
            for r in rows["fill_latency"]
        ],
        "spread_hourly": [
            {
                "instrument": r["instrument"],
                "hour": time_text(_dt_ns(r["hour"]), "h"),
                **{
                    k: r[k]
                    for k in (
                        "updates",
                        "avg_spread_ticks",
                        "median_spread_ticks",
                        "p95_spread_ticks",
                        "avg_spread_bps",
                        "avg_bid_depth",
                        "avg_ask_depth",
                    )
                },
            }
            for r in rows["spread_depth_hourly"]
        ],
        "quality": _quality(rows["data_quality_report"]),
        "energy": _energy(cfg, run["run_id"], events, kpis["fills"]),
        "replay": _replay(cfg, run["run_id"]),
    }


def write_report(cfg: Config, out: Path, run_id: str = "latest") -> dict[str, Any]:
    """Write the page; returns what the command prints (run, file, the KPIs)."""
    model = build_model(cfg, run_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(model), encoding="utf-8")
    return {
        "run_id": model["run_id"],
        "out": str(out),
        "bytes": out.stat().st_size,
        "kpis": model["kpis"],
        "replay_verified": model["replay"] is not None,
        "energy_recorded": model["energy"] is not None,
    }
