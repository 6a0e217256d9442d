"""``bookstream tail``: a topic's records decoded in the project's types, a bad one shown with
its reason (not stopping the tail), by field name or topic name, last N or from the start."""

from __future__ import annotations

import json
import subprocess

import pytest
from it_helpers import BOOKSTREAM, PROJECT_ROOT

from jobs.kafka_io import make_producer
from udfs.schema import Control, ControlCommand, encode_record

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _tail(args: list[str], env: dict[str, str]) -> list[dict]:
    import os

    proc = subprocess.run(
        [str(BOOKSTREAM), "tail", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_tail_decodes_records_and_shows_a_bad_one_with_its_reason(kafka_topics) -> None:
    cfg, env = kafka_topics("tail")
    kill = Control(ControlCommand.KILL, "", "desk", 1_340_000_000_000_000_000)
    resume = Control(ControlCommand.RESUME, "", "desk", 1_340_000_001_000_000_000)
    producer = make_producer(cfg)
    for value in (encode_record(kill), b'{"command": "explode"}', encode_record(resume)):
        producer.produce(cfg.topics.control, value=value)
    assert producer.flush(30) == 0

    lines = _tail(["control", "--from-beginning"], env)
    assert [line["offset"] for line in lines] == [0, 1, 2]
    assert lines[0]["record"]["command"] == "kill" and lines[0]["record"]["reason"] == "desk"
    assert "error" in lines[1] and "explode" in lines[1]["error"] + lines[1]["raw"]
    assert lines[2]["record"]["command"] == "resume"
    # by its topic name, the last record only
    last = _tail([cfg.topics.control, "-n", "1"], env)
    assert [line["offset"] for line in last] == [2]


def test_kafka_s_own_tools_run_against_the_project_s_broker(kafka_topics) -> None:
    """infra/kafka/bin wraps the kafka-tools jar (Maven Central) with the configured broker."""
    import os

    cfg, env = kafka_topics("tools")
    proc = subprocess.run(
        [
            str(PROJECT_ROOT / "infra/kafka/bin/kafka-topics"),
            "--describe",
            "--topic",
            cfg.topics.orders,
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Topic: {cfg.topics.orders}" in proc.stdout
    assert f"PartitionCount: {cfg.topics.partitions}" in proc.stdout
