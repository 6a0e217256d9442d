"""Tests of udfs.strategy.model and models/train_model.py on the shipped sample's feature rows: the
stream
path (score_one row by row) equals batch onnxruntime scoring, a numpy logistic function built
from the coefficients stored in the ONNX graph, and scikit-learn's predict_proba of a model
retrained identically; pickling; feature order; signals; and that the committed model files are
exactly what the training script produces from the sample."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from udfs.config import StrategyConfig
from udfs.market.adapters.sources import Source
from udfs.strategy.model import (
    MissingFeatureError,
    ModelState,
    OnnxModel,
    feature_vector,
    model_direction,
    model_signal,
)

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
V1, V2 = MODELS / "book_lr_v1.onnx", MODELS / "book_lr_v2.onnx"
TOL = 1e-6


@pytest.fixture(scope="module")
def rows_by_instrument(sample_feature_rows) -> dict[str, list[dict]]:
    return sample_feature_rows


@pytest.fixture(scope="module")
def rows(rows_by_instrument) -> list[dict]:
    return [r for inst in sorted(rows_by_instrument) for r in rows_by_instrument[inst]]


@pytest.fixture(params=[V1, V2], ids=["v1", "v2"])
def model(request) -> OnnxModel:
    return OnnxModel.load(request.param)


def _graph_logistic(path: Path, x: np.ndarray) -> np.ndarray:
    """P(class 1) = 1 / (1 + exp(-(w1 . x + b1))) with w1, b1 read from the ONNX graph's
    LinearClassifier node (float64 arithmetic on the float32 inputs)."""
    graph = onnx.load(str(path)).graph
    (node,) = [n for n in graph.node if n.op_type == "LinearClassifier"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["post_transform"] == b"LOGISTIC"
    assert list(attrs["classlabels_ints"]) == [0, 1]
    coef = np.asarray(attrs["coefficients"], dtype=np.float64).reshape(2, -1)
    intercept = np.asarray(attrs["intercepts"], dtype=np.float64)
    z = x.astype(np.float64) @ coef[1] + intercept[1]
    return 1.0 / (1.0 + np.exp(-z))


# ---------------------------------------------------------------------------------------------
# scoring parity


def test_stream_equals_batch_equals_graph_numpy(model, rows):
    path = MODELS / f"{model.name}.onnx"
    stream = np.array([model.score_one(r) for r in rows])
    batch = model.score(rows)
    x = model.matrix(rows)
    assert x.dtype == np.float32 and x.shape == (len(rows), len(model.features))
    # an independent onnxruntime session straight from the file
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (offline,) = sess.run(["probabilities"], {"features": x})
    offline = offline[:, 1].astype(np.float64)
    numpy_p = _graph_logistic(path, x)
    assert len(rows) > 5000
    assert np.max(np.abs(stream - batch)) < TOL
    assert np.max(np.abs(batch - offline)) < TOL
    assert np.max(np.abs(batch - numpy_p)) < TOL
    # the scores actually spread around 0.5 (a constant model would pass the above)
    assert batch.min() < 0.3 and batch.max() > 0.7


def test_stream_scores_are_the_single_row_runs_bits(model, rows):
    """:meth:`OnnxModel.score_one` fills one preallocated ``[1, F]`` input and calls the
    session's binding: every score is bit for bit the public API's single-row run on a fresh
    array (what the stream did before), and each input exactly :func:`feature_vector`'s."""
    sess = ort.InferenceSession(
        str(MODELS / f"{model.name}.onnx"), providers=["CPUExecutionProvider"]
    )
    for r in rows:
        x = np.asarray([feature_vector(r, model.features, model.name)], dtype=np.float32)
        assert model.vector(r).tobytes() == x[0].tobytes()
        (proba,) = sess.run(["probabilities"], {"features": x})
        assert model.score_one(r) == float(np.asarray(proba, dtype=np.float64)[0, 1])
    assert model._row_input is not None  # prepared once, dropped when pickled
    assert pickle.loads(pickle.dumps(model))._row_input is None


