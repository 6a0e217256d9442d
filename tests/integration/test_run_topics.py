"""A run's topics are its config's topic set, replaced as a whole: every output of the stream
job goes to a topic of the config it was built from, and a run of its own (bench, replay, test)
touches no live topic. Builds the real Flink job graph (no execution) and reads the topic of
every Kafka sink from Flink's own execution plan."""

from __future__ import annotations

import json

import pytest

from jobs.bench import broker_copy_topic, build_bench_job, run_config
from jobs.replay import replay_run
from jobs.stream_job import SINK_NAME_PREFIX, build_stream_job
from udfs.config import Config, TopicsConfig, load_config


def _sink_topics(env) -> list[str]:
    """The topics of every Kafka sink in the job graph (from Flink's execution plan; the stream
    job's one routed sink names all it writes, comma-separated)."""
    plan = json.loads(env.get_execution_plan())
    names = [node["contents"] for node in plan["nodes"]]
    topics = [
        topic.strip()
        for name in names
        if SINK_NAME_PREFIX in name
        for topic in name.split(SINK_NAME_PREFIX, 1)[1].split(":")[0].split(",")
    ]
    assert topics, names
    return topics


def test_bench_and_replay_runs_replace_every_topic() -> None:
    live = load_config().topics
    for run_topics in (run_config("bench.x").topics, load_config().for_run(replay_run("r")).topics):
        assert set(run_topics.names()) == set(TopicsConfig.name_fields())
        assert not set(run_topics.names().values()) & set(live.names().values())
    assert broker_copy_topic(run_config("bench.x")) not in live.names().values()


@pytest.mark.parametrize("trading", [True, False])
def test_stream_job_writes_only_to_its_configs_topics(trading: bool) -> None:
    cfg: Config = load_config().for_run("it.routing")
    env = build_stream_job(cfg, bounded=True, trading=trading)
    expected = {"features", "dead_letter", "stats", "quality"}
    if trading:
        expected |= {"signals", "orders", "drift"}  # drift: the live model's input PSI rows
    assert set(_sink_topics(env)) == {getattr(cfg.topics, f) for f in expected}


def test_bench_job_stage_writes_no_live_topic() -> None:
    """`make bench` once passed no quality topic and wrote its rows into the live one."""
    cfg = run_config("bench.routing")
    live = set(load_config().topics.names().values())
    sinks = _sink_topics(build_bench_job(cfg))
    assert not set(sinks) & live, sinks
    assert cfg.topics.quality in sinks


@pytest.mark.parametrize("parallelism", ["1", "2"])
def test_every_operator_and_sink_has_a_uid(parallelism: str) -> None:
    """State (a savepoint's too) is matched to operators by uid: one generated from the graph's
    shape would change with it, and a restore at another parallelism or after a code change
    would not find its state. Every node of the real stream graph, Kafka sink writer and
    committer included, at parallelism 1 (source chained to the keyed operator) and 2
    (shuffled)."""
    from it_helpers import config_for

    cfg = config_for({"BOOKSTREAM_FLINK_PARALLELISM": parallelism}).for_run("it.uids")
    env = build_stream_job(cfg, bounded=True)
    graph = env._generate_stream_graph(clear_transformations=False)
    nodes = {
        str(n.getOperatorName()): n.getTransformationUID() for n in graph.getStreamNodes().toArray()
    }
    assert len(nodes) >= 5, nodes
    assert all(nodes.values()), {name: uid for name, uid in nodes.items() if not uid}
    assert len(set(nodes.values())) == len(nodes), nodes
