"""Fixtures of the integration tests (real broker, real Flink); helpers are in it_helpers.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from it_helpers import VENV_BIN, config_for, run_cli, topic_env, topic_names

from jobs.kafka_io import BrokerUnavailableError, check_broker, create_topics, delete_topics
from udfs.config import PROJECT_ROOT, Config, load_config


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


# the README's "Quants: Feast" example, verbatim
THROWAWAY_VIEW = """\
from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Float64

from data_sources import book_push
from entities import instrument

touch_liquidity = FeatureView(
    name="touch_liquidity",
    entities=[instrument],
    ttl=timedelta(minutes=10),
    schema=[
        Field(name="bid_size_qty", dtype=Float64),
        Field(name="ask_size_qty", dtype=Float64),
        Field(name="microprice_px", dtype=Float64),
    ],
    source=book_push,
    description="Size at the touch and the microprice, for a liquidity model.",
    owner="you@bookstream",
    tags={"team": "quant"},
)
"""

# a view whose TTL is shorter than the sample's gaps between events: entity rows without a
# value inside it exist (the training-set tests count them)
SHORT_TTL_VIEW = """\
from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Float64, Int64

from data_sources import book_push
from entities import instrument

recent_mid = FeatureView(
    name="recent_mid",
    entities=[instrument],
    ttl=timedelta(milliseconds=200),
    schema=[Field(name="mid_px", dtype=Float64), Field(name="ts_avail", dtype=Int64)],
    source=book_push,
    owner="test@bookstream",
)
"""


@dataclass(frozen=True)
class FeastRepo:
    """``feature_repo/`` applied under a Feast project of its own, over ``demo_history``."""

    cfg: Config
    env: dict[str, str]
    project: str


@pytest.fixture(scope="session")
def feast_repo(demo_history, tmp_path_factory) -> Iterator[FeastRepo]:
    """A copy of ``feature_repo/`` (+ the README's throwaway view and a short-TTL view) under
    its own Feast project, applied by the shipped ``feast`` CLI to the shared SQL registry;
    only that project is removed at the end."""
    from jobs.feast_store import feast_env, open_store

    repo = tmp_path_factory.mktemp("feature_repo")
    shutil.copytree(
        PROJECT_ROOT / "feature_repo",
        repo,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    project = f"it_{uuid.uuid4().hex[:8]}"
    yaml_path = repo / "feature_store.yaml"
    text = yaml_path.read_text()
    assert "\nproject: bookstream\n" in text
    yaml_path.write_text(text.replace("\nproject: bookstream\n", f"\nproject: {project}\n"))
    (repo / "liquidity_views.py").write_text(THROWAWAY_VIEW)
    (repo / "short_ttl_views.py").write_text(SHORT_TTL_VIEW)

    env = {**demo_history.env, "BOOKSTREAM_FEAST_REPO": str(repo)}
    cfg = config_for(env)
    applied = subprocess.run(
        [str(VENV_BIN / "feast"), "-c", str(repo), "apply"],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env, **feast_env(cfg)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert applied.returncode == 0, f"feast apply failed:\n{applied.stderr[-4000:]}"
    store = open_store(cfg)
    try:
        yield FeastRepo(cfg, env, project)
    finally:
        # only this project: FeatureStore.teardown() would delete every project of the
        # shared registry
        store._get_provider().teardown_infra(
            project, store.list_feature_views(), store.list_entities()
        )
        store.delete_project(project)
