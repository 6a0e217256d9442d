"""The run report's figures and its HTML: pure functions (no Iceberg, no chDB).

``jobs/report.py`` reads one run from the lake and hands plain rows to these functions; the
page is one self-contained HTML file (inline CSS, inline SVG drawn here, no script, no fetch).

KPI definitions (the README's "The run report" repeats them for analysts):

* **PnL**: the equity of the execution sink's last risk report (realised + unrealised at the
  book's mid - fees, quote currency, summed over instruments as the sink sums them);
* **Sharpe / Sortino**: on the equity's change between consecutive risk reports (one per risk
  interval of exchange time with market activity: idle time, such as a closed market or the gap
  between two sample days, is no observation) over ``sizing.capital``; Sharpe = mean / standard
  deviation (ddof 1), Sortino = mean / downside deviation (root mean square of min(r, 0) over
  every observation, target 0); both annualised by sqrt(intervals per
  ``report.seconds_per_year``);
* **max drawdown**: the largest fall of the equity curve from its running peak (which starts at
  0, the equity before the first fill), money and share of capital;
* **hit ratio**: of the fills that close (part of) a position, the share whose realised PnL
  (average cost, exact integer ticks and lots, before fees) is positive;
* **turnover**: traded notional (fill price x fill quantity, exact) over capital;
* **slippage**: implementation shortfall over arrival notional, in bps, over every fill of
  ``sql/tca.sql`` (a notional-weighted mean of its ``slippage_bps``);
* **fill rate / reject rate**: orders with a fill / orders refused, over the new orders of
  ``sql/signal_order_fill_funnel.sql``;
* **latency p50/p95/p99**: decision -> fill in exchange time (``sql/fill_latency.sql``'s
  measure, over every fill of the run), linear interpolation between ranks (numpy's default);
* **feature freshness p50/p95/p99**: the age of an instrument's newest feature row, sampled
  every ``report.freshness_step_ms`` of exchange time from its first to its last row (a
  feature row is as old as the time since the book last changed).
"""

from __future__ import annotations

import html
import json
import math
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

__all__ = [
    "Fill",
    "drawdowns",
    "ecdf",
    "fmt",
    "freshness_ages",
    "histogram",
    "hit_ratio",
    "max_drawdown",
    "quantile",
    "realised_per_fill",
    "render_html",
    "returns_of",
    "sharpe",
    "sortino",
    "traded_notional",
]


# ------------------------------------------------------------------------------------ statistics


def quantile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between the two nearest ranks (numpy.quantile's default, ClickHouse's
    ``quantileExactInclusive``); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def returns_of(equity: Sequence[float], capital: float, start: float = 0.0) -> list[float]:
    """Each observation's equity change over ``capital`` (the first from ``start``)."""
    out, prev = [], start
    for e in equity:
        out.append((e - prev) / capital)
        prev = e
    return out


def sharpe(returns: Sequence[float], periods_per_year: float) -> float | None:
    """mean / sample standard deviation x sqrt(periods per year); None when undefined."""
    n = len(returns)
    if n < 2:
        return None
    mean = sum(returns) / n
    var = sum((r - mean) ** 2 for r in returns) / (n - 1)
    if var <= 0:
        return None
    return mean / math.sqrt(var) * math.sqrt(periods_per_year)


def sortino(returns: Sequence[float], periods_per_year: float) -> float | None:
    """mean / downside deviation (root mean square of min(r, 0) over all observations) x
    sqrt(periods per year); None when there is no loss (or no observation)."""
    n = len(returns)
    if n == 0:
        return None
    downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in returns) / n)
    if downside == 0:
        return None
    return sum(returns) / n / downside * math.sqrt(periods_per_year)


def drawdowns(equity: Sequence[float], start: float = 0.0) -> list[float]:
    """``peak - equity`` at every point, the running peak starting at ``start`` (>= 0)."""
    peak, out = start, []
    for e in equity:
        peak = max(peak, e)
        out.append(peak - e)
    return out


def max_drawdown(equity: Sequence[float], start: float = 0.0) -> float:
    return max(drawdowns(equity, start), default=0.0)


