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

from jobs.doctor import is_loopback, listening_addresses
from jobs.lake import open_catalog
from udfs.config import Config, load_config


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


def test_no_password_in_any_log(cfg: Config) -> None:
    logs = [p for p in cfg.logs_dir.rglob("*") if p.is_file()]
    assert logs
    for path in logs:
        text = path.read_bytes()
        for role, password in _passwords(cfg).items():
            assert password.encode() not in text, (path, role)


def test_services_listen_on_loopback_only(cfg: Config) -> None:
    for port in (cfg.kafka.port, cfg.kafka.controller_port, cfg.lake.postgres_port):
        addrs = listening_addresses(port)
        assert addrs, f"nothing listens on port {port}"
        assert all(is_loopback(a) for a in addrs), (port, addrs)
