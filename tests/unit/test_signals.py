"""Tests of udfs.strategy.signals: the imbalance rule's hysteresis on hand-made rows and on the
shipped
sample's feature rows, and the stable A/B split."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from udfs.config import StrategyConfig
from udfs.schema import Signal
from udfs.strategy.signals import (
    RULE_STRATEGY,
    RuleState,
    model_traded,
    rule_direction,
    rule_signal,
)

ROOT = Path(__file__).resolve().parents[2]
CFG = StrategyConfig()  # imbalance_3, enter 0.6, exit 0.2


def row(imb: float, micro: str = "=", *, key: str = "imbalance_3", ts: int = 1, **extra) -> dict:
    """A feature dict with mid 100 and microprice above ('+'), below ('-') or at ('=') it."""
    mid = 100.0
    micro_px = {"+": 100.3, "-": 99.7, "=": 100.0}[micro]
    d = {
        "instrument": "TEST.X",
        "ts_event": ts,
        "seq": ts,
        "mid": mid,
        "microprice": micro_px,
        "imbalance_1": 0.0,
        "imbalance_2": 0.0,
        "imbalance_3": 0.0,
    }
    d[key] = imb
    d.update(extra)
    return d


def run(rows: list[dict], cfg: StrategyConfig = CFG) -> tuple[list[int], list[Signal | None]]:
    state = RuleState()
    dirs, sigs = [], []
    for r in rows:
        sigs.append(rule_signal(state, r, cfg))
        dirs.append(state.direction)
    return dirs, sigs


# ---------------------------------------------------------------------------------------------
# hand-made rows


def test_enters_only_with_microprice_agreement():
    # strong bid imbalance, microprice at or below mid: no entry
    assert run([row(0.9, "="), row(0.9, "-")])[0] == [0, 0]
    # strong ask imbalance, microprice at or above mid: no entry
    assert run([row(-0.9, "="), row(-0.9, "+")])[0] == [0, 0]
    # agreement: long / short
    assert run([row(0.61, "+")])[0] == [1]
    assert run([row(-0.61, "-")])[0] == [-1]
    # microprice agreement alone does not enter
    assert run([row(0.59, "+"), row(-0.59, "-")])[0] == [0, 0]


def test_thresholds_are_strict():
    assert run([row(0.6, "+")])[0] == [0]  # I > E, not >=
    # |I| == X holds (flat needs |I| < X)
    assert run([row(0.7, "+"), row(0.2, "-")])[0] == [1, 1]
    assert run([row(0.7, "+"), row(0.1999, "-")])[0] == [1, 0]


def test_hysteresis_holds_between_thresholds_and_exits_below():
    rows = [
        row(0.7, "+", ts=1),  # enter long
        row(0.5, "-", ts=2),  # between the thresholds: hold (microprice irrelevant)
        row(0.25, "-", ts=3),  # still >= X: hold
        row(0.65, "-", ts=4),  # strong but microprice disagrees: hold long, no re-signal
        row(-0.4, "+", ts=5),  # other side, |I| between thresholds: hold
        row(0.1, "+", ts=6),  # |I| < X: flat
        row(0.5, "+", ts=7),  # between thresholds while flat: stays flat
        row(-0.65, "+", ts=8),  # short imbalance without microprice agreement: stays flat
        row(-0.65, "-", ts=9),  # enter short
        row(-0.3, "+", ts=10),  # hold short
        row(0.7, "+", ts=11),  # confirmed long entry: reverse straight to long
        row(-0.19, "-", ts=12),  # flat
    ]
    dirs, sigs = run(rows)
    assert dirs == [1, 1, 1, 1, 1, 0, 0, 0, -1, -1, 1, 0]
    emitted = [(s.ts_event, s.direction) for s in sigs if s is not None]
    assert emitted == [(1, 1), (6, 0), (9, -1), (11, 1), (12, 0)]


def test_signal_fields():
    state = RuleState()
    sig = rule_signal(state, row(0.75, "+", ts=42), CFG)
    assert sig == Signal(
        instrument="TEST.X",
        strategy=RULE_STRATEGY,
        ts_event=42,
        seq=42,
        score=0.75,
        direction=1,
        traded=True,
    )
    assert sig.strategy == "imbalance_v1"
    assert rule_signal(state, row(0.75, "+", ts=43), CFG) is None  # no change, no signal
    assert (state.direction, state.rows, state.changes) == (1, 2, 1)


def test_reads_the_configured_level():
    cfg1 = replace(CFG, imbalance_level=1)
    r = row(0.9, "+", key="imbalance_1")  # imbalance_3 is 0
    assert run([r], cfg1)[0] == [1]
    assert run([r], CFG)[0] == [0]
    cfg5 = replace(CFG, imbalance_level=5)
    with pytest.raises(KeyError, match="imbalance_5"):
        rule_direction(0, r, cfg5)
    with pytest.raises(KeyError, match="microprice"):
        rule_direction(0, {"imbalance_3": 0.9, "mid": 1.0}, CFG)


def test_state_pickles():
    state = RuleState()
    rule_signal(state, row(0.9, "+"), CFG)
    back = pickle.loads(pickle.dumps(state))
    assert back == state and back.direction == 1
    # the unpickled state continues exactly like the original
    assert rule_signal(back, row(0.5, "-"), CFG) is None
    assert rule_signal(back, row(0.0), CFG).direction == 0


# ---------------------------------------------------------------------------------------------
# real sample


@pytest.fixture(scope="module")
def sample_rows(sample_feature_rows) -> dict[str, list[dict]]:
    return sample_feature_rows  # every record through process_record (tests/unit/conftest.py)


def _no_hysteresis_changes(rs: list[dict], cfg: StrategyConfig) -> int:
    """Same entries, but flat whenever not entering (exit threshold = enter threshold)."""
    d = n = 0
    for r in rs:
        imb, mp, m = r["imbalance_3"], r["microprice"], r["mid"]
        nd = (
            1
            if imb > cfg.enter_threshold and mp > m
            else (-1 if imb < -cfg.enter_threshold and mp < m else 0)
        )
        n += nd != d
        d = nd
    return n


def test_sample_changes_far_less_often_than_sign_of_imbalance(sample_rows):
    assert set(sample_rows) == {"AAPL.XNAS", "BTCUSDT.BINANCE_USDM"}
    total_rule = total_sign = total_nohyst = 0
    for inst, rs in sample_rows.items():
        assert len(rs) > 500
        state = RuleState()
        sigs = [s for s in (rule_signal(state, r, CFG) for r in rs) if s is not None]
        # change-only: consecutive signals differ and the count matches the state
        assert len(sigs) == state.changes > 0
        prev = 0
        for s in sigs:
            assert s.direction != prev and s.instrument == inst
            prev = s.direction
        # every entry is backed by the imbalance and the microprice
        by_seq = {r["seq"]: r for r in rs}
        for s in sigs:
            r = by_seq[s.seq]
            if s.direction:
                assert s.direction * r["imbalance_3"] > CFG.enter_threshold
                assert s.direction * (r["microprice"] - r["mid"]) > 0
            else:
                assert abs(r["imbalance_3"]) < CFG.exit_threshold
        sign = np.sign([r["imbalance_3"] for r in rs])
        sign_changes = int((np.diff(sign) != 0).sum())
        nohyst = _no_hysteresis_changes(rs, CFG)
        assert state.changes < sign_changes
        assert state.changes < nohyst
        total_rule += state.changes
        total_sign += sign_changes
        total_nohyst += nohyst
    # measured: rule 66 + 25 = 91, sign(I) 98 + 48 = 146, no hysteresis 122 + 43 = 165
    assert total_rule <= 0.7 * total_sign
    assert total_rule <= 0.6 * total_nohyst


# ---------------------------------------------------------------------------------------------
# A/B split

EXPECTED_AT_HALF = {
    "AAPL.XNAS": True,  # 0.316
    "BTCUSDT.BINANCE_USDM": False,  # 0.581
    "MSFT.XNAS": True,  # 0.390
    "GOOG.XNAS": False,  # 0.802
    "AMZN.XNAS": False,  # 0.933
    "ETHUSDT.BINANCE_USDM": False,  # 0.532
}


def test_ab_split_fixed_partition():
    assert {n: model_traded(n, 0.5) for n in EXPECTED_AT_HALF} == EXPECTED_AT_HALF
    assert model_traded("ETHUSDT.BINANCE_USDM", 0.54)  # 0.532 < 0.54
    assert not model_traded("MSFT.XNAS", 0.38)  # 0.390
    for n in EXPECTED_AT_HALF:
        assert not model_traded(n, 0.0)
        assert model_traded(n, 1.0)


def test_ab_split_stable_across_processes():
    code = (
        "import json, sys; from udfs.strategy.signals import model_traded; "
        "print(json.dumps({n: model_traded(n, 0.5) for n in json.loads(sys.argv[1])}))"
    )
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(list(EXPECTED_AT_HALF))],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(out.stdout) == EXPECTED_AT_HALF


def test_ab_split_follows_the_share():
    names = [f"SYM{i}.VENUE{i % 7}" for i in range(20_000)]
    for share in (0.1, 0.25, 0.5, 0.9):
        got = sum(model_traded(n, share) for n in names) / len(names)
        assert abs(got - share) < 0.015, (share, got)
    # monotone: raising the share only moves instruments to the model
    low = {n for n in names if model_traded(n, 0.3)}
    high = {n for n in names if model_traded(n, 0.6)}
    assert low < high
