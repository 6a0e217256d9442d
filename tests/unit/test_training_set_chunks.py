"""The chunked training-set build's pure parts (jobs/training_set.py): which feature rows a
chunk's point-in-time join can return, and how entity rows fall into chunks. That the chunked
build gives the one-call build's bytes is tested on real data in
tests/integration/test_training_set.py."""

from __future__ import annotations

import numpy as np
import pandas as pd

from jobs.training_set import _candidates, _chunks


def _brute(ts_us: list[int], entity_us: list[int], ttl_us: int) -> list[int]:
    """For each entity time, the position of the newest row at or before it inside the TTL
    (0: no TTL), as Feast's join picks it; the set of those positions."""
    picked = set()
    for t in entity_us:
        inside = [i for i, ts in enumerate(ts_us) if ts <= t and (not ttl_us or ts >= t - ttl_us)]
        if inside:
            picked.add(max(inside, key=lambda i: ts_us[i]))
    return sorted(picked)


def test_candidates_are_the_rows_the_join_picks() -> None:
    rng = np.random.default_rng(7)
    for ttl_us in (0, 1, 50, 400, 10_000):
        ts = np.unique(rng.integers(0, 5_000, 300))
        entity = np.arange(-100, 5_200, 37)
        got = _candidates(ts, entity, ttl_us).tolist()
        assert got == _brute(ts.tolist(), entity.tolist(), ttl_us), ttl_us


def test_candidates_edges_are_inclusive() -> None:
    ts = np.array([10, 20, 30])
    # a row exactly at the entity time and one exactly TTL before it are both inside
    assert _candidates(ts, np.array([20]), 0).tolist() == [1]
    assert _candidates(ts, np.array([40]), 10).tolist() == [2]
    assert _candidates(ts, np.array([41]), 10).tolist() == []
    assert _candidates(ts, np.array([9]), 0).tolist() == []


def test_chunks_split_by_event_time_in_order() -> None:
    second = 1_000_000_000
    entities = pd.DataFrame(
        {
            "instrument": ["A", "A", "A", "B", "B"],
            "entity_ts_ns": [0, 4 * second, 5 * second, 1 * second, 11 * second],
        }
    )
    parts = list(_chunks(entities, 5))
    assert [p["entity_ts_ns"].tolist() for p in parts] == [
        [0, 4 * second, 1 * second],
        [5 * second],
        [11 * second],
    ]
    assert sum(len(p) for p in parts) == len(entities)
