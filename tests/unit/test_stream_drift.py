"""The stream job's drift rows (udfs/strategy/drift.py) on the real sample: each window's PSI is
the one ``bookstream model drift`` computes (jobs/drift.py: :func:`udfs.research.drift.psi` of
:func:`udfs.strategy.model.feature_vector` over the rows of ``[from, to)``) for the same
instrument and window, bit for bit; windows tile exchange time and hold every row once, also
on the Binance capture whose feature rows arrive out of exchange-time order; the alert is the
lake command's threshold; a new live model starts a new window."""

from __future__ import annotations

import json
import math
import pickle
from collections import defaultdict
from dataclasses import replace
from functools import cache
from itertools import islice, pairwise
from pathlib import Path

import pytest

from udfs.config import PROJECT_ROOT, Config, load_config
from udfs.market.adapters.binance import BinanceAdapter
from udfs.market.adapters.lobster import iter_lobster_events
from udfs.market.adapters.sources import SAMPLE_BINANCE, SAMPLE_LOBSTER
from udfs.pipeline import RecordSource, process_record
from udfs.research.drift import DriftReference, psi
from udfs.schema import DriftRow, L2Event, decode_row, encode_event, encode_row
from udfs.strategy.drift import DriftMonitor, DriftWindow
from udfs.strategy.model import feature_vector
from udfs.strategy.registry import Registry
from udfs.strategy.trading import Trader

EVERY = 120
V1, V2 = "models/book_lr_v1.onnx", "models/book_lr_v2.onnx"


@cache
def _events() -> tuple[L2Event, ...]:
    lob = list(iter_lobster_events(*SAMPLE_LOBSTER))
    # feed order (the Binance capture's feature rows go back in exchange time 3 times here)
    btc = list(islice(BinanceAdapter(list(SAMPLE_BINANCE)), 18_000))  # parse no further
    return tuple(lob + btc)


def _cfg(**strategy: object) -> Config:
    base = Config()
    return replace(base, strategy=replace(base.strategy, drift_every_rows=EVERY, **strategy))


def _run(cfg: Config, trader: Trader, events, states=None) -> tuple[dict, list[dict], list]:
    states = {} if states is None else states
    rows: list[dict] = []
    drift: list[DriftRow] = []
    for ev in events:
        state, res = process_record(
            states.get(ev.instrument),
            ev.instrument,
            encode_event(ev),
            RecordSource("t", 0, 0),
            cfg.features,
            cfg.flink.out_of_orderness_ms,
            trader,
        )
        states[ev.instrument] = state
        rows += res.features
        drift += res.drift
    return states, rows, drift


@pytest.fixture(scope="module")
def sample_run() -> tuple[Trader, list[dict], list[DriftRow]]:
    cfg = _cfg()
    trader = Trader(cfg, Trader.load(cfg).model)
    _, rows, drift = _run(cfg, trader, _events())
    return trader, rows, drift


def _windows(drift: list[DriftRow]) -> dict[tuple, list[DriftRow]]:
    out: dict[tuple, list[DriftRow]] = defaultdict(list)
    for d in drift:
        out[(d.instrument, d.model, d.window_from_ns, d.window_to_ns)].append(d)
    return out


def test_each_windows_psi_is_the_lake_commands_for_its_rows(sample_run) -> None:
    _trader, rows, drift = sample_run
    card = json.loads((PROJECT_ROOT / "models" / "book_lr_v1.json").read_text())
    features = card["features"]
    refs = {f: DriftReference.from_json(card["drift_reference"][f]) for f in features}
    windows = _windows(drift)
    assert {i for i, *_ in windows} == {"AAPL.XNAS", "BTCUSDT.BINANCE_USDM"}
    assert len(windows) >= 10
    for (instrument, model, start, end), per_feature in windows.items():
        assert model == "book_lr_v1" and [d.feature for d in per_feature] == features
        # what jobs/drift.py does over the lake's rows of [start, end) of this instrument
        mine = [r for r in rows if r["instrument"] == instrument and start <= r["ts_event"] < end]
        assert {d.rows for d in per_feature} == {len(mine)} and len(mine) >= EVERY
        vectors = [feature_vector(r, features, model) for r in mine]
        for j, d in enumerate(per_feature):
            want = psi(refs[d.feature], [v[j] for v in vectors])
            assert d.psi == want, (instrument, start, d.feature)  # the same float
            assert d.threshold == Config().strategy.drift_psi_alert
            assert d.alert == (want > d.threshold)
            assert d.model_version == "1"