@pytest.mark.xfail(
    strict=True,
    reason="onnxruntime's batch kernel (N >= 2 rows) and its single-row kernel differ in the last "
    "float32 bit on ~15% of the sample's rows (measured: 771 of 5,297 for v1, 875 for v2; 1 ulp, "
    "no direction changed), so the stream scores row by row: a signal's score is written as it "
    "is. Strict: if this passes one day, batched scoring (one session.run per batch) is safe.",
)
def test_batched_scores_equal_the_streams_row_by_row_scores_bit_for_bit(model, rows):
    """What scoring a micro-batch's feature rows in one ``session.run`` would need: every
    score exactly the stream's (:meth:`OnnxModel.score_one`), whatever the batch size."""
    stream = np.array([model.score_one(r) for r in rows])
    x = model.matrix(rows)
    for size in (2, 7, 1000, len(rows)):
        batched = np.concatenate(
            [model.score_matrix(x[i : i + size]) for i in range(0, len(x), size)]
        )
        assert batched.tobytes() == stream.tobytes(), size


@pytest.mark.slow  # retrains on the whole sample
def test_onnx_equals_sklearn_retrained_identically(model, rows_by_instrument, rows, train_model):
    meta = model.metadata
    horizon = meta["label"]["horizon_rows"]
    labelled = train_model.label_rows(rows_by_instrument, horizon)
    x, y = train_model.design(labelled, tuple(meta["features"]))
    assert len(y) == meta["rows"]
    clf = train_model.fit(x, y, meta["model"]["C"])
    np.testing.assert_allclose(clf.coef_[0], meta["model"]["coef"], atol=1e-8)
    x_all = model.matrix(rows)
    sk = clf.predict_proba(x_all.astype(np.float64))[:, 1]
    assert np.max(np.abs(model.score(rows) - sk)) < TOL


@pytest.mark.slow  # retrains both models on the whole sample
def test_committed_models_are_reproducible_from_the_sample(tmp_path, train_model):
    """models/*.onnx + *.json are byte for byte what train_model.py writes from data/ alone."""
    train_model.train_all(Source.sample(), tmp_path)
    for name in ("book_lr_v1", "book_lr_v2"):
        for ext in (".onnx", ".json"):
            assert (tmp_path / f"{name}{ext}").read_bytes() == (
                MODELS / f"{name}{ext}"
            ).read_bytes(), f"{name}{ext}"


# ---------------------------------------------------------------------------------------------
# metadata


def test_metadata(rows_by_instrument):
    m1, m2 = OnnxModel.load(V1), OnnxModel.load(V2)
    assert (m1.name, m1.version, m2.name, m2.version) == ("book_lr_v1", "1", "book_lr_v2", "2")
    assert m1.metadata["role"] == "traded" and m2.metadata["role"] == "shadow"
    assert m1.features != m2.features
    for m in (m1, m2):
        meta = m.metadata
        assert V1.stat().st_size < 4096 and V2.stat().st_size < 4096
        assert meta["input_name"] == "features"
        assert meta["label"]["horizon_rows"] > 0 and "mid" in meta["label"]["definition"]
        assert 0.5 < meta["threshold"] < 1
        win = meta["training_window"]
        all_ts = [r["ts_event"] for rs in rows_by_instrument.values() for r in rs]
        assert min(all_ts) <= win["first_ts_event"] < win["last_ts_event"] <= max(all_ts)
        for src in meta["sources"]:
            path = ROOT / src["path"]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == src["sha256"]
        train = meta["metrics"]["train"]
        assert train["rows"] == meta["rows"] == sum(meta["rows_per_instrument"].values())
        assert train["auc"] > 0.6 and train["accuracy"] > 0.6
        assert meta["metrics"]["holdout"]["test"]["rows"] > 100
        # the ONNX file agrees with the coefficients recorded in the metadata
        x = np.eye(len(m.features), dtype=np.float32)
        z = np.asarray(meta["model"]["coef"]) + meta["model"]["intercept"]
        np.testing.assert_allclose(m.score_matrix(x), 1 / (1 + np.exp(-z)), atol=TOL)


