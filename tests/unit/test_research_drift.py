"""Population stability index (udfs/research/drift.py) on hand-checkable inputs and on the real
LOBSTER sample's feature rows."""

from __future__ import annotations

import math

import pytest

from udfs.research.drift import FLOOR, DriftReference, psi, reference_of


def test_psi_of_a_known_shift() -> None:
    ref = DriftReference(edges=(0.0,), proportions=(0.5, 0.5))
    # 90% below the edge where the reference had 50%
    values = [-1.0] * 9 + [1.0]
    want = (0.9 - 0.5) * math.log(0.9 / 0.5) + (0.1 - 0.5) * math.log(0.1 / 0.5)
    assert psi(ref, values) == pytest.approx(want, rel=1e-12)
    assert psi(ref, [-1.0, 1.0]) == 0.0


def test_an_empty_bin_is_floored_not_infinite() -> None:
    ref = DriftReference(edges=(0.0,), proportions=(0.5, 0.5))
    got = psi(ref, [-1.0] * 4)
    want = (1.0 - 0.5) * math.log(1.0 / 0.5) + (FLOOR - 0.5) * math.log(FLOOR / 0.5)
    assert got == pytest.approx(want, rel=1e-12) and math.isfinite(got)
    assert math.isnan(psi(ref, [math.nan]))


def test_deciles_and_a_feature_of_few_values() -> None:
    ref = reference_of([float(v) for v in range(100)])
    assert ref.edges == tuple(float(v) for v in range(10, 100, 10))
    assert ref.proportions == (0.1,) * 10
    signs = reference_of([-1.0] * 30 + [0.0] * 50 + [1.0] * 20)
    assert signs.edges == (0.0, 1.0) and signs.proportions == (0.3, 0.5, 0.2)
    assert DriftReference.from_json(signs.to_json()) == signs


def test_the_sample_drifts_between_its_halves_not_within_one(sample_feature_rows) -> None:
    rows = next(r for inst, r in sample_feature_rows.items() if inst.startswith("AAPL"))
    values = [float(r["imbalance_1"]) for r in rows]
    half = len(values) // 2
    ref = reference_of(values[:half])
    assert psi(ref, values[:half]) == pytest.approx(0.0, abs=1e-12)
    # other days / hours of the book: some shift, never negative
    later = psi(ref, values[half:])
    assert later > 0.0
    shuffled = values[:half:2] + values[1:half:2]  # the same half, reordered: same distribution
    assert psi(ref, shuffled) == pytest.approx(0.0, abs=1e-12)
