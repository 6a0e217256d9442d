"""Kafka with SASL/SCRAM and ACLs (issue 14 §5), the default (``kafka.security = "sasl"``):
the session's broker, started by ``make up``. Its credentials were generated on the first start
(0600, never logged); a client without credentials, or with a wrong password, is refused; each
role may do what udfs/kafka_acl.py allows and nothing else (the Flink job's principal cannot
write the kill switch; executions are the execution sink's alone; the history sink reads
everything); the execution sink runs end to end as its own principal.
"""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from it_helpers import config_for, state_env, topic_env, topic_names
from test_execution_sink import N_ORDERS, orders, produce, publish_market, run

from jobs.kafka_io import (
    client_config,
    create_topics,
    delete_topics,
    end_offsets,
    set_process_role,
)
from udfs.config import PROJECT_ROOT, Config, load_config, parse_properties
from udfs.kafka_acl import ADMIN, ROLES
from udfs.schema import Control, ControlCommand, encode_record

pytestmark = pytest.mark.integration

REFUSED = (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED)


@pytest.fixture(scope="module")
def cfg() -> Config:
    cfg = load_config()
    if cfg.kafka.security != "sasl":
        pytest.fail(
            f"the session's broker runs kafka.security={cfg.kafka.security}: these tests are "
            "of the default, sasl",
            pytrace=False,
        )
    return cfg


def _passwords(cfg: Config) -> dict[str, str]:
    creds = cfg.kafka_credentials_dir
    return {
        r: parse_properties((creds / f"{r}.properties").read_text())["sasl.password"] for r in ROLES
    }


@pytest.fixture(scope="module")
def start_outputs(cfg: Config) -> list[bytes]:
    """stdout + stderr of the project's start script run again on the running broker (it
    starts nothing, re-registers the users)."""
    proc = subprocess.run(
        ["bash", str(PROJECT_ROOT / "infra" / "kafka" / "start.sh")],
        env=dict(os.environ),
        check=True,
        capture_output=True,
        timeout=180,
    )
    return [proc.stdout + proc.stderr]


@pytest.fixture
def run_cfg(tmp_path: Path) -> Iterator[Config]:
    """A topic set and a state directory of its own on the session's broker, the topics
    created (with their ACLs) by the super user, deleted at the end."""
    cfg = config_for(topic_env("sasl", **state_env(tmp_path / "state")))
    create_topics(cfg)
    yield cfg
    delete_topics(cfg, topic_names(cfg))