def test_load_needs_the_json(tmp_path):
    (tmp_path / "m.onnx").write_bytes(V1.read_bytes())
    with pytest.raises(FileNotFoundError, match=r"m\.json"):
        OnnxModel.load(tmp_path / "m.onnx")
    meta = json.loads(V1.with_suffix(".json").read_text())
    meta["features"] = meta["features"][:-1]  # one feature fewer than the graph's input
    (tmp_path / "m.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="input width"):
        _ = OnnxModel.load(tmp_path / "m.onnx").session  # checked when the session starts


# ---------------------------------------------------------------------------------------------
# feature order and missing features


def test_vector_follows_metadata_order(rows):
    r = rows[123]
    m = OnnxModel.load(V1)
    expected = [
        r["imbalance_1"],
        r["imbalance_2"],
        r["imbalance_3"],
        (r["microprice"] - r["mid"]) / r["spread"],
        max(-1.0, min(1.0, r["ofi"] / (r["bid_depth"] + r["ask_depth"]))),
        float(np.sign(r["trade_signed_volume"])),
    ]
    assert list(m.features) == [
        "imbalance_1",
        "imbalance_2",
        "imbalance_3",
        "microprice_dev",
        "ofi_norm",
        "trade_sign",
    ]
    np.testing.assert_array_equal(m.vector(r), np.asarray(expected, dtype=np.float32))
    # the order is the metadata's, not the dict's
    rev = OnnxModel(V1.read_bytes(), {**m.metadata, "features": list(reversed(m.features))})
    np.testing.assert_array_equal(rev.vector(r), m.vector(r)[::-1])
    # a dict with the same values in another key order scores the same
    shuffled = dict(reversed(list(r.items())))
    assert m.score_one(shuffled) == m.score_one(r)


def test_missing_feature_is_named(rows):
    m = OnnxModel.load(V1)
    r = dict(rows[10])
    del r["imbalance_2"]
    with pytest.raises(MissingFeatureError, match="imbalance_2") as exc:
        m.score_one(r)
    assert exc.value.feature == "imbalance_2" and "book_lr_v1" in str(exc.value)
    with pytest.raises(MissingFeatureError, match="imbalance_2"):
        m.score([rows[0], r])
    r = dict(rows[10])
    del r["spread"]  # read by the derived feature microprice_dev
    with pytest.raises(MissingFeatureError) as exc:
        m.vector(r)
    assert exc.value.feature == "spread" and "microprice_dev" in str(exc.value)
    assert isinstance(exc.value, KeyError)
    with pytest.raises(MissingFeatureError, match="no_such"):
        feature_vector(rows[0], ["imbalance_1", "no_such"])


# ---------------------------------------------------------------------------------------------
# pickling


def test_pickle_roundtrip_scores_the_same(model, rows):
    sample = rows[::50]
    before = model.score(sample)
    assert model._session is not None  # session created by the first score
    blob = pickle.dumps(model)
    assert len(blob) < 16_384
    back = pickle.loads(blob)
    assert back._session is None  # dropped in __getstate__, recreated lazily
    assert model._session is not None  # pickling did not disturb the original
    np.testing.assert_array_equal(back.score(sample), before)
    assert back.features == model.features and back.version == model.version
    # a never-used model pickles too, and the copy scores without the files
    fresh = pickle.loads(pickle.dumps(OnnxModel.load(MODELS / f"{model.name}.onnx")))
    # (one row vs a batch may differ in the last float32 bit: onnxruntime vectorises batches)
    assert fresh.score_one(sample[3]) == pytest.approx(before[3], abs=TOL)


# ---------------------------------------------------------------------------------------------
# model signals


def test_model_direction():
    assert model_direction(0.56, 0.55) == 1
    assert model_direction(0.55, 0.55) == 0
    assert model_direction(0.45, 0.55) == 0
    assert model_direction(0.4499, 0.55) == -1


@pytest.mark.parametrize("traded", [True, False])
def test_model_signal_change_only(model, rows_by_instrument, traded):
    cfg = StrategyConfig()
    for inst, rs in rows_by_instrument.items():
        state = ModelState()
        sigs = []
        for r in rs:
            s = model_signal(model, state, r, cfg, traded)
            assert state.last_score == model.score_one(r)
            if s is not None:
                sigs.append(s)
        assert len(sigs) == state.changes > 0 and state.rows == len(rs)
        scores = model.score(rs)
        expected_dirs = [model_direction(p, cfg.model_threshold) for p in scores]
        changes = sum(a != b for a, b in zip([0, *expected_dirs], expected_dirs, strict=False))
        assert len(sigs) == changes
        prev = 0
        for s in sigs:
            assert s.direction != prev
            prev = s.direction
            assert s.instrument == inst
            assert s.strategy == f"onnx:{model.name}"
            assert s.model_version == model.version
            assert s.traded is traded
            assert model_direction(s.score, cfg.model_threshold) == s.direction
        assert state.direction == expected_dirs[-1]
