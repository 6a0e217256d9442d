"""The stream job on a real Flink session cluster (infra/flink: one JobManager, two
TaskManagers of one slot each, started from the wheel's own scripts), submitted with Flink's
own CLI (``bookstream submit`` runs ``flink run -py jobs/stream_job.py -pyfs ... -C <jars>``):

* at parallelism 2 it computes exactly the features and orders of the local MiniCluster run on
  the same events (the head of the repo's sample: :data:`SAMPLE_EVENTS`);
* stopped with a savepoint mid-stream and resumed at another parallelism (2 -> 1 -> 2, one
  savepoint each way), the union of its runs' output is the uninterrupted run's, record for
  record: nothing lost, nothing twice.

One cluster for the module (started unless one of this checkout is up; stopped only if started
here), the sample's events produced once per topic set. The uninterrupted reference is the local
run of the first test.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest
from it_helpers import (
    config_for,
    produce_events,
    read_json,
    read_topic,
    rows_by_instrument,
    run_cli,
    state_env,
    topic_env,
    topic_names,
    wait_committed_to_end,
    wait_for,
)

from jobs.cluster import TERMINAL_STATES, job_state, list_jobs, stop_job, wait_job
from jobs.energy import cluster_cpu_seconds
from jobs.kafka_io import (
    create_topics,
    delete_topics,
    end_offsets,
)
from udfs.config import PROJECT_ROOT, Config, load_config
from udfs.market.adapters.sources import Source
from udfs.schema import L2Event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

WAIT_S = 600  # the shared machine can be slow; a stuck job still fails


@pytest.fixture(scope="module")
def cluster() -> Iterator[Config]:
    """The session cluster of this checkout: started by infra/flink/start.sh unless it is up
    already, stopped at the end only when started here."""
    cfg = load_config()
    check = [sys.executable, "-m", "jobs.cluster", "check", str(cfg.flink.cluster_taskmanagers)]
    was_up = subprocess.run(check, cwd=PROJECT_ROOT, capture_output=True).returncode == 0
    if not was_up:
        start = subprocess.run(
            ["bash", "infra/flink/start.sh"], cwd=PROJECT_ROOT, capture_output=True, text=True
        )
        assert start.returncode == 0, f"cluster start failed:\n{start.stderr[-4000:]}"
    yield cfg
    for job in list_jobs(cfg):  # a failed test may leave its job running
        if job["state"] not in TERMINAL_STATES:
            stop_job(cfg, job["job_id"], with_savepoint=False)
    if not was_up:
        subprocess.run(["bash", "infra/flink/stop.sh"], cwd=PROJECT_ROOT, check=True)


SAMPLE_EVENTS = 30_000
"""The sample's first events (its LOBSTER day, then the head of its Binance capture), cut after
a complete update: each cluster job costs seconds per 10k events on a 2-core machine, and these
tests run four of them plus the local reference."""


@pytest.fixture(scope="module")
def events() -> list[L2Event]:
    sample = list(Source.sample().events())
    cut = next(j + 1 for j in range(SAMPLE_EVENTS, len(sample)) if sample[j].is_last)
    head = sample[:cut]
    assert len({ev.instrument for ev in head}) == 2  # both instruments: keys for both subtasks
    return head


@dataclass(frozen=True)
class Output:
    """A run's features (without the processing time) and orders (without heartbeats, which
    follow the watermark), per instrument, in order, each as canonical JSON."""

    features: dict[str, list[str]]
    orders: dict[str, list[str]]

    @classmethod
    def read(cls, cfg: Config) -> Output:
        orders = read_json(cfg, cfg.topics.orders)
        return cls(
            features=rows_by_instrument(read_json(cfg, cfg.topics.features)),
            orders=rows_by_instrument(r for r in orders if r.get("action") != "heartbeat"),
        )

    def counts(self) -> dict[str, int]:
        return {
            "features": sum(map(len, self.features.values())),
            "orders": sum(map(len, self.orders.values())),
        }


@dataclass(frozen=True)
class LocalRun:
    cfg: Config
    env: dict[str, str]
    output: Output


@pytest.fixture(scope="module")
def local_run(events: list[L2Event]) -> Iterator[LocalRun]:
    """The sample through the local MiniCluster (``bookstream stream-job --bounded``): the
    reference, uninterrupted run."""
    env = topic_env("clulocal")
    cfg = config_for(env)
    create_topics(cfg)
    produce_events(cfg, events)
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "stream-job", "--bounded", "--group-id", "it-local"],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    output = Output.read(cfg)
    assert output.counts()["features"] > 500 and output.counts()["orders"] > 0, output.counts()
    yield LocalRun(cfg=cfg, env=env, output=output)
    delete_topics(cfg, topic_names(cfg))


def _submit(env: dict[str, str], *args: str) -> str:
    summary, _proc, _s = run_cli(["submit", *args], env, timeout_s=WAIT_S)
    return str(summary["job_id"])


def _features_written(cfg: Config) -> int:
    return sum(end_offsets(cfg, cfg.topics.features).values())


def test_cluster_at_parallelism_2_matches_the_local_run(cluster: Config, local_run: LocalRun):
    # the cluster's own topic set, reading the local run's events topic
    env = {**topic_env("clu2"), "BOOKSTREAM_TOPICS_EVENTS": local_run.cfg.topics.events}
    cfg = config_for(env)
    create_topics(cfg)
    try:
        cpu_before = cluster_cpu_seconds(cluster)  # what `demo --cluster` charges to its run
        job = _submit(env, "--parallelism", "2", "--bounded", "--group-id", "it-cluster-p2")
        assert wait_job(cfg, job, TERMINAL_STATES, WAIT_S) == "FINISHED"
        cpu_used = {k: v - cpu_before.get(k, 0.0) for k, v in cluster_cpu_seconds(cluster).items()}
        # the JobManager and both TaskManagers (one group) worked for the job
        assert cpu_used["flink-jobmanager"] > 0 and cpu_used["flink-taskmanager"] > 0, cpu_used
        detail = json.loads(
            subprocess.run(
                [sys.executable, "-m", "jobs.cli", "jobs"],
                cwd=PROJECT_ROOT,
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                check=True,
            ).stdout.splitlines()[-1]
        )
        assert any(j["job_id"] == job for j in detail["jobs"])
        vertices = _vertex_parallelism(cluster, job)
        assert set(vertices.values()) == {2}, vertices
        got = Output.read(cfg)
        assert got.counts() == local_run.output.counts()
        assert got.features == local_run.output.features
        assert got.orders == local_run.output.orders
    finally:
        delete_topics(cfg, [t for t in topic_names(cfg) if t != local_run.cfg.topics.events])


def _vertex_parallelism(cfg: Config, job_id: str) -> dict[str, int]:
    from jobs.cluster import job_detail

    return {v["name"]: v["parallelism"] for v in job_detail(cfg, job_id)["vertices"]}


def test_savepoint_mid_stream_resumes_at_another_parallelism(
    cluster: Config, local_run: LocalRun, events: list[L2Event], tmp_path
) -> None:
    env = topic_env("clusp", BOOKSTREAM_FLINK_SAVEPOINT_DIR=(tmp_path / "savepoints").as_uri())
    cfg = config_for(env)
    create_topics(cfg)
    group = f"it-savepoint-{uuid.uuid4().hex[:6]}"

    def cut_after(i: int) -> int:  # split after a batch's last record
        return next(j + 1 for j in range(i, len(events)) if events[j].is_last)

    cuts = [0, cut_after(len(events) // 3), cut_after(2 * len(events) // 3), len(events)]
    parts = [events[a:b] for a, b in itertools.pairwise(cuts)]
    expected = local_run.output
    try:
        savepoint: str | None = None
        for n, (part, parallelism) in enumerate(zip(parts, (2, 1, 2), strict=True)):
            args = ["--parallelism", str(parallelism), "--group-id", group]
            if savepoint is not None:
                args += ["--from-savepoint", savepoint]
            job = _submit(env, *args)
            before = _features_written(cfg)
            produce_events(cfg, part)
            if n == len(parts) - 1:
                wait_for(
                    lambda: _features_written(cfg) >= expected.counts()["features"],
                    WAIT_S,
                    "every feature of the sample",
                )
                stop_job(cfg, job, with_savepoint=False)
                break
            # mid-stream: some of this part's features are out, not necessarily all
            wait_for(lambda b=before: _features_written(cfg) > b, WAIT_S, f"part {n} features")
            vertices = _vertex_parallelism(cfg, job)
            assert set(vertices.values()) == {parallelism}, vertices
            if n == 0:  # a savepoint of a running job: it goes on running
                taken, _proc, _s = run_cli(["savepoint", job], env, timeout_s=WAIT_S)
                assert (Path(urlparse(taken["savepoint"]).path) / "_metadata").is_file(), taken
                assert wait_job(cfg, job, frozenset({"RUNNING"}), WAIT_S) == "RUNNING"
            stopped, _proc, _s = run_cli(["stop", job, "--savepoint"], env, timeout_s=WAIT_S)
            assert stopped["state"] == "FINISHED", stopped
            savepoint = stopped["savepoint"]
            # where flink.savepoint_dir says (Flink writes file:/path for file:///path)
            assert Path(urlparse(savepoint).path).parent == tmp_path / "savepoints", savepoint
        got = Output.read(cfg)
        assert got.counts() == expected.counts()
        assert got.features == expected.features
        assert got.orders == expected.orders
    finally:
        delete_topics(cfg, topic_names(cfg))


def test_doctor_reports_the_cluster(cluster: Config) -> None:
    # its other checks are not this test's: the exit status is theirs too
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "doctor", "--offline"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    report = json.loads(proc.stdout.splitlines()[-1])
    check = report["checks"]["flink-cluster"]
    want = cluster.flink.cluster_taskmanagers
    assert check["ok"] and f"{want}/{want} TaskManager(s)" in check["detail"], check
    assert report["logs"]["flink-cluster"] == str(cluster.flink_cluster_logs_dir)


def _first_of_each(lines: list[str]) -> list[str]:
    """The rows in order, each exact row once: what the at-least-once sink wrote, minus the
    rows a restore emitted again."""
    return list(dict.fromkeys(lines))


def _taskmanager_pids(cfg: Config) -> list[int]:
    pidfile = cfg.flink_cluster_dir / "run" / "flink-bookstream-taskexecutor.pid"
    alive = []
    for line in pidfile.read_text().split():
        try:
            os.kill(int(line), 0)
        except OSError:
            continue
        alive.append(int(line))
    return alive


def _executions(cfg: Config, tmp_path: Path, tag: str) -> dict[str, list[str]]:
    """The execution sink over a topic set's orders and events (bounded, its own state): each
    order's execution reports, in the order it published them."""
    from jobs.execution_sink import run_sink

    sink_cfg = config_for(
        {
            **topic_env(tag),
            **state_env(tmp_path / tag),
            "BOOKSTREAM_TOPICS_EVENTS": cfg.topics.events,
            "BOOKSTREAM_TOPICS_ORDERS": cfg.topics.orders,
        }
    )
    create_topics(sink_cfg)
    try:
        run_sink(sink_cfg, group=f"it-tmkill-{tag}-{uuid.uuid4().hex[:6]}", bounded=True)
        out: dict[str, list[str]] = {}
        for rec in sorted(
            read_topic(sink_cfg, sink_cfg.topics.executions), key=lambda r: (r.partition, r.offset)
        ):
            row = json.loads(rec.value)
            out.setdefault(row["order_id"], []).append(json.dumps(row, sort_keys=True))
        return out
    finally:
        keep = {cfg.topics.events, cfg.topics.orders}
        delete_topics(sink_cfg, [t for t in topic_names(sink_cfg) if t not in keep])


