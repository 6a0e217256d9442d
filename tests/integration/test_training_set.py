"""Point-in-time training sets (issue 12 §3) through Feast's ``get_historical_features`` on
the demo's lake (``demo_history``) with conftest's applied repository (``feast_repo``):
``bookstream features training-set`` as a user runs it, then the same request in process.

Every value of every entity row is checked against a brute-force join on the lake's
``features`` table at the recorded snapshot: as known at the entity row's time, no feature
row whose availability time is after it; rows with no value inside a view's TTL are kept and
counted; the same request gives the same bytes, whether joined in one call or in event-time
chunks; the exchange-time join differs exactly where it uses a row that was not yet
available."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from it_helpers import run_cli

from jobs.feast_store import open_store
from jobs.lake import open_catalog
from jobs.training_set import TrainingSetRequest, build_training_set, parse_time, read_metadata

FROM, TO, STEP_MS = "2012-06-21T13:30:00", "2012-06-21T13:31:00", 100
CHUNK_S = 7
"""9 chunks over the minute, none aligned with the minute's ends; the 200 ms TTL view
(``recent_mid``) and the 10 min ones see chunk edges inside and outside their TTL"""
VIEWS = ("book_features", "window_features", "recent_mid")


@dataclass(frozen=True)
class Built:
    as_known_at: Path
    again: Path
    """the same request in process, in one ``get_historical_features`` call (``chunk_s=0``)"""
    chunked: Path
    """the same request in process, in chunks of ``CHUNK_S``"""
    event_time: Path
    lake: dict[str, list[dict[str, Any]]]
    """the lake's feature rows at the recorded snapshot, per instrument, in stream order"""
    snapshot_id: int


@pytest.fixture(scope="module")
def built(feast_repo, tmp_path_factory) -> Built:
    out = tmp_path_factory.mktemp("training")
    args = ["features", "training-set", "--from", FROM, "--to", TO, "--step-ms", str(STEP_MS)]
    args += [a for v in VIEWS for a in ("--view", v)]
    summary, _proc, _elapsed = run_cli(
        [*args, "--out", str(out / "a.parquet")],
        feast_repo.env,
        timeout_s=600,
    )
    assert summary["mode"] == "as_known_at" and summary["rows"] > 0, summary
    store = open_store(feast_repo.cfg)
    for mode, name, chunk_s in (
        ("as_known_at", "b", 0),
        ("as_known_at", "d", CHUNK_S),
        ("event_time", "c", CHUNK_S),
    ):
        request = TrainingSetRequest(
            parse_time(FROM), parse_time(TO), mode=mode, step_ms=STEP_MS, views=VIEWS,
            chunk_s=chunk_s,
        )  # fmt: skip
        build_training_set(feast_repo.cfg, request, out / f"{name}.parquet", store)
    cfg = feast_repo.cfg
    table = open_catalog(cfg).load_table(f"{cfg.lake.namespace}.features")
    snapshot_id = summary["lake_snapshot_id"]
    rows = table.scan(snapshot_id=snapshot_id).to_arrow()
    rows = rows.sort_by(
        [("instrument", "ascending"), ("_partition", "ascending"), ("_offset", "ascending")]
    )
    lake: dict[str, list[dict[str, Any]]] = {}
    for row in rows.to_pylist():
        lake.setdefault(row["instrument"], []).append(row)
    return Built(
        out / "a.parquet", out / "b.parquet", out / "d.parquet", out / "c.parquet", lake,
        snapshot_id,
    )  # fmt: skip


