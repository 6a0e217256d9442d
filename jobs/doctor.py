"""``bookstream doctor``: checks what a run needs and says exactly what is wrong and how to fix
it. Each check is (name, ok, detail); the report is one JSON object."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from udfs.config import Config

__all__ = ["is_loopback", "listening_addresses", "run_doctor"]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def listening_addresses(port: int) -> list[IpAddress]:
    """Local addresses of the TCP sockets listening on ``port``, from /proc/net/tcp{,6}."""
    found: list[IpAddress] = []
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            addr_hex, port_hex = fields[1].split(":")
            if fields[3] != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(addr_hex)
            # the kernel prints each 32-bit word in host (little-endian) order
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.append(ipaddress.ip_address(words))
    return found


def is_loopback(addr: IpAddress) -> bool:
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def _listeners(cfg: Config) -> tuple[bool, str]:
    """The project's services listen on loopback only (they have no network authentication:
    Kafka PLAINTEXT; PostgreSQL has passwords but is not meant to be reached from outside)."""
    ports = {
        **{f"kafka-node-{i}": p for i, (p, _c) in enumerate(cfg.kafka.node_ports, 1)},
        **{f"kafka-controller-{i}": c for i, (_p, c) in enumerate(cfg.kafka.node_ports, 1)},
        "postgres": cfg.lake.postgres_port,
        "flink-cluster-rest": cfg.flink.cluster_rest_port,
        "flink-cluster-rpc": cfg.flink.cluster_rpc_port,
    }
    exposed = []
    for name, port in ports.items():
        exposed += [
            f"{name} on {a}:{port}" for a in listening_addresses(port) if not is_loopback(a)
        ]
    if exposed:
        return False, "listening beyond loopback: " + ", ".join(exposed)
    return True, "every listener of the project's ports is on loopback"


def _java() -> tuple[bool, str]:
    java = shutil.which("java")
    if java is None:
        return False, "java not on PATH: install OpenJDK 17 (apt-get install openjdk-17-jdk)"
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    m = re.search(r'version "(\d+)', out)
    major = int(m.group(1)) if m else 0
    if major < 17:
        return False, f"Java {major} found at {java}; Kafka 4 and Flink 2 need Java 17+"
    return True, f"Java {major} ({java})"


def _flink_connector(cfg: Config) -> list[tuple[str, bool, str]]:
    checks = []
    try:
        flink = version("apache-flink")
    except PackageNotFoundError:
        return [("pyflink", False, "apache-flink is not installed: run `make install`")]
    checks.append(
        (
            "pyflink",
            flink == cfg.flink.flink_version,
            f"apache-flink {flink} (config expects {cfg.flink.flink_version})",
        )
    )
    flink_minor = ".".join(flink.split(".")[:2])
    suffix = cfg.flink.kafka_connector_version.rsplit("-", 1)[-1]
    checks.append(
        (
            "connector-version",
            suffix == flink_minor,
            f"flink-sql-connector-kafka {cfg.flink.kafka_connector_version} is built for "
            f"Flink {suffix}; PyFlink is {flink_minor}"
            + (
                ""
                if suffix == flink_minor
                else ": set flink.kafka.connector.version in infra/pom.xml and config"
            ),
        )
    )
    jar = cfg.kafka_connector_jar
    checks.append(
        (
            "connector-jar",
            jar.is_file(),
            str(jar) if jar.is_file() else f"{jar} missing: run `make install`",
        )
    )
    return checks


def _kafka_jars(cfg: Config) -> tuple[bool, str]:
    jars = sorted((cfg.jars_dir / "kafka").glob("kafka_2.13-*.jar"))
    if not jars:
        return False, f"no Kafka broker jar in {cfg.jars_dir / 'kafka'}: run `make install`"
    return True, jars[-1].name


def _pid_alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def _postgres(cfg: Config) -> list[tuple[str, bool, str]]:
    """The Iceberg catalog's PostgreSQL, checked when the catalog is configured to use one or
    when the project's own server (infra/postgres/start.sh) is running."""
    uri = cfg.catalog_uri
    configured = uri.startswith("postgresql")
    if not configured and not _pid_alive(cfg.state_dir / "run" / "postgres.pid"):
        return []
    lk = cfg.lake
    own = cfg.postgres_dsn
    # psycopg2 takes a libpq URI: drop SQLAlchemy's driver suffix (postgresql+psycopg2://)
    dsn = re.sub(r"^postgresql\+\w+://", "postgresql://", uri) if configured else own
    try:
        import psycopg2
    except ImportError:
        return [("postgres", False, "psycopg2 is not installed: run `make install`")]
    try:
        params = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.Error as exc:
        return [("postgres", False, f"lake.catalog_uri is not a valid PostgreSQL URI: {exc}")]
    where = (
        f"{params.get('user', '?')}@{params.get('host', '?')}:{params.get('port', 5432)}"
        f"/{params.get('dbname', '?')}"
    )
    if dsn == own:
        fix = (
            f"run `bash infra/postgres/start.sh` (or `make up`); its log: "
            f"{cfg.logs_dir / 'postgres.log'}"
        )
    else:
        fix = "check lake.catalog_uri and that server"
    try:
        conn = psycopg2.connect(dsn, connect_timeout=3)
        try:
            with conn.cursor() as cur:
                cur.execute("select current_setting('server_version')")
                server_version = cur.fetchone()[0]
        finally:
            conn.close()
    except psycopg2.Error as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return [("postgres", False, f"catalog server {where} unreachable ({reason}): {fix}")]
    return [("postgres", True, f"PostgreSQL {server_version} at {where} (catalog: {lk.catalog})")]


