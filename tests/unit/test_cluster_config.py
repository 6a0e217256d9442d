"""The Flink session cluster's generated configuration and the `flink run` command line
(jobs/cluster.py), and checkpoint/savepoint locations as URIs (udfs/config.py). No service."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest

from jobs.cluster import JOB_SCRIPT, cluster_conf, flink_run_command
from udfs.config import ConfigError, load_config


def _cfg(tmp_path: Path, **env: str):
    return load_config(env={"BOOKSTREAM_STATE_DIR": str(tmp_path), **env})


def test_checkpoint_and_savepoint_locations_are_uris(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    assert cfg.checkpoint_uri == (tmp_path / "flink" / "checkpoints").as_uri()
    assert cfg.savepoint_uri == (tmp_path / "flink" / "savepoints").as_uri()
    assert cfg.checkpoint_dir == tmp_path / "flink" / "checkpoints"
    s3 = _cfg(
        tmp_path,
        BOOKSTREAM_FLINK_CHECKPOINT_DIR="s3://bucket/bookstream/checkpoints/",
        BOOKSTREAM_FLINK_SAVEPOINT_DIR="hdfs://namenode:8020/bookstream/savepoints",
    )
    assert s3.checkpoint_uri == "s3://bucket/bookstream/checkpoints"
    assert s3.savepoint_uri == "hdfs://namenode:8020/bookstream/savepoints"
    conf = cluster_conf(s3)
    assert conf["execution.checkpointing.dir"] == "s3://bucket/bookstream/checkpoints/cluster"
    assert conf["execution.checkpointing.savepoint-dir"] == s3.savepoint_uri
    with pytest.raises(ConfigError, match="not a directory of this machine"):
        _ = s3.checkpoint_dir  # --restore-latest lists a local directory only
    local = _cfg(tmp_path, BOOKSTREAM_FLINK_CHECKPOINT_DIR=(tmp_path / "c").as_uri())
    assert local.checkpoint_dir == tmp_path / "c"


def test_cluster_conf_is_loopback_with_one_slot_and_this_venvs_python(tmp_path: Path) -> None:
    cfg = _cfg(
        tmp_path, BOOKSTREAM_FLINK_CLUSTER_REST_PORT="23181", BOOKSTREAM_FLINK_RESTART_ATTEMPTS="5"
    )
    conf = cluster_conf(cfg)
    hosts = [k for k in conf if k.endswith(("address", "bind-host", ".host"))]
    assert len(hosts) >= 6 and {conf[k] for k in hosts} == {"127.0.0.1"}
    assert conf["rest.port"] == "23181"
    assert conf["taskmanager.numberOfTaskSlots"] == "1"
    assert conf["python.executable"] == sys.executable
    assert conf["restart-strategy.fixed-delay.attempts"] == "5"
    assert conf["classloader.parent-first-patterns.additional"] == "pemja."


def test_flink_run_gets_each_jar_with_classpath_and_the_packages_in_a_zip(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    cmd = flink_run_command(cfg, ["--group-id", "g"], parallelism=2, from_savepoint="file:///sp")
    assert cmd[1] == "run" and cmd[cmd.index("-p") + 1] == "2"
    assert cmd[cmd.index("-s") + 1] == "file:///sp"
    jars = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-C"]
    assert jars == [cfg.kafka_connector_jar.as_uri(), cfg.glue_jar.as_uri()]
    assert "-j" not in cmd
    assert cmd[cmd.index("-py") + 1] == JOB_SCRIPT
    assert cmd[-2:] == ["--group-id", "g"]
    names = zipfile.ZipFile(cmd[cmd.index("-pyfs") + 1]).namelist()
    assert "udfs/config.py" in names and "jobs/stream_job.py" in names
    assert all(n.endswith(".py") for n in names)
