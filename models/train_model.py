"""Train the book models and export them to ONNX with their metadata.

    python models/train_model.py [--out models/] [--horizon 20]
    python models/train_model.py --lobster MSG.csv OB.csv --binance a.gz b.gz ...   # other data

By default it reads only the sample shipped in ``data/``
(``udfs.market.adapters.sources.Source.sample()``), so
the files committed in ``models/`` are reproducible from the repository alone (same bytes on
a rerun: no wall-clock time is written anywhere).

Steps
-----
1. Feature rows: every event of the source is encoded and run through
   :func:`udfs.pipeline.process_record`, exactly what the stream job does; rows are kept per
   instrument in feed order.
2. Label: for row ``i`` of an instrument, ``y = 1`` if ``mid[i + H] > mid[i]``, ``0`` if it is
   lower, where ``i + H`` is the H-th next feature row of the same instrument; rows without
   ``H`` successors or with no mid change are dropped.
3. Inputs: :func:`udfs.strategy.model.feature_vector` with the model's feature list (the function
the
   stream uses at scoring time), as float32.
4. Honest metrics: per instrument, the first 70% of the labelled rows fit a model that is
   evaluated on the rest, after an embargo of ``H`` rows (labels of rows closer than ``H`` to
   the cut would look into the test period). The exported model is then refit on all rows;
   its in-sample metrics are reported as ``train``.
5. Export: ``skl2onnx`` with a float32 input named ``features`` and ``zipmap`` off, so the
   outputs are ``label`` and ``probabilities`` ``[N, 2]``.

Two models: ``book_lr_v1`` (traded) and ``book_lr_v2`` (shadow: more depth levels, windowed OFI
instead of the per-event one, stronger regularisation).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # runnable as a plain script from anywhere
    sys.path.insert(0, str(ROOT))

from udfs.config import FeatureConfig, StrategyConfig  # noqa: E402
from udfs.market.adapters.sources import Source  # noqa: E402
from udfs.pipeline import RecordSource, process_record  # noqa: E402
from udfs.research.drift import reference_of  # noqa: E402
from udfs.schema import encode_event  # noqa: E402
from udfs.strategy.model import DERIVED, feature_vector  # noqa: E402

RANDOM_STATE = 0
HORIZON = 20
HOLDOUT = 0.3
OUT_OF_ORDERNESS_MS = 2000
OPSET = 17


@dataclass(frozen=True)
class ModelSpec:
    name: str
    version: str
    role: str
    features: tuple[str, ...]
    c: float


MODELS = (
    ModelSpec(
        "book_lr_v1",
        "1",
        "traded",
        ("imbalance_1", "imbalance_2", "imbalance_3", "microprice_dev", "ofi_norm", "trade_sign"),
        1.0,
    ),
    ModelSpec(
        "book_lr_v2",
        "2",
        "shadow",
        (
            "imbalance_1",
            "imbalance_2",
            "imbalance_3",
            "imbalance_4",
            "imbalance_5",
            "microprice_dev",
            "ofi_window_norm",
            "trade_sign",
        ),
        0.1,
    ),
)

FEATURE_DEFINITIONS = {
    "microprice_dev": "(microprice - mid) / spread (0 if spread == 0)",
    "ofi_norm": "clip(ofi / (bid_depth + ask_depth), -1, 1) (0 if depth == 0)",
    "ofi_window_norm": "tanh(ofi_window / (bid_depth + ask_depth)) (0 if depth == 0)",
    "trade_sign": "sign(trade_signed_volume)",
}
assert set(FEATURE_DEFINITIONS) == set(DERIVED), (
    "describe every derived feature of udfs.strategy.model"
)


# ---------------------------------------------------------------------------------------------
# data


def feature_rows(source: Source, cfg: FeatureConfig | None = None) -> dict[str, list[dict]]:
    """Feature dicts per instrument, in feed order, via the stream job's process_record."""
    cfg = cfg or FeatureConfig()
    states: dict[str, Any] = {}
    rows: dict[str, list[dict]] = defaultdict(list)
    src = RecordSource("train", 0, 0)
    for ev in source.events():
        key = ev.instrument
        state, result = process_record(
            states.get(key), key, encode_event(ev), src, cfg, OUT_OF_ORDERNESS_MS
        )
        states[key] = state
        rows[key].extend(result.features)
    return dict(rows)


def label_rows(
    rows: dict[str, list[dict]],
    horizon: int = HORIZON,
) -> dict[str, list[tuple[dict, int]]]:
    """(row, y) per instrument: y = 1 if mid rises over the next ``horizon`` rows of the same
    instrument, 0 if it falls; rows without a future or without a change are dropped."""
    out: dict[str, list[tuple[dict, int]]] = {}
    for inst in sorted(rows):
        rs = rows[inst]
        labelled = []
        for i in range(len(rs) - horizon):
            change = rs[i + horizon]["mid"] - rs[i]["mid"]
            if change:
                labelled.append((rs[i], 1 if change > 0 else 0))
        out[inst] = labelled
    return out


