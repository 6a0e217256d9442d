"""No poison pill on a real broker (issue 9 section 1): the execution sink and the history sink
dead-letter the records the review found (with stage, source, offset and reason) and go on.

Each of these records stopped its stage before -- and every restart after it, since the
control topic is kept forever and a sink rebuilds from its history.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

import pytest
from it_helpers import read_topic
from test_execution_sink import env_for, events, orders, publish_market

from jobs.execution_sink import run_sink
from jobs.history_sink import run_history_sink
from jobs.kafka_io import make_producer
from udfs.schema import (
    Control,
    ControlCommand,
    ExecReport,
    Reason,
    decode_dead_letter,
    decode_record,
    encode_record,
)

pytestmark = pytest.mark.integration


def _produce(cfg, topic: str, values: list[bytes], key: str | None = None) -> None:
    producer = make_producer(cfg)
    for value in values:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def test_execution_sink_dead_letters_poison_pills_and_goes_on(kafka_topics, tmp_path: Path) -> None:
    cfg, _ = kafka_topics("pill", **env_for(tmp_path))
    publish_market(cfg)
    good = orders()[0]
    later = orders()[1]
    order = json.loads(encode_record(good))
    pills = [
        {**order, "order_id": "q-str", "quantity": "10"},
        {**order, "order_id": "q-inf", "quantity": math.inf},
        {**order, "order_id": "q-big", "quantity": 1e30},
        {**order, "order_id": "p-nan", "price": math.nan},
    ]
    inst = events()[0].instrument
    _produce(
        cfg,
        cfg.topics.orders,
        [json.dumps(p).encode() for p in pills] + [encode_record(good), encode_record(later)],
        key=inst,
    )
    control = json.loads(encode_record(Control(ControlCommand.KILL, "", "op", 1)))
    _produce(cfg, cfg.topics.control, [json.dumps({**control, "ts_event": "1"}).encode()])

    res = run_sink(cfg, group=f"it-pill-{uuid.uuid4().hex[:8]}", bounded=True)

    # the sink went on: the good orders after the pills got their reports, the KILL with a
    # string time never applied
    reported = {
        decode_record(ExecReport, r.value).order_id for r in read_topic(cfg, cfg.topics.executions)
    }
    assert {good.order_id, later.order_id} <= reported
    assert res.stats["kills"] == 0
    assert res.skipped == 5
    dead = [decode_dead_letter(r.value) for r in read_topic(cfg, cfg.topics.dead_letter)]
    got = sorted((d.source, d.offset, d.stage, d.reason_code) for d in dead)
    assert got == sorted(
        [(f"kafka:{cfg.topics.orders}", i, "execution", Reason.SCHEMA) for i in range(4)]
        + [(f"kafka:{cfg.topics.control}", 0, "execution", Reason.SCHEMA)]
    )
    reasons = {d.offset: d.reason for d in dead if d.source.endswith(cfg.topics.orders)}
    assert reasons[0].startswith("quantity") and reasons[3].startswith("price")
    assert json.loads(next(d.raw for d in dead if d.offset == 1))["order_id"] == "q-inf"


def test_history_sink_dead_letters_a_row_that_does_not_fit_its_column(
    kafka_topics, tmp_path: Path
) -> None:
    cfg, _ = kafka_topics("hfit", BOOKSTREAM_LAKE_ROOT=str(tmp_path / "lake"))
    good = {"instrument": "A.X", "watermark_ms": 60_000, "events_in": 1}
    values = [
        json.dumps(good).encode(),
        # decodes (an int64 integer) but its event_time cannot be represented
        json.dumps({**good, "watermark_ms": 9_300_000_000_000_000}).encode(),
        # pyarrow would have truncated it silently into the integer column
        json.dumps({**good, "watermark_ms": 1.5}).encode(),
        json.dumps({**good, "events_in": 2}).encode(),
    ]
    _produce(cfg, cfg.topics.stats, values, key="A.X")

    res = run_history_sink(cfg, bounded=True, only=["stats"])

    assert res.rows["stats"] == 2
    assert res.dead_lettered == 2
    dead = [decode_dead_letter(r.value) for r in read_topic(cfg, cfg.topics.dead_letter)]
    assert sorted((d.offset, d.stage, d.source) for d in dead) == [
        (1, "history", f"kafka:{cfg.topics.stats}"),
        (2, "history", f"kafka:{cfg.topics.stats}"),
    ]
    assert "does not fit the stats table" in next(d.reason for d in dead if d.offset == 1)
    assert "watermark_ms" in next(d.reason for d in dead if d.offset == 2)
