"""Local trust on the running services (`make up`): PostgreSQL asks every role for its password
(scram-sha-256) and refuses a wrong or missing one, over TCP and the unix socket; the passwords
live in a 0600 file in a 0700 directory of a state directory closed to others, and appear in no
log; the Iceberg catalog reaches the server with them; Kafka and PostgreSQL listen on loopback
only."""

from __future__ import annotations

import stat
from pathlib import Path

import psycopg2
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from jobs.doctor import is_loopback, listening_addresses
from jobs.kafka_io import client_config
from jobs.lake import open_catalog
from udfs.config import Config, load_config, parse_properties


@pytest.fixture(scope="module")
def cfg() -> Config:
    cfg = load_config()
    if not cfg.postgres_passfile.is_file():
        pytest.fail(
            f"no {cfg.postgres_passfile}: the project's PostgreSQL is not started (make up)",
            pytrace=False,
        )
    return cfg


def _connect(cfg: Config, user: str, **kw: str) -> None:
    lk = cfg.lake
    conn = psycopg2.connect(
        host=lk.postgres_host,
        port=lk.postgres_port,
        dbname=lk.postgres_db,
        user=user,
        connect_timeout=5,
        **kw,
    )
    conn.close()


def _passwords(cfg: Config) -> dict[str, str]:
    out = {}
    for line in cfg.postgres_passfile.read_text().splitlines():
        *_, role, password = line.split(":")
        out[role] = password
    return out


def test_secret_file_modes(cfg: Config) -> None:
    assert stat.S_IMODE(cfg.postgres_passfile.stat().st_mode) == 0o600
    assert stat.S_IMODE(cfg.postgres_passfile.parent.stat().st_mode) == 0o700
    state_mode = stat.S_IMODE(cfg.state_dir.stat().st_mode)
    # 0700; under root 0710 (traverse-only for the server's own group, see infra/lib.sh)
    assert state_mode in (0o700, 0o710), oct(state_mode)
    passwords = _passwords(cfg)
    assert set(passwords) == {"postgres", cfg.lake.postgres_user}
    assert all(len(p) == 32 and p.isalnum() for p in passwords.values())


@pytest.mark.parametrize("role", ["bookstream", "postgres"])
def test_postgres_refuses_a_wrong_or_missing_password(cfg: Config, role: str) -> None:
    user = cfg.lake.postgres_user if role == "bookstream" else role
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        _connect(cfg, user, password="not-the-password", passfile="/dev/null")
    with pytest.raises(psycopg2.OperationalError, match="no password supplied"):
        _connect(cfg, user, passfile="/dev/null")
    _connect(cfg, user, passfile=str(cfg.postgres_passfile))


def test_unix_socket_asks_for_the_password_too(cfg: Config) -> None:
    socket_dir = cfg.state_dir / "postgres"
    if not any(p.name.startswith(".s.PGSQL.") for p in _listdir(socket_dir)):
        pytest.skip("state dir too deep for a unix socket: TCP only (see start.sh)")
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(
            host=str(socket_dir),
            port=cfg.lake.postgres_port,
            dbname="postgres",
            user="postgres",
            password="wrong",
            passfile="/dev/null",
        )


def _listdir(path: Path) -> list[Path]:
    try:
        return list(path.iterdir())
    except OSError:
        return []


def test_catalog_reaches_postgres_with_the_password_file(cfg: Config, tmp_path: Path) -> None:
    pg = load_config(
        env={
            "BOOKSTREAM_STATE_DIR": str(cfg.state_dir),
            "BOOKSTREAM_LAKE_CATALOG": "postgres",
            "BOOKSTREAM_LAKE_POSTGRES_PORT": str(cfg.lake.postgres_port),
            "BOOKSTREAM_LAKE_ROOT": str(tmp_path / "lake"),
        }
    )
    assert all(p not in pg.catalog_uri for p in _passwords(cfg).values())
    assert "passfile=" in pg.catalog_uri
    assert (pg.lake.namespace,) in open_catalog(pg).list_namespaces()


def _secrets(cfg: Config) -> dict[str, bytes]:
    """Every secret the project generated: PostgreSQL's role passwords, Redis' and Kafka's."""
    found = {f"postgres:{role}": pw.encode() for role, pw in _passwords(cfg).items()}
    if cfg.redis_password_file.is_file():
        found["redis"] = cfg.redis_password_file.read_text().strip().encode()
    # the Kafka roles' (kafka.security=sasl: generated on the broker's first start)
    if cfg.kafka_credentials_dir.is_dir():
        for path in cfg.kafka_credentials_dir.glob("*.properties"):
            found[f"kafka:{path.stem}"] = parse_properties(path.read_text())[
                "sasl.password"
            ].encode()
    assert all(len(v) >= 16 for v in found.values()), "a generated secret is too short"
    return found


def _deleted(message: Message) -> bool:
    err = message.error()
    return err is not None and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_no_secret_in_any_log_or_topic(cfg: Config, demo_history: object) -> None:
    """No generated secret in any file under the logs directory (services, Flink, apt) nor in
    any record (key or value) of any topic on the broker, aborted transactions included (the
    session's demo makes sure every stream has records to scan)."""
    secrets = _secrets(cfg)
    assert "redis" in secrets, "the project's Redis has no password file (make up)"
    logs = [p for p in cfg.logs_dir.rglob("*") if p.is_file()]
    assert logs
    for path in logs:
        text = path.read_bytes()
        for name, secret in secrets.items():
            assert secret not in text, (path, name)

    admin = AdminClient(client_config(cfg, {}))
    topics = admin.list_topics(timeout=10).topics
    consumer = Consumer(
        client_config(
            cfg,
            {
                "group.id": "it-secret-scan",
                "enable.auto.commit": False,
                "isolation.level": "read_uncommitted",
            },
        )
    )
    scanned = 0
    try:
        for name, meta in topics.items():
            if name.startswith("__"):
                continue  # the broker's own offsets and transaction state
            try:
                ends = {
                    p: consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
                    for p in meta.partitions
                }
            except KafkaException:
                continue  # deleted since the listing (another test's teardown, on another worker)
            todo = {p: (lo, hi) for p, (lo, hi) in ends.items() if hi > lo}
            if not todo:
                continue
            consumer.assign([TopicPartition(name, p, lo) for p, (lo, _hi) in todo.items()])
            left = set(todo)
            while left:
                msgs = consumer.consume(num_messages=10_000, timeout=1.0)
                if any(_deleted(m) for m in msgs):
                    break  # deleted mid-scan: what was read is scanned
                if not msgs:
                    if name not in admin.list_topics(timeout=10).topics:
                        break
                    left = {
                        tp.partition
                        for tp in consumer.position([TopicPartition(name, p) for p in left])
                        if tp.offset < todo[tp.partition][1]
                    }
                    continue
                for m in msgs:
                    if m.error():
                        continue
                    blob = (m.key() or b"") + b"\0" + (m.value() or b"")
                    for secret_name, secret in secrets.items():
                        assert secret not in blob, (name, m.partition(), m.offset(), secret_name)
                    scanned += 1
                    if m.offset() + 1 >= todo[m.partition()][1]:
                        left.discard(m.partition())
    finally:
        consumer.close()
    assert scanned > 0, "no record on the broker to scan"


def test_services_listen_on_loopback_only(cfg: Config) -> None:
    for port in (cfg.kafka.port, cfg.kafka.controller_port, cfg.lake.postgres_port):
        addrs = listening_addresses(port)
        assert addrs, f"nothing listens on port {port}"
        assert all(is_loopback(a) for a in addrs), (port, addrs)
