"""``bookstream train``: a model from the lake through Feast, labelled, validated without
leakage, exported to ONNX with its model card (issue 12 §5, first point).

1. **Training set**: :func:`jobs.training_set.build_training_set` "as known at" each entity
   row (a grid every ``--step-ms`` per instrument), from the lake's current snapshot.
2. **Entries**: each entity row enters at the newest feature row it knows (its
   ``book_features__ts_event``); consecutive entity rows that know the same row are one entry
   (the first), rows without book features are left out; both counted.
3. **Labels**: triple barrier (:func:`udfs.research.labels.triple_barrier`) on the
   instrument's exact price path from the same lake snapshot (``best_bid + best_ask`` ticks per
   feature row, in exchange time): profit-take and stop-loss at ``--barrier`` times the EWM
   volatility, vertical barrier ``--horizon-ms`` after the entry. ``y = 1`` when the price
   ended up (``label > 0``), 0 when down; samples that ended flat or unresolved are counted
   and left out.
4. **Validation**: purged K-fold (:func:`udfs.research.validation.purged_kfold_splits`, spans
   = label spans, embargo ``--embargo`` samples) for each trial of the regularisation grid
   :data:`TRIALS`; each trial's out-of-sample positions (the stream's threshold rule on its
   probabilities) give a return per sample and a Sharpe ratio; the trial with the best Sharpe
   is selected and its Sharpe deflated for the number of trials
   (:func:`udfs.research.validation.deflated_sharpe_ratio`).
5. **Model**: scikit-learn's logistic regression with the selected C on every sample, as ONNX
   (float32 input ``features``, the features in :data:`MODEL_FEATURES` order, read by the
   stream's own :func:`udfs.strategy.model.feature_vector`), and the model card ``<name>.json``
   beside it: what :class:`udfs.strategy.model.OnnxModel` loads, plus the training window, the
   lake snapshot, the feature views' versions, the validation scores, the deflated Sharpe and
   the hashes of the training set and of the design matrix.
6. ``onnx_equals_offline``: the ONNX model, scored by the stream's :class:`OnnxModel` on every
   training row, gives the trained model's probabilities (within 1e-6: float32 inference) and
   the same side at the threshold.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from jobs.training_set import TrainingSetError, TrainingSetRequest, build_training_set
from udfs.config import PROJECT_ROOT, Config

__all__ = ["MODEL_FEATURES", "TRIALS", "TrainRequest", "train"]

MODEL_FEATURES = ("imbalance_1", "imbalance_2", "imbalance_3", "microprice_dev", "trade_sign")
"""The model's inputs, in order: each is scale-free, so the views' real units (``*_px``,
``*_qty``) give what the stream computes from ticks and lots."""

ROW_KEYS = {
    "imbalance_1": "book_features__imbalance_1",
    "imbalance_2": "book_features__imbalance_2",
    "imbalance_3": "book_features__imbalance_3",
    "microprice": "book_features__microprice_px",
    "mid": "book_features__mid_px",
    "spread": "book_features__spread_px",
    "trade_signed_volume": "window_features__trade_signed_volume_qty",
}
"""Feature-row key the stream's ``feature_vector`` reads -> training-set column."""

TRIALS = (0.01, 0.1, 1.0, 10.0)
"""Inverse regularisation strengths tried (each one a trial of the deflated Sharpe)."""

TOLERANCE = 1e-6
RANDOM_STATE = 0


@dataclass(frozen=True)
class TrainRequest:
    start_ns: int
    end_ns: int
    name: str = "book_lr_feast"
    out_dir: Path = PROJECT_ROOT / "models"
    step_ms: int = 250
    horizon_ms: int = 2000
    barrier: float = 2.0
    volatility_span: int = 50
    folds: int = 5
    embargo: int = 5
    threshold: float = 0.55


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds")