def _produce_error(cfg: Config, role: str, topic: str) -> KafkaError | None:
    """The delivery error of one record ``role`` produces to ``topic`` (None: written)."""
    errors: list[KafkaError | None] = []
    producer = Producer(
        client_config(cfg, {"acks": "all", "message.timeout.ms": 20_000, "log_level": 0}, role)
    )
    producer.produce(topic, b"x", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(30)
    assert len(errors) == 1
    return errors[0]


def _metadata_errors(conf: dict) -> tuple[Exception | None, list[KafkaError]]:
    """(exception of a metadata request, errors librdkafka reported) of a client with ``conf``."""
    seen: list[KafkaError] = []
    admin = AdminClient({**conf, "error_cb": seen.append, "log_level": 0})
    try:
        admin.list_topics(timeout=4)
    except KafkaException as exc:
        admin.poll(1)  # serves error_cb
        return exc, seen
    return None, seen


def test_credentials_are_generated_private_and_stable(
    cfg: Config, start_outputs: list[bytes]
) -> None:
    creds = cfg.kafka_credentials_dir
    assert stat.S_IMODE(creds.stat().st_mode) == 0o700
    assert sorted(p.stem for p in creds.iterdir()) == sorted(ROLES)
    for path in creds.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # each node's config holds the super user's password: its owner's alone
    nodes = (
        [cfg.state_dir / "kafka"]
        if cfg.kafka.brokers == 1
        else [cfg.state_dir / "kafka" / f"node-{i}" for i in range(1, cfg.kafka.brokers + 1)]
    )
    for node in nodes:
        assert stat.S_IMODE((node / "server.properties").stat().st_mode) == 0o600, node
    before = _passwords(cfg)
    assert len(set(before.values())) == len(ROLES)  # one secret per principal
    assert start_outputs  # started again on the running broker: nothing regenerated
    assert _passwords(cfg) == before


def test_client_without_credentials_is_refused(cfg: Config) -> None:
    exc, seen = _metadata_errors({"bootstrap.servers": cfg.kafka.bootstrap_servers})
    assert exc is not None, "a PLAINTEXT client got metadata from the SASL listener"
    # the broker closes a connection that does not open with a SASL handshake
    assert {e.code() for e in seen} <= {KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT}


def test_wrong_password_is_refused(cfg: Config) -> None:
    conf = client_config(cfg, {}, "reader")
    exc, seen = _metadata_errors({**conf, "sasl.password": "not-" + str(conf["sasl.password"])})
    assert exc is not None
    assert KafkaError._AUTHENTICATION in {e.code() for e in seen}, seen
    # and another role's password is no better (a principal is its own credential)
    exc, seen = _metadata_errors({**conf, "sasl.password": _passwords(cfg)["job"]})
    assert exc is not None and KafkaError._AUTHENTICATION in {e.code() for e in seen}, seen
    # the right one answers
    assert _metadata_errors(conf)[0] is None


def test_each_role_may_do_what_its_acls_allow_and_nothing_else(run_cfg: Config) -> None:
    cfg = run_cfg
    t = cfg.topics
    denied = KafkaError.TOPIC_AUTHORIZATION_FAILED
    # the kill switch: the Flink job's principal reads it, never writes it
    job_err = _produce_error(cfg, "job", t.control)
    assert job_err is not None and job_err.code() == denied, job_err
    # executions are the execution sink's alone
    assert _produce_error(cfg, "exec-sink", t.executions) is None
    for role in ("job", "publisher", "history-sink", "reader"):
        err = _produce_error(cfg, role, t.executions)
        assert err is not None and err.code() == denied, (role, err)
    assert _produce_error(cfg, "publisher", t.events) is None
    assert _produce_error(cfg, "job", t.orders) is None
    # the sink's own kill trip goes through; the job reads it
    kill = encode_record(Control(ControlCommand.KILL, "", "it: sasl", 1))
    producer = Producer(client_config(cfg, {"acks": "all"}, "exec-sink"))
    producer.produce(t.control, kill)
    assert producer.flush(30) == 0
    for role, topic, readable in (
        ("job", t.control, True),
        ("history-sink", t.executions, True),
        ("reader", t.executions, True),
        ("job", t.executions, False),
        ("publisher", t.events, False),
    ):
        assert _can_read(cfg, role, topic) is readable, (role, topic)


def _can_read(cfg: Config, role: str, topic: str) -> bool:
    """Whether ``role`` reads a record of ``topic`` (False: an authorization error: of the
    topic, or of the group when the role consumes nothing)."""
    consumer = Consumer(
        client_config(
            cfg,
            {
                "group.id": f"it-sasl-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            },
            role,
        )
    )
    try:
        consumer.subscribe([topic])
        for _ in range(60):
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() in REFUSED:
                    return False
                continue
            return True
        raise AssertionError(f"{role}: neither a record nor a refusal from {topic}")
    finally:
        consumer.close()


def test_execution_sink_runs_as_its_own_principal(run_cfg: Config) -> None:
    cfg = run_cfg
    try:
        set_process_role("publisher")
        publish_market(cfg)
        set_process_role("job")
        produce(cfg, cfg.topics.orders, list(orders()))
        set_process_role("exec-sink")
        res = run(cfg)
    finally:
        set_process_role(ADMIN)
    assert res.stats["new_orders"] == N_ORDERS
    assert sum(end_offsets(cfg, cfg.topics.executions).values()) >= N_ORDERS


def test_no_password_reaches_a_log(cfg: Config, start_outputs: list[bytes]) -> None:
    passwords = _passwords(cfg).values()
    logs = [p for p in (cfg.state_dir / "logs").rglob("*") if p.is_file()]
    logs += list((cfg.state_dir / "kafka").glob("node-*/kafka.log"))  # kafka.brokers > 1
    assert any(p.name == "kafka.log" for p in logs)
    for path in set(logs):
        text = path.read_bytes()
        assert not any(pw.encode() in text for pw in passwords), f"a Kafka password in {path}"
    # nor the start script's own output (check.sh and the users' registration under it)
    for out in start_outputs:
        assert not any(pw.encode() in out for pw in passwords), "a Kafka password in the output"
