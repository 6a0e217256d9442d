"""One record far in the future cannot move the Flink job's clock (issue 9, section 3).

Two bounded runs of the real job over the shipped LOBSTER sample, each on its own topics:

* ``clean``: the sample as it is;
* ``injected``: the first ``SPLIT`` events, then one valid event stamped two hours ahead of this
  machine's clock (years ahead of the sample), then -- once the job has dead-lettered it and its
  periodic watermark has had time to move (Flink emits one every 200 ms) -- the rest.

The Python side dead-letters the record as ``future``; the JVM side (PlausibleWatermarks.java)
must not let it move the watermark either: otherwise the key's event-time timers fire at once (a
heartbeat on the orders topic in the middle of the sample, the minute's stats early) and every
timer registered later waits for the end of input. Everything the job writes on the features
and orders topics must equal the clean run's; the only difference is the one dead letter.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from it_helpers import config_for, read_topic, topic_env, topic_names, wait_for

from jobs.kafka_io import DeliveryErrors, create_topics, delete_topics, end_offsets, make_producer
from jobs.publish import produce_events
from jobs.stream_job import build_stream_job
from udfs.config import Config
from udfs.market.adapters.sources import SAMPLE_LOBSTER, Source
from udfs.schema import L2Event, decode_dead_letter

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SPLIT = 100
"""The far-future record goes after this many events of the sample."""
FUTURE_NS = (time.time_ns() // 1_000_000 + 2 * 3_600_000) * 1_000_000


@dataclass
class Run:
    cfg: Config
    features: list[tuple[int, dict]]
    orders: list[tuple[int, bytes]]
    dead_letters: list[dict]


def _produce(cfg: Config, events: list[L2Event]) -> None:
    producer = make_producer(cfg)
    check = DeliveryErrors()
    produce_events(producer, cfg.topics.events, events, check, progress=False)
    check.check(cfg, producer.flush(30))


def _outputs(cfg: Config) -> Run:
    features = []
    for rec in read_topic(cfg, cfg.topics.features):
        row = json.loads(rec.value or b"")
        row.pop("ts_proc")  # the job's wall clock
        features.append((rec.timestamp_ms, row))
    orders = [(r.timestamp_ms, r.value or b"") for r in read_topic(cfg, cfg.topics.orders)]
    dead = [
        json.loads(decode_dead_letter(r.value or b"").to_json())
        for r in read_topic(cfg, cfg.topics.dead_letter)
    ]
    return Run(cfg, features, orders, dead)


def _run(tag: str, tmp_path_factory, events: list[L2Event], future: L2Event | None) -> Run:
    env = topic_env(tag, BOOKSTREAM_FLINK_CHECKPOINT_DIR=str(tmp_path_factory.mktemp(tag)))
    cfg = config_for(env)
    create_topics(cfg)
    start = end_offsets(cfg, cfg.topics.events)
    first, rest = (events, []) if future is None else (events[:SPLIT], events[SPLIT:])
    _produce(cfg, first)
    if future is not None:
        _produce(cfg, [future])
    stop = end_offsets(cfg, cfg.topics.events)
    (partition,) = [p for p in stop if stop[p] > start[p]]
    stop[partition] += len(rest)
    job = build_stream_job(
        cfg,
        bounded=True,
        group_id=f"it-{cfg.topics.events}",
        start_offsets=start,
        stop_offsets=stop,
    )
    client = job.execute_async(f"future-watermark-{tag}")
    if future is not None:
        # the job has read and refused the record; give its periodic watermark time to move
        wait_for(
            lambda: read_topic(cfg, cfg.topics.dead_letter), 120, "the future record's dead letter"
        )
        time.sleep(2)
        _produce(cfg, rest)
    client.get_job_execution_result().result()
    return _outputs(cfg)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Iterator[tuple[Run, Run]]:
    events = list(Source(lobster=[SAMPLE_LOBSTER]).events())
    assert len(events) > 2 * SPLIT
    future = replace(events[SPLIT], ts_event=FUTURE_NS, ts_recv=FUTURE_NS)
    made: list[Run] = []
    try:
        made.append(_run("clean", tmp_path_factory, events, None))
        made.append(_run("future", tmp_path_factory, events, future))
        yield made[0], made[1]
    finally:
        for run in made:
            delete_topics(run.cfg, topic_names(run.cfg))


def test_one_future_record_changes_nothing_but_its_dead_letter(runs: tuple[Run, Run]) -> None:
    clean, injected = runs
    assert clean.dead_letters == []
    (dead,) = injected.dead_letters
    assert dead["reason_code"] == "future" and dead["offset"] == SPLIT
    assert dead["ts_event"] == FUTURE_NS
    assert len(clean.features) > SPLIT and clean.orders, "the sample yields features and orders"
    assert injected.features == clean.features
    assert injected.orders == clean.orders
