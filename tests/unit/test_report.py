"""The run report's pure figures (udfs/report.py) on small inputs checked by hand, and its page
on a tiny model: every shown number is tied to the embedded JSON."""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction
from html.parser import HTMLParser

import pytest

from udfs.report import (
    KPI_LABELS,
    Fill,
    drawdowns,
    ecdf,
    fmt,
    freshness_ages,
    histogram,
    hit_ratio,
    max_drawdown,
    quantile,
    realised_per_fill,
    render_html,
    returns_of,
    sharpe,
    sortino,
    traded_notional,
)


def test_quantile_interpolates_linearly_between_ranks() -> None:
    assert quantile([4, 1, 3, 2], 0.5) == 2.5
    assert quantile([1, 2, 3, 4], 0.95) == pytest.approx(3.85)  # 1 + 3 x 0.95 = rank 3.85
    assert quantile([7], 0.99) == 7
    assert quantile([], 0.5) is None


def test_returns_are_equity_changes_over_capital_from_zero() -> None:
    assert returns_of([1.0, 3.0, 2.0], 100.0) == [0.01, 0.02, -0.01]


def test_sharpe_is_mean_over_sample_std_annualised() -> None:
    r = [0.01, -0.01, 0.02]
    mean = 0.02 / 3
    std = math.sqrt(((0.01 - mean) ** 2 + (-0.01 - mean) ** 2 + (0.02 - mean) ** 2) / 2)
    assert sharpe(r, 4) == pytest.approx(mean / std * 2)
    assert sharpe([0.01, 0.01], 4) is None  # no dispersion
    assert sharpe([0.01], 4) is None


def test_sortino_divides_by_the_downside_deviation_of_every_observation() -> None:
    # mean -0.005; downside sqrt((0.01^2 + 0.03^2) / 4) = sqrt(0.00025)
    assert sortino([0.02, -0.01, 0.0, -0.03], 1) == pytest.approx(-0.005 / math.sqrt(0.00025))
    assert sortino([0.02, -0.01, 0.0, -0.03], 9) == pytest.approx(-0.005 / 0.0158113883 * 3)
    assert sortino([0.01, 0.0], 1) is None  # no loss, no downside


def test_drawdown_runs_from_a_peak_that_starts_at_zero() -> None:
    assert drawdowns([1, 3, 2, 5, 1]) == [0, 0, 1, 0, 4]
    assert max_drawdown([1, 3, 2, 5, 1]) == 4
    assert drawdowns([-2, 1, -1]) == [2, 0, 2]  # a first loss is a drawdown from 0
    assert max_drawdown([]) == 0.0


def _fill(side: str, price: int, qty: int) -> Fill:
    return Fill("X", side, price, qty, -2, 0)  # ticks of 0.01, whole lots


def test_average_cost_realises_exactly_and_counts_hits() -> None:
    fills = [
        _fill("BUY", 100, 10),
        _fill("BUY", 110, 10),  # long 20 at 105
        _fill("SELL", 120, 15),  # closes 15 at +15 ticks: 2.25
        _fill("SELL", 100, 10),  # closes 5 at -5 ticks (-0.25), opens 5 short at 100
        _fill("BUY", 90, 5),  # closes the short 5 at +10 ticks: 0.50
    ]
    realised = realised_per_fill(fills)
    assert realised == [None, None, Fraction(9, 4), Fraction(-1, 4), Fraction(1, 2)]
    assert hit_ratio(realised) == pytest.approx(2 / 3)
    assert hit_ratio([None, None]) is None
    # (1000 + 1100 + 1800 + 1000 + 450) ticks x lots of 0.01
    assert traded_notional(fills) == Fraction(535, 10)


def test_instruments_are_accounted_apart() -> None:
    a = Fill("A", "BUY", 100, 1, 0, 0)
    b = Fill("B", "SELL", 50, 1, 0, 0)
    assert realised_per_fill([a, b, Fill("A", "SELL", 90, 1, 0, 0)]) == [None, None, -10]


def test_histogram_follows_numpys_bins() -> None:
    # numpy.histogram([0, 1, 2, 3, 4], 2): edges [0, 2, 4], counts [2, 3] (last bin closed)
    assert histogram([0, 1, 2, 3, 4], 2) == ([0.0, 2.0, 4.0], [2, 3])
    assert histogram([5.0, 5.0], 10) == ([4.5, 5.5], [2])
    assert histogram([], 3) == ([], [])