def _brute(rows: list[dict], t_ns: int, ttl_ns: int, mode: str) -> dict | None:
    """The row a point-in-time join must pick for an entity row at ``t_ns``: the newest by
    the join's timestamp (availability rounded up to Feast's microseconds, or exchange time
    rounded down, as the lake's ``event_time``) inside ``[t - ttl, t]``; of rows with the
    same timestamp the last in stream order."""
    t_us, ttl_us = t_ns // 1000, ttl_ns // 1000
    best, best_us = None, -1
    for row in rows:
        ts_us = -(-row["ts_avail"] // 1000) if mode == "as_known_at" else row["ts_event"] // 1000
        if t_us - ttl_us <= ts_us <= t_us and ts_us >= best_us:
            best, best_us = row, ts_us
    return best


def _check_against_lake(path: Path, built: Built, mode: str) -> dict[str, int]:
    table = pq.read_table(path)
    meta = read_metadata(path)
    assert meta["mode"] == mode and meta["lake_snapshot_id"] == built.snapshot_id
    views = {v["name"]: v for v in meta["feature_views"]}
    assert list(views) == list(VIEWS)
    rows = table.to_pylist()
    assert len(rows) == meta["rows"]
    missing = dict.fromkeys(VIEWS, 0)
    for view_name, view in views.items():
        ttl_ns = round(view["ttl_s"] * 1e9)
        for entity in rows:
            want = _brute(built.lake[entity["instrument"]], entity["entity_ts_ns"], ttl_ns, mode)
            got = {f: entity[f"{view_name}__{f}"] for f in view["features"]}
            where = f"{view_name} at {entity['instrument']} {entity['entity_ts_ns']}"
            if want is None:
                missing[view_name] += 1
                assert all(v is None for v in got.values()), f"{where}: a value outside the TTL"
                continue
            for name, value in got.items():
                # the same double through the lake, Feast's join and Parquet: bit-exact
                assert value == want[name], f"{where}: {name} {value!r} != lake {want[name]!r}"
    assert meta["missing"] == missing
    return missing


def test_entity_rows_are_the_grid_and_every_one_is_kept(built: Built) -> None:
    table = pq.read_table(built.as_known_at)
    meta = read_metadata(built.as_known_at)
    assert meta["instruments"] == ["AAPL.XNAS"]  # the window holds the LOBSTER sample only
    ts = table["entity_ts_ns"].to_pylist()
    step = STEP_MS * 1_000_000
    aapl = built.lake["AAPL.XNAS"]
    first = min(r["ts_event"] for r in aapl)
    last = max(r["ts_event"] for r in aapl)
    assert ts == list(range(-(-first // step) * step, last + 1, step))
    assert [t.value for t in table["event_timestamp"].to_pandas()] == ts
    assert meta["step_ms"] == STEP_MS and meta["entity_ts_ns"] == [ts[0], ts[-1]]
    for view in meta["feature_views"]:
        assert view["timestamp_field"] == "available_time"
        assert view["version_number"] == 0 and len(view["spec_sha256"]) == 64


def test_as_known_at_uses_no_value_from_after_the_cut_off(built: Built) -> None:
    missing = _check_against_lake(built.as_known_at, built, "as_known_at")
    # the short-TTL view has entity rows without a value: counted, reported, kept (nulls)
    assert missing["recent_mid"] > 0 and missing["book_features"] < missing["recent_mid"]
    table = pq.read_table(built.as_known_at)
    for view in ("book_features", "recent_mid"):
        for t, avail in zip(
            table["entity_ts_ns"].to_pylist(), table[f"{view}__ts_avail"].to_pylist(), strict=True
        ):
            assert avail is None or avail <= t, f"{view}: available at {avail}, used at {t}"


def test_the_same_request_gives_the_same_bytes(built: Built) -> None:
    # one from the CLI, one in process: same lake snapshot, same request
    assert built.as_known_at.read_bytes() == built.again.read_bytes()


def test_chunked_build_equals_the_one_call_build(built: Built) -> None:
    # 9 event-time chunks, each joined on only the feature rows it can use, concatenated:
    # the bytes of one get_historical_features call over the whole minute
    assert built.chunked.read_bytes() == built.again.read_bytes()


def test_event_time_joins_rows_not_yet_available(built: Built) -> None:
    _check_against_lake(built.event_time, built, "event_time")
    known = pq.read_table(built.as_known_at).to_pylist()
    naive = pq.read_table(built.event_time).to_pylist()
    assert [r["entity_ts_ns"] for r in known] == [r["entity_ts_ns"] for r in naive]
    ahead = 0
    for k, n in zip(known, naive, strict=True):
        t = n["entity_ts_ns"]
        if n["book_features__ts_avail"] is not None and n["book_features__ts_avail"] > t:
            # the exchange-time join used a row the live path did not have yet at t
            ahead += 1
            assert k["book_features__ts_event"] != n["book_features__ts_event"], t
        elif n["book_features__ts_event"] is not None:
            # where the row was available, both joins agree on it (constant latencies)
            assert k["book_features__ts_event"] == n["book_features__ts_event"], t
    assert ahead > 0


def test_train_builds_labels_validates_and_exports_a_model_the_stream_loads(
    feast_repo, built: Built, tmp_path: Path
) -> None:
    import json

    import numpy as np

    from jobs.train import MODEL_FEATURES, TRIALS, TrainRequest, train
    from udfs.strategy.model import OnnxModel

    request = TrainRequest(parse_time(FROM), parse_time(TO), step_ms=STEP_MS, out_dir=tmp_path)
    result = train(feast_repo.cfg, request, open_store(feast_repo.cfg))
    assert {"rows", "features", "folds", "deflated_sharpe", "model", "onnx_equals_offline"} <= set(
        result
    )
    assert result["onnx_equals_offline"] is True
    assert result["features"] == len(MODEL_FEATURES) and result["folds"] == request.folds
    assert 0.0 <= result["deflated_sharpe"] <= 1.0
    card = json.loads((tmp_path / "book_lr_feast.json").read_text())
    assert card["features"] == list(MODEL_FEATURES)
    assert card["lake"]["snapshot_id"] == built.snapshot_id
    assert card["training_set"]["mode"] == "as_known_at"
    assert [v["name"] for v in card["training_set"]["feature_views"]] == [
        "book_features",
        "window_features",
    ]
    counts = card["label"]["counts"]
    dropped = sum(counts[k] for k in counts if k != "entity_rows")
    assert card["rows"] == result["rows"] == counts["entity_rows"] - dropped > 0
    assert [t["C"] for t in card["validation"]["trials"]] == list(TRIALS)
    for trial in card["validation"]["trials"]:
        assert len(trial["folds"]) == request.folds
        assert sum(f["rows"] for f in trial["folds"]) == card["rows"]  # each sample tested once
    assert card["deflated_sharpe"]["n_trials"] == len(TRIALS)
    # the stream's own loader takes the model and its card as they are
    model = OnnxModel.load(result["model"])
    assert model.features == MODEL_FEATURES and model.name == "book_lr_feast"
    p = model.score_matrix(np.zeros((1, len(MODEL_FEATURES)), np.float32))
    z = card["model"]["intercept"]
    assert abs(float(p[0]) - 1 / (1 + np.exp(-z))) < 1e-6
