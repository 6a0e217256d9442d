"""Feature drift: the population stability index (PSI) of each model feature between the
distribution the model was trained on and a later window of the stream.

``PSI = sum_i (a_i - e_i) * ln(a_i / e_i)`` over bins whose edges are the reference's deciles
(``e_i``: the reference's share of bin ``i``, ``a_i``: the window's; both floored at
:data:`FLOOR` so an empty bin does not make it infinite). Conventional reading: below 0.1
stable, 0.1-0.25 a moderate shift, above 0.25 a significant one (``strategy.drift_psi_alert``).
The bins are open at both ends, so values outside the reference's range land in the outer bins.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["FLOOR", "DriftReference", "bin_of", "psi", "psi_of_counts", "reference_of"]

FLOOR = 1e-4
"""A bin's share is never taken below this: ln(0) would make one empty bin infinite."""


@dataclass(frozen=True)
class DriftReference:
    """``edges``: the inner bin edges (ascending, distinct); ``proportions``: the reference's
    share of each of the ``len(edges) + 1`` bins (``x < edges[0]``, ..., ``x >= edges[-1]``)."""

    edges: tuple[float, ...]
    proportions: tuple[float, ...]

    def to_json(self) -> dict[str, list[float]]:
        return {"edges": list(self.edges), "proportions": list(self.proportions)}

    @classmethod
    def from_json(cls, raw: dict[str, Sequence[float]]) -> DriftReference:
        return cls(tuple(map(float, raw["edges"])), tuple(map(float, raw["proportions"])))


def bin_of(edges: Sequence[float], value: float) -> int:
    """The bin of ``value``: 0 below ``edges[0]``, ``len(edges)`` at or above ``edges[-1]``."""
    return bisect.bisect_right(edges, value)


def _counts(edges: Sequence[float], values: Sequence[float]) -> list[int]:
    counts = [0] * (len(edges) + 1)
    for v in values:
        counts[bin_of(edges, v)] += 1
    return counts


def _shares(edges: Sequence[float], values: Sequence[float]) -> list[float]:
    n = max(len(values), 1)
    return [c / n for c in _counts(edges, values)]


def reference_of(values: Sequence[float], bins: int = 10) -> DriftReference:
    """Decile edges of ``values`` (fewer when values repeat: a feature with a few distinct
    values, like a sign, gets one bin per value) and the shares of its bins. NaN is dropped."""
    clean = sorted(v for v in values if not math.isnan(v))
    if not clean:
        raise ValueError("no value to build a drift reference from")
    cuts = {clean[min(len(clean) - 1, (len(clean) * k) // bins)] for k in range(1, bins)}
    edges = tuple(sorted(cuts - {clean[0]})) if len(cuts) > 1 else tuple(sorted(cuts))
    return DriftReference(edges, tuple(_shares(edges, clean)))


def psi(reference: DriftReference, values: Sequence[float]) -> float:
    """The PSI of ``values`` against ``reference`` (NaN dropped; NaN when nothing is left)."""
    clean = [v for v in values if not math.isnan(v)]
    return psi_of_counts(reference, _counts(reference.edges, clean))


def psi_of_counts(reference: DriftReference, counts: Sequence[int]) -> float:
    """The PSI of a window given as its count per bin of ``reference`` (:func:`bin_of`): what
    the stream job keeps instead of the values (NaN when the window is empty). The same
    arithmetic as :func:`psi`, so both give the same float for the same values."""
    n = sum(counts)
    if not n:
        return math.nan
    actual = [c / n for c in counts]
    total = 0.0
    for e, a in zip(reference.proportions, actual, strict=True):
        e, a = max(e, FLOOR), max(a, FLOOR)
        total += (a - e) * math.log(a / e)
    return total