def test_ecdf_steps() -> None:
    assert ecdf([3.0, 1.0, 2.0, 2.0]) == ([1.0, 2.0, 2.0, 3.0], [0.25, 0.5, 0.75, 1.0])


def test_freshness_is_the_newest_rows_age_on_a_grid() -> None:
    # rows at 0, 250, 300; samples at 0, 100, 200, 300: ages 0, 100, 200, 0
    assert freshness_ages([0, 250, 300], 100) == [0, 100, 200, 0]
    assert freshness_ages([5], 100) == [0]
    assert freshness_ages([], 100) == []


def test_fmt() -> None:
    assert fmt(None) == "n/a"
    assert fmt(100501) == "100,501"
    assert fmt(5.5641817) == "5.5642"
    assert fmt(2.0) == "2"
    assert fmt(6.9651e-05) == "6.9651e-05"
    assert fmt(0.0) == "0"
    assert fmt("AAPL.XNAS") == "AAPL.XNAS"


# ------------------------------------------------------------------------------------- page


def _model(replay: dict | None) -> dict:
    return {
        "run_id": "demo-1",
        "instruments": ["A.X"],
        "kpis": {**dict.fromkeys(k for k, _ in KPI_LABELS), "pnl": 1.5, "fills": 2},
        "equity": {
            "t": [1, 2],
            "equity": [0.5, 1.5],
            "drawdown": [0.0, 0.0],
            "observations": 2,
            "first_time": "2020-01-01 00:00:01",
            "last_time": "2020-01-01 00:00:02",
            "min": 0.0,
            "max": 1.5,
        },
        "drawdown": {"min": 0.0, "max": 0.0},
        "slippage_hist": {"edges": [-1.0, 1.0], "counts": [2], "count_max": 2},
        "latency_cdf": {"ms": [3.0, 5.0], "p": [0.5, 1.0], "x_min": 0.0, "x_max": 5.0},
        "tca_by_instrument": [],
        "latency_by_instrument": [],
        "spread_hourly": [],
        "quality": {
            "instruments": ["A.X"],
            "minutes": ["2020-01-01 00:00"],
            "cells": [
                {
                    "instrument": "A.X",
                    "minute": "2020-01-01 00:00",
                    "events": 10,
                    "issues": 1,
                    "issues_per_1k_events": 100.0,
                }
            ],
            "totals": [],
        },
        "energy": None,
        "replay": replay,
    }


class _Shown(HTMLParser):
    """Each element with a data-key: (key, data-value, its text)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str, str]] = []
        self._open: list[list] = []
        self.data = ""
        self.other = ""
        self._in_data = False
        self._in_style = False

    def handle_starttag(self, tag, attrs) -> None:
        a = dict(attrs)
        self._in_data = a.get("id") == "report-data"
        self._in_style = tag == "style" or a.get("class") == "fixed"
        if "data-key" in a:
            self._open.append([a["data-key"], a["data-value"], ""])

    def handle_endtag(self, tag) -> None:
        if self._open and tag in ("span", "td", "tspan"):
            self.found.append(tuple(self._open.pop()))
        self._in_data = self._in_style = False

    def handle_data(self, data) -> None:
        if self._in_data:
            self.data += data
        elif self._open:
            self._open[-1][2] += data
        elif not self._in_style:
            self.other += " " + data


def _at(doc, key: str):
    for part in key.split("."):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


@pytest.mark.parametrize(
    "replay",
    [
        None,
        {
            "replay_id": "r1",
            "identical": True,
            "verified_at": "2026-01-01 00:00:00",
            "orders_live": 3,
            "orders_identical": 3,
            "fills_live": 1,
            "fills_identical": 1,
            "executions_live": 4,
            "executions_identical": 4,
            "first_divergence": None,
        },
    ],
)
def test_every_shown_number_is_the_embedded_json(replay) -> None:
    page = render_html(_model(replay))
    shown = _Shown()
    shown.feed(page)
    model = json.loads(shown.data)
    assert model == json.loads(json.dumps(_model(replay)))
    assert shown.found
    for key, value, text in shown.found:
        expected = _at(model, key)
        assert (json.loads(value) if value else None) == expected, key
        assert text == fmt(expected), key
    assert "http" not in re.sub(r'xmlns="[^"]+"', "", page)  # nothing fetched
    # any other digit is a fixed label
    stray = set(re.findall(r"[\w.,:/-]*\d[\w.,:/-]*", shown.other))
    assert stray <= {"p50", "p95", "p99", "gCO2e", "1,000"}, stray
    if replay is None:
        assert "not verified" in page
    else:
        assert ">identical<" in page
