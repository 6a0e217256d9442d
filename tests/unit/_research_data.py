"""Real price paths for the udfs.research tests: the project's LOBSTER AAPL sample replayed
through the feature stage (adapter -> book -> features, as the stream job does), and the
shared full-day LOBSTER level-1 files read straight from their CSVs."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from udfs.config import FeatureConfig
from udfs.market.adapters.lobster import iter_lobster_events
from udfs.pipeline import InstrumentState, process_event

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "lobster"
SHARED_LOBSTER = ROOT.parent / "shared" / "data" / "lobster"


@cache
def sample_feature_rows() -> tuple[dict, ...]:
    """Feature rows of the shipped 998-message AAPL sample, in event order."""
    events = iter_lobster_events(
        SAMPLE / "AAPL_2012-06-21_34200000_57600000_message_10.csv",
        SAMPLE / "AAPL_2012-06-21_34200000_57600000_orderbook_10.csv",
    )
    state: InstrumentState | None = None
    rows = []
    for ev in events:
        if state is None:
            state = InstrumentState.new(ev.instrument)
        row, refused = process_event(state, ev, FeatureConfig(), 1000)
        assert refused is None, refused
        if row is not None:
            rows.append(row)
    return tuple(rows)


def sample_mid2() -> tuple[np.ndarray, np.ndarray]:
    """(ts_ns, best_bid + best_ask) of the sample's feature rows: the mid doubled, exact ints."""
    rows = sample_feature_rows()
    ts = np.array([r["ts_event"] for r in rows], dtype=np.int64)
    mid2 = np.array([r["best_bid"] + r["best_ask"] for r in rows], dtype=np.int64)
    return ts, mid2


def lobster_level1_mid2(symbol: str) -> tuple[np.ndarray, np.ndarray]:
    """(ts_ns since midnight, ask_1 + bid_1) of a whole LOBSTER level-1 day in
    ../shared/data (times parsed from the text, no float on the way)."""
    import pandas as pd

    folder = SHARED_LOBSTER / f"LOBSTER_SampleFile_{symbol}_2012-06-21_1"
    stem = f"{symbol}_2012-06-21_34200000_57600000"
    times = pd.read_csv(folder / f"{stem}_message_1.csv", header=None, usecols=[0], dtype=str)[
        0
    ].str.split(".", expand=True)
    ts = times[0].astype(np.int64).to_numpy() * 10**9 + (
        times[1].str.ljust(9, "0").str[:9].astype(np.int64).to_numpy()
    )
    book = pd.read_csv(folder / f"{stem}_orderbook_1.csv", header=None, usecols=[0, 2])
    return ts, (book[0] + book[2]).to_numpy(dtype=np.int64)