def _price_paths(cfg: Config, snapshot_id: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """instrument -> (ts_event, best_bid + best_ask) of its feature rows at the snapshot,
    in exchange time (stream order among equal times)."""
    from jobs.lake import open_catalog

    table = open_catalog(cfg).load_table(f"{cfg.lake.namespace}.features")
    cols = ("instrument", "ts_event", "best_bid", "best_ask", "_partition", "_offset")
    data = table.scan(snapshot_id=snapshot_id, selected_fields=cols).to_arrow()
    data = data.sort_by(
        [(c, "ascending") for c in ("instrument", "ts_event", "_partition", "_offset")]
    )
    frame = data.to_pandas()
    paths = {}
    for inst, rows in frame.groupby("instrument", sort=True):
        paths[str(inst)] = (
            rows["ts_event"].to_numpy(np.int64),
            (rows["best_bid"] + rows["best_ask"]).to_numpy(np.int64),
        )
    return paths


@dataclass
class Samples:
    rows: list[dict[str, Any]]
    """feature-row dicts for ``feature_vector``"""
    start_ns: np.ndarray
    end_ns: np.ndarray
    ret: np.ndarray
    """return of a long position from entry to exit"""
    y: np.ndarray
    counts: dict[str, int]


def _samples(table: Any, paths: dict, request: TrainRequest) -> Samples:
    from udfs.research.labels import ewm_volatility, triple_barrier

    records = table.to_pylist()  # not pandas: a null would turn the ns columns into floats
    counts = {"entity_rows": len(records), "no_features": 0, "same_entry": 0}
    keys = [*ROW_KEYS.values(), "book_features__ts_event"]
    picked: list[tuple[str, int, dict[str, Any]]] = []
    last_entry: dict[str, int] = {}
    for rec in sorted(records, key=lambda r: (r["instrument"], r["entity_ts_ns"])):
        inst = rec["instrument"]
        if any(rec[k] is None for k in keys):
            counts["no_features"] += 1
            continue
        ts, _px = paths[inst]
        entry = int(np.searchsorted(ts, rec["book_features__ts_event"], "right")) - 1
        if entry <= last_entry.get(inst, -1):
            counts["same_entry"] += 1
            continue
        last_entry[inst] = entry
        row = {key: float(rec[col]) for key, col in ROW_KEYS.items()}
        row["entity_ts_ns"] = rec["entity_ts_ns"]
        picked.append((inst, entry, row))
    starts, ends, rets, labels, rows_out = [], [], [], [], []
    counts.update(unresolved=0, no_volatility=0, flat=0)
    for inst in sorted({p[0] for p in picked}):
        ts, px = paths[inst]
        mine = [p for p in picked if p[0] == inst]
        events = np.asarray([p[1] for p in mine], np.int64)
        tb = triple_barrier(
            ts,
            px,
            events,
            horizon_ns=request.horizon_ms * 1_000_000,
            profit_take=request.barrier,
            stop_loss=request.barrier,
            volatility=ewm_volatility(px, request.volatility_span),
        )
        counts["unresolved"] += tb.unresolved
        counts["no_volatility"] += tb.skipped_no_volatility
        by_event = {p[1]: p[2] for p in mine}
        for k in range(len(tb)):
            if tb.label[k] == 0:
                counts["flat"] += 1
                continue
            rows_out.append(by_event[int(tb.event[k])])
            starts.append(int(tb.start_ns[k]))
            ends.append(int(tb.end_ns[k]))
            rets.append(float(tb.ret[k]))
            labels.append(1 if tb.label[k] > 0 else 0)
    order = np.argsort(np.asarray(starts, np.int64), kind="stable")
    return Samples(
        rows=[rows_out[i] for i in order],
        start_ns=np.asarray(starts, np.int64)[order],
        end_ns=np.asarray(ends, np.int64)[order],
        ret=np.asarray(rets, np.float64)[order],
        y=np.asarray(labels, np.int64)[order],
        counts=counts,
    )


def _fit(x: np.ndarray, y: np.ndarray, c: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, random_state=RANDOM_STATE, max_iter=1000, solver="lbfgs").fit(
        x.astype(np.float64), y
    )


def _positions(p: np.ndarray, threshold: float) -> np.ndarray:
    """The stream's rule (udfs.strategy.model.model_direction): long above the threshold,
    short below 1 - threshold, else flat."""
    return np.where(p > threshold, 1.0, np.where(p < 1.0 - threshold, -1.0, 0.0))


def _scores(y: np.ndarray, p: np.ndarray) -> dict[str, float | int]:
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    out: dict[str, float | int] = {
        "rows": len(y),
        "accuracy": round(float(accuracy_score(y, p > 0.5)), 6),
        "log_loss": round(float(log_loss(y, p, labels=[0, 1])), 6),
    }
    if 0 < y.sum() < len(y):
        out["auc"] = round(float(roc_auc_score(y, p)), 6)
    return out


def _validate(
    x: np.ndarray, s: Samples, request: TrainRequest
) -> tuple[float, list[dict[str, Any]], dict[str, Any]]:
    """Purged K-fold per trial; returns (selected C, trials, the deflated Sharpe record)."""
    from udfs.research.validation import (
        deflated_sharpe_ratio,
        purged_kfold_splits,
        return_moments,
    )

    splits = list(purged_kfold_splits(s.start_ns, s.end_ns, request.folds, request.embargo))
    trials: list[dict[str, Any]] = []
    for c in TRIALS:
        oos = np.full(len(s.y), np.nan)
        folds = []
        for split in splits:
            train_y = s.y[split.train]
            if len(np.unique(train_y)) < 2:
                raise TrainingSetError(
                    f"fold {split.test_folds}: one class only in its training part"
                )
            clf = _fit(x[split.train], train_y, c)
            oos[split.test] = clf.predict_proba(x[split.test].astype(np.float64))[:, 1]
            folds.append(
                {
                    "test_fold": split.test_folds[0],
                    "train_rows": len(split.train),
                    **_scores(s.y[split.test], oos[split.test]),
                }
            )
        returns = _positions(oos, request.threshold) * s.ret
        try:
            sharpe, skew, kurt, n_obs = return_moments(returns)
        except ValueError:  # flat everywhere: no Sharpe ratio
            sharpe, skew, kurt, n_obs = 0.0, 0.0, 3.0, len(returns)
        trials.append(
            {
                "C": c,
                "folds": folds,
                "oos": _scores(s.y, oos),
                "traded_share": round(float(np.mean(returns != 0)), 6),
                "sharpe": sharpe,
                "skewness": skew,
                "kurtosis": kurt,
                "n_obs": n_obs,
            }
        )
    sharpes = [float(t["sharpe"]) for t in trials]
    best = trials[int(np.argmax(sharpes))]  # the first of equal ones
    variance = float(np.var(sharpes, ddof=1))
    dsr = deflated_sharpe_ratio(
        float(best["sharpe"]),
        n_trials=len(trials),
        sharpe_variance=variance,
        n_obs=int(best["n_obs"]),
        skewness=float(best["skewness"]),
        kurtosis=float(best["kurtosis"]),
    )
    record = {
        "value": dsr,
        "selected_sharpe": float(best["sharpe"]),
        "n_trials": len(trials),
        "sharpe_variance": variance,
        "per": "observation (one label per sample)",
    }
    return float(best["C"]), trials, record


def _to_onnx(clf: Any, name: str) -> bytes:
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        clf,
        initial_types=[("features", FloatTensorType([None, len(MODEL_FEATURES)]))],
        options={id(clf): {"zipmap": False}},
        target_opset=17,
    )
    # skl2onnx names the graph with a random uuid: fix it so a rerun writes the same bytes
    onx.graph.name = name
    onx.doc_string = f"{name}: P(price up at the triple barrier); card in {name}.json"
    seen: dict[str, int] = {}
    for op in onx.opset_import:
        seen[op.domain] = max(seen.get(op.domain, 0), op.version)
    del onx.opset_import[:]
    for domain, version in sorted(seen.items()):
        onx.opset_import.add(domain=domain, version=version)
    onnx.checker.check_model(onx)
    return bytes(onx.SerializeToString())


