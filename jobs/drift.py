"""``bookstream model drift NAME``: the population stability index of each of a model's
features (udfs/research/drift.py) between its training distribution and a window of the lake's
feature rows; a PSI above ``strategy.drift_psi_alert`` is an alert.

The reference is the model card's ``drift_reference`` (``bookstream train`` writes the deciles
of each feature of the training rows), or a reference window of the lake (``--reference-from``
/ ``--reference-to``) for a model without one. Every check appends one row per feature to the
lake table ``model_drift`` (the window, the reference, the PSI, the threshold, ``alert``):
the alert record analysts and the report can query (``SELECT * FROM bookstream.model_drift
WHERE alert``). ``--instrument`` restricts the window to one instrument: over a stream drift
row's window (``udfs/strategy/drift.py``, lake table ``drift``) it gives the row's PSI.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pyarrow as pa
from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan

from jobs.lake import open_catalog
from udfs.config import PROJECT_ROOT, Config
from udfs.research.drift import DriftReference, psi, reference_of
from udfs.strategy.model import feature_vector

__all__ = ["DriftError", "check_drift"]

DRIFT_TABLE = "model_drift"

_SCHEMA = pa.schema(
    [
        pa.field("checked_at_ns", pa.int64(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("feature", pa.string(), nullable=False),
        pa.field("psi", pa.float64()),
        pa.field("threshold", pa.float64(), nullable=False),
        pa.field("alert", pa.bool_(), nullable=False),
        pa.field("rows", pa.int64(), nullable=False),
        pa.field("window_from_ns", pa.int64(), nullable=False),
        pa.field("window_to_ns", pa.int64(), nullable=False),
        pa.field("reference", pa.string(), nullable=False),
        pa.field("instrument", pa.string()),
    ]
)
"""``instrument``: the one instrument checked (null: all of them); added after the table's
first version, a table without it gets it on the next check."""


class DriftError(ValueError):
    """A drift check that cannot run (no model card, no reference, no rows in the window)."""


def _rows(
    cfg: Config, start_ns: int, end_ns: int, instrument: str | None = None
) -> list[dict[str, Any]]:
    table = open_catalog(cfg).load_table(f"{cfg.lake.namespace}.features")
    window = And(GreaterThanOrEqual("ts_event", start_ns), LessThan("ts_event", end_ns))
    if instrument is not None:
        window = And(window, EqualTo("instrument", instrument))
    return table.scan(row_filter=window).to_arrow().sort_by("ts_event").to_pylist()


def _columns(rows: list[dict[str, Any]], features: list[str], model: str) -> list[list[float]]:
    vectors = [feature_vector(r, features, model) for r in rows]
    return [[v[j] for v in vectors] for j in range(len(features))]


def check_drift(
    cfg: Config,
    model: str,
    start_ns: int,
    end_ns: int,
    reference_window: tuple[int, int] | None = None,
    instrument: str | None = None,
) -> dict[str, Any]:
    """PSI per feature of ``model`` (``models/<model>.json``) over ``[start_ns, end_ns)`` (of
    ``instrument`` only when given: a stream drift row's window); the rows appended to
    ``model_drift``; the summary (``alert``: any feature above the bound)."""
    card_path = PROJECT_ROOT / "models" / f"{model}.json"
    if not card_path.is_file():
        raise DriftError(f"no model card {card_path}")
    card = json.loads(card_path.read_text())
    features = list(card["features"])
    rows = _rows(cfg, start_ns, end_ns, instrument)
    if not rows:
        of = f" of {instrument}" if instrument is not None else ""
        raise DriftError(f"no feature rows{of} in the lake in [{start_ns}, {end_ns})")
    if reference_window is not None:
        ref_rows = _rows(cfg, *reference_window, instrument)
        if not ref_rows:
            raise DriftError(f"no feature rows in the reference window {reference_window}")
        refs = {
            f: reference_of(col)
            for f, col in zip(features, _columns(ref_rows, features, model), strict=True)
        }
        source = f"lake [{reference_window[0]}, {reference_window[1]})"
    elif "drift_reference" in card:
        refs = {f: DriftReference.from_json(card["drift_reference"][f]) for f in features}
        source = f"model card {card_path.name}"
    else:
        raise DriftError(
            f"{card_path.name} has no drift_reference (models trained by `bookstream train` "
            "have one): give a reference window with --reference-from/--reference-to"
        )
    bound = cfg.strategy.drift_psi_alert
    values = {
        f: psi(refs[f], col)
        for f, col in zip(features, _columns(rows, features, model), strict=True)
    }
    now = time.time_ns()
    record = pa.Table.from_pylist(
        [
            {
                "checked_at_ns": now,
                "model": model,
                "feature": f,
                "psi": v,
                "threshold": bound,
                "alert": bool(v > bound),
                "rows": len(rows),
                "window_from_ns": start_ns,
                "window_to_ns": end_ns,
                "reference": source,
                "instrument": instrument,
            }
            for f, v in values.items()
        ],
        schema=_SCHEMA,
    )
    catalog = open_catalog(cfg)
    table = catalog.create_table_if_not_exists(f"{cfg.lake.namespace}.{DRIFT_TABLE}", _SCHEMA)
    if "instrument" not in table.schema().column_names:  # a table of the first version
        with table.update_schema() as update:
            update.union_by_name(_SCHEMA)
    table.append(record)
    alerts = sorted(f for f, v in values.items() if v > bound)
    return {
        "model": model,
        "instrument": instrument,
        "rows": len(rows),
        "reference": source,
        "psi": {f: round(v, 6) for f, v in values.items()},
        "threshold": bound,
        "alert": bool(alerts),
        "drifted": alerts,
        "table": f"{cfg.lake.namespace}.{DRIFT_TABLE}",
    }
