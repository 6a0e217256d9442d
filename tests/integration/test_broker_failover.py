"""A replicated Kafka (issue 13): three KRaft nodes started by the project's own scripts
(``infra/kafka/start.sh`` with ``kafka.brokers = 3``, a state directory and free ports of this
test, so the session's single broker is never touched), every topic with 3 replicas and
``min.insync.replicas=2`` from configuration, clients through the bootstrap list and the
client passthrough, authenticated like every client (``kafka.security = "sasl"``: the nodes'
own credentials, generated on their first start). One node is SIGKILLed while the execution
sink runs live and the publisher keeps producing, then restarted: nothing is lost, the sink
goes on, and its transactions survive the failover (the committed executions equal an
uninterrupted run's, byte for byte, no report twice).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import ConfigResource
from it_helpers import (
    committed_inputs,
    committed_values,
    config_for,
    kill_job,
    produce_events,
    rows_by_instrument,
    start_job,
    wait_committed_to_end,
    wait_for,
)
from test_execution_sink import events, heartbeat, orders, produce, publish_market, run

from jobs.bench import free_port_block
from jobs.energy import proc_cpu_s
from jobs.kafka_io import (
    _admin,
    broker_list,
    client_config,
    create_topics,
    end_offsets,
)
from udfs.config import PROJECT_ROOT, Config, load_config
from udfs.schema import ExecReport, decode_record

pytestmark = pytest.mark.integration

SECRET = f"it-secret-{uuid.uuid4().hex}"
STEP = 2  # node i on base + 2(i-1), its controller one above


@dataclass(frozen=True)
class Cluster:
    env: dict[str, str]
    state: Path

    def script(self, name: str) -> None:
        subprocess.run(
            ["bash", str(PROJECT_ROOT / "infra" / "kafka" / name)],
            env={**os.environ, **self.env},
            check=True,
            capture_output=True,
            timeout=240,
        )

    def pid(self, node: int) -> int:
        return int((self.state / "kafka" / f"node-{node}" / "kafka.pid").read_text())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    state = tmp_path_factory.mktemp("kafka3")
    (state / "jars").symlink_to(load_config().jars_dir)  # the installed jars, nothing copied
    base = free_port_block(3 * STEP)
    env = {
        "BOOKSTREAM_STATE_DIR": str(state),
        "BOOKSTREAM_KAFKA_BROKERS": "3",
        "BOOKSTREAM_KAFKA_PORT": str(base),
        "BOOKSTREAM_KAFKA_CONTROLLER_PORT": str(base + 1),
        "BOOKSTREAM_KAFKA_NODE_PORT_STEP": str(STEP),
        "BOOKSTREAM_KAFKA_BOOTSTRAP": "",
        # the passthrough reaches every client: one name for both families, one for each
        "BOOKSTREAM_KAFKA_CLIENT": json.dumps(
            {
                "reconnect.backoff.ms": "100",
                "librdkafka.socket.nagle.disable": "true",
                "java.ssl.protocol": "TLSv1.3",
                # a secret (unused without SSL) that must never reach a log
                "ssl.key.password": SECRET,
            }
        ),
    }
    c = Cluster(env=env, state=state)
    try:
        _phase("starting 3 nodes")
        c.script("start.sh")
        _phase("3 nodes ready")
        yield c
    finally:
        with contextlib.suppress(OSError, ValueError):  # CPU of the nodes, for the record
            cpu = sum(proc_cpu_s(c.pid(n)) for n in (1, 2, 3))
            _phase(f"stopping; the nodes used {cpu:.0f} CPU s (restarted one: since restart)")
        c.script("stop.sh")
    for node in (1, 2, 3):  # stop.sh stopped each node by its pid
        assert not (state / "kafka" / f"node-{node}" / "kafka.pid").exists()


def _config(cluster: Cluster, tag: str) -> tuple[Config, dict[str, str]]:
    topics = load_config(env={}).topics.for_run(f"it.{uuid.uuid4().hex[:8]}.{tag}")
    env = {
        **cluster.env,
        **{f"BOOKSTREAM_TOPICS_{f.upper()}": n for f, n in topics.names().items()},
    }
    cfg = config_for(env)
    create_topics(cfg)
    return cfg, env


T0 = time.monotonic()


def _phase(what: str) -> None:
    print(f"[failover {time.monotonic() - T0:6.1f}s] {what}", file=sys.stderr, flush=True)


def _count(cfg: Config, topic: str) -> int:
    return sum(end_offsets(cfg, topic).values())


def test_topics_are_replicated_from_configuration(cluster: Cluster) -> None:
    cfg, _env = _config(cluster, "rf")
    assert len(broker_list(cfg)) == 3
    admin = _admin(cfg)
    md = admin.list_topics(timeout=10)
    resources = [ConfigResource("topic", s.name) for s in cfg.topics.specs()]
    for res, fut in admin.describe_configs(resources).items():
        assert fut.result()["min.insync.replicas"].value == "2", res
        parts = md.topics[res.name].partitions.values()
        assert all(len(p.replicas) == 3 and len(p.isrs) == 3 for p in parts), res


def test_a_broker_killed_and_restarted_loses_nothing_and_transactions_survive(
    cluster: Cluster,
) -> None:
    beats = 400  # heartbeats after each order: the live sink commits in many transactions
    inputs = [rec for o in orders() for rec in (o, *[heartbeat(o.ts_event)] * beats)]
    half = len(inputs) // 2
    total = len(events()) + len(inputs)

    _phase("reference")
    # reference: the same inputs, one uninterrupted bounded run on the healthy cluster
    ref, _ = _config(cluster, "ref")
    publish_market(ref)
    produce(ref, ref.topics.orders, inputs)
    ref_res = run(ref)
    expected = committed_values(ref, ref.topics.executions)
    assert ref_res.stats["fills"] > 0 and expected

    _phase("failover run")
    cfg, env = _config(cluster, "failover")
    group = f"it-sink-{uuid.uuid4().hex[:8]}"
    publish_market(cfg)
    produce(cfg, cfg.topics.orders, inputs[:half])
    code = (
        "from jobs.execution_sink import run_sink; from udfs.config import load_config; "
        f"run_sink(load_config(), group={group!r}, bounded=False, commit_every=200, "
        "idle_exit_s=None)"
    )
    log_path = cluster.state / f"{group}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=PROJECT_ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    watcher = Consumer(client_config(cfg, {"group.id": group, "enable.auto.commit": False}))
    try:

        def wait_committed(at_least: int, what: str) -> int:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                n = committed_inputs(watcher, cfg)
                if n >= at_least:
                    return n
                time.sleep(0.2)
            pytest.fail(f"sink stuck before {what}\n{log_path.read_text()[-3000:]}")

        before_kill = wait_committed(len(events()) + 1, "the kill")
        # the node leading the executions topic's first partition: the sink's writes move
        md = _admin(cfg).list_topics(cfg.topics.executions, timeout=10)
        victim = md.topics[cfg.topics.executions].partitions[0].leader
        killed_pid = cluster.pid(victim)
        os.kill(killed_pid, signal.SIGKILL)

        _phase(f"node {victim} killed")
        # one node down: producers (acks=all, 2 in sync) and the live sink go on
        produce(cfg, cfg.topics.orders, inputs[half:])
        during = wait_committed(before_kill + 2 * beats, "progress with a node down")
        _phase("restart")
        # restart exactly the dead node (start.sh leaves running ones alone) while the sink runs
        restart = subprocess.Popen(
            ["bash", str(PROJECT_ROOT / "infra" / "kafka" / "start.sh")],
            env={**os.environ, **cluster.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        done = wait_committed(total, "the end of its inputs")
        assert restart.wait(timeout=240) == 0
        assert len(broker_list(cfg)) == 3 and cluster.pid(victim) != killed_pid
    finally:
        kill_job(proc)
        watcher.close()

    assert before_kill < during <= done == total  # the sink went on through the failover
    # what the live sink still holds back (the sequencer's lateness) a bounded run with the same
    # group resolves, as after any stop: it rebuilds from the committed history and adds the rest
    _phase("bounded finish")
    resumed = run(cfg, group)
    assert resumed.rebuilt_inputs == total and resumed.inputs == 0
    # nothing lost: every event and order is in its topic once
    assert _count(cfg, cfg.topics.events) == len(events())
    assert _count(cfg, cfg.topics.orders) == len(inputs)
    after = committed_values(cfg, cfg.topics.executions)
    ids = [decode_record(ExecReport, v).report_id for v in after]
    assert not [i for i, c in Counter(ids).items() if c > 1]
    assert after == expected  # byte for byte, in the same order
    assert resumed.positions == ref_res.positions
    # the passthrough's secret is in no log: the live sink's, the nodes'
    logs = [log_path, *cluster.state.glob("kafka/node-*/kafka.log")]
    assert len(logs) == 4 and not [p for p in logs if SECRET in p.read_text(errors="replace")]
    _phase("checked")


JOB_EVENTS = 20_000  # the sample's head: both instruments, a few seconds of the job


def test_the_stream_job_goes_on_through_a_broker_failover(cluster: Cluster, tmp_path) -> None:
    """The Flink stream job (``bookstream stream-job``, Kafka source and sink on the bootstrap
    list) runs while the node leading its events partition is SIGKILLed and restarted: it
    continues without a restart from outside, every event is read (its group's committed
    offsets reach the end) and its features are exactly those of the job's own per-record
    logic over the same events (repeats of its at-least-once sink dropped)."""
    import itertools

    from udfs.market.adapters.sources import Source
    from udfs.pipeline import process_events

    cfg, env = _config(cluster, "job")
    sample = list(itertools.islice(Source.sample().events(), JOB_EVENTS))
    cut = next(j + 1 for j in range(len(sample) // 2, len(sample)) if sample[j].is_last)

    group = f"it-failover-job-{uuid.uuid4().hex[:6]}"
    log = tmp_path / "job.log"
    produce_events(cfg, sample[:cut])
    proc = start_job(["stream-job", "--group-id", group], env, log)
    try:
        wait_for(lambda: _count(cfg, cfg.topics.features) > 0, 600, "the first features", proc, log)
        md = _admin(cfg).list_topics(timeout=10)
        victim = md.topics[cfg.topics.events].partitions[0].leader
        killed_pid = cluster.pid(victim)
        os.kill(killed_pid, signal.SIGKILL)
        _phase(f"stream job: node {victim} killed")
        produce_events(cfg, sample[cut:])  # min ISR 2 of 3: writes go on with one node down
        cluster.script("start.sh")  # restarts exactly the dead node
        assert len(broker_list(cfg)) == 3 and cluster.pid(victim) != killed_pid
        _phase("stream job: node restarted")
        wait_committed_to_end(cfg, group, 600, "a checkpoint covering every event", proc, log)
    finally:
        kill_job(proc)
    _, reference = process_events(
        sample, cfg.features, cfg.flink.out_of_orderness_ms, topic=cfg.topics.events
    )
    want = rows_by_instrument(reference.features)
    got = rows_by_instrument(map(json.loads, committed_values(cfg, cfg.topics.features)))
    got = {k: list(dict.fromkeys(v)) for k, v in got.items()}
    assert {k: len(v) for k, v in got.items()} == {k: len(v) for k, v in want.items()}
    assert got == want
