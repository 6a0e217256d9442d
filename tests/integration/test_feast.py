"""Feast on the project's real parts: the demo's features topic (real Kafka) pushed by
``bookstream feast-push`` through Feast's push API into the project's Redis, with the
repository applied by the shipped ``feast`` CLI to the shared SQL registry (PostgreSQL).

The repository (conftest's ``feast_repo``) is a copy of ``feature_repo/`` under a Feast
project of its own (so the test never touches the user's registered views), plus the README's
throwaway view: a quant's "add a view, apply, read it online" exactly as the README walks
through it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from it_helpers import read_json, run_cli

from jobs.feast_store import open_store
from udfs.config import Config

BOOK = (
    "best_bid_px",
    "best_ask_px",
    "spread_px",
    "mid_px",
    "microprice_px",
    "bid_size_qty",
    "ask_size_qty",
    "imbalance_1",
    "imbalance_2",
    "imbalance_3",
    "bid_depth_qty",
    "ask_depth_qty",
    "ofi",
    "ts_event",
    "ts_avail",
)
WINDOW = (
    "rv",
    "ofi_window",
    "trade_volume_qty",
    "trade_signed_volume_qty",
    "trade_count",
)


@dataclass(frozen=True)
class PushedStore:
    cfg: Config
    env: dict[str, str]
    project: str
    push_summary: dict
    newest: dict[str, dict]
    """The last features-topic row per instrument (topic order)."""


@pytest.fixture(scope="module")
def pushed(feast_repo) -> PushedStore:
    env, cfg = feast_repo.env, feast_repo.cfg
    summary, _proc, _elapsed = run_cli(["feast-push", "--bounded"], env, timeout_s=900)
    rows = read_json(cfg, cfg.topics.features)
    assert summary["read"] == len(rows) and summary["refused"] == 0, summary
    newest = {row["instrument"]: row for row in rows}
    return PushedStore(cfg, env, feast_repo.project, summary, newest)


def _online(cfg: Config, refs: list[str], instruments: list[str], **request: list) -> dict:
    store = open_store(cfg)
    rows = [{"instrument": i} for i in instruments]
    for name, values in request.items():
        for row, value in zip(rows, values, strict=True):
            row[name] = value
    return store.get_online_features(features=refs, entity_rows=rows).to_dict()


def test_pushed_features_read_back_equal_the_newest_topic_row(pushed: PushedStore) -> None:
    instruments = sorted(pushed.newest)
    assert instruments, "the demo wrote no feature rows"
    refs = [f"book_features:{f}" for f in BOOK] + [f"window_features:{f}" for f in WINDOW]
    got = _online(pushed.cfg, refs, instruments)
    assert got["instrument"] == instruments
    for view, names in (("book_features", BOOK), ("window_features", WINDOW)):
        for name in names:
            for inst, value in zip(instruments, got[name], strict=True):
                want = pushed.newest[inst][name]
                # the same double through JSON, Feast's proto and Redis: bit-exact
                assert value == want, f"{view}:{name} of {inst}: online {value!r}, topic {want!r}"


def test_on_demand_view_derives_at_request_time(pushed: PushedStore) -> None:
    instruments = sorted(pushed.newest)
    qty = [100.0 * (k + 1) for k in range(len(instruments))]
    got = _online(
        pushed.cfg,
        ["order_context:spread_bps", "order_context:order_vs_touch"],
        instruments,
        order_qty=qty,
    )
    for k, inst in enumerate(instruments):
        row = pushed.newest[inst]
        assert got["spread_bps"][k] == pytest.approx(row["spread_px"] / row["mid_px"] * 1e4)
        touch = row["bid_size_qty"] + row["ask_size_qty"]
        assert got["order_vs_touch"][k] == pytest.approx(qty[k] / touch)


def test_a_quants_new_view_is_registered_and_read_online(pushed: PushedStore) -> None:
    store = open_store(pushed.cfg)
    view = store.get_feature_view("touch_liquidity")
    assert view.owner == "you@bookstream" and view.tags == {"team": "quant"}
    instruments = sorted(pushed.newest)
    names = ("bid_size_qty", "ask_size_qty", "microprice_px")
    got = _online(pushed.cfg, [f"touch_liquidity:{n}" for n in names], instruments)
    for name in names:
        for inst, value in zip(instruments, got[name], strict=True):
            assert value == pushed.newest[inst][name], f"touch_liquidity:{name} of {inst}"


def test_follow_mode_pushes_while_running_and_stops_on_sigterm(pushed: PushedStore) -> None:
    """``bookstream feast-push`` without ``--bounded``: the shared reader from its group's
    committed offsets; SIGTERM stops it between pushes with its summary, everything it read
    committed (a restart resumes after the topic's last record)."""
    import json
    import os
    import signal
    import subprocess
    import time

    from confluent_kafka import TopicPartition
    from it_helpers import BOOKSTREAM

    from jobs.feast_store import PUSHER_GROUP
    from jobs.kafka_io import committed_offsets, drain_topic, make_consumer
    from udfs.config import PROJECT_ROOT

    cfg = pushed.cfg
    topic = cfg.topics.features
    ends: dict[int, int] = {}  # partition -> after its last record (commit markers follow)
    for rec in drain_topic(cfg, topic):
        ends[rec.partition] = rec.offset + 1
    follower = subprocess.Popen(
        [str(BOOKSTREAM), "feast-push"],
        cwd=PROJECT_ROOT,
        env={**os.environ, **pushed.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    consumer = make_consumer(cfg, PUSHER_GROUP)
    try:
        partitions = [TopicPartition(topic, p) for p in ends]
        deadline = time.monotonic() + 300
        while {tp.partition: tp.offset for tp in committed_offsets(consumer, partitions)} != ends:
            assert follower.poll() is None, follower.stderr.read() if follower.stderr else ""
            assert time.monotonic() < deadline, "the follower never committed the topic's end"
            time.sleep(0.5)
    finally:
        consumer.close()
        follower.send_signal(signal.SIGTERM)
        out, err = follower.communicate(timeout=120)
    assert follower.returncode == 0, err[-4000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["read"] == pushed.push_summary["read"] and summary["refused"] == 0, summary
    assert summary["pushes"] >= 1
