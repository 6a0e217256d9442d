"""The stream job's keyed state (books, feature windows, counters) survives a crash.

``bookstream stream-job`` (unbounded) is started as a subprocess, fed the first half of the LOBSTER
sample, and SIGKILLed -- JVM included -- once its features are out and a checkpoint taken after
them is complete. The second half is published while it is down; ``stream-job --restore-latest``
must then continue from the checkpoint: same book, no reprocessing, no dead letters, and the
union of both runs' features equal to what the pure pipeline computes over the whole sample.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
from it_helpers import kill_job, read_json, read_topic, start_job, wait_for

from jobs.kafka_io import end_offsets, make_producer
from udfs.config import Config
from udfs.market.adapters.sources import SAMPLE_LOBSTER, Source
from udfs.pipeline import RecordSource, process_record
from udfs.schema import L2Event, encode_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

WAIT_S = 120


def _produce(cfg: Config, events: list[L2Event]) -> None:
    producer = make_producer(cfg)
    for ev in events:
        producer.produce(
            cfg.topics.events,
            key=ev.instrument,
            value=encode_event(ev),
            timestamp=ev.ts_event // 1_000_000,
        )
    assert producer.flush(30) == 0


def _expected_features(cfg: Config, events: list[L2Event]) -> list[dict]:
    state, rows = None, []
    for ev in events:
        state, res = process_record(
            state,
            ev.instrument,
            encode_event(ev),
            RecordSource(cfg.topics.events, 0, 0),
            cfg.features,
            cfg.flink.out_of_orderness_ms,
        )
        assert not res.dead_letters
        rows += res.features
    return rows


def _without_ts_proc(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "ts_proc"}


def _same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        if x != y:
            return False
    return True


def _checkpoints(ckpt_dir: Path) -> list[Path]:
    return list(ckpt_dir.glob("*/chk-*/_metadata"))


def test_restore_from_checkpoint_after_sigkill(kafka_topics, tmp_path: Path) -> None:
    ckpt_dir = tmp_path / "checkpoints"
    cfg, env = kafka_topics(
        "restore",
        BOOKSTREAM_FLINK_CHECKPOINT_DIR=str(ckpt_dir),
        BOOKSTREAM_FLINK_CHECKPOINT_INTERVAL_MS="1000",
    )
    group = f"it-restore-{cfg.topics.events}"
    events = list(Source(lobster=[SAMPLE_LOBSTER]).events())
    # split after a batch's last record, near the middle
    cut = next(i + 1 for i in range(len(events) // 2, len(events)) if events[i].is_last)
    first, second = events[:cut], events[cut:]
    expected = _expected_features(cfg, events)
    expected_first = _expected_features(cfg, first)
    first_seqs = {r["seq"] for r in expected_first}
    assert 0 < len(first_seqs) < len(expected)
    log1, log2 = tmp_path / "run1.log", tmp_path / "run2.log"

    def feature_seqs() -> set[int]:
        return {r["seq"] for r in read_json(cfg, cfg.topics.features)}

    proc = start_job(["stream-job", "--group-id", group], env, log1)
    try:
        _produce(cfg, first)
        wait_for(lambda: first_seqs <= feature_seqs(), WAIT_S, "first-half features", proc, log1)
        arrived = time.time()
        wait_for(
            lambda: any(p.stat().st_mtime > arrived for p in _checkpoints(ckpt_dir)),
            WAIT_S,
            "a checkpoint completed after the first-half features",
            proc,
            log1,
        )
    finally:
        kill_job(proc)
    assert proc.returncode is not None and proc.returncode < 0, "the job should have been killed"
    first_run_end = end_offsets(cfg, cfg.topics.features)
    first_run = read_json(cfg, cfg.topics.features)

    _produce(cfg, second)
    proc = start_job(["stream-job", "--group-id", group, "--restore-latest"], env, log2)
    try:
        wait_for(
            lambda: {r["seq"] for r in expected} <= feature_seqs(),
            WAIT_S,
            "all features after the restore",
            proc,
            log2,
        )
        time.sleep(2)  # anything still in flight (a reprocessed duplicate) lands now
    finally:
        kill_job(proc)

    second_run = read_json(cfg, cfg.topics.features, from_offsets=first_run_end)
    # resumed at the checkpoint's offsets: nothing of the first half was computed again
    assert second_run, "the restored job produced nothing"
    assert len(second_run) < len(expected)
    assert not {r["seq"] for r in second_run} & first_seqs
    # the restored book is the one the checkpoint held: every row equals the pure pipeline's
    got: dict[int, dict] = {}
    for row in first_run + second_run:
        prev = got.setdefault(row["seq"], row)
        assert _same(_without_ts_proc(prev), _without_ts_proc(row)), row["seq"]
    assert sorted(got) == [r["seq"] for r in expected]
    for want in expected:
        assert _same(_without_ts_proc(got[want["seq"]]), _without_ts_proc(want)), want["seq"]
    # an empty book after the restart would have refused the second half (gap, negative level)
    dead = read_topic(cfg, cfg.topics.dead_letter)
    assert not dead, [d.value[:300] for d in dead[:3]]
