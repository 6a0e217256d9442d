"""Helpers of the integration tests: a real Kafka broker (``make up``) and real Flink.

Every test works on its own topics (``it.<hex>.<role>``) so that it never reads or disturbs
what another test -- or the lead's own jobs on the same broker -- wrote, and deletes them at the
end. Job runs cost ~10-15 s of JVM start-up each, so the suite keeps them few.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from jobs.kafka_io import (
    KafkaRecord,
    client_config,
    committed_offsets,
    drain_topic,
    end_offsets,
    make_consumer,
    make_producer,
)
from udfs.config import PROJECT_ROOT, Config, load_config, topics_env
from udfs.schema import L2Event, encode_event

VENV_BIN = Path(sys.executable).parent
BOOKSTREAM = VENV_BIN / "bookstream"


def topic_env(tag: str, **extra: str) -> dict[str, str]:
    """``BOOKSTREAM_*`` environment giving a run (a subprocess, or :func:`config_for`) a whole
    topic set of its own, ``it.<hex>.<tag>.<field>`` (plus ``extra``)."""
    run_topics = load_config().topics.for_run(f"it.{uuid.uuid4().hex[:8]}.{tag}")
    return {**topics_env(run_topics), **extra}


def state_env(state_dir: Path) -> dict[str, str]:
    """``BOOKSTREAM_*`` environment of a run with a state directory of its own on the session's
    broker: its Kafka credentials stay the broker's (``kafka.security = "sasl"``, generated
    under the session's state by ``make up``)."""
    return {
        "BOOKSTREAM_STATE_DIR": str(state_dir),
        "BOOKSTREAM_KAFKA_CREDENTIALS_DIR": str(load_config().kafka_credentials_dir),
    }


def config_for(env: dict[str, str]) -> Config:
    """The configuration a subprocess started with ``os.environ | env`` would load."""
    return load_config(env={**os.environ, **env})


def topic_names(cfg: Config) -> list[str]:
    return [s.name for s in cfg.topics.specs()]


def read_topic(
    cfg: Config, topic: str, from_offsets: dict[int, int] | None = None
) -> list[KafkaRecord]:
    """Every record of ``topic`` (from ``from_offsets``) up to its current end."""
    return list(drain_topic(cfg, topic, from_offsets=from_offsets, idle_timeout_s=15))


def read_json(cfg: Config, topic: str, from_offsets: dict[int, int] | None = None) -> list[dict]:
    return [json.loads(r.value) for r in read_topic(cfg, topic, from_offsets)]


def committed_values(cfg: Config, topic: str) -> list[bytes | None]:
    """The values of ``topic``'s committed records (read_committed: aborted transactions
    skipped) up to its current stable end, in (partition, offset) order."""
    records = drain_topic(cfg, topic, read_committed=True, idle_timeout_s=60)
    return [r.value for r in sorted(records, key=lambda r: (r.partition, r.offset))]


def committed_inputs(consumer: Consumer, cfg: Config) -> int:
    """Inputs of the execution sink (events and orders topics) that ``consumer``'s group has
    committed, summed over every partition."""
    tps = [
        TopicPartition(t, p)
        for t in (cfg.topics.events, cfg.topics.orders)
        for p in range(cfg.topics.partitions)
    ]
    return sum(max(tp.offset, 0) for tp in committed_offsets(consumer, tps))


def produce_events(cfg: Config, events: Iterable[L2Event]) -> None:
    """Events to the events topic as the publisher sends them: key = instrument, record
    timestamp = exchange time (ms)."""
    producer = make_producer(cfg)
    for ev in events:
        producer.produce(
            cfg.topics.events,
            key=ev.instrument,
            value=encode_event(ev),
            timestamp=ev.ts_event // 1_000_000,
        )
    assert producer.flush(60) == 0


def rows_by_instrument(rows: Iterable[dict]) -> dict[str, list[str]]:
    """Feature or order rows per instrument, in order, each as canonical JSON without its
    processing time (``ts_proc``): what two runs of the job over the same events agree on."""
    out: dict[str, list[str]] = {}
    for row in rows:
        row = {k: v for k, v in row.items() if k != "ts_proc"}
        out.setdefault(row["instrument"], []).append(json.dumps(row, sort_keys=True))
    return out


def read_at(cfg: Config, topic: str, partition: int, offset: int) -> bytes | None:
    """The value of the one record at ``topic``/``partition``/``offset``."""
    consumer = Consumer(
        client_config(
            cfg, {"group.id": f"it-read-at-{uuid.uuid4().hex}", "enable.auto.commit": False}
        )
    )
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            assert (msg.partition(), msg.offset()) == (partition, offset)
            return msg.value()
        raise TimeoutError(f"{topic}[{partition}]@{offset}: nothing read in 15 s")
    finally:
        consumer.close()


def wait_for(
    predicate: Callable[[], object],
    timeout_s: float,
    what: str,
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
    poll_s: float = 1.0,
) -> object:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout_s`` or when
    ``proc`` (a job that should keep running) has exited."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:] if log else ""
            pytest.fail(f"waiting for {what}: job exited with {proc.returncode}\n{tail}")
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-4000:] if log else ""
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}\n{tail}")
        time.sleep(poll_s)


def start_job(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``python -m jobs.cli <args>`` in its own session (so the JVM it spawns can be killed
    with it), output to ``log``."""
    fh = log.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", *args],
            cwd=PROJECT_ROOT,
            env={**os.environ, **env},
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        fh.close()


def kill_job(proc: subprocess.Popen) -> None:
    """SIGKILL the job's whole process group (Python client + Flink JVM): a crash."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    # the group may outlive its leader (the JVM is a child): make sure it is gone too
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_cli(
    args: list[str], env: dict[str, str], timeout_s: float = 300
) -> tuple[dict, subprocess.CompletedProcess, float]:
    """Run ``bookstream <args>``; return the JSON of its last stdout line, the process and the
    wall time."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(BOOKSTREAM), *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, (
        f"bookstream {' '.join(args)} exited {proc.returncode}\n{proc.stderr[-4000:]}"
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert lines, f"bookstream {' '.join(args)} printed nothing\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1]), proc, elapsed


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_committed_to_end(
    cfg: Config,
    group: str,
    timeout_s: float,
    what: str,
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
    still_running: Callable[[], None] | None = None,
) -> None:
    """Wait until consumer group ``group`` has committed every partition of the events topic
    that holds records, up to its end: a job that commits its offsets on checkpoints has read
    every event and its sink has flushed what they produced. ``still_running`` (raises when
    the job is gone) is called at every poll."""
    topic = cfg.topics.events
    end = {p: o for p, o in end_offsets(cfg, topic).items() if o > 0}
    tps = [TopicPartition(topic, p) for p in end]
    watcher = make_consumer(cfg, group)

    def caught_up() -> bool:
        if still_running is not None:
            still_running()
        return {tp.partition: tp.offset for tp in committed_offsets(watcher, tps)} == end

    try:
        wait_for(caught_up, timeout_s, what, proc, log)
    finally:
        watcher.close()
