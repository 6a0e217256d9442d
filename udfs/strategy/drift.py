"""The live model's feature drift, in the stream: per instrument, a window of the live model's
input features and, when it closes, one :class:`~udfs.schema.DriftRow` per feature with its
population stability index against the model card's training deciles
(``drift_reference``, written by ``bookstream train`` / ``models/train_model.py``).

The same PSI as ``bookstream model drift`` (``jobs/drift.py``) computes on the lake for the same
rows: both bin :func:`udfs.strategy.model.feature_vector` values with the reference's edges and
go through :func:`udfs.research.drift.psi_of_counts`. Only counts per bin are kept, not the
values: a window costs ``features x bins`` integers of keyed state.

A window is defined in exchange time, like the lake command's ``[from, to)``:

* it collects rows until it holds ``strategy.drift_every_rows``; its end is then fixed just
  after the newest exchange time in it (``to = newest + 1``: rows sharing an exchange time
  stay together);
* rows that arrive later with an exchange time before ``to`` (out of order, but not late) still
  count in it; rows at or after ``to`` wait in ``pending`` for the next window;
* it is emitted once the instrument's watermark (newest exchange time minus the job's
  out-of-orderness bound, :mod:`udfs.pipeline`) has reached ``to``: from then on a row before
  ``to`` is late and dead-lettered, so none can be missing from it. The next window starts at
  ``to`` (windows tile exchange time) with the pending rows.

So a drift row's window holds exactly the instrument's feature rows of ``[window_from_ns,
window_to_ns)``, and it is a pure function of the instrument's records: a replay, a restore
and any batching give the same rows. A new live model (``bookstream model promote|rollback``)
starts a new window: the open one counted another model's features.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from udfs.research.drift import DriftReference, psi_of_counts
from udfs.schema import DriftRow
from udfs.strategy.model import FeatureVector

__all__ = ["DriftMonitor", "DriftWindow"]


@dataclass(slots=True)
class DriftWindow:
    """One instrument's open drift window (part of its trading keyed state)."""

    model: str = ""
    """the live model whose features it counts ("": none yet)"""
    counts: list[list[int]] = field(default_factory=list)
    """per feature, rows per reference bin (NaN values are in no bin)"""
    rows: int = 0
    window_from: int = 0
    """exchange time of the window's start (inclusive); the first window's: its oldest row"""
    newest: int = 0
    window_to: int = 0
    """exclusive end, fixed once the window is full (0: still filling)"""
    pending: list[tuple[int, tuple[float, ...]]] = field(default_factory=list)
    """rows at or after ``window_to``, (exchange time, feature values), in arrival order"""
    first: bool = True
    """the model's first window: it starts at its oldest row (a later one where the one before
    ended)"""


class DriftMonitor:
    """The live model's drift reference and the window's settings; picklable (the Flink
    function carries it in the :class:`~udfs.strategy.trading.Trader`)."""

    def __init__(
        self,
        model: str,
        version: str,
        features: Sequence[str],
        references: Sequence[DriftReference],
        every_rows: int,
        threshold: float,
    ) -> None:
        if len(references) != len(features):
            raise ValueError(f"model {model!r}: a drift reference per feature is needed")
        if every_rows < 1:
            raise ValueError(f"every_rows must be at least 1, got {every_rows}")
        self.model = model
        self.version = version
        self.features = tuple(features)
        self.references = tuple(references)
        self.every_rows = every_rows
        self.threshold = threshold
        self._vector = FeatureVector(self.features, model)
        self._edges = tuple(r.edges for r in self.references)
        """each feature's bin edges (read per feature row: no attribute look-up per value)"""

    @classmethod
    def of_model(
        cls, metadata: Mapping[str, Any], every_rows: int, threshold: float
    ) -> DriftMonitor | None:
        """A model card's monitor; None when drift rows are off (``every_rows`` 0) or the card
        has no ``drift_reference``."""
        raw = metadata.get("drift_reference")
        if every_rows <= 0 or not raw:
            return None
        features = list(metadata["features"])
        missing = [f for f in features if f not in raw]
        if missing:
            raise ValueError(f"model {metadata['name']!r}: no drift_reference for {missing}")
        return cls(
            str(metadata["name"]),
            str(metadata["version"]),
            features,
            [DriftReference.from_json(raw[f]) for f in features],
            every_rows,
            threshold,
        )

    def on_row(
        self, window: DriftWindow, instrument: str, row: dict[str, Any], watermark: int
    ) -> list[DriftRow]:
        """Count feature ``row`` in ``window`` (or hold it for the next one); the drift rows of
        every window the instrument's ``watermark`` (exchange time, ns) has closed."""
        if window.model != self.model:  # a new live model: another model's counts are no use
            self._restart(window, 0)
            window.model = self.model
        ts = int(row["ts_event"])
        values = tuple(self._vector(row))
        self._add(window, ts, values)
        out: list[DriftRow] = []
        while window.window_to and watermark >= window.window_to:
            out += self._rows(window, instrument)
            pending = window.pending
            self._restart(window, window.window_to)
            for held_ts, held in pending:
                self._add(window, held_ts, held)
        return out

    def _restart(self, window: DriftWindow, start: int) -> None:
        window.counts = [[0] * (len(r.edges) + 1) for r in self.references]
        window.rows = 0
        window.window_from = window.newest = start
        window.window_to = 0
        window.pending = []
        window.first = start == 0

    def _add(self, window: DriftWindow, ts: int, values: tuple[float, ...]) -> None:
        if window.window_to and ts >= window.window_to:
            window.pending.append((ts, values))
            return
        if window.first:
            # the first window starts at its oldest row, out-of-order ones included (a later
            # one starts where the one before ended: a row before that is late, never here)
            window.window_from = ts if window.rows == 0 else min(window.window_from, ts)
        for counts, edges, v in zip(window.counts, self._edges, values, strict=True):
            if v == v:  # NaN: in no bin (the lake command drops it too)
                counts[bisect_right(edges, v)] += 1  # bin_of, inlined
        window.rows += 1
        window.newest = max(window.newest, ts)
        if not window.window_to and window.rows >= self.every_rows:
            window.window_to = window.newest + 1

    def _rows(self, window: DriftWindow, instrument: str) -> list[DriftRow]:
        out = []
        for feature, ref, counts in zip(self.features, self.references, window.counts, strict=True):
            value = psi_of_counts(ref, counts)
            known = value == value
            out.append(
                DriftRow(
                    instrument=instrument,
                    model=self.model,
                    model_version=self.version,
                    feature=feature,
                    psi=value if known else None,
                    threshold=self.threshold,
                    alert=known and value > self.threshold,
                    rows=window.rows,
                    window_from_ns=window.window_from,
                    window_to_ns=window.window_to,
                )
            )
        return out