def histogram(values: Sequence[float], bins: int) -> tuple[list[float], list[int]]:
    """``bins`` equal-width bins from min to max (the last bin closed, numpy.histogram's rule);
    one bin of width 1 around a single distinct value; nothing for no values."""
    if not values:
        return [], []
    lo, hi = min(values), max(values)
    if lo == hi:
        lo, hi, bins = lo - 0.5, hi + 0.5, 1
    width = (hi - lo) / bins
    edges = [lo + width * i for i in range(bins)] + [hi]
    counts = [0] * bins
    for v in values:
        i = min(int((v - lo) / width), bins - 1)
        # float rounding at an inner edge: the edge belongs to the bin on its right
        if i + 1 < bins and v >= edges[i + 1]:
            i += 1
        elif i > 0 and v < edges[i]:
            i -= 1
        counts[i] += 1
    return edges, counts


def ecdf(values: Sequence[float]) -> tuple[list[float], list[float]]:
    """Sorted values and the share of values <= each (the empirical CDF's steps)."""
    xs = sorted(values)
    n = len(xs)
    return xs, [(i + 1) / n for i in range(n)]


def freshness_ages(ts_ns: Sequence[int], step_ns: int) -> list[int]:
    """The age (ns) of the newest row at ``first + k * step`` for every k with that time <=
    the last row's, for one instrument's row times in ascending order."""
    if not ts_ns:
        return []
    first, last = ts_ns[0], ts_ns[-1]
    out = []
    for k in range((last - first) // step_ns + 1):
        t = first + k * step_ns
        out.append(t - ts_ns[bisect_right(ts_ns, t) - 1])
    return out


# ------------------------------------------------------------------------- fills, exact ticks


@dataclass(frozen=True)
class Fill:
    """One fill as stored: integer ticks and lots with their exponents."""

    instrument: str
    side: str
    """BUY or SELL"""
    price: int
    qty: int
    price_exp: int
    size_exp: int

    @property
    def sign(self) -> int:
        return 1 if self.side == "BUY" else -1

    @property
    def scale(self) -> Fraction:
        """Quote currency per tick x lot."""
        return Fraction(10) ** (self.price_exp + self.size_exp)


def realised_per_fill(fills: Iterable[Fill]) -> list[Fraction | None]:
    """Realised PnL (quote currency, before fees) of each fill, in order, under average-cost
    accounting per instrument; None for a fill that only opens or adds. A fill through zero
    realises its closing part and opens the rest at its price."""
    book: dict[str, tuple[int, Fraction]] = {}  # instrument -> (position lots, average ticks)
    out: list[Fraction | None] = []
    for f in fills:
        pos, avg = book.get(f.instrument, (0, Fraction(0)))
        if pos == 0 or (pos > 0) == (f.sign > 0):
            avg = (abs(pos) * avg + f.qty * f.price) / (abs(pos) + f.qty)
            book[f.instrument] = (pos + f.sign * f.qty, avg)
            out.append(None)
            continue
        closed = min(f.qty, abs(pos))
        direction = 1 if pos > 0 else -1
        out.append(closed * (f.price - avg) * direction * f.scale)
        pos += f.sign * f.qty
        if pos == 0:
            avg = Fraction(0)
        elif (pos > 0) != (direction > 0):  # went through zero: the rest opens at the price
            avg = Fraction(f.price)
        book[f.instrument] = (pos, avg)
    return out


def hit_ratio(realised: Iterable[Fraction | None]) -> float | None:
    """Share of closing fills with a positive realised PnL; None without closing fills."""
    closing = [r for r in realised if r is not None]
    if not closing:
        return None
    return sum(1 for r in closing if r > 0) / len(closing)


def traded_notional(fills: Iterable[Fill]) -> Fraction:
    """Sum of fill price x fill quantity, quote currency, exact."""
    return sum((f.price * f.qty * f.scale for f in fills), Fraction(0))


# ------------------------------------------------------------------------------- formatting


def fmt(value: Any) -> str:
    """How a number appears in the report (and what the test expects to see)."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        if value == 0:
            return "0"
        if 1e-3 <= abs(value) < 1e6:
            return f"{value:,.4f}".rstrip("0").rstrip(".")
        return f"{value:.4e}"
    return str(value)


def _attr(value: Any) -> str:
    return html.escape("" if value is None else json.dumps(value), quote=True)


def num(key: str, value: Any, tag: str = "span", extra: str = "") -> str:
    """A shown value: its text is :func:`fmt` of ``value``, its ``data-key`` the path of the
    value in the embedded JSON and ``data-value`` the value itself."""
    return (
        f'<{tag} data-key="{html.escape(key)}" data-value="{_attr(value)}"{extra}>'
        f"{html.escape(fmt(value))}</{tag}>"
    )


# ------------------------------------------------------------------------------------- SVG

_W, _H, _PAD = 720, 220, 64


def _scale(lo: float, hi: float, a: float, b: float) -> Callable[[float], float]:
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def svg_path(points: Sequence[tuple[float, float]]) -> str:
    """An SVG path through ``points`` (already in pixel space), 2 decimals."""
    return " ".join(f"{'M' if i == 0 else 'L'}{x:.2f},{y:.2f}" for i, (x, y) in enumerate(points))


def _frame(body: str, title: str, y_lo: str, y_hi: str, x_lo: str, x_hi: str) -> str:
    return (
        f'<svg class="plot" viewBox="0 0 {_W} {_H}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{html.escape(title)}</title>'
        f'<rect x="{_PAD}" y="10" width="{_W - _PAD - 10}" height="{_H - _PAD - 10}" '
        f'class="frame"/>{body}'
        f'<text x="{_PAD - 4}" y="18" class="ax" text-anchor="end">{y_hi}</text>'
        f'<text x="{_PAD - 4}" y="{_H - _PAD}" class="ax" text-anchor="end">{y_lo}</text>'
        f'<text x="{_PAD}" y="{_H - _PAD + 16}" class="ax">{x_lo}</text>'
        f'<text x="{_W - 10}" y="{_H - _PAD + 16}" class="ax" text-anchor="end">{x_hi}</text>'
        "</svg>"
    )


def _tspan(key: str, value: Any) -> str:
    return num(key, value, "tspan")


_FIXED_0 = '<tspan class="fixed">0</tspan>'
_FIXED_1 = '<tspan class="fixed">1</tspan>'
"""An axis end that is the same on every plot (a count from 0, a share up to 1): no figure."""


def line_svg(
    key: str,
    ys: Sequence[float],
    title: str,
    css: str,
    x_labels: tuple[tuple[str, Any], tuple[str, Any]],
) -> str:
    """A line over the observations' index (the x axis is observation order, not time, so a
    gap between sessions takes no width); y from the series' min to max (``key.min/.max``)."""
    if not ys:
        return '<p class="none">no observations</p>'
    lo, hi = min(min(ys), 0.0), max(max(ys), 0.0)
    sx = _scale(0, max(len(ys) - 1, 1), _PAD, _W - 10)
    sy = _scale(lo, hi, _H - _PAD, 10)
    pts = [(sx(i), sy(y)) for i, y in enumerate(ys)]
    zero = sy(0.0)
    body = (
        f'<line x1="{_PAD}" x2="{_W - 10}" y1="{zero:.2f}" y2="{zero:.2f}" class="zero"/>'
        f'<path d="{svg_path(pts)}" class="{css}"/>'
    )
    (lo_key, lo_value), (hi_key, hi_value) = x_labels
    return _frame(
        body,
        title,
        _tspan(f"{key}.min", lo),
        _tspan(f"{key}.max", hi),
        _tspan(lo_key, lo_value),
        _tspan(hi_key, hi_value),
    )