def train(cfg: Config, request: TrainRequest, store: Any = None) -> dict[str, Any]:
    """Steps 1-6 of the module doc; returns the summary (its last-line JSON)."""
    import onnx
    import skl2onnx
    import sklearn

    from udfs.research.drift import reference_of
    from udfs.strategy.model import DERIVED, OnnxModel, feature_vector

    train_dir = cfg.state_dir / "train"
    set_path = train_dir / f"{request.name}.training.parquet"
    ts_summary = build_training_set(
        cfg,
        TrainingSetRequest(request.start_ns, request.end_ns, step_ms=request.step_ms),
        set_path,
        store,
    )
    table = pq.read_table(set_path)
    paths = _price_paths(cfg, ts_summary["lake_snapshot_id"])
    s = _samples(table, paths, request)
    if len(s.y) < 2 * request.folds or len(np.unique(s.y)) < 2:
        raise TrainingSetError(
            f"{len(s.y)} labelled samples ({s.counts}): too few for {request.folds} folds; "
            "widen --from/--to or shorten --step-ms"
        )
    x = np.asarray([feature_vector(r, MODEL_FEATURES) for r in s.rows], np.float32)
    c, trials, dsr = _validate(x, s, request)
    clf = _fit(x, s.y, c)
    blob = _to_onnx(clf, request.name)
    offline = clf.predict_proba(x.astype(np.float64))[:, 1]
    card: dict[str, Any] = {
        "name": request.name,
        "version": "1",
        "role": "candidate",
        "features": list(MODEL_FEATURES),
        "feature_definitions": {
            f: (
                "(microprice - mid) / spread (0 if spread == 0)"
                if f == "microprice_dev"
                else "sign(trade_signed_volume)"
                if f == "trade_sign"
                else f"feature row key {f!r}"
            )
            for f in MODEL_FEATURES
        },
        "feature_columns": ROW_KEYS,
        "input_name": "features",
        "input_dtype": "float32",
        "output": "probabilities[:, 1] = P(label = 1), i.e. P(price ends up at the barrier)",
        "threshold": request.threshold,
        "label": {
            "definition": "triple barrier (udfs.research.labels): profit-take / stop-loss at "
            f"{request.barrier} x EWM volatility (span {request.volatility_span}) of the "
            f"exact mid path, vertical barrier {request.horizon_ms} ms after the entry; "
            "1 = ended up, 0 = ended down",
            "horizon_ms": request.horizon_ms,
            "barrier": request.barrier,
            "volatility_span": request.volatility_span,
            "counts": s.counts,
        },
        "model": {
            "type": "sklearn.linear_model.LogisticRegression",
            "C": c,
            "solver": "lbfgs",
            "random_state": RANDOM_STATE,
            "coef": [round(float(v), 10) for v in clf.coef_[0]],
            "intercept": round(float(clf.intercept_[0]), 10),
        },
        "training_window": {
            "from_ns": request.start_ns,
            "to_ns": request.end_ns,
            "from_utc": _utc(request.start_ns),
            "to_utc": _utc(request.end_ns),
            "entity_ts_ns": ts_summary["entity_ts_ns"],
            "step_ms": request.step_ms,
            "instruments": ts_summary["instruments"],
        },
        "lake": {
            "table": ts_summary["lake_table"],
            "snapshot_id": ts_summary["lake_snapshot_id"],
        },
        "training_set": {
            "mode": ts_summary["mode"],
            "rows": ts_summary["rows"],
            "missing": ts_summary["missing"],
            "feature_views": ts_summary["feature_views"],
            "feast_project": ts_summary["feast_project"],
            "sha256": _sha256(set_path.read_bytes()),
        },
        "data_sha256": _sha256(x.tobytes() + s.y.tobytes() + s.start_ns.tobytes()),
        "rows": len(s.y),
        "validation": {
            "method": f"purged K-fold, {request.folds} folds, label spans purged, embargo "
            f"{request.embargo} samples; trials over C, the best out-of-sample Sharpe selected",
            "folds": request.folds,
            "embargo": request.embargo,
            "selected_C": c,
            "trials": trials,
        },
        "deflated_sharpe": dsr,
        # deciles of each feature of the training rows: `bookstream model drift` compares a
        # later window of the stream with them
        "drift_reference": {
            f: reference_of([float(v) for v in x[:, j]]).to_json()
            for j, f in enumerate(MODEL_FEATURES)
        },
        "software": {
            "scikit-learn": sklearn.__version__,
            "skl2onnx": skl2onnx.__version__,
            "onnx": onnx.__version__,
            "opset": 17,
        },
    }
    assert set(MODEL_FEATURES) - {"imbalance_1", "imbalance_2", "imbalance_3"} <= set(DERIVED)
    scored = OnnxModel(blob, card).score_matrix(
        np.asarray([feature_vector(r, MODEL_FEATURES) for r in s.rows], np.float32)
    )
    max_diff = float(np.max(np.abs(scored - offline)))
    same_side = bool(
        np.array_equal(
            _positions(scored, request.threshold), _positions(offline, request.threshold)
        )
    )
    equals = max_diff <= TOLERANCE and same_side
    card["onnx_check"] = {
        "max_abs_diff": max_diff,
        "tolerance": TOLERANCE,
        "same_side": same_side,
        "onnx_equals_offline": equals,
    }
    request.out_dir.mkdir(parents=True, exist_ok=True)
    model_path = request.out_dir / f"{request.name}.onnx"
    card_path = model_path.with_suffix(".json")
    for path, data in (
        (model_path, blob),
        (card_path, (json.dumps(card, indent=2) + "\n").encode()),
    ):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return {
        "rows": len(s.y),
        "features": len(MODEL_FEATURES),
        "folds": request.folds,
        "deflated_sharpe": dsr["value"],
        "model": str(model_path),
        "card": str(card_path),
        "onnx_equals_offline": equals,
        "lake_snapshot_id": ts_summary["lake_snapshot_id"],
        "selected_C": c,
    }