def _redis(cfg: Config, *, services: bool) -> list[tuple[str, bool, str]]:
    """Feast's online store: the project's Redis answers PING with the password from its file.
    Checked when the services are expected (not --offline) or ours is running."""
    if not services and not _pid_alive(cfg.state_dir / "run" / "redis.pid"):
        return []
    where = f"{cfg.redis.host}:{cfg.redis.port}"
    fix = f"run `bash infra/redis/start.sh` (or `make up`); its log: {cfg.logs_dir / 'redis.log'}"
    try:
        password = cfg.redis_password_file.read_text().strip()
    except OSError:
        return [("redis", False, f"no password file {cfg.redis_password_file}: {fix}")]
    try:
        import redis

        client = redis.Redis(
            host=cfg.redis.host, port=cfg.redis.port, password=password, socket_timeout=3
        )
        try:
            client.ping()
            info: dict[str, Any] = client.info("server")  # type: ignore[assignment]  # sync client: a dict, never an Awaitable
            server_version = info["redis_version"]
        finally:
            client.close()
    except Exception as exc:  # any client failure is the finding
        return [("redis", False, f"Redis at {where} unreachable ({exc}): {fix}")]
    return [("redis", True, f"Redis {server_version} at {where} (Feast online store)")]


def _lake(cfg: Config) -> tuple[bool, str]:
    """The Iceberg catalog opens; which history tables hold how many rows (from the snapshot
    summaries, nothing is scanned)."""
    try:
        from jobs.lake import open_catalog

        catalog = open_catalog(cfg)
        tables = []
        for ident in sorted(catalog.list_tables(cfg.lake.namespace)):
            snap = catalog.load_table(ident).current_snapshot()
            rows = (
                snap.summary.additional_properties.get("total-records", "0")
                if (snap and snap.summary)
                else "0"
            )
            tables.append(f"{ident[-1]}={rows}")
    except Exception as exc:  # any catalog failure is the finding
        where = cfg.lake.rest_uri if cfg.lake.catalog == "rest" else cfg.catalog_uri
        return False, (
            f"{cfg.lake.catalog} catalog at {where or '(no uri)'}: {exc} "
            "(PostgreSQL: make up; REST: check lake.rest_uri)"
        )
    if not tables:
        return True, (
            f"{cfg.lake.catalog} catalog, no history yet: `bookstream history-sink` "
            "(make demo runs it)"
        )
    return True, f"{cfg.lake.catalog} catalog, rows: {' '.join(tables)}"


def _flink_cluster(cfg: Config) -> tuple[bool, str]:
    """The optional session cluster (``make cluster-up``): when the project started one, its
    REST API must answer with every TaskManager registered."""
    from jobs.cluster import ClusterError, overview

    pids = cfg.flink_cluster_dir / "run" / "flink-bookstream-standalonesession.pid"
    running = pids.is_file() and any(_pid_alive_text(line) for line in pids.read_text().split())
    if not running:
        return True, (
            "not running (optional: `make cluster-up` for `bookstream submit`; the demo runs "
            "a local MiniCluster)"
        )
    where = cfg.flink_cluster_rest_url
    logs = cfg.flink_cluster_dir / "log"
    try:
        ov = overview(cfg)
    except ClusterError as exc:
        return False, f"started but {where} does not answer ({exc}); logs: {logs}"
    tms = int(ov.get("taskmanagers", 0))
    want = cfg.flink.cluster_taskmanagers
    detail = (
        f"Flink {ov.get('flink-version')} at {where}: {tms}/{want} TaskManager(s), "
        f"{ov.get('slots-available')}/{ov.get('slots-total')} slot(s) free, "
        f"{ov.get('jobs-running')} job(s) running"
    )
    if tms < want:
        return False, f"{detail}; logs: {logs} (restart: make cluster-down cluster-up)"
    return True, detail


