"""Kafka client configuration for a real deployment: a bootstrap list and a passthrough of
client properties (``kafka.client``, ``kafka.client_properties_file``) applied to every client
the project builds, translated between librdkafka and Java names, its secrets never shown."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

import jobs.kafka_io as kafka_io
from udfs.config import (
    PROJECT_ROOT,
    ConfigError,
    effective_settings,
    java_properties,
    librdkafka_properties,
    load_config,
    parse_properties,
)

SECRET = "s3cr3t-pa55"

SASL = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "desk",
    "sasl.password": SECRET,
    "ssl.ca.location": "/etc/kafka/ca.pem",
    "ssl.endpoint.identification.algorithm": "none",
}


def test_bootstrap_list_and_the_projects_own_nodes() -> None:
    assert load_config(env={}).kafka.bootstrap_servers == "127.0.0.1:19092"
    three = load_config(env={"BOOKSTREAM_KAFKA_BROKERS": "3", "BOOKSTREAM_KAFKA_PORT": "23092"})
    assert three.kafka.bootstrap_servers == "127.0.0.1:23092,127.0.0.1:23102,127.0.0.1:23112"
    assert [c for _, c in three.kafka.node_ports] == [19093, 19103, 19113]
    listed = "k1.example:9093,k2.example:9093,k3.example:9093"
    assert load_config(env={"BOOKSTREAM_KAFKA_BOOTSTRAP": listed}).kafka.bootstrap_servers == listed


def test_passthrough_from_toml_table_env_json_and_properties_file(tmp_path: Path) -> None:
    toml = tmp_path / "bookstream.toml"
    # unquoted dotted keys are nested TOML tables: read back as the property names
    toml.write_text(
        '[kafka.client]\nsecurity.protocol = "SASL_SSL"\n"sasl.mechanism" = "PLAIN"\n'
        "socket.keepalive.enable = true\n"
    )
    cfg = load_config(toml, env={})
    assert cfg.kafka.client_properties() == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "socket.keepalive.enable": "true",
    }
    props_file = tmp_path / "client.properties"
    props_file.write_text(
        "# credentials\nsasl.username = desk\nsasl.password=" + SECRET + "\n"
        "java.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule \\\n"
        '    required username="desk" password="x";\n'
    )
    env = {
        "BOOKSTREAM_KAFKA_CLIENT": json.dumps({"security.protocol": "SSL"}),
        "BOOKSTREAM_KAFKA_CLIENT_PROPERTIES_FILE": str(props_file),
    }
    props = load_config(toml, env=env).kafka.client_properties()
    assert props["security.protocol"] == "SSL"  # the environment wins over the file's table
    assert props["sasl.password"] == SECRET
    assert props["java.sasl.jaas.config"].endswith('required username="desk" password="x";')


@pytest.mark.parametrize("key", ["acks", "enable.idempotence", "bootstrap.servers", "java.acks"])
def test_passthrough_cannot_change_bookstreams_guarantees(key: str) -> None:
    with pytest.raises(ConfigError, match=f"{key} is set by bookstream"):
        load_config(env={"BOOKSTREAM_KAFKA_CLIENT": json.dumps({key: "1"})})


def test_secrets_are_never_shown(tmp_path: Path) -> None:
    cfg = load_config(env={"BOOKSTREAM_KAFKA_CLIENT": json.dumps(SASL)})
    assert SECRET not in repr(cfg) and SECRET not in str(effective_settings(cfg))
    assert effective_settings(cfg)["kafka.client"]["sasl.password"] == "***"
    assert effective_settings(cfg)["kafka.client"]["sasl.username"] == "desk"
    with pytest.raises(ConfigError) as exc:  # a malformed value is not echoed
        load_config(env={"BOOKSTREAM_KAFKA_CLIENT": '{"sasl.password": "' + SECRET})
    assert SECRET not in str(exc.value)
    bad = tmp_path / "bad.properties"
    bad.write_text(f"{SECRET}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(
            env={"BOOKSTREAM_KAFKA_CLIENT_PROPERTIES_FILE": str(bad)}
        ).kafka.client_properties()
    assert "no key=value" in str(exc.value)


def test_librdkafka_and_java_names() -> None:
    props = {**SASL, "librdkafka.socket.nagle.disable": "true", "java.ssl.protocol": "TLSv1.3"}
    assert librdkafka_properties(props) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "desk",
        "sasl.password": SECRET,
        "ssl.ca.location": "/etc/kafka/ca.pem",
        "ssl.endpoint.identification.algorithm": "none",
        "socket.nagle.disable": "true",
    }
    java = java_properties(props, shaded=False)
    assert java == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="desk" password="{SECRET}";',
        "ssl.truststore.location": "/etc/kafka/ca.pem",
        "ssl.truststore.type": "PEM",
        "ssl.endpoint.identification.algorithm": "",
        "ssl.protocol": "TLSv1.3",
    }
    # Flink's SQL connector relocates the Kafka client: class names follow it
    shaded = java_properties(props, shaded=True)["sasl.jaas.config"]
    assert shaded.startswith("org.apache.flink.kafka.shaded.org.apache.kafka.common.security.scram")
    # a Java-only name never reaches librdkafka (which refuses unknown properties)
    assert "sasl.jaas.config" not in librdkafka_properties({"sasl.jaas.config": "x"})
    with pytest.raises(ConfigError, match=r"java\.sasl\.jaas\.config"):
        java_properties(
            {"sasl.mechanism": "OAUTHBEARER", "sasl.username": "a", "sasl.password": "b"},
            shaded=True,
        )


def test_parse_properties_continuations_and_comments() -> None:
    text = "# c\n! c\n\na=1\nb : two words\nc=x\\\n   y\n"
    assert parse_properties(text) == {"a": "1", "b": "two words", "c": "xy"}


# -- every client the project builds takes the passthrough ------------------------------------

_CONFLUENT = {"Producer", "Consumer", "AdminClient"}
_FLINK = {"KafkaSource", "KafkaSink"}


def _functions_of(path: Path) -> list[ast.FunctionDef]:
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]


def _name(node: ast.expr) -> str:
    return node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")


def test_every_client_builder_applies_the_passthrough() -> None:
    """Every confluent-kafka client of jobs/ is built from ``kafka_io.client_config``, every
    Flink Kafka source/sink builder applies ``flink_client_properties``, the kafka-python and
    Kafka-tools benchmarks theirs: a new client that forgets it fails here."""
    problems, seen = [], {"confluent": 0, "flink": 0}
    for path in sorted((PROJECT_ROOT / "jobs").glob("*.py")):
        for fn in _functions_of(path):
            where = f"{path.name}:{fn.name}"
            calls = [n for n in ast.walk(fn) if isinstance(n, ast.Call)]
            called = {_name(c.func) for c in calls}
            for call in calls:
                if _name(call.func) in _CONFLUENT and isinstance(call.func, ast.Name):
                    seen["confluent"] += 1
                    arg = call.args[0] if call.args else None
                    if not (isinstance(arg, ast.Call) and _name(arg.func) == "client_config"):
                        problems.append(f"{where}: {_name(call.func)}(...) without client_config")
                if _name(call.func) == "builder" and _name(call.func.value) in _FLINK:  # type: ignore[attr-defined]
                    seen["flink"] += 1
                    if "flink_client_properties" not in called:
                        problems.append(f"{where}: a Flink Kafka builder without the passthrough")
                if _name(call.func) == "KafkaProducer" and "kafka_python_options" not in called:
                    problems.append(f"{where}: kafka-python without the passthrough")
            text = ast.unparse(fn)
            for tool, flag in (
                ("ProducerPerformance", "--producer.config"),
                ("ConsumerPerformance", "--consumer.config"),
            ):
                if f"'org.apache.kafka.tools.{tool}'" in text and flag not in text:
                    problems.append(f"{where}: {tool} without {flag}")
    assert problems == []
    assert seen["confluent"] >= 6 and seen["flink"] >= 3  # the scan does see the builders


def test_kafka_io_clients_carry_the_passthrough(monkeypatch: pytest.MonkeyPatch) -> None:
    """The builders of jobs/kafka_io.py, run: each client gets the bootstrap list and the
    librdkafka form of the passthrough, on top of its own settings."""
    built: list[dict[str, Any]] = []

    class Recorder:
        def __init__(self, conf: dict[str, Any]) -> None:
            built.append(conf)

    for name in ("Producer", "Consumer", "AdminClient"):
        monkeypatch.setattr(kafka_io, name, Recorder)
    bootstrap = "k1:9093,k2:9093"
    cfg = load_config(
        env={"BOOKSTREAM_KAFKA_CLIENT": json.dumps(SASL), "BOOKSTREAM_KAFKA_BOOTSTRAP": bootstrap}
    )
    kafka_io.make_producer(cfg)
    kafka_io.make_consumer(cfg, "g")
    kafka_io._admin(cfg)
    assert len(built) == 3
    for conf in built:
        assert conf["bootstrap.servers"] == bootstrap
        assert conf["sasl.mechanisms"] == "SCRAM-SHA-512" and conf["sasl.password"] == SECRET
        assert "sasl.jaas.config" not in conf
    assert built[0]["acks"] == "all" and built[0]["enable.idempotence"] is True


def test_replication_and_min_isr_come_from_the_configuration() -> None:
    one = load_config(env={})
    assert one.replication() == (1, 1)
    three = load_config(env={"BOOKSTREAM_KAFKA_BROKERS": "3"})
    assert all(three.replication(s) == (3, 2) for s in three.topics.specs())
    given = load_config(
        env={
            "BOOKSTREAM_TOPICS_REPLICATION_FACTOR": "5",
            "BOOKSTREAM_TOPICS_MIN_INSYNC_REPLICAS": "3",
        }
    )
    assert given.replication() == (5, 3)
    with pytest.raises(ConfigError, match="min_insync_replicas=4 > replication factor 3"):
        load_config(
            env={"BOOKSTREAM_KAFKA_BROKERS": "3", "BOOKSTREAM_TOPICS_MIN_INSYNC_REPLICAS": "4"}
        ).replication()


def test_create_topics_asks_for_the_configured_replication(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[Any] = []

    class Admin:
        def create_topics(self, topics: list[Any], **_kw: Any) -> dict[str, Any]:
            asked.extend(topics)
            return {}

    # plaintext: no ACL to apply (the fake admin creates topics only)
    cfg = load_config(
        env={"BOOKSTREAM_KAFKA_BROKERS": "3", "BOOKSTREAM_KAFKA_SECURITY": "plaintext"}
    )
    monkeypatch.setattr(kafka_io, "check_broker", lambda _cfg: 3)
    monkeypatch.setattr(kafka_io, "existing_topics", lambda _cfg, _role=None: {})
    monkeypatch.setattr(kafka_io, "topic_replicas", lambda _cfg, _role=None: {})
    monkeypatch.setattr(kafka_io, "_admin", lambda _cfg, _role=None: Admin())
    kafka_io.create_topics(cfg)
    assert len(asked) == len(cfg.topics.specs())
    for topic in asked:
        assert topic.replication_factor == 3 and topic.config["min.insync.replicas"] == "2"


def test_a_role_whose_topics_exist_never_uses_the_super_user(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    admins: list[str | None] = []

    class Admin:
        def create_topics(self, topics: list[Any], **_kw: Any) -> dict[str, Any]:
            return {}

        def create_acls(self, bindings: list[Any], **_kw: Any) -> dict[str, Any]:
            return {}

    def admin(_cfg: Any, role: str | None = None) -> Admin:
        admins.append(role)
        return Admin()

    cfg = load_config(env={"BOOKSTREAM_STATE_DIR": str(tmp_path)})  # sasl: the default
    t = cfg.topics
    visible = {t.events: 3, t.dead_letter: 1, t.config: 1}  # what the publisher may describe
    monkeypatch.setattr(kafka_io, "check_broker", lambda _cfg: 1)
    monkeypatch.setattr(kafka_io, "existing_topics", lambda _cfg, _role=None: dict(visible))
    monkeypatch.setattr(kafka_io, "topic_replicas", lambda _cfg, _role=None: {})
    monkeypatch.setattr(kafka_io, "_admin", admin)
    with kafka_io.as_role("publisher"):
        assert kafka_io.create_topics(cfg) == []
        assert admins == []  # its topics are there: no admin client, no admin credential
        del visible[t.events]  # one of its own missing (a run's new topic set): created
        kafka_io.create_topics(cfg)
    assert admins and set(admins) == {"admin"}