def design(
    labelled: dict[str, list[tuple[dict, int]]],
    features: tuple[str, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """float32 X (instruments in sorted order, rows in feed order) and int y."""
    pairs = [p for inst in sorted(labelled) for p in labelled[inst]]
    x = np.asarray([feature_vector(r, features) for r, _ in pairs], dtype=np.float32)
    y = np.asarray([lab for _, lab in pairs], dtype=np.int64)
    return x.reshape(len(pairs), len(features)), y


def split(
    labelled: dict[str, list[tuple[dict, int]]],
    horizon: int,
    holdout: float = HOLDOUT,
) -> tuple[dict, dict]:
    """Chronological split per instrument with an embargo of ``horizon`` rows."""
    train, test = {}, {}
    for inst, pairs in labelled.items():
        cut = int(len(pairs) * (1 - holdout))
        train[inst] = pairs[:cut]
        test[inst] = pairs[cut + horizon :]
    return train, test


# ---------------------------------------------------------------------------------------------
# model


def fit(x: np.ndarray, y: np.ndarray, c: float):
    """The one way a model is fitted (the tests refit with it)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, random_state=RANDOM_STATE, max_iter=1000, solver="lbfgs").fit(
        x.astype(np.float64), y
    )


def metrics(clf, x: np.ndarray, y: np.ndarray) -> dict[str, float | int]:
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    if len(y) == 0:
        return {"rows": 0}
    p = clf.predict_proba(x.astype(np.float64))[:, 1]
    out: dict[str, float | int] = {
        "rows": len(y),
        "up_share": round(float(y.mean()), 6),
        "accuracy": round(float(accuracy_score(y, p > 0.5)), 6),
        "log_loss": round(float(log_loss(y, p, labels=[0, 1])), 6),
    }
    if 0 < y.sum() < len(y):
        out["auc"] = round(float(roc_auc_score(y, p)), 6)
    return out


def to_onnx(clf, n_features: int, name: str, model_version: int) -> bytes:
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        clf,
        initial_types=[("features", FloatTensorType([None, n_features]))],
        options={id(clf): {"zipmap": False}},
        target_opset=OPSET,
    )
    # skl2onnx names the graph with a random uuid: fix it so a rerun writes the same bytes
    onx.graph.name = name
    onx.model_version = model_version
    onx.doc_string = f"{name}: P(mid up); metadata in {name}.json"
    # skl2onnx lists the default domain twice: keep one entry per domain
    seen: dict[str, int] = {}
    for op in onx.opset_import:
        seen[op.domain] = max(seen.get(op.domain, 0), op.version)
    del onx.opset_import[:]
    for domain, version in sorted(seen.items()):
        onx.opset_import.add(domain=domain, version=version)
    onnx.checker.check_model(onx)
    return onx.SerializeToString()


# ---------------------------------------------------------------------------------------------
# metadata


def _rel(path: Path) -> str:
    return os.path.relpath(Path(path).resolve(), ROOT)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds")


def source_files(source: Source) -> list[dict[str, str]]:
    paths = [p for pair in source.lobster for p in pair] + [
        p for files in source.binance for p in files
    ]
    return [{"path": _rel(p), "sha256": _sha256(p)} for p in paths]


def window(pairs: list[tuple[dict, int]]) -> dict[str, Any]:
    first = min(r["ts_event"] for r, _ in pairs)
    last = max(r["ts_event"] for r, _ in pairs)
    return {
        "first_ts_event": first,
        "last_ts_event": last,
        "first_utc": _utc(first),
        "last_utc": _utc(last),
    }


def drift_reference(x: np.ndarray, features: tuple[str, ...]) -> dict[str, Any]:
    """The deciles of each feature of the training rows (``udfs.research.drift``): what
    ``bookstream model drift`` and the stream job's drift rows compare a live window with."""
    return {f: reference_of([float(v) for v in x[:, j]]).to_json() for j, f in enumerate(features)}


def add_drift_references(source: Source, out: Path, horizon: int = HORIZON) -> list[str]:
    """Write the ``drift_reference`` of each model's training rows into its card in ``out``,
    before ``software`` (where :func:`train_all` puts it), without refitting: a card written
    before the key existed gets it, its model file stays as it is. Returns the cards written."""
    labelled = label_rows(feature_rows(source), horizon)
    written = []
    for spec in MODELS:
        path = out / f"{spec.name}.json"
        card = json.loads(path.read_text())
        if card["features"] != list(spec.features):
            raise SystemExit(f"{path}: features {card['features']} are not {spec.features}")
        x, _y = design(labelled, spec.features)
        reference = drift_reference(x, spec.features)
        updated: dict[str, Any] = {}
        for key, value in card.items():
            if key == "software":
                updated["drift_reference"] = reference
            if key != "drift_reference":
                updated[key] = value
        updated.setdefault("drift_reference", reference)
        path.write_text(json.dumps(updated, indent=2) + "\n")
        written.append(str(path))
    return written


def train_all(source: Source, out: Path, horizon: int = HORIZON) -> list[dict[str, Any]]:
    """Train and write every model of :data:`MODELS`; returns their metadata."""
    import onnx
    import skl2onnx
    import sklearn

    rows = feature_rows(source)
    labelled = label_rows(rows, horizon)
    everything = [p for inst in sorted(labelled) for p in labelled[inst]]
    if not everything:
        raise SystemExit("no labelled rows: the source is too short for the horizon")
    train_part, test_part = split(labelled, horizon)
    threshold = StrategyConfig().model_threshold
    files = source_files(source)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in MODELS:
        x, y = design(labelled, spec.features)
        x_tr, y_tr = design(train_part, spec.features)
        x_te, y_te = design(test_part, spec.features)
        holdout_clf = fit(x_tr, y_tr, spec.c)
        clf = fit(x, y, spec.c)
        blob = to_onnx(clf, len(spec.features), spec.name, int(spec.version))
        meta = {
            "name": spec.name,
            "version": spec.version,
            "role": spec.role,
            "features": list(spec.features),
            "feature_definitions": {
                f: FEATURE_DEFINITIONS.get(f, f"feature row key {f!r}") for f in spec.features
            },
            "input_name": "features",
            "input_dtype": "float32",
            "output": "probabilities[:, 1] = P(label = 1), i.e. P(mid rises)",
            "label": {
                "definition": f"sign of mid[i + {horizon}] - mid[i], i + {horizon} = the "
                f"{horizon}-th next feature row of the same instrument; "
                "1 = up, 0 = down",
                "horizon_rows": horizon,
                "dropped": "rows without that many successors, and rows with no mid change",
            },
            "threshold": threshold,
            "threshold_rule": "p > threshold: long; p < 1 - threshold: short; else flat",
            "model": {
                "type": "sklearn.linear_model.LogisticRegression",
                "C": spec.c,
                "solver": "lbfgs",
                "random_state": RANDOM_STATE,
                "coef": [round(float(v), 10) for v in clf.coef_[0]],
                "intercept": round(float(clf.intercept_[0]), 10),
            },
            "training_window": {
                **window(everything),
                "per_instrument": {inst: window(p) for inst, p in labelled.items() if p},
            },
            "sources": files,
            "feature_config": {
                "depth_levels": FeatureConfig().depth_levels,
                "window_ms": FeatureConfig().window_ms,
            },
            "rows": len(y),
            "rows_per_instrument": {inst: len(p) for inst, p in labelled.items()},
            "metrics": {
                "train": metrics(clf, x, y),
                "holdout": {
                    "method": f"per instrument: fit on the first {1 - HOLDOUT:.0%} of the "
                    f"labelled rows, embargo {horizon} rows, test on the rest",
                    "train": metrics(holdout_clf, x_tr, y_tr),
                    "test": metrics(holdout_clf, x_te, y_te),
                },
            },
            "drift_reference": drift_reference(x, spec.features),
            "software": {
                "scikit-learn": sklearn.__version__,
                "skl2onnx": skl2onnx.__version__,
                "onnx": onnx.__version__,
                "opset": OPSET,
            },
        }
        (out / f"{spec.name}.onnx").write_bytes(blob)
        (out / f"{spec.name}.json").write_text(json.dumps(meta, indent=2) + "\n")
        written.append(meta)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "models")
    ap.add_argument(
        "--horizon",
        type=int,
        default=HORIZON,
        help="label horizon in feature rows of the same instrument",
    )
    ap.add_argument(
        "--lobster",
        nargs=2,
        action="append",
        metavar=("MESSAGE", "ORDERBOOK"),
        help="LOBSTER file pair (repeatable); replaces the shipped sample",
    )
    ap.add_argument(
        "--binance",
        nargs="+",
        action="append",
        metavar="FILE",
        help="one Binance capture, its files in order (repeatable)",
    )
    ap.add_argument(
        "--drift-reference-only",
        action="store_true",
        help="only add each model's drift_reference to its card in --out (no refit)",
    )
    args = ap.parse_args(argv)
    if args.lobster or args.binance:
        source = Source(
            lobster=[(Path(m), Path(o)) for m, o in args.lobster or []],
            binance=[[Path(f) for f in files] for files in args.binance or []],
        )
    else:
        source = Source.sample()
    source.check_files()
    if args.drift_reference_only:
        for path in add_drift_references(source, args.out, args.horizon):
            print(f"{path}: drift_reference written")
        return 0
    for meta in train_all(source, args.out, args.horizon):
        tr, te = meta["metrics"]["train"], meta["metrics"]["holdout"]["test"]
        print(
            f"{meta['name']} ({meta['role']}): {meta['rows']} rows, features "
            f"{meta['features']}\n  train acc {tr['accuracy']:.3f} auc {tr.get('auc', 'n/a')}"
            f" | holdout acc {te.get('accuracy', 'n/a')} auc {te.get('auc', 'n/a')} "
            f"({te['rows']} rows)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