def bars_svg(key: str, edges: Sequence[float], counts: Sequence[int], title: str) -> str:
    """A histogram: ``counts`` over the bins of ``edges``."""
    if not counts:
        return '<p class="none">no observations</p>'
    sx = _scale(edges[0], edges[-1], _PAD, _W - 10)
    sy = _scale(0, max(counts), _H - _PAD, 10)
    body = "".join(
        f'<rect x="{sx(edges[i]):.2f}" y="{sy(c):.2f}" '
        f'width="{max(sx(edges[i + 1]) - sx(edges[i]) - 1, 0.5):.2f}" '
        f'height="{sy(0) - sy(c):.2f}" class="bar"/>'
        for i, c in enumerate(counts)
    )
    return _frame(
        body,
        title,
        _FIXED_0,
        _tspan(f"{key}.count_max", max(counts)),
        _tspan(f"{key}.edges.0", edges[0]),
        _tspan(f"{key}.edges.{len(edges) - 1}", edges[-1]),
    )


def step_svg(key: str, xs: Sequence[float], ps: Sequence[float], title: str) -> str:
    """An empirical CDF as steps from (min, 0) to (max, 1)."""
    if not xs:
        return '<p class="none">no observations</p>'
    sx = _scale(min(xs[0], 0.0), xs[-1], _PAD, _W - 10)
    sy = _scale(0, 1, _H - _PAD, 10)
    pts = [(sx(xs[0]), sy(0))]
    prev = 0.0
    for x, p in zip(xs, ps, strict=True):
        pts += [(sx(x), sy(prev)), (sx(x), sy(p))]
        prev = p
    body = f'<path d="{svg_path(pts)}" class="line"/>'
    return _frame(
        body,
        title,
        _FIXED_0,
        _FIXED_1,
        _tspan(f"{key}.x_min", min(xs[0], 0.0)),
        _tspan(f"{key}.x_max", xs[-1]),
    )


