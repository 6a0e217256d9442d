"""The stream job's keyed state (books, feature windows, counters) survives a crash, and the
duplicates a restore re-emits are absorbed downstream.

``bookstream stream-job`` (unbounded) is started as a subprocess, fed the first half of the LOBSTER
sample; once a checkpoint taken after those features is complete, a slice more (with one
malformed record) is fed and the job is SIGKILLed -- JVM included -- after that slice's output is
out but before the next checkpoint. A start without state on the same group is refused. The
rest is published while it is down; ``stream-job --restore-latest`` must then continue from the
checkpoint: same book, the slice computed again (identical rows), and the union of both runs'
features equal to what the pure pipeline computes over the whole sample. The history sink then
stores every topic, and the lake's SQL counts each feature row, dead letter and quality minute
once.

While it is down, the canary (``book_lr_v2``, scored as a shadow by the first run) is promoted
with ``bookstream model canary`` + ``promote``: the restored job trades it, and every signal it
emits equals the one the pure pipeline computes from the checkpoint's state under the promoted
registry (each model continues from its own state, kept by name; v2 now traded, v1 recorded
only), and its orders and drift rows are v2's. The records the checkpoint logged are replayed
under the assignment they were traded under (v1 live), so the position and working orders v2
starts from are the ones the first run really ordered: the restored orders equal the pure
pipeline's from v1's state, and the first cancels withdraw v1's orders that went out.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import replace
from pathlib import Path

import pytest
from it_helpers import (
    config_for,
    kill_job,
    produce_events,
    read_json,
    read_topic,
    run_cli,
    start_job,
    wait_for,
)

from jobs.kafka_io import end_offsets, make_producer
from jobs.sql import query_rows
from jobs.stream_job import checkpoint_dir, latest_checkpoint
from udfs.config import Config
from udfs.market.adapters.sources import SAMPLE_LOBSTER, Source
from udfs.pipeline import ProcessResult, process_events
from udfs.schema import (
    L2Event,
    Order,
    OrderAction,
    Signal,
    decode_dead_letter,
    decode_record,
)
from udfs.strategy.registry import canary_routed
from udfs.strategy.trading import Trader

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

WAIT_S = 300  # the shared machine can be slow; a stuck job still fails


MALFORMED = b'{"v":1,"kind":'
CANARY_SHARE = 0.2


def _produce_with_a_malformed_record(cfg: Config, events: list[L2Event]) -> None:
    """``events`` with one malformed record in their middle (on the next event's key)."""
    half = len(events) // 2
    produce_events(cfg, events[:half])
    producer = make_producer(cfg)
    producer.produce(cfg.topics.events, key=events[half].instrument, value=MALFORMED)
    assert producer.flush(30) == 0
    produce_events(cfg, events[half:])


def _pure_run(
    cfg: Config, events: list[L2Event], trader: Trader | None = None, states=None
) -> tuple[dict, ProcessResult]:
    """The job's per-record logic over ``events`` from ``states``, with ``trader`` (None:
    features only): the states after them and everything emitted (no dead letter: the events
    are clean)."""
    states, out = process_events(
        events, cfg.features, cfg.flink.out_of_orderness_ms, trader, states, cfg.topics.events
    )
    assert not out.dead_letters
    return states, out


def _expected_features(cfg: Config, events: list[L2Event]) -> list[dict]:
    return _pure_run(cfg, events)[1].features


def _trading_run(
    cfg: Config, events: list[L2Event], states=None
) -> tuple[dict, list[Signal], list, list[Order]]:
    """The pure pipeline with the trader of ``cfg``'s registry: states, signals, drift rows,
    orders (heartbeats left out: the job's timers send more of them)."""
    states, out = _pure_run(cfg, events, Trader.load(cfg), states)
    orders = [o for o in out.orders if o.action is not OrderAction.HEARTBEAT]
    return states, out.signals, out.drift, orders


def _model_keys(signals: list[Signal]) -> list[tuple]:
    return sorted(
        (s.ts_event, s.seq, s.strategy, s.direction, s.score)
        for s in signals
        if s.strategy.startswith("onnx:")
    )


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
    return list(ckpt_dir.glob("*/*/chk-*/_metadata"))


def test_restore_latest_takes_the_newest_checkpoint_of_its_own_group(tmp_path: Path) -> None:
    cfg = config_for({"BOOKSTREAM_FLINK_CHECKPOINT_DIR": str(tmp_path / "checkpoints")})
    mine = checkpoint_dir(cfg, "features-a") / "job1" / "chk-7"
    other = checkpoint_dir(cfg, "bookstream-replay-x") / "job2" / "chk-3"
    unfinished = checkpoint_dir(cfg, "features-a") / "job3" / "chk-9"  # no _metadata yet
    for chk in (mine, other, unfinished):
        chk.mkdir(parents=True)
    (mine / "_metadata").write_bytes(b"")
    time.sleep(0.05)
    (other / "_metadata").write_bytes(b"")  # newer, but another job's
    assert latest_checkpoint(cfg, "features-a") == mine
    assert latest_checkpoint(cfg, "features-b") is None


def test_restore_from_checkpoint_after_sigkill_between_checkpoints(
    kafka_topics, tmp_path: Path
) -> None:
    ckpt_dir = tmp_path / "checkpoints"
    cfg, env = kafka_topics(
        "restore",
        BOOKSTREAM_FLINK_CHECKPOINT_DIR=str(ckpt_dir),
        BOOKSTREAM_FLINK_CHECKPOINT_INTERVAL_MS="20000",
        BOOKSTREAM_LAKE_ROOT=str(tmp_path / "lake"),
        BOOKSTREAM_STRATEGY_REGISTRY_PATH=str(tmp_path / "registry.json"),
        BOOKSTREAM_STRATEGY_DRIFT_EVERY_ROWS="150",
    )
    group = f"it-restore-{cfg.topics.events}"
    events = list(Source(lobster=[SAMPLE_LOBSTER]).events())

    def cut_after(i: int) -> int:  # split after a batch's last record
        return next(j + 1 for j in range(i, len(events)) if events[j].is_last)

    cut, cut2 = cut_after(len(events) // 3), cut_after(len(events) // 2)
    first, extra, rest = events[:cut], events[cut:cut2], events[cut2:]
    expected = _expected_features(cfg, events)
    first_seqs = {r["seq"] for r in _expected_features(cfg, first)}
    extra_seqs = {r["seq"] for r in _expected_features(cfg, first + extra)} - first_seqs
    assert first_seqs and extra_seqs
    log1, log2 = tmp_path / "run1.log", tmp_path / "run2.log"

    def feature_seqs() -> set[int]:
        return {r["seq"] for r in read_json(cfg, cfg.topics.features)}

    proc = start_job(["stream-job", "--group-id", group], env, log1)
    try:
        produce_events(cfg, first)
        wait_for(lambda: first_seqs <= feature_seqs(), WAIT_S, "first-part features", proc, log1)
        arrived = time.time()
        wait_for(
            lambda: any(p.stat().st_mtime > arrived for p in _checkpoints(ckpt_dir)),
            WAIT_S,
            "a checkpoint completed after the first-part features",
            proc,
            log1,
        )
        checkpointed = {p.parent for p in _checkpoints(ckpt_dir)}
        _produce_with_a_malformed_record(cfg, extra)
        wait_for(
            lambda: extra_seqs <= feature_seqs() and read_topic(cfg, cfg.topics.dead_letter),
            WAIT_S,
            "the slice's features and dead letter",
            proc,
            log1,
        )
    finally:
        kill_job(proc)
    assert proc.returncode is not None and proc.returncode < 0, "the job should have been killed"
    assert {p.parent for p in _checkpoints(ckpt_dir)} == checkpointed, (
        "a checkpoint completed after the slice: nothing to re-emit (interval too short?)"
    )
    first_run_end = end_offsets(cfg, cfg.topics.features)
    first_run = read_json(cfg, cfg.topics.features)
    first_signals_end = end_offsets(cfg, cfg.topics.signals)
    first_orders_end = end_offsets(cfg, cfg.topics.orders)
    first_drift_end = end_offsets(cfg, cfg.topics.drift)

    # without its state the job would build the rest from an empty book: refused, with the fix
    refused = start_job(["stream-job", "--group-id", group], env, tmp_path / "refused.log")
    assert refused.wait(timeout=120) == 2
    said = (tmp_path / "refused.log").read_text()
    assert "refused" in said and "--restore-latest" in said and group in said

    # the shadow v2 becomes the canary, then live, while the job is down (at this share the
    # canary alone would not trade AAPL: only the promotion makes v2 trade it)
    assert not canary_routed(events[0].instrument, CANARY_SHARE)
    run_cli(["model", "canary", "book_lr_v2", "--share", str(CANARY_SHARE)], env)
    promoted, _, _ = run_cli(["model", "promote", "book_lr_v2"], env)
    assert (promoted["live"], promoted["canary"]) == ("book_lr_v2", "book_lr_v1")

    produce_events(cfg, rest)
    proc = start_job(["stream-job", "--group-id", group, "--restore-latest"], env, log2)
    all_seqs = {r["seq"] for r in expected}

    def all_out() -> bool:
        missing = all_seqs - feature_seqs()
        print(f"{time.strftime('%X')} features still missing: {len(missing)}")
        return not missing

    try:
        wait_for(all_out, WAIT_S, "all features after the restore", proc, log2)
        time.sleep(2)  # anything still in flight lands now
    finally:
        kill_job(proc)
    assert "restoring from" in log2.read_text()

    second_run = read_json(cfg, cfg.topics.features, from_offsets=first_run_end)
    second_seqs = {r["seq"] for r in second_run}
    # resumed at the checkpoint: the first part not again, the slice after it again
    assert second_run and not second_seqs & first_seqs
    assert extra_seqs <= second_seqs
    # the restored book is the one the checkpoint held: every row equals the pure pipeline's,
    # and a re-emitted row equals the one it repeats
    got: dict[int, dict] = {}
    for row in first_run + second_run:
        prev = got.setdefault(row["seq"], row)
        assert _same(_without_ts_proc(prev), _without_ts_proc(row)), row["seq"]
    assert sorted(got) == [r["seq"] for r in expected]
    for want in expected:
        assert _same(_without_ts_proc(got[want["seq"]]), _without_ts_proc(want)), want["seq"]
    dead = read_topic(cfg, cfg.topics.dead_letter)
    assert len(dead) == 2  # the malformed record, refused by both runs
    assert {decode_dead_letter(d.value).raw for d in dead} == {MALFORMED.decode()}

    # the promotion took effect on the restored state: from the checkpoint (after the first
    # part) on, the signals are the pure pipeline's under the promoted registry, and each
    # model's equal the uninterrupted run's (v1 live throughout): no model lost its state
    after_cfg = config_for(env)
    live = Trader.load(after_cfg).model
    assert live is not None and live.name == "book_lr_v2"
    before_cfg = replace(
        after_cfg, strategy=replace(after_cfg.strategy, registry_path=str(tmp_path / "none.json"))
    )
    states, first_signals, first_drift, first_orders = _trading_run(before_cfg, first)
    _, rest_signals, _, _ = _trading_run(before_cfg, extra + rest, copy.deepcopy(states))
    _, promoted_signals, promoted_drift, promoted_orders = _trading_run(
        after_cfg, extra + rest, states
    )
    restored_signals = [
        decode_record(Signal, r.value)
        for r in read_topic(cfg, cfg.topics.signals, from_offsets=first_signals_end)
    ]
    assert restored_signals == promoted_signals
    assert _model_keys(promoted_signals) == _model_keys(rest_signals)
    by_model = {
        s.strategy: {x.traded for x in restored_signals if x.strategy == s.strategy}
        for s in restored_signals
    }
    assert by_model["onnx:book_lr_v2"] == {True} and by_model["onnx:book_lr_v1"] == {False}
    first_models = {s.strategy: s.traded for s in first_signals if s.strategy.startswith("onnx:")}
    assert first_models == {"onnx:book_lr_v1": True, "onnx:book_lr_v2": False}
    # the restored position and working orders are the ones the first run ordered (v1's,
    # replayed under the assignment recorded in the checkpoint, not under the promoted
    # registry): every order after the restore is the pure pipeline's from the state v1's
    # trading left, and the first cancels withdraw v1's orders that really went out
    restored_orders = [
        o
        for o in (
            decode_record(Order, r.value)
            for r in read_topic(cfg, cfg.topics.orders, from_offsets=first_orders_end)
        )
        if o.action is not OrderAction.HEARTBEAT
    ]
    assert restored_orders == promoted_orders
    new_orders = [o for o in restored_orders if o.action is OrderAction.NEW]
    assert new_orders and {o.strategy for o in new_orders} == {"onnx:book_lr_v2"}
    cancels = [o for o in restored_orders if o.action is OrderAction.CANCEL]
    sent = {o["order_id"] for o in read_json(cfg, cfg.topics.orders) if o["action"] == "new"}
    assert {o.order_id for o in first_orders if o.action is OrderAction.NEW} <= sent
    assert cancels and cancels[0].strategy == "onnx:book_lr_v1" and cancels[0].order_id in sent
    drift_after = read_json(cfg, cfg.topics.drift, from_offsets=first_drift_end)
    assert first_drift and promoted_drift and drift_after
    assert {d["model"] for d in drift_after} == {"book_lr_v2"}

    # downstream: the lake holds the duplicates, its SQL counts each once
    run_cli(["history-sink", "--bounded"], env)
    (features,) = query_rows(
        cfg,
        "SELECT count() AS rows, uniqExact(instrument, seq, ts_event, ts_recv) AS distinct_rows "
        "FROM bookstream.features",
    )
    assert features["rows"] == len(first_run) + len(second_run) > len(expected)
    assert features["distinct_rows"] == len(expected)
    reasons = query_rows(cfg, "dead_letter_reasons")
    assert [(r["stage"], r["reason_code"], r["dead_letters"]) for r in reasons] == [
        ("features", "malformed", 1)
    ]
    quality = read_json(cfg, cfg.topics.quality)
    minutes = {(q["instrument"], q["minute_start"]) for q in quality}
    report = query_rows(cfg, "data_quality_report")
    totals = [r for r in report if r["row_kind"] == "total"]
    assert sum(r["minutes"] for r in totals) == len(minutes)
    latest = {(q["instrument"], q["minute_start"]): q["events"] for q in quality}
    assert sum(r["events"] for r in totals) == sum(latest.values())
