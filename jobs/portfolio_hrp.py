"""``bookstream portfolio hrp``: hierarchical risk parity weights across instruments from the
lake's returns, written as the capital-weights file the sizing stage reads (issue 12 §6).

1. The lake's ``features`` table at its current Iceberg snapshot: each instrument's mid path
   in exchange time, ``best_bid + best_ask`` ticks (twice the mid: the ratio of two is the
   same), stream order among equal times; rows with an empty side (no mid) are left out and
   counted.
2. A time grid every ``--bar-ms`` (aligned to multiples of the bar since the epoch) over the
   window where every instrument has a price: from the latest first row (or ``--from``) to
   the earliest last row (or ``--to``); log returns of the last mid at or before each grid time
   (:func:`udfs.research.portfolio.grid_log_returns`: what a trader knew then). With
   ``--align start`` each instrument gets its own grid from its first row instead, for
   histories recorded at different times (the shipped sample: AAPL 2012, BTCUSDT 2024), where
   a common window does not exist: the returns are then paired bar by bar, not in time.
3. :func:`udfs.research.portfolio.hrp_weights` (skfolio's HRP defaults) on those returns,
   written by :func:`udfs.research.portfolio.write_capital_weights` to ``--out``: the file
   ``sizing.capital_weights_path`` names (:func:`udfs.strategy.sizing.load_capital_weights`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from udfs.config import Config
from udfs.research.portfolio import grid_log_returns, hrp_weights, write_capital_weights

__all__ = ["Align", "PortfolioError", "hrp_from_lake", "mid_paths"]

Align = Literal["time", "start"]


class PortfolioError(ValueError):
    """The lake cannot give the weights as asked; the message says why."""


def mid_paths(cfg: Config) -> tuple[int, dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """``(snapshot_id, {instrument: (ts_event ns, best_bid + best_ask ticks)}, one_sided)``
    from the lake's features table at its current snapshot (step 1 of the module doc)."""
    from jobs.lake import open_catalog

    table = open_catalog(cfg).load_table(f"{cfg.lake.namespace}.features")
    snap = table.current_snapshot()
    if snap is None:
        raise PortfolioError("the lake's features table has no snapshot yet: run `make demo`")
    cols = ("instrument", "ts_event", "best_bid", "best_ask", "_partition", "_offset")
    data = table.scan(snapshot_id=snap.snapshot_id, selected_fields=cols).to_arrow()
    data = data.sort_by(
        [(c, "ascending") for c in ("instrument", "ts_event", "_partition", "_offset")]
    )
    frame = data.to_pandas()
    two_sided = (frame["best_bid"] > 0) & (frame["best_ask"] > 0)
    one_sided = int((~two_sided).sum())
    frame = frame[two_sided]
    paths = {
        str(inst): (
            rows["ts_event"].to_numpy(np.int64),
            (rows["best_bid"] + rows["best_ask"]).to_numpy(np.int64),
        )
        for inst, rows in frame.groupby("instrument", sort=True)
    }
    return snap.snapshot_id, paths, one_sided


def hrp_from_lake(
    cfg: Config,
    out: str | Path,
    *,
    start_ns: int | None = None,
    end_ns: int | None = None,
    bar_ms: int = 1000,
    align: Align = "time",
) -> dict[str, Any]:
    """HRP weights of the lake's instruments on a ``bar_ms`` grid, written to ``out``; returns
    the summary. ``align="time"``: one grid of exchange time inside ``[start_ns, end_ns]``
    (default: where every instrument has a price). ``align="start"``: each instrument's grid
    from its own first row, as many bars as the shortest history (for histories recorded at
    different times, e.g. the shipped sample; the correlation is then not contemporaneous)."""
    if bar_ms < 1:
        raise PortfolioError(f"--bar-ms must be >= 1, got {bar_ms}")
    snapshot_id, paths, one_sided = mid_paths(cfg)
    if len(paths) < 2:
        raise PortfolioError(
            f"HRP needs >= 2 instruments with a two-sided book in the lake, found {sorted(paths)}"
        )
    step_ns = bar_ms * 1_000_000
    instruments = sorted(paths)
    if align == "time":
        first = max(int(ts[0]) for ts, _ in paths.values())
        last = min(int(ts[-1]) for ts, _ in paths.values())
        lo = max(first, start_ns) if start_ns is not None else first
        hi = min(last, end_ns) if end_ns is not None else last
        grid_start = -(-lo // step_ns) * step_ns  # first bar boundary where all have a price
        n_steps = (hi - grid_start) // step_ns if hi >= grid_start else 0
        if n_steps < 3:
            raise PortfolioError(
                f"{n_steps} returns of {bar_ms} ms where every instrument has a price "
                f"(window [{lo}, {hi}] ns): need >= 3; a wider window, a shorter --bar-ms, or "
                "--align start for histories recorded at different times"
            )
        returns = grid_log_returns([paths[i] for i in instruments], grid_start, step_ns, n_steps)
        starts = {i: grid_start for i in instruments}
    else:
        if start_ns is not None or end_ns is not None:
            raise PortfolioError("--from/--to are exchange times: they go with --align time")
        # each instrument's own grid from its first bar boundary; as many bars as the
        # shortest history has
        starts = {i: -(-int(paths[i][0][0]) // step_ns) * step_ns for i in instruments}
        n_steps = min((int(paths[i][0][-1]) - starts[i]) // step_ns for i in instruments)
        if n_steps < 3:
            raise PortfolioError(
                f"the shortest history has {max(n_steps, 0)} bars of {bar_ms} ms: need >= 3"
            )
        returns = np.column_stack(
            [grid_log_returns([paths[i]], starts[i], step_ns, n_steps)[:, 0] for i in instruments]
        )
    try:
        weights = hrp_weights(returns)
    except ValueError as exc:
        raise PortfolioError(f"instruments {instruments}: {exc}") from exc
    by_name = {name: float(w) for name, w in zip(instruments, weights, strict=True)}
    write_capital_weights(out, by_name)
    return {
        "out": str(out),
        "table": f"{cfg.lake.namespace}.features",
        "snapshot_id": snapshot_id,
        "instruments": instruments,
        "bar_ms": bar_ms,
        "align": align,
        "grid_start_ns": starts,
        "observations": n_steps,
        "one_sided_rows": one_sided,
        "weights": by_name,
    }