def heatmap_svg(
    instruments: Sequence[str], minutes: Sequence[str], cells: Sequence[dict[str, Any]]
) -> str:
    """Issues per instrument (rows) and minute (columns); a minute without a row is blank.
    A cell's shade is its issues per 1,000 events relative to the worst cell."""
    if not cells:
        return '<p class="none">no quality rows</p>'
    cw = max(2.0, min(24.0, (_W - 170) / max(len(minutes), 1)))
    ch = 22
    col = {m: i for i, m in enumerate(minutes)}
    row = {n: i for i, n in enumerate(instruments)}
    worst = max((c["issues_per_1k_events"] or 0.0) for c in cells) or 1.0
    parts = []
    for i, c in enumerate(cells):
        share = (c["issues_per_1k_events"] or 0.0) / worst
        x, y = 160 + col[c["minute"]] * cw, 20 + row[c["instrument"]] * ch
        parts.append(
            f'<rect x="{x:.2f}" y="{y}" width="{cw - 0.5:.2f}" height="{ch - 2}" '
            f'fill="rgb(255,{int(235 - 180 * share)},{int(225 - 200 * share)})" '
            f'class="cell"><title>issues: {_bare(f"quality.cells.{i}.issues", c["issues"])}'
            "</title></rect>"
        )
    for n, i in row.items():
        parts.append(
            f'<text x="154" y="{20 + i * ch + 15}" class="ax" text-anchor="end">'
            f"{_tspan(f'quality.instruments.{i}', n)}</text>"
        )
    height = 20 + len(instruments) * ch + 30
    width = max(160 + len(minutes) * cw + 10, 440)
    last = len(minutes) - 1
    parts.append(
        f'<text x="8" y="{height - 8}" class="ax">'
        f"{_tspan('quality.minutes.0', minutes[0])}</text>"
        f'<text x="{width - 10:.2f}" y="{height - 8}" class="ax" text-anchor="end">'
        f"{_tspan(f'quality.minutes.{last}', minutes[last])}</text>"
    )
    return (
        f'<svg class="heat" width="{width:.0f}" height="{height}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'
    )


def _bare(key: str, value: Any) -> str:
    """A value inside an SVG ``<title>`` (tooltips hold text only): the tspan's attributes
    say what it is, for the test; browsers show its text."""
    return num(key, value, "tspan")


