"""Fixtures of the integration tests (real broker, real Flink); helpers are in it_helpers.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from it_helpers import config_for, run_cli, topic_env, topic_names

from jobs.kafka_io import BrokerUnavailableError, check_broker, create_topics, delete_topics
from udfs.config import Config, load_config


@pytest.fixture(scope="session", autouse=True)
def _broker() -> None:
    try:
        check_broker(load_config())
    except BrokerUnavailableError as exc:  # a missing broker is a failure, never a skip
        pytest.fail(f"integration tests need the broker: {exc}", pytrace=False)


@pytest.fixture
def kafka_topics() -> Iterator[Callable[..., tuple[Config, dict[str, str]]]]:
    """Factory ``(tag, create=True, **extra_env) -> (cfg, env)``; deletes every topic it
    handed out at teardown."""
    made: list[Config] = []

    def make(tag: str, create: bool = True, **extra: str) -> tuple[Config, dict[str, str]]:
        env = topic_env(tag, **extra)
        cfg = config_for(env)
        if create:
            create_topics(cfg)
        made.append(cfg)
        return cfg, env

    yield make
    for cfg in made:
        delete_topics(cfg, topic_names(cfg))


@dataclass(frozen=True)
class DemoHistory:
    """One ``bookstream demo`` on the shipped sample, with its own topics and its own lake."""

    cfg: Config
    env: dict[str, str]
    summary: dict


@pytest.fixture(scope="session")
def demo_history(tmp_path_factory) -> Iterator[DemoHistory]:
    """The live run the history tests share: publish -> Flink job -> execution sink ->
    history sink (Iceberg, SQLite catalog) on real data; built once per session (~1-2 min)."""
    lake = tmp_path_factory.mktemp("lake")
    env = topic_env("hist", BOOKSTREAM_LAKE_ROOT=str(lake))
    summary, _proc, _elapsed = run_cli(["demo", "--no-progress"], env, timeout_s=600)
    cfg = config_for(env)
    yield DemoHistory(cfg=cfg, env=env, summary=summary)
    delete_topics(cfg, topic_names(cfg))