def test_windows_tile_exchange_time_and_hold_every_row_once(sample_run) -> None:
    _, rows, drift = sample_run
    by_inst: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for instrument, _m, start, end in _windows(drift):
        by_inst[instrument].append((start, end, 0))
    for instrument, spans in by_inst.items():
        spans.sort()
        ts = sorted(r["ts_event"] for r in rows if r["instrument"] == instrument)
        assert spans[0][0] == ts[0]  # the first window starts at the first row
        for (_, end, _), (start, _, _) in pairwise(spans):
            assert start == end  # no gap, no overlap
        covered = sum(1 for t in ts if spans[0][0] <= t < spans[-1][1])
        assert covered == sum(
            w[0].rows for (i, *_), w in _windows(drift).items() if i == instrument
        )
    # the Binance capture's feature rows do arrive out of exchange-time order
    btc = [r["ts_event"] for r in rows if r["instrument"].startswith("BTC")]
    assert any(b < a for a, b in pairwise(btc))


def test_drift_rows_round_trip_as_json(sample_run) -> None:
    _, _, drift = sample_run
    for d in drift[:20]:
        text = encode_row(d)
        assert json.loads(text)["alert"] in (True, False)
        assert decode_row(DriftRow, text) == d


def test_an_alert_is_the_lake_commands_threshold(sample_run) -> None:
    trader, rows, drift = sample_run
    values = sorted(d.psi for d in drift if d.psi is not None)
    bound = values[len(values) // 2]  # about half of the rows above it
    live = trader.drift
    assert live is not None and live.threshold == Config().strategy.drift_psi_alert
    monitor = DriftMonitor(live.model, live.version, live.features, live.references, EVERY, bound)
    window, newest, alerted = DriftWindow(), 0, []
    for row in rows:
        if row["instrument"] == "AAPL.XNAS":
            newest = max(newest, row["ts_event"])
            alerted += monitor.on_row(window, "AAPL.XNAS", row, newest - 2_000_000_000)
    assert alerted and {d.threshold for d in alerted} == {bound}
    assert any(d.alert for d in alerted) and not all(d.alert for d in alerted)
    for d in alerted:
        assert d.alert == (d.psi is not None and d.psi > bound)


def test_off_without_a_reference_or_with_zero_rows() -> None:
    cfg = _cfg()
    model = Trader.load(cfg).model
    assert model is not None
    assert DriftMonitor.of_model(model.metadata, 0, 0.25) is None
    bare = {k: v for k, v in model.metadata.items() if k != "drift_reference"}
    assert DriftMonitor.of_model(bare, EVERY, 0.25) is None
    off = replace(cfg, strategy=replace(cfg.strategy, drift_every_rows=0))
    assert Trader(off, model).drift is None


@pytest.mark.slow
def test_a_promoted_model_starts_its_own_window_and_state_survives_a_checkpoint(
    tmp_path: Path,
) -> None:
    """Stopped halfway (keyed state pickled, as a checkpoint holds it), restarted: with the
    same live model the drift rows are the uninterrupted run's; with v2 promoted, v1's open
    window is dropped and v2's windows start at the first row after the restore."""
    events = [e for e in _events() if e.instrument == "AAPL.XNAS"]
    cut = len(events) // 2
    while not events[cut - 1].is_last:
        cut += 1

    def trader(reg: Registry) -> Trader:
        path = tmp_path / f"registry-{len(list(tmp_path.iterdir()))}.json"
        reg.save(path)
        env = {
            "BOOKSTREAM_STRATEGY_REGISTRY_PATH": str(path),
            "BOOKSTREAM_STRATEGY_DRIFT_EVERY_ROWS": str(EVERY),
        }
        return Trader.load(load_config(env=env))

    cfg = _cfg()
    reg = Registry(live=V1, canary=V2)
    _, _, whole = _run(cfg, trader(reg), events)
    states, _, first = _run(cfg, trader(reg), events[:cut])
    restored = pickle.loads(pickle.dumps(states))
    _, _, same = _run(cfg, trader(reg), events[cut:], pickle.loads(pickle.dumps(states)))
    assert first + same == whole

    promoted = trader(reg.with_canary(V2, 0.5, "t").promote("book_lr_v2", "u"))
    _, after_rows, after = _run(cfg, promoted, events[cut:], restored)
    assert after and {d.model for d in after} == {"book_lr_v2"}
    assert {d.model_version for d in after} == {"2"}
    assert min(d.window_from_ns for d in after) == after_rows[0]["ts_event"]
    v2 = json.loads((PROJECT_ROOT / "models" / "book_lr_v2.json").read_text())["features"]
    assert [d.feature for d in after[: len(v2)]] == v2
    assert not math.isnan(sum(d.psi or 0.0 for d in after))