def _pid_alive_text(text: str) -> bool:
    try:
        os.kill(int(text), 0)
    except (ValueError, ProcessLookupError, PermissionError):
        return False
    return True


def _state_dir(cfg: Config) -> tuple[bool, str]:
    if not cfg.state_dir.is_dir():
        return False, f"{cfg.state_dir} missing: run `make install`"
    mode = cfg.state_dir.stat().st_mode & 0o777
    # 0700, or 0710 under root (traverse-only for PostgreSQL's group: infra/lib.sh)
    if mode & 0o067:
        return False, f"{cfg.state_dir} is mode {mode:o}: others can read it (chmod 0700)"
    return True, f"{cfg.state_dir} (mode {mode:o})"


def _monitoring(cfg: Config) -> list[tuple[str, bool, str]]:
    """The project's Prometheus and Alertmanager (`make monitor`): checked when ours runs."""
    if not _pid_alive(cfg.state_dir / "run" / "prometheus.pid"):
        return []
    import urllib.request

    mc = cfg.metrics
    out = []
    for name, port in (("prometheus", mc.prometheus_port), ("alertmanager", mc.alertmanager_port)):
        url = f"http://{mc.host}:{port}/-/ready"
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                out.append((name, resp.status == 200, f"ready at {mc.host}:{port}"))
        except OSError as exc:
            fix = f"run `make monitor`; its log: {cfg.logs_dir / (name + '.log')}"
            out.append((name, False, f"not ready at {mc.host}:{port} ({exc}): {fix}"))
    return out


def run_doctor(cfg: Config, *, need_broker: bool = True) -> tuple[bool, dict]:
    checks: list[tuple[str, bool, str]] = []
    checks.append(
        (
            "python",
            sys.version_info[:2] == (3, 11),
            f"Python {sys.version.split()[0]} ({sys.executable})",
        )
    )
    checks.append(("java", *_java()))
    checks.extend(_flink_connector(cfg))
    checks.append(("kafka-jars", *_kafka_jars(cfg)))
    checks.append(("state-dir", *_state_dir(cfg)))
    checks.append(("listeners", *_listeners(cfg)))
    checks.extend(_postgres(cfg))
    checks.extend(_redis(cfg, services=need_broker))
    checks.extend(_monitoring(cfg))
    checks.append(("lake", *_lake(cfg)))
    checks.append(("flink-cluster", *_flink_cluster(cfg)))
    if need_broker:
        from jobs.kafka_io import BrokerUnavailableError, broker_list, existing_topics

        try:
            brokers = broker_list(cfg)
            # the project's own nodes: as many as kafka.brokers says; another deployment's: any
            enough = bool(cfg.kafka.bootstrap) or len(brokers) >= cfg.kafka.brokers
            checks.append(
                (
                    "broker",
                    enough,
                    f"{len(brokers)} broker(s) at {cfg.kafka.bootstrap_servers}: "
                    + ", ".join(brokers)
                    + (
                        ""
                        if enough
                        else f"; kafka.brokers = {cfg.kafka.brokers}: start them (make up)"
                    )
                    + "; topics: replication factor {}, min ISR {}".format(*cfg.replication()),
                )
            )
            have = existing_topics(cfg)
            for spec in cfg.topics.specs():
                got = have.get(spec.name)
                if got is None:
                    checks.append(
                        (
                            f"topic:{spec.name}",
                            False,
                            "missing: run `bookstream topics` (make demo creates it)",
                        )
                    )
                else:
                    checks.append(
                        (
                            f"topic:{spec.name}",
                            got == spec.partitions,
                            f"{got} partition(s), config {spec.partitions}",
                        )
                    )
        except BrokerUnavailableError as exc:
            checks.append(("broker", False, str(exc)))
    for name, ok, detail in checks:
        print(f"{'ok  ' if ok else 'FAIL'} {name:<34} {detail}", file=sys.stderr)
    logs = {name: str(path) for name, path in cfg.log_files().items()}
    for name, path in logs.items():
        print(f"log  {name:<34} {path}", file=sys.stderr)
    ok = all(c[1] for c in checks)
    return ok, {
        "ok": ok,
        "checks": {name: {"ok": good, "detail": detail} for name, good, detail in checks},
        "logs": logs,
    }
