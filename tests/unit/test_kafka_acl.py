"""The roles of ``kafka.security = "sasl"``: the ACL plan as data (udfs/kafka_acl.py), each
process's credential (udfs/config.py Config.kafka_client_properties), the generated credential
files and the broker's SASL settings (jobs/kafka_security.py)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from jobs.cli import _kafka_role, cmd_demo, cmd_exec_sink, cmd_publish, cmd_stream_job
from jobs.kafka_security import ensure_credentials, server_properties
from jobs.stream_job import flink_client_properties
from udfs.config import (
    ConfigError,
    java_properties,
    librdkafka_properties,
    load_config,
    parse_properties,
)
from udfs.kafka_acl import ROLES, AclEntry, acl_plan

TOPICS = load_config(env={}).topics.for_run("run7").names()


def allowed(plan: list[AclEntry], role: str, op: str) -> set[str]:
    """Fields (of TOPICS) ``role`` may ``op``."""
    by_name = {n: f for f, n in TOPICS.items()}
    return {
        by_name[e.name]
        for e in plan
        if e.principal == f"User:{role}" and e.resource == "TOPIC" and e.operation == op
    }


def test_acl_plan_gives_each_role_its_topics_and_nothing_more() -> None:
    plan = acl_plan(TOPICS)
    every = set(TOPICS)
    assert allowed(plan, "publisher", "WRITE") == {"events", "dead_letter", "config"}
    assert allowed(plan, "publisher", "READ") == set()
    # the Flink job reads the kill switch, never writes it
    assert allowed(plan, "job", "READ") == {"events", "control"}
    assert "control" not in allowed(plan, "job", "WRITE")
    assert "orders" in allowed(plan, "job", "WRITE")
    # executions: the execution sink's alone
    writers = {r for r in ROLES if "executions" in allowed(plan, r, "WRITE")}
    assert writers == {"exec-sink"}
    assert allowed(plan, "exec-sink", "READ") == {"events", "orders", "control"}
    assert allowed(plan, "history-sink", "READ") == every
    assert allowed(plan, "history-sink", "WRITE") == {"dead_letter", "config"}
    assert allowed(plan, "reader", "READ") == every
    assert allowed(plan, "reader", "WRITE") == set()
    # the desk's operator sees everything and may trip the kill switch, nothing more
    assert allowed(plan, "operator", "READ") == every
    assert allowed(plan, "operator", "WRITE") == {"control"}
    writers = {r for r in ROLES if "control" in allowed(plan, r, "WRITE")}
    assert writers == {"exec-sink", "operator"}
    # the super user needs no rule; every rule names a run topic, a group or a transaction
    assert not [e for e in plan if e.principal == "User:admin"]
    assert {e.name for e in plan if e.resource == "TOPIC"} <= set(TOPICS.values())
    txn = {e.principal for e in plan if e.resource == "TRANSACTIONAL_ID"}
    assert txn == {"User:job", "User:exec-sink"}
    groups = {e.principal for e in plan if e.resource == "GROUP"}
    assert "User:publisher" not in groups and "User:reader" in groups
    assert plan == sorted(set(plan))


def test_credentials_are_generated_once_private(tmp_path: Path) -> None:
    creds = tmp_path / "kafka" / "credentials"
    assert sorted(ensure_credentials(creds)) == sorted(ROLES)
    assert stat.S_IMODE(creds.stat().st_mode) == 0o700
    first = {p.name: p.read_text() for p in creds.iterdir()}
    for path in creds.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        props = parse_properties(path.read_text())
        assert props["sasl.username"] == path.stem and len(props["sasl.password"]) >= 40
    assert ensure_credentials(creds) == []  # kept: never regenerated
    assert {p.name: p.read_text() for p in creds.iterdir()} == first
    passwords = {parse_properties(t)["sasl.password"] for t in first.values()}
    assert len(passwords) == len(ROLES)


def test_server_properties_lock_the_broker(tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    ensure_credentials(creds)
    props = parse_properties(server_properties(creds, "127.0.0.1", 26092, 26093))
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:26092,CONTROLLER://127.0.0.1:26093"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:admin"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert "PLAINTEXT:PLAINTEXT" not in props["listener.security.protocol.map"]
    # the PLAIN list holds the super user alone: no other name logs in without SCRAM
    jaas = props["listener.name.sasl_plaintext.plain.sasl.jaas.config"]
    assert jaas.count("user_") == 1 and "user_admin=" in jaas


def test_each_process_connects_as_its_role(tmp_path: Path) -> None:
    env = {"BOOKSTREAM_STATE_DIR": str(tmp_path), "BOOKSTREAM_KAFKA_SECURITY": "sasl"}
    cfg = load_config(env=env)
    with pytest.raises(ConfigError, match="no credential of job"):
        cfg.kafka_client_properties("job")
    ensure_credentials(cfg.kafka_credentials_dir)
    job = librdkafka_properties(cfg.kafka_client_properties("job"))
    assert job["security.protocol"] == "SASL_PLAINTEXT"
    assert job["sasl.mechanisms"] == "SCRAM-SHA-512" and job["sasl.username"] == "job"
    assert librdkafka_properties(cfg.kafka_client_properties("admin"))["sasl.mechanisms"] == "PLAIN"
    with pytest.raises(ConfigError, match="not one of"):
        cfg.kafka_client_properties("root")
    # the Flink source and sinks: the job's SCRAM login, in the connector's shaded package
    jaas = flink_client_properties(cfg)["sasl.jaas.config"]
    assert jaas.startswith("org.apache.flink.kafka.shaded.org.apache.kafka.common.security.scram")
    assert 'username="job"' in jaas
    # a process with a state dir of its own finds the broker's credentials by kafka.credentials_dir
    other = load_config(
        env={
            **env,
            "BOOKSTREAM_STATE_DIR": str(tmp_path / "other"),
            "BOOKSTREAM_KAFKA_CREDENTIALS_DIR": str(cfg.kafka_credentials_dir),
        }
    )
    assert other.kafka_client_properties("job") == cfg.kafka_client_properties("job")
    # Kafka's own tools (infra/kafka/bin/kafka-tool): the super user, by PLAIN
    tools = java_properties(cfg.kafka_client_properties("admin"), shaded=False)
    assert tools["sasl.mechanism"] == "PLAIN" and tools["security.protocol"] == "SASL_PLAINTEXT"
    assert tools["sasl.jaas.config"].startswith("org.apache.kafka.common.security.plain.")
    # sasl is the default; plaintext the explicit opt-out: no credential, no file read
    assert load_config(env={"BOOKSTREAM_STATE_DIR": str(tmp_path / "none")}).kafka.security == (
        "sasl"
    )
    plain = load_config(
        env={
            "BOOKSTREAM_STATE_DIR": str(tmp_path / "none"),
            "BOOKSTREAM_KAFKA_SECURITY": "plaintext",
        }
    )
    assert plain.kafka.security == "plaintext" and plain.kafka_client_properties("job") == {}
    # the command decides the principal
    assert _kafka_role(cmd_publish) == "publisher" and _kafka_role(cmd_stream_job) == "job"
    assert _kafka_role(cmd_exec_sink) == "exec-sink" and _kafka_role(cmd_demo) == "admin"


def test_another_deployments_brokers_authenticate_through_the_passthrough(tmp_path: Path) -> None:
    """``kafka.security`` is about the project's own broker: with ``kafka.bootstrap`` set, no
    generated credential is looked for (there is none), the passthrough alone authenticates."""
    cfg = load_config(
        env={
            "BOOKSTREAM_STATE_DIR": str(tmp_path),
            "BOOKSTREAM_KAFKA_BOOTSTRAP": "k1:9093",
            "BOOKSTREAM_KAFKA_CLIENT": '{"security.protocol": "SSL"}',
        }
    )
    assert cfg.kafka.security == "sasl" and not cfg.kafka.role_credentials
    assert cfg.kafka_client_properties("job") == {"security.protocol": "SSL"}
    own = load_config(env={"BOOKSTREAM_STATE_DIR": str(tmp_path)})
    assert own.kafka.role_credentials