# ------------------------------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:980px;
color:#1d2330;background:#fbfbfd}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde}
.sub{color:#667}.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));
gap:8px}.card{background:#fff;border:1px solid #e3e5ee;border-radius:6px;padding:8px 10px}
.card .k{color:#667;font-size:12px}.card .v{font-size:18px;font-weight:600}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:6px 0}
td,th{border:1px solid #e3e5ee;padding:3px 8px;text-align:right}th{background:#f1f2f7}
td:first-child,th:first-child{text-align:left}
.plot{width:100%;height:auto;background:#fff;border:1px solid #e3e5ee;border-radius:6px}
.frame{fill:none;stroke:#ccd}.zero{stroke:#99a;stroke-dasharray:3 3}
.line{fill:none;stroke:#2456c7;stroke-width:1.5}.dd{fill:none;stroke:#c0392b;stroke-width:1.5}
.heat{max-width:100%;background:#fff;border:1px solid #e3e5ee;border-radius:6px}
.bar{fill:#5b7fd6}.ax{font-size:11px;fill:#556}.cell{stroke:#fff}
.ok{color:#17803d;font-weight:600}.bad{color:#b42318;font-weight:600}.none{color:#889}
"""

KPI_LABELS: tuple[tuple[str, str], ...] = (
    ("pnl", "PnL (equity, quote ccy)"),
    ("realised_pnl", "realised"),
    ("unrealised_pnl", "unrealised"),
    ("fees", "fees"),
    ("sharpe", "Sharpe (annualised)"),
    ("sortino", "Sortino (annualised)"),
    ("max_drawdown", "max drawdown (quote ccy)"),
    ("max_drawdown_of_capital", "max drawdown / capital"),
    ("hit_ratio", "hit ratio (closing fills)"),
    ("turnover", "turnover (notional / capital)"),
    ("traded_notional", "traded notional"),
    ("slippage_bps", "slippage (bps of arrival)"),
    ("fill_rate", "fill rate (of orders)"),
    ("reject_rate", "reject rate (of orders)"),
    ("orders", "orders"),
    ("fills", "fills"),
    ("latency_p50_ms", "fill latency p50 (ms)"),
    ("latency_p95_ms", "fill latency p95 (ms)"),
    ("latency_p99_ms", "fill latency p99 (ms)"),
    ("freshness_p50_ms", "feature age p50 (ms)"),
    ("freshness_p95_ms", "feature age p95 (ms)"),
    ("freshness_p99_ms", "feature age p99 (ms)"),
    ("events", "events stored"),
)

ENERGY_LABELS: tuple[tuple[str, str], ...] = (
    ("cpu_s_total", "CPU seconds"),
    ("kwh", "kWh"),
    ("g_co2e", "gCO2e"),
    ("kwh_per_1k_events", "kWh per 1,000 events"),
    ("g_co2e_per_1k_events", "gCO2e per 1,000 events"),
    ("kwh_per_trade", "kWh per trade"),
    ("g_co2e_per_trade", "gCO2e per trade"),
)


def _cards(prefix: str, values: dict[str, Any], labels: Sequence[tuple[str, str]]) -> str:
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="k">{html.escape(label)}</div>'
            f'<div class="v">{num(f"{prefix}.{name}", values.get(name))}</div></div>'
            for name, label in labels
        )
        + "</div>"
    )


def _table(key: str, rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    if not rows:
        return '<p class="none">no rows</p>'
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in columns)
    body = "".join(
        "<tr>" + "".join(num(f"{key}.{i}.{c}", r.get(c), "td") for c, _ in columns) + "</tr>"
        for i, r in enumerate(rows)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _verdict(replay: dict[str, Any] | None) -> str:
    if replay is None:
        return (
            '<p class="none">not verified: no replay of this run was recorded '
            "(run <code>bookstream replay --run ID --verify</code>)</p>"
        )
    ok = replay.get("identical")
    first = replay.get("first_divergence")
    where = ""
    if first:
        where = (
            f"; first divergence: {html.escape(str(first.get('stream')))} of "
            f"{num('replay.first_divergence.key', first.get('key'))} at position "
            f"{num('replay.first_divergence.position', first.get('position'))}"
        )
    return (
        f'<p><span class="{"ok" if ok else "bad"}">'
        f"{'identical' if ok else 'DIFFERENT'}</span> (replay "
        f"{num('replay.replay_id', replay.get('replay_id'))}, verified "
        f"{num('replay.verified_at', replay.get('verified_at'))}): orders "
        f"{num('replay.orders_identical', replay.get('orders_identical'))} of "
        f"{num('replay.orders_live', replay.get('orders_live'))} identical, fills "
        f"{num('replay.fills_identical', replay.get('fills_identical'))} of "
        f"{num('replay.fills_live', replay.get('fills_live'))}, execution reports "
        f"{num('replay.executions_identical', replay.get('executions_identical'))} of "
        f"{num('replay.executions_live', replay.get('executions_live'))}{where}</p>"
    )


def render_html(model: dict[str, Any]) -> str:
    """The report page of ``model`` (:func:`jobs.report.build_model`), with the model itself
    embedded as JSON (``<script type="application/json" id="report-data">``)."""
    k = model["kpis"]
    eq = model["equity"]
    x_labels = (("equity.first_time", eq["first_time"]), ("equity.last_time", eq["last_time"]))
    slip = model["slippage_hist"]
    cdf = model["latency_cdf"]
    q = model["quality"]
    energy = model.get("energy")
    data = json.dumps(model, sort_keys=True, separators=(",", ":")).replace("</", "<\\/")
    sections = [
        f"<h1>bookstream run report</h1><p class='sub'>run "
        f"{num('run_id', model['run_id'])} &middot; exchange time "
        f"{num('equity.first_time', eq['first_time'])} to "
        f"{num('equity.last_time', eq['last_time'])} (UTC) &middot; instruments: "
        + ", ".join(num(f"instruments.{i}", name) for i, name in enumerate(model["instruments"]))
        + "</p>",
        "<h2>Key figures</h2>" + _cards("kpis", k, KPI_LABELS),
        "<h2>Energy</h2>"
        + (
            _cards("energy", energy, ENERGY_LABELS)
            + f"<p class='sub'>method {num('energy.method', energy.get('method'))}; per "
            "1,000 events stored and per fill of this run; the run's CPU seconds and factors "
            "as the demo recorded them</p>"
            if energy
            else '<p class="none">no energy record for this run (only <code>bookstream '
            "demo</code> records one)</p>"
        ),
        "<h2>Equity</h2>"
        + line_svg("equity", eq["equity"], "equity", "line", x_labels)
        + "<h2>Drawdown</h2>"
        + line_svg("drawdown", [-d for d in eq["drawdown"]], "drawdown", "dd", x_labels)
        + f"<p class='sub'>{num('equity.observations', eq['observations'])} risk reports in "
        "order (x is the report's rank, so idle time takes no width)</p>",
        "<h2>TCA: slippage per fill (bps of the arrival mid)</h2>"
        + bars_svg("slippage_hist", slip["edges"], slip["counts"], "slippage")
        + _table(
            "tca_by_instrument",
            model["tca_by_instrument"],
            (
                ("instrument", "instrument"),
                ("fills", "fills"),
                ("avg_slippage_ticks", "avg slippage (ticks)"),
                ("slippage_bps", "slippage (bps)"),
                ("shortfall", "shortfall"),
                ("fees", "fees"),
            ),
        ),
        "<h2>Fill latency (decision to fill, exchange time)</h2>"
        + step_svg("latency_cdf", cdf["ms"], cdf["p"], "fill latency CDF")
        + _table(
            "latency_by_instrument",
            model["latency_by_instrument"],
            (
                ("instrument", "instrument"),
                ("fills", "fills"),
                ("p50_ms", "p50 ms"),
                ("p95_ms", "p95 ms"),
                ("p99_ms", "p99 ms"),
                ("max_ms", "max ms"),
            ),
        ),
        "<h2>Spread and depth by hour</h2>"
        + _table(
            "spread_hourly",
            model["spread_hourly"],
            (
                ("instrument", "instrument"),
                ("hour", "hour (UTC)"),
                ("updates", "updates"),
                ("avg_spread_ticks", "avg spread (ticks)"),
                ("median_spread_ticks", "median"),
                ("p95_spread_ticks", "p95"),
                ("avg_spread_bps", "avg spread (bps)"),
                ("avg_bid_depth", "bid depth"),
                ("avg_ask_depth", "ask depth"),
            ),
        ),
        "<h2>Data quality per instrument and minute</h2>"
        + heatmap_svg(q["instruments"], q["minutes"], q["cells"])
        + _table(
            "quality.totals",
            q["totals"],
            (
                ("instrument", "instrument"),
                ("minutes", "minutes"),
                ("events", "events"),
                ("issues", "issues"),
                ("out_of_order", "out of order"),
                ("sequence_gaps", "sequence gaps"),
                ("stale_gaps", "stale gaps"),
                ("max_gap_ms", "longest silence ms"),
            ),
        ),
        "<h2>Replay verdict</h2>" + _verdict(model.get("replay")),
    ]
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>bookstream report</title><style>{_CSS}</style></head><body>"
        + "".join(sections)
        + f'<script type="application/json" id="report-data">{data}</script>'
        + "</body></html>\n"
    )
