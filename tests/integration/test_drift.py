"""``bookstream model drift`` on the demo's lake (``demo_history``): the population stability
index of the live model's features between two windows of the stream, recorded in the lake's
``model_drift`` table, an alert (exit 1) above ``strategy.drift_psi_alert``; and the stream
job's own drift rows (lake table ``drift``) equal to the command's over the same windows."""

from __future__ import annotations

import json
import os
import subprocess

import pyarrow.compute as pc
import pytest
from it_helpers import BOOKSTREAM

from jobs.drift import DRIFT_TABLE, check_drift
from jobs.lake import open_catalog
from jobs.sql import query_rows
from udfs.config import PROJECT_ROOT
from udfs.research.drift import psi, reference_of
from udfs.strategy.model import feature_vector

pytestmark = pytest.mark.integration

MODEL = "book_lr_v1"


def _aapl_windows(cfg) -> tuple[tuple[int, int], tuple[int, int], list[dict]]:
    table = open_catalog(cfg).load_table(f"{cfg.lake.namespace}.features").scan().to_arrow()
    aapl = table.filter(pc.starts_with(table["instrument"], "AAPL")).sort_by("ts_event")
    ts = aapl["ts_event"].to_pylist()
    assert len(ts) > 200, "the demo wrote too few AAPL feature rows"
    mid = ts[len(ts) // 2]
    return (ts[0], mid), (mid, ts[-1] + 1), aapl.to_pylist()


def test_drift_between_two_windows_is_recorded_and_alerts(demo_history) -> None:
    cfg = demo_history.cfg
    first, second, rows = _aapl_windows(cfg)
    card = json.loads((PROJECT_ROOT / "models" / f"{MODEL}.json").read_text())
    features = card["features"]

    same = check_drift(cfg, MODEL, *first, reference_window=first)
    assert same["alert"] is False and set(same["psi"]) == set(features)
    assert all(v == pytest.approx(0.0, abs=1e-9) for v in same["psi"].values()), same

    # the second half against the first, recomputed here from the lake's rows
    later = check_drift(cfg, MODEL, *second, reference_window=first)
    in_first = [r for r in rows if first[0] <= r["ts_event"] < first[1]]
    in_second = [r for r in rows if second[0] <= r["ts_event"] < second[1]]
    for j, f in enumerate(features):
        ref = reference_of([feature_vector(r, features, MODEL)[j] for r in in_first])
        want = psi(ref, [feature_vector(r, features, MODEL)[j] for r in in_second])
        assert later["psi"][f] == pytest.approx(want, abs=1e-6), f
    assert later["rows"] == len(in_second) and max(later["psi"].values()) > 0

    # an alert: the bound below the largest PSI; the command exits 1 and the lake keeps it
    bound = max(later["psi"].values()) / 2
    env = {**os.environ, **demo_history.env, "BOOKSTREAM_STRATEGY_DRIFT_PSI_ALERT": str(bound)}
    proc = subprocess.run(
        [
            str(BOOKSTREAM),
            "model",
            "drift",
            MODEL,
            "--from",
            str(second[0]),
            "--to",
            str(second[1]),
            "--reference-from",
            str(first[0]),
            "--reference-to",
            str(first[1]),
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    alerted = json.loads(proc.stdout.splitlines()[-1])
    assert alerted["alert"] is True
    assert alerted["drifted"] == sorted(f for f, v in later["psi"].items() if v > bound)
    stored = open_catalog(cfg).load_table(f"{cfg.lake.namespace}.{DRIFT_TABLE}").scan().to_arrow()
    assert stored.num_rows == 3 * len(features)  # one row per feature and check
    last = stored.filter(pc.field("checked_at_ns") == pc.max(stored["checked_at_ns"]).as_py())
    assert last.num_rows == len(features) and set(last["threshold"].to_pylist()) == {bound}
    flagged = last.filter(pc.field("alert")).column("feature").to_pylist()
    assert sorted(flagged) == alerted["drifted"]


def test_the_stream_jobs_drift_rows_are_the_lake_commands_psi(demo_history) -> None:
    """The demo's stream job wrote the live model's drift rows (drift topic -> history sink ->
    lake table ``drift``, read here with ClickHouse SQL as an analyst would); ``bookstream model
    drift`` over each row's window and instrument stores the same PSI per feature, bit for bit,
    and the same alert under the same threshold setting."""
    cfg = demo_history.cfg
    stream = query_rows(
        cfg,
        "SELECT instrument, model, model_version, feature, psi, threshold, alert, rows, "
        "window_from_ns, window_to_ns FROM bookstream.drift "
        "ORDER BY instrument, window_from_ns, feature",
    )
    live = json.loads((PROJECT_ROOT / "models" / f"{MODEL}.json").read_text())
    windows: dict[tuple, dict[str, dict]] = {}
    for r in stream:
        windows.setdefault(
            (r["instrument"], r["model"], r["window_from_ns"], r["window_to_ns"]), {}
        )[r["feature"]] = r
    assert windows, "the demo's stream job wrote no drift rows"
    every = cfg.strategy.drift_every_rows
    for (instrument, model, start, end), per_feature in windows.items():
        assert model == MODEL and set(per_feature) == set(live["features"])
        assert {r["model_version"] for r in per_feature.values()} == {str(live["version"])}
        lake = check_drift(cfg, model, start, end, instrument=instrument)
        assert lake["rows"] == per_feature[live["features"][0]]["rows"] >= every
        stored = open_catalog(cfg).load_table(f"{cfg.lake.namespace}.{DRIFT_TABLE}").scan()
        table = stored.to_arrow()
        # this check's rows: its instrument and window (not the newest wall-clock stamp: a
        # clock step would pick another check's)
        check = table.filter(
            (pc.field("instrument") == instrument)
            & (pc.field("window_from_ns") == start)
            & (pc.field("window_to_ns") == end)
        )
        assert check.num_rows == len(per_feature)
        for row in check.to_pylist():
            mine = per_feature[row["feature"]]
            why = (instrument, start, end, mine, row)
            assert mine["psi"] == row["psi"], why
            assert (mine["threshold"], mine["alert"]) == (row["threshold"], row["alert"]), why
