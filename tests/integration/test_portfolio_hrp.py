"""``bookstream portfolio hrp`` on the demo's lake (conftest's ``demo_history``): the weights
file it writes loads in the sizing stage and equals HRP on returns recomputed here from the
lake's rows, independently of the command's own grid (pandas' as-of join)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from it_helpers import run_cli

from jobs.lake import open_catalog
from jobs.portfolio_hrp import PortfolioError, hrp_from_lake
from udfs.config import Config
from udfs.research.portfolio import hrp_weights
from udfs.strategy.sizing import load_capital_weights

BAR_MS = 500


def _lake_mid_returns(cfg: Config, bar_ms: int) -> tuple[list[str], np.ndarray]:
    """Log mid returns per instrument on its own bar grid from its first two-sided row,
    as many bars as the shortest history (``--align start``), straight from the lake."""
    table = open_catalog(cfg).load_table(f"{cfg.lake.namespace}.features")
    frame = table.scan().to_pandas()
    frame = frame[(frame["best_bid"] > 0) & (frame["best_ask"] > 0)]
    frame = frame.sort_values(["instrument", "ts_event", "_partition", "_offset"])
    step = bar_ms * 1_000_000
    grids: dict[str, pd.DataFrame] = {}
    for inst, rows in frame.groupby("instrument", sort=True):
        start = -(-int(rows["ts_event"].iloc[0]) // step) * step
        grids[str(inst)] = (rows, start, int(rows["ts_event"].iloc[-1]))
    n = min((last - start) // step for _rows, start, last in grids.values())
    columns = []
    for rows, start, _last in grids.values():
        grid = pd.DataFrame({"ts_event": start + step * np.arange(n + 1, dtype=np.int64)})
        known = rows.drop_duplicates("ts_event", keep="last")[["ts_event", "best_bid", "best_ask"]]
        sampled = pd.merge_asof(grid, known, on="ts_event", direction="backward")
        mid2 = (sampled["best_bid"] + sampled["best_ask"]).to_numpy(np.float64)
        columns.append(np.log(mid2[1:] / mid2[:-1]))
    return sorted(grids), np.column_stack(columns)


def test_hrp_weights_from_the_lake_load_in_sizing_and_equal_hrp(demo_history, tmp_path) -> None:
    out = tmp_path / "weights.json"
    summary, _proc, _elapsed = run_cli(
        ["portfolio", "hrp", "--align", "start", "--bar-ms", str(BAR_MS), "--out", str(out)],
        demo_history.env,
        timeout_s=300,
    )
    loaded = load_capital_weights(out)  # what the sizing stage reads
    assert loaded == summary["weights"]
    assert sum(loaded.values()) == pytest.approx(1.0, abs=1e-12)

    instruments, returns = _lake_mid_returns(demo_history.cfg, BAR_MS)
    assert summary["instruments"] == instruments and len(instruments) >= 2
    assert summary["observations"] == returns.shape[0]
    want = hrp_weights(returns)
    for inst, w in zip(instruments, want, strict=True):
        assert loaded[inst] == pytest.approx(w, rel=1e-9), inst


def test_hrp_on_a_common_time_grid_says_why_it_cannot(demo_history, tmp_path) -> None:
    """The sample's instruments were recorded 12 years apart: no common window, a clear
    error naming the way out, no file."""
    out = tmp_path / "weights.json"
    with pytest.raises(PortfolioError, match="every instrument has a price") as refused:
        hrp_from_lake(demo_history.cfg, out)
    assert "--align start" in str(refused.value)
    assert not out.exists()