def test_taskmanager_killed_mid_stream_recovers_from_its_checkpoint(
    cluster: Config, local_run: LocalRun, events: list[L2Event], tmp_path
) -> None:
    """SIGKILL of one of the job's two TaskManagers mid-stream: Flink restarts the job from its
    last completed checkpoint once ``make cluster-up`` (infra/flink/start.sh) has started a
    TaskManager again. The sink is at-least-once, so the restore re-emits what followed the
    checkpoint; those rows are exact repeats, and downstream of the execution sink (which drops
    an order id it has seen) no order is lost and none is executed twice."""
    from jobs.cluster import checkpoint_stats

    env = topic_env("clutm")
    cfg = config_for(env)
    create_topics(cfg)
    cut = next(j + 1 for j in range(2 * len(events) // 3, len(events)) if events[j].is_last)
    expected = local_run.output
    try:
        group = f"it-tmkill-{uuid.uuid4().hex[:6]}"
        job = _submit(env, "--parallelism", "2", "--group-id", group)
        produce_events(cfg, events[:cut])
        wait_for(lambda: _features_written(cfg) > 0, WAIT_S, "the first features")
        # a checkpoint completed after output began: the restore has state to start from
        seen_ms = int(time.time() * 1000)
        wait_for(
            lambda: (checkpoint_stats(cfg, job)["latest_trigger_ms"] or 0) > seen_ms,
            WAIT_S,
            "a checkpoint after the first features",
        )
        before_kill = checkpoint_stats(cfg, job)
        t_kill = time.monotonic()
        victims = _taskmanager_pids(cfg)
        assert len(victims) == cfg.flink.cluster_taskmanagers, victims
        os.kill(victims[0], signal.SIGKILL)
        wait_for(lambda: victims[0] not in _taskmanager_pids(cfg), 30, "the TaskManager gone")
        healed = subprocess.run(
            ["bash", "infra/flink/start.sh"], cwd=PROJECT_ROOT, capture_output=True, text=True
        )
        assert healed.returncode == 0, healed.stderr[-4000:]
        assert len(_taskmanager_pids(cfg)) == cfg.flink.cluster_taskmanagers
        produce_events(cfg, events[cut:])

        def still_running() -> None:
            state = job_state(cfg, job)
            assert state == "RUNNING" or state not in TERMINAL_STATES, f"job {job} is {state}"

        wait_committed_to_end(
            cfg,
            group,
            WAIT_S,
            "a checkpoint covering every event after the restore",
            still_running=still_running,
        )
        print(f"kill -> every event checkpointed: {time.monotonic() - t_kill:.1f} s")
        stats = checkpoint_stats(cfg, job)
        assert stats["restored_count"] >= 1 and stats["restored_id"] is not None, stats
        assert stats["restored_id"] >= before_kill["latest_id"], (before_kill, stats)
        assert job_state(cfg, job) == "RUNNING"
        stop_job(cfg, job, with_savepoint=False)
        got = Output.read(cfg)
        features = {k: _first_of_each(v) for k, v in got.features.items()}
        orders = {k: _first_of_each(v) for k, v in got.orders.items()}
        assert features == expected.features
        assert orders == expected.orders
        # downstream of the execution sink: each order executed once, as in the local run
        t_sink = time.monotonic()
        assert _executions(cfg, tmp_path, "tmk") == _executions(local_run.cfg, tmp_path, "tmref")
        print(f"two execution sink runs: {time.monotonic() - t_sink:.1f} s")
    finally:
        delete_topics(cfg, topic_names(cfg))
