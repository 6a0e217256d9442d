"""The project's broker with ``kafka.security = "sasl"`` (called by infra/kafka/start.sh):

- ``credentials``: one generated credential per role (udfs/kafka_acl.py ROLES) in
  ``<state>/kafka/credentials/<role>.properties`` (file 0600, directory 0700), made once, on
  the first start, and kept; nothing is printed;
- ``server-properties HOST PORT CONTROLLER_PORT``: the listener/authorizer settings a node's
  ``server.properties`` (0600) gets after the template's, on stdout, which start.sh redirects
  into that file. The super user ``admin`` is the broker's static PLAIN user (controller and
  inter-broker traffic too): SCRAM credentials live in the cluster's metadata, so one must
  exist before any SCRAM login, and ``kafka-storage format --add-scram`` would put a password
  on a command line every local user can read (/proc/PID/cmdline);
- ``users``: as ``admin``, upserts every other role's SCRAM-SHA-512 credential (idempotent,
  after each start).

A password never goes to a command line, a log or a terminal.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from confluent_kafka.admin import (
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from jobs.kafka_io import _admin
from udfs.config import Config, load_config, parse_properties
from udfs.kafka_acl import ADMIN, ROLES

__all__ = ["ensure_credentials", "register_users", "server_properties"]

SCRAM_ITERATIONS = 8192


def ensure_credentials(cred_dir: Path) -> list[str]:
    """Generate the credential of each role that has none yet; returns the roles generated."""
    cred_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(cred_dir, 0o700)
    made: list[str] = []
    for role in ROLES:
        path = cred_dir / f"{role}.properties"
        if path.exists():
            os.chmod(path, 0o600)
            continue
        password = secrets.token_urlsafe(32)  # [A-Za-z0-9_-]: no quoting issue in JAAS
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"sasl.username={role}\nsasl.password={password}\n")
        made.append(role)
    return made


def _password(cred_dir: Path, role: str) -> str:
    return parse_properties((cred_dir / f"{role}.properties").read_text())["sasl.password"]


def server_properties(cred_dir: Path, host: str, port: int, controller_port: int) -> str:
    """The SASL part of a node's server.properties (it overrides the template's listeners)."""
    pw = _password(cred_dir, ADMIN)
    plain = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{ADMIN}" password="{pw}" user_{ADMIN}="{pw}";'
    )
    lines = [
        "# kafka.security=sasl (jobs/kafka_security.py): SASL_PLAINTEXT on loopback, ACLs",
        f"listeners=SASL_PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        f"advertised.listeners=SASL_PLAINTEXT://{host}:{port}",
        "inter.broker.listener.name=SASL_PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN",
        "sasl.mechanism.inter.broker.protocol=PLAIN",
        "sasl.mechanism.controller.protocol=PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
        f"listener.name.controller.plain.sasl.jaas.config={plain}",
        f"listener.name.sasl_plaintext.plain.sasl.jaas.config={plain}",
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        f"super.users=User:{ADMIN}",
        "allow.everyone.if.no.acl.found=false",
    ]
    return "\n".join(lines) + "\n"


def register_users(cfg: Config) -> list[str]:
    """Upsert the SCRAM-SHA-512 credential of every role but the super user; returns them."""
    roles: list[str] = [r for r in ROLES if r != ADMIN]
    upserts = [
        UserScramCredentialUpsertion(
            role,
            ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
            _password(cfg.kafka_credentials_dir, role).encode(),
            secrets.token_bytes(32),
        )
        for role in roles
    ]
    admin = _admin(cfg, ADMIN)
    for fut in admin.alter_user_scram_credentials(upserts, request_timeout=30).values():
        fut.result()
    return roles


def main(argv: list[str]) -> int:
    cfg = load_config()
    if argv == ["credentials"]:
        made = ensure_credentials(cfg.kafka_credentials_dir)
        print(f"kafka credentials: {len(made)} generated, in {cfg.kafka_credentials_dir}")
    elif len(argv) == 4 and argv[0] == "server-properties":
        sys.stdout.write(
            server_properties(cfg.kafka_credentials_dir, argv[1], int(argv[2]), int(argv[3]))
        )
    elif argv == ["users"]:
        roles = register_users(cfg)
        print(f"kafka SCRAM-SHA-512 users: {', '.join(roles)}")
    else:
        print(
            "usage: python -m jobs.kafka_security credentials | users | "
            "server-properties HOST PORT CONTROLLER_PORT",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
