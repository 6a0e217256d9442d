"""bookstream's one configuration module.

Every setting has a default for the embedded stack (one machine, services under one state
directory). Values are read in this order, later wins:

1. the defaults below;
2. a TOML file: ``$BOOKSTREAM_CONFIG`` or ``bookstream.toml`` in the working directory, with one
   table per section (``[kafka]``, ``[topics]``, ``[flink]``, ``[features]``, ...,
   ``[redis]``, ``[feast]``);
3. environment variables ``BOOKSTREAM_<SECTION>_<FIELD>`` (e.g. ``BOOKSTREAM_KAFKA_PORT=29092``)
   and ``BOOKSTREAM_STATE_DIR``.

Unknown sections or fields are an error, so a typo never silently falls back to a default.
``python -m udfs.config shell`` prints the values the ``infra/`` scripts need as shell exports
(quoted), ``shell-nul`` as NUL-terminated ``NAME=value`` records, which ``infra/lib.sh`` reads
without ``eval``: shell and Python read one source, and no value is ever run as code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints
from urllib.parse import quote

from udfs.kafka_acl import ADMIN, ROLES

__all__ = [
    "PROJECT_ROOT",
    "Config",
    "ConfigError",
    "FeastConfig",
    "FeatureConfig",
    "FeedConfig",
    "FlinkConfig",
    "KafkaConfig",
    "LakeConfig",
    "Origin",
    "QualityConfig",
    "RedisConfig",
    "RiskConfig",
    "SizingConfig",
    "StrategyConfig",
    "TopicSpec",
    "TopicsConfig",
    "VenueConfig",
    "is_secret_property",
    "java_properties",
    "librdkafka_properties",
    "load_config",
    "load_config_with_origins",
    "parse_properties",
    "redacted_properties",
    "secure_state_dir",
    "shell_exports",
    "shell_values",
    "topics_env",
]

PROJECT_ROOT = (
    Path(os.environ["BOOKSTREAM_PROJECT_ROOT"]).resolve()
    if os.environ.get("BOOKSTREAM_PROJECT_ROOT")
    else Path(__file__).resolve().parent.parent
)
"""The checkout (state, models, data, feature repo below it). ``BOOKSTREAM_PROJECT_ROOT``
overrides where this file lies: the Python driver of ``flink run`` imports it from the zip the
job ships (``flink run -pyfs``), extracted to a temporary directory."""


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names it."""


@dataclass(frozen=True)
class _Range:
    """The closed (or, with ``lo_open``, half-open) interval a number setting must lie in."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False

    def admits(self, value: float) -> bool:
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or value <= self.hi

    def __str__(self) -> str:
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        return f"{'(' if self.lo_open else '['}{lo}, {hi}]"


def _range(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False
) -> dict[str, _Range]:
    """Field metadata: the setting's allowed range (checked at load)."""
    return {"range": _Range(lo, hi, lo_open)}


@dataclass(frozen=True, kw_only=True)
class KafkaConfig:
    host: str = "127.0.0.1"
    """Address the broker listens on and clients connect to (loopback by default)."""
    port: int = field(default=19092, metadata=_range(1, 65535))
    """Client listener port (not 9092, so a user's own broker is never touched)."""
    controller_port: int = field(default=19093, metadata=_range(1, 65535))
    """KRaft controller listener port."""
    brokers: int = field(default=1, metadata=_range(1, 9))
    """The project's own KRaft nodes (infra/kafka/, ``make up KAFKA_BROKERS=3``): 1, or e.g. 3
    combined broker+controller nodes (a 3-voter quorum). Node ``i`` (1-based) listens on
    ``port + (i-1)*node_port_step`` and ``controller_port + (i-1)*node_port_step``."""
    node_port_step: int = field(default=10, metadata=_range(1, 1000))
    """Port distance between the project's nodes (see ``brokers``): 19092, 19102, 19112 and
    controllers 19093, 19103, 19113 by default."""
    bootstrap: str = ""
    """Comma list of ``host:port`` every client starts from (a real deployment's brokers);
    empty: the project's own node(s) on ``host``."""
    client: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """Client properties (SASL/SSL and any other librdkafka / Java client property) applied to
    every Kafka client of the project: the confluent-kafka producers, consumers and admin clients
    and the Flink source and sink. In the TOML file the table ``[kafka.client]``; in the
    environment ``BOOKSTREAM_KAFKA_CLIENT`` as a JSON object. A key prefixed ``librdkafka.`` goes
    to the confluent-kafka clients only, ``java.`` to the Java ones only; see
    :func:`librdkafka_properties` / :func:`java_properties` for the names translated between the
    two. Values are secrets as far as bookstream is concerned: never printed or logged."""
    security: Literal["plaintext", "sasl"] = "sasl"
    """The project's own broker (infra/kafka/): ``sasl`` (the default): SASL_PLAINTEXT on
    loopback, one generated credential per role (``udfs/kafka_acl.py``) under
    ``<state>/kafka/credentials/`` (0600), ACLs per role; each process connects as its role
    (SCRAM-SHA-512; the super user ``admin`` by PLAIN). ``plaintext``: the explicit opt-out, no
    authentication and no ACL (anyone on the machine may write orders or a kill), loopback
    only. Changing it needs the broker restarted (``make stop up``)."""
    credentials_dir: str = ""
    """Where the roles' credentials of ``security = "sasl"`` are (``<role>.properties``); empty:
    ``<state>/kafka/credentials``, where the broker's first start generates them. Set it for a
    process with a state directory of its own (a test's, a run's) on the project's broker."""
    client_properties_file: str = ""
    """A Java-style properties file (``key=value`` lines, ``#`` comments, a trailing ``\\``
    continues a line) with more client properties, read when a client is built (so secrets can
    stay in a 0600 file, out of the environment and the TOML); ``kafka.client`` wins over it."""

    @property
    def node_ports(self) -> list[tuple[int, int]]:
        """(client port, controller port) of each of the project's own nodes."""
        step = self.node_port_step
        return [
            (self.port + i * step, self.controller_port + i * step) for i in range(self.brokers)
        ]

    @property
    def role_credentials(self) -> bool:
        """Whether each client authenticates as its role with the generated credentials and
        topics get the roles' ACLs: ``security = "sasl"`` on the project's own broker. With
        ``bootstrap`` set (another deployment's brokers) the passthrough (``client``) carries
        the authentication, and that deployment its own ACLs."""
        return self.security == "sasl" and not self.bootstrap

    @property
    def bootstrap_servers(self) -> str:
        if self.bootstrap:
            return self.bootstrap
        return ",".join(f"{self.host}:{port}" for port, _ in self.node_ports)

    def client_properties(self) -> dict[str, str]:
        """The passthrough as given (file, then ``kafka.client``), prefixes not yet applied."""
        props: dict[str, str] = {}
        if self.client_properties_file:
            path = Path(self.client_properties_file)
            try:
                text = path.read_text()
            except OSError as exc:
                raise ConfigError(f"kafka.client_properties_file={path}: {exc}") from exc
            props.update(_check_client(parse_properties(text), f"file {path}"))
        props.update(self.client)
        return props


CLIENT_RESERVED = frozenset(
    {
        "bootstrap.servers",
        "acks",
        "enable.idempotence",
        "transactional.id",
        "isolation.level",
        "group.id",
        "enable.auto.commit",
        "partitioner",
        "key.serializer",
        "value.serializer",
        "key.deserializer",
        "value.deserializer",
    }
)
"""Client properties bookstream sets itself (its delivery guarantees, groups, partitioning and
bootstrap list: ``kafka.bootstrap``); the passthrough refuses them."""

_LIBRDKAFKA_ONLY = frozenset(
    {
        "sasl.username",
        "sasl.password",
        "sasl.mechanisms",
        "ssl.ca.location",
        "ssl.ca.pem",
        "ssl.ca.certificate.stores",
        "ssl.certificate.location",
        "ssl.certificate.pem",
        "ssl.key.location",
        "ssl.key.pem",
        "ssl.crl.location",
        "enable.ssl.certificate.verification",
        "sasl.kerberos.principal",
        "sasl.kerberos.keytab",
        "sasl.kerberos.kinit.cmd",
    }
)
"""librdkafka names the Java client does not have (translated where it has an equivalent)."""

_JAVA_ONLY_PREFIXES = (
    "sasl.jaas.config",
    "sasl.login.",
    "sasl.client.callback.handler.class",
    "ssl.truststore.",
    "ssl.keystore.type",
    "ssl.keystore.key",
    "ssl.keystore.certificate.chain",
    "ssl.protocol",
    "ssl.enabled.protocols",
    "ssl.trustmanager.",
    "ssl.keymanager.",
    "ssl.engine.factory.class",
    "ssl.secure.random.implementation",
)
"""Java client names librdkafka does not have (it refuses an unknown property)."""

_SECRET_WORDS = ("password", "secret", "jaas", "token", "credential", "key.pem", "keystore.key")

FLINK_KAFKA_SHADED = "org.apache.flink.kafka.shaded."
"""Where flink-sql-connector-kafka relocates the Kafka client's classes: a class named in a Java
property (a JAAS login module, a callback handler) must carry it to load in the Flink job."""


def is_secret_property(key: str) -> bool:
    """Whether a client property's value must never be shown (passwords, JAAS configs, keys)."""
    k = key.lower()
    return any(word in k for word in _SECRET_WORDS)


def redacted_properties(props: dict[str, str]) -> dict[str, str]:
    """``props`` with every secret value (:func:`is_secret_property`) replaced by ``***``."""
    return {k: "***" if is_secret_property(k) else v for k, v in props.items()}


def parse_properties(text: str) -> dict[str, str]:
    """A Java-style properties text: ``key=value`` or ``key: value`` lines, ``#``/``!``
    comments, a trailing backslash continues the line (leading blanks of the next one dropped).
    No other escapes: a value is taken as written."""
    props: dict[str, str] = {}
    logical = ""
    for raw in [*text.splitlines(), ""]:
        line = raw.strip() if not logical else raw.lstrip()
        if not logical and (not line or line[0] in "#!"):
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            logical += line[:-1]
            continue
        logical += line
        if not logical:
            continue
        cut = min((i for i in (logical.find("="), logical.find(":")) if i >= 0), default=-1)
        if cut <= 0:
            raise ConfigError(f"client properties: no key=value in line {logical[:40]!r}...")
        props[logical[:cut].strip()] = logical[cut + 1 :].strip()
        logical = ""
    return props


def _check_client(props: dict[str, Any], where: str) -> dict[str, str]:
    """The passthrough's keys and values as text, reserved keys refused."""
    out: dict[str, str] = {}
    for key, value in props.items():
        bare = key.removeprefix("librdkafka.").removeprefix("java.")
        if not isinstance(key, str) or not bare or isinstance(value, dict | list):
            raise ConfigError(f"kafka.client ({where}): {key!r} must be a property = text")
        if bare in CLIENT_RESERVED:
            raise ConfigError(
                f"kafka.client ({where}): {key} is set by bookstream itself "
                "(its delivery guarantees, groups and partitioning; the brokers: kafka.bootstrap)"
            )
        out[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """TOML reads ``sasl.mechanism = "PLAIN"`` as nested tables: back to dotted names."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def librdkafka_properties(props: dict[str, str]) -> dict[str, str]:
    """The passthrough for a confluent-kafka (librdkafka) client: ``librdkafka.<key>`` and
    unprefixed keys, minus the Java-only names; ``sasl.mechanism`` spelled ``sasl.mechanisms``."""
    out: dict[str, str] = {}
    for key, value in props.items():
        if key.startswith("java."):
            continue
        if key.startswith("librdkafka."):
            continue
        if key == "sasl.mechanism":
            out["sasl.mechanisms"] = value
        elif not key.startswith(_JAVA_ONLY_PREFIXES):
            out[key] = value
    for key, value in props.items():  # a librdkafka.-prefixed key wins over the unprefixed one
        if key.startswith("librdkafka."):
            out[key.removeprefix("librdkafka.")] = value
    return out


def _jaas_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def java_properties(props: dict[str, str], *, shaded: bool) -> dict[str, str]:
    """The passthrough for a Java client: ``java.<key>`` and unprefixed keys, minus the
    librdkafka-only names, translated:

    - ``sasl.mechanisms`` -> ``sasl.mechanism``;
    - ``sasl.username`` + ``sasl.password`` with mechanism PLAIN or SCRAM-SHA-256/512 ->
      ``sasl.jaas.config`` (``PlainLoginModule`` / ``ScramLoginModule required username=...
      password=...;``) unless one is given;
    - ``ssl.ca.location`` (a PEM file) -> ``ssl.truststore.location`` + ``ssl.truststore.type``
      ``PEM`` unless a truststore is given;
    - ``ssl.endpoint.identification.algorithm`` ``none`` -> empty (Java's "off").

    ``shaded``: for flink-sql-connector-kafka, whose Kafka classes are relocated: a value naming
    an ``org.apache.kafka.`` class (JAAS login module, callback handlers) gets
    :data:`FLINK_KAFKA_SHADED` in front."""
    out: dict[str, str] = {}
    for key, value in props.items():
        if key.startswith("librdkafka."):
            continue
        bare = key.removeprefix("java.")
        if bare == "sasl.mechanisms":
            bare = "sasl.mechanism"
        if bare in _LIBRDKAFKA_ONLY and not key.startswith("java."):
            continue
        if bare == "ssl.endpoint.identification.algorithm" and value.lower() == "none":
            value = ""
        out[bare] = value
    for key, value in props.items():  # a java.-prefixed key wins over the unprefixed one
        if key.startswith("java."):
            out[key.removeprefix("java.")] = value
    mechanism = out.get("sasl.mechanism", props.get("sasl.mechanisms", "")).upper()
    user, password = props.get("sasl.username"), props.get("sasl.password")
    if user is not None and password is not None and "sasl.jaas.config" not in out:
        modules = {
            "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
            "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
            "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
        }
        if mechanism not in modules:
            raise ConfigError(
                f"kafka.client: sasl.username/sasl.password with sasl.mechanism={mechanism or '?'}"
                ": give the Java clients a java.sasl.jaas.config"
            )
        out["sasl.jaas.config"] = (
            f"{modules[mechanism]} required username={_jaas_quote(user)} "
            f"password={_jaas_quote(password)};"
        )
    if "ssl.ca.location" in props and "ssl.truststore.location" not in out:
        out["ssl.truststore.location"] = props["ssl.ca.location"]
        out["ssl.truststore.type"] = "PEM"
    if shaded:
        out = {
            k: FLINK_KAFKA_SHADED + v.lstrip() if v.lstrip().startswith("org.apache.kafka.") else v
            for k, v in out.items()
        }
    return out


@dataclass(frozen=True, kw_only=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int
    """-1 keeps records forever (Kafka's convention)."""
    retention_bytes: int = -1
    """Per-partition size limit; -1 means none."""
    replication_factor: int | None = None
    """None: ``topics.replication_factor`` (see :meth:`Config.replication`)."""
    min_insync_replicas: int | None = None
    """None: ``topics.min_insync_replicas`` (see :meth:`Config.replication`)."""
    timestamp_after_max_ms: int = 2**63 - 1
    """``message.timestamp.after.max.ms``: how far a record's timestamp may be ahead of the
    broker's clock. Kafka 4 refuses records more than an hour ahead by default (KIP-1030); our
    record timestamps are exchange times, and a capture replayed with them (or a venue whose
    clock runs ahead) must reach the stream job, which judges exchange time itself
    (``flink.max_ahead_ms``, dead letter ``future``) instead of the producer failing."""


@dataclass(frozen=True, kw_only=True)
class TopicsConfig:
    """Every topic bookstream reads or writes; no topic name appears anywhere else."""

    events: str = "bookstream.l2.events.v1"
    """Normalised L2 events, key = instrument, record timestamp = exchange time (ms)."""
    features: str = "bookstream.features.v1"
    """One feature row per applied event batch, key = instrument."""
    dead_letter: str = "bookstream.deadletter.v1"
    """Malformed or late records with source, offset and reason."""
    stats: str = "bookstream.stats.v1"
    """Per-instrument counters of the stream job (events in / processed / dead-lettered)."""
    signals: str = "bookstream.signals.v1"
    """Strategy and model signals (shadow model's too, marked not traded), key = instrument."""
    orders: str = "bookstream.orders.v1"
    """Orders (and event-time heartbeats) of the trading stage, key = instrument."""
    executions: str = "bookstream.executions.v1"
    """Acks, rejects, cancels and fills of the execution sink, key = instrument."""
    control: str = "bookstream.control.v1"
    """Kill switch, resume, cancel-all, and the sink's own kill trips."""
    risk: str = "bookstream.risk.v1"
    """VaR / ES / drawdown of the current positions at an event-time interval."""
    quality: str = "bookstream.quality.v1"
    """Data-quality counters per instrument and exchange-time minute (gaps, re-syncs, crossed or
    locked books, stale feed, out-of-order, late and duplicate events)."""
    drift: str = "bookstream.drift.v1"
    """The live model's feature drift per instrument and window (PSI per feature against its
    training distribution, ``alert`` above ``strategy.drift_psi_alert``), key = instrument."""
    config: str = "bookstream.config.v1"
    """Each process's effective configuration when it starts (hash + non-secret settings), key =
    process: the audit trail of configuration changes."""
    partitions: int = field(default=3, metadata=_range(1, 10_000))
    retention_ms: int = field(default=-1, metadata=_range(-1))
    """Time retention. Kafka ages a segment by its records' timestamps, which here are exchange
    times (years old for LOBSTER 2012): a time limit would delete replayed history at once, so
    the default keeps records by size only (``retention_bytes`` per partition)."""
    retention_bytes: int = field(default=2 * 1024**3, metadata=_range(-1))
    replication_factor: int = field(default=0, metadata=_range(0, 32))
    """Replicas of every topic; 0: the project's own node count (``kafka.brokers``, at most 3),
    so ``make up KAFKA_BROKERS=3`` gives every topic 3. Set it for another deployment."""
    min_insync_replicas: int = field(default=0, metadata=_range(0, 32))
    """``min.insync.replicas`` of every topic: with ``acks=all`` (every producer of the
    project) a write is acknowledged once this many replicas have it; 0: replication factor - 1
    (at least 1), e.g. 2 of 3, so one broker may be down without stopping producers."""

    def for_run(self, run: str) -> TopicsConfig:
        """The topic set of one run (a test, a benchmark, a replay): every topic, named
        ``<run>.<field>``. A run's topics are always replaced as a whole, so no output of it can
        fall back to a live topic."""
        names: dict[str, Any] = {f: f"{run}.{f}" for f in self.name_fields()}
        return dataclasses.replace(self, **names)

    @classmethod
    def name_fields(cls) -> tuple[str, ...]:
        """The fields that name a topic (every ``str`` field), in declaration order."""
        return tuple(f.name for f in fields(cls) if f.type in (str, "str"))

    def names(self) -> dict[str, str]:
        """field -> topic name, for every topic."""
        return {f: getattr(self, f) for f in self.name_fields()}

    def specs(self) -> list[TopicSpec]:
        return [
            TopicSpec(
                name=self.events,
                partitions=self.partitions,
                retention_ms=self.retention_ms,
                retention_bytes=self.retention_bytes,
            ),
            TopicSpec(
                name=self.features,
                partitions=self.partitions,
                retention_ms=self.retention_ms,
                retention_bytes=self.retention_bytes,
            ),
            # dead letters are evidence: keep them until someone looks
            TopicSpec(name=self.dead_letter, partitions=1, retention_ms=-1),
            TopicSpec(
                name=self.stats,
                partitions=1,
                retention_ms=self.retention_ms,
                retention_bytes=self.retention_bytes,
            ),
            *(
                TopicSpec(
                    name=name,
                    partitions=self.partitions,
                    retention_ms=self.retention_ms,
                    retention_bytes=self.retention_bytes,
                )
                for name in (self.signals, self.orders, self.executions)
            ),
            # one partition: commands and trips keep one total order
            TopicSpec(name=self.control, partitions=1, retention_ms=-1),
            TopicSpec(
                name=self.risk,
                partitions=1,
                retention_ms=self.retention_ms,
                retention_bytes=self.retention_bytes,
            ),
            TopicSpec(
                name=self.quality,
                partitions=1,
                retention_ms=self.retention_ms,
                retention_bytes=self.retention_bytes,
            ),
            TopicSpec(
                name=self.drift,
                partitions=1,
                retention_ms=self.retention_ms,
                retention_bytes=self.retention_bytes,
            ),
            # audit evidence: one partition (one order of starts), kept forever
            TopicSpec(name=self.config, partitions=1, retention_ms=-1),
        ]


@dataclass(frozen=True, kw_only=True)
class FlinkConfig:
    flink_version: str = "2.2.1"
    """The apache-flink wheel this project pins; the connector below must match it."""
    kafka_connector_version: str = "5.0.0-2.2"
    """org.apache.flink:flink-sql-connector-kafka version (suffix = Flink minor)."""
    parallelism: int = field(default=1, metadata=_range(1, 1024))
    out_of_orderness_ms: int = field(default=2000, metadata=_range(0))
    """Bound on exchange-time disorder per instrument; an event older than the instrument's
    newest exchange time minus this bound is late and dead-lettered."""
    max_ahead_ms: int = field(default=600_000, metadata=_range(0))
    """An event whose exchange time is more than this ahead of its instrument's newest one is
    dead-lettered as ``future`` and leaves the instrument's clock alone (else one bad timestamp
    would make every later record late). A genuine jump (a feed resuming after a long halt,
    the next session) is taken once ``future_confirm`` records in a row agree on it (each
    within ``out_of_orderness_ms`` of the one before): those before are dead-lettered, and the
    book re-syncs at its next snapshot if they broke its chain."""
    future_confirm: int = field(default=100, metadata=_range(1))
    """Consecutive far-ahead records that make the jump genuine (see ``max_ahead_ms``)."""
    idle_timeout_ms: int = field(default=5000, metadata=_range(1))
    """A source partition silent this long stops holding the watermark back."""
    checkpoint_interval_ms: int = field(default=2000, metadata=_range(10))
    execution_mode: Literal["auto", "thread", "process"] = "auto"
    """Python worker mode: ``thread`` (PEMJA, inside the TaskManager), ``process`` (Beam
    worker processes) or ``auto`` = thread, with or without ONNX models (lower latency,
    measured). onnxruntime works in thread mode because :mod:`udfs.strategy.model` imports it and
    creates
    its sessions on a thread of their own (on a PEMJA task thread, pybind11's
    ``PyGILState_Ensure`` deadlocks)."""
    checkpoint_dir: str = ""
    """Where checkpoints go: a directory or a URI (``file://``, ``s3://``, ``hdfs://``: any
    scheme whose Flink filesystem plugin the cluster has); empty:
    ``<state_dir>/flink/checkpoints``."""
    savepoint_dir: str = ""
    """Where savepoints go (``bookstream savepoint`` / ``stop --savepoint``), a directory or a
    URI like ``checkpoint_dir``; empty: ``<state_dir>/flink/savepoints``."""
    rest_port: int = field(default=18082, metadata=_range(1, 65535 - 9))
    """Web UI / REST port of a local MiniCluster job (``bookstream stream-job``, ``demo``) on
    127.0.0.1, printed at its start; when another local job holds it, the next free one of
    the nine above it."""
    cluster_rest_port: int = field(default=18081, metadata=_range(1, 65535))
    """REST API and web UI of the standalone session cluster (``make cluster-up``,
    infra/flink/) on 127.0.0.1: what ``flink run`` and ``bookstream submit|jobs|savepoint|stop``
    talk to."""
    cluster_rpc_port: int = field(default=16123, metadata=_range(1, 65535))
    """The session cluster's JobManager RPC port (its TaskManagers register there), loopback."""
    cluster_taskmanagers: int = field(default=2, metadata=_range(1, 64))
    """TaskManagers of the session cluster, one slot each: PyFlink runs every thread-mode
    operator of one TaskManager in one interpreter, so Python parallelism needs separate
    TaskManagers."""
    cluster_taskmanager_memory: str = "1280m"
    """taskmanager.memory.process.size of each TaskManager of the session cluster."""
    restart_attempts: int = field(default=10, metadata=_range(0, 1000))
    """Task restarts (from the last checkpoint, 2 s apart) before the job fails: a lost
    TaskManager's replacement takes several seconds to register, and every restart without
    its slot counts as one."""
    bundle_size: int = field(default=1000, metadata=_range(1))
    """python.fn-execution.bundle.size: records per Python bundle."""
    bundle_time_ms: int = field(default=100, metadata=_range(1))
    """python.fn-execution.bundle.time: longest a bundle waits before it is flushed."""
    buffer_timeout_ms: int = field(default=100, metadata=_range(-1))
    """execution.buffer-timeout.interval: longest a network buffer waits before it is sent
    (lower: less latency, less throughput)."""
    batch_max_records: int = 1000
    """Most records of one instrument the JVM-side micro-batcher hands to one Python call
    (``jobs/java/.../MicroBatcher.java``); 1 = one call per record. Outputs do not depend on it."""
    batch_max_delay_ms: int = 1
    """Longest a record waits in the micro-batcher (processing time) before its batch goes to
    Python; batches are also sent on every watermark, checkpoint barrier and at end of input."""
    orders_linger_ms: int = 0
    """linger.ms of the job's one Kafka producer (every output topic, orders included): 0 sends
    at once; batches still form while earlier sends are in flight. Idempotence stays on."""


@dataclass(frozen=True, kw_only=True)
class FeatureConfig:
    depth_levels: int = field(default=5, metadata=_range(1, 100))
    """N for depth imbalance over the top 1..N levels and depth per side."""
    window_ms: int = field(default=1000, metadata=_range(1))
    """Event-time window for realised volatility and trade flow."""
    processing_latency_us: int = field(default=5000, metadata=_range(0))
    """The job's modelled processing latency (record read -> feature row usable by the
    trading stage), microseconds. With the feed latency (``venue.feed_latency_ms`` or its
    recorded distribution) it makes each feature row's availability time ``ts_avail`` =
    ``ts_event`` + feed + processing, in event time (``udfs.latency.AvailabilityModel``): what a
    training set "as known at" joins on. A model, not a measurement, so a replay gives the same
    value (the job's measured latencies are ``make bench``'s)."""


@dataclass(frozen=True, kw_only=True)
class FeedConfig:
    """What the adapters (``udfs/market/adapters``) put into the events stream."""

    refresh_interval_ms: int = field(default=60_000, metadata=_range(0))
    """Every this much exchange time the LOBSTER and Binance adapters emit the book they hold as
    a snapshot (``clear`` + ``snapshot`` levels, ``seq`` = the chain head), as a market-data
    feed's refresh does: a consumer that lost a record re-syncs there (its features are
    withheld meanwhile), a consumer in sync replaces its book with the same one. 0: never."""
    pace_max_gap_ms: int = field(default=1000, metadata=_range(0))
    """``publish --speed N`` / ``live``: a gap of exchange time between two events longer than
    this is paced as this long, so a paced replay skips closed markets and the gap between
    inputs of different days (or years) instead of sleeping through them."""


@dataclass(frozen=True, kw_only=True)
class QualityConfig:
    stale_after_ms: int = field(default=5000, metadata=_range(1))
    """An instrument with no event for longer than this much exchange time has a stale feed;
    the gap is counted in the minute the feed resumes."""


@dataclass(frozen=True, kw_only=True)
class LakeConfig:
    """The history: Apache Iceberg tables (pyiceberg) and ClickHouse SQL over them (chDB)."""

    root: str = ""
    """The lake's root directory (warehouse, SQLite catalog, chDB session files, the record of
    runs); empty: ``<state>/lake``."""
    catalog: Literal["sql", "postgres", "rest"] = "sql"
    """``sql`` (pyiceberg's SQL catalog; SQLite file by default, or ``catalog_uri``), ``postgres``
    (the project's PostgreSQL server, for more than one writer) or ``rest`` (``rest_uri``)."""
    catalog_uri: str = ""
    """SQLAlchemy URI of the SQL catalog; empty: ``sqlite:///<state>/lake/catalog.db`` for
    ``sql``, the project's PostgreSQL for ``postgres``."""
    rest_uri: str = ""
    """REST catalog endpoint when ``catalog = "rest"`` (a real deployment)."""
    warehouse: str = ""
    """Where data and metadata files go; empty: ``<state>/lake/warehouse``."""
    namespace: str = "bookstream"
    commit_rows: int = field(default=200_000, metadata=_range(1))
    """The history sink commits a table's pending rows when this many are buffered..."""
    commit_interval_ms: int = field(default=5000, metadata=_range(1))
    """...or when its oldest pending row waited this long (wall clock)."""
    postgres_host: str = "127.0.0.1"
    postgres_port: int = field(default=15432, metadata=_range(1, 65535))
    """The project's own PostgreSQL (not 5432, so a user's server is never touched)."""
    postgres_db: str = "bookstream"
    postgres_user: str = "bookstream"


@dataclass(frozen=True, kw_only=True)
class RedisConfig:
    """The project's own Redis server: Feast's online store (infra/redis/)."""

    host: str = "127.0.0.1"
    """Loopback only: infra/redis/start.sh refuses anything else."""
    port: int = field(default=16379, metadata=_range(1, 65535))
    """Not 6379, so a user's (or Debian's) Redis is never touched."""
    password_file: str = ""
    """File holding the server's password (generated at first start, mode 0600); empty:
    ``<state>/redis/password``. Never in the repository, never logged."""


@dataclass(frozen=True, kw_only=True)
class FeastConfig:
    """Feast's feature store (feature_repo/): registry, offline export."""

    registry_db: str = "feast_registry"
    """Database of the project's PostgreSQL holding Feast's SQL registry (shared by every
    process: the CLI, the pusher, notebooks)."""
    repo: str = ""
    """The feature repository; empty: ``<project>/feature_repo``."""
    push_poll_ms: int = field(default=50, metadata=_range(1, 60_000))
    """``feast-push`` following the topic: the longest one read waits for records before it
    pushes what it has (a read also ends at 5,000 records). Measured (README, "Freshness, hop
    by hop"): 50 ms against 500 ms at 500 rows/s, topic -> readable p50 63-68 vs 106-109 ms
    and each instrument's value replaced every ~0.13 s instead of ~0.6 s, at the cost of ~4x
    the pushes (the pusher busy ~53 % vs ~18 % of the time); longer gives CPU back."""


@dataclass(frozen=True, kw_only=True)
class MetricsConfig:
    """Prometheus metrics (jobs/metrics.py) and the project's Prometheus and Alertmanager
    (infra/prometheus/). Loopback only."""

    enabled: bool = True
    """Each stage serves ``/metrics``; off: none does (Flink's reporter included)."""
    host: str = "127.0.0.1"
    publisher_port: int = field(default=0, metadata=_range(0, 65535))
    """0: any free port, announced to Prometheus by a target file (file service discovery)."""
    exec_sink_port: int = field(default=0, metadata=_range(0, 65535))
    history_sink_port: int = field(default=0, metadata=_range(0, 65535))
    stream_job_port: int = field(default=0, metadata=_range(0, 65535))
    """The local stream job's driver (its CPU and its MiniCluster JVM's, jobs/metrics.py)."""
    flink_reporter: bool = False
    """Flink's own Prometheus reporter (the plugin in the PyFlink wheel) in the job's JVM.
    Off by default: that reporter has no bind-address option and listens on every interface,
    which the project's loopback-only rule does not allow unless you choose it."""
    flink_ports: str = "19450-19459"
    """Port range of Flink's Prometheus reporter (one port per JobManager/TaskManager; a local
    MiniCluster is one JVM: one port, given alone, as Flink refuses a range ``p-p``)."""
    page_port: int = field(default=19480, metadata=_range(0, 65535))
    """The live desk page (``bookstream page``, jobs/live_page.py)."""
    prometheus_port: int = field(default=19490, metadata=_range(1, 65535))
    alertmanager_port: int = field(default=19491, metadata=_range(1, 65535))
    scrape_interval_s: int = field(default=5, metadata=_range(1, 3600))
    """How often Prometheus scrapes and evaluates the alert rules."""
    alert_webhook_url: str = ""
    """Where Alertmanager posts alerts (its webhook JSON: a pager bridge, chat, a test);
    empty: alerts stay in Alertmanager's UI and API."""
    alert_group_wait_s: int = field(default=10, metadata=_range(1, 3600))
    """How long Alertmanager gathers alerts of a group before the first notification."""


@dataclass(frozen=True, kw_only=True)
class EnergyConfig:
    """Energy and emissions of a run (udfs/energy.py): CPU seconds of every process, converted
    with these factors where the machine has no energy counter (RAPL) to read."""

    watts_per_cpu: float = field(default=3.5, metadata=_range(0.0, 1000.0))
    """Power drawn per busy CPU (W, per CPU-second of work): Cloud Carbon Footprint's
    coefficient for an AWS vCPU at full load (3.5 W; 0.74 W idle, not charged here)."""
    pue: float = field(default=1.135, metadata=_range(1.0, 5.0))
    """Power usage effectiveness of the hosting site (cooling, power losses): Cloud Carbon
    Footprint's figure for AWS."""
    grid_g_co2e_per_kwh: float = field(default=480.0, metadata=_range(0.0, 2000.0))
    """Carbon intensity of the grid, gCO2e per kWh: the world's 2023 average (Ember, Global
    Electricity Review 2024). Set your region's: e.g. ~50-60 France, ~350-400 Germany/US."""
    rapl_path: str = "/sys/class/powercap/intel-rapl:0/energy_uj"
    """The package energy counter to read when it exists (Linux powercap, Intel/AMD RAPL):
    then the run's measured machine-wide energy is reported beside the model."""


@dataclass(frozen=True, kw_only=True)
class ReportConfig:
    """``bookstream report`` (udfs/report.py): how the run's figures are annualised and drawn."""

    seconds_per_year: float = field(default=5_896_800.0, metadata=_range(1.0))
    """Sharpe and Sortino are computed on the equity's changes between the execution sink's
    risk reports (one per risk interval of exchange time with market activity, 1 s) and
    annualised by the square root of the risk intervals in this many seconds: 252 days x
    6.5 h, an equity-market trading year; set 31,536,000 for a market that trades around the
    clock."""
    freshness_step_ms: int = field(default=100, metadata=_range(1))
    """Feature freshness samples each instrument's newest feature row's age every this many ms
    of exchange time."""
    histogram_bins: int = field(default=20, metadata=_range(1, 1000))
    """Bins of the slippage histogram."""


@dataclass(frozen=True, kw_only=True)
class StrategyConfig:
    imbalance_level: int = field(default=3, metadata=_range(1, 100))
    """The rule strategy reads ``imbalance_<k>`` (top-k depth imbalance)."""
    enter_threshold: float = field(default=0.6, metadata=_range(0.0, 1.0))
    """|imbalance| above this (and microprice on the same side of mid) enters a direction."""
    exit_threshold: float = field(default=0.2, metadata=_range(0.0, 1.0))
    """|imbalance| below this goes flat: the gap to ``enter_threshold`` is the hysteresis."""
    model_path: str = "models/book_lr_v1.onnx"
    """Traded ONNX model (relative to the project root); its ``.json`` metadata sits beside.
    The live model until the model registry (``registry_path``) records a change."""
    shadow_model_path: str = "models/book_lr_v2.onnx"
    """Scored side by side on the same rows, recorded, never traded; empty: none. The canary
    (at share 0) until the model registry records a change."""
    drift_psi_alert: float = field(default=0.25, metadata=_range(0.0, lo_open=True))
    """``bookstream model drift``: a feature whose population stability index against the
    model's training distribution is above this is an alert (0.25: a significant shift); the
    stream job's drift rows (``drift_every_rows``) flag an alert with the same bound."""
    drift_every_rows: int = field(default=1000, metadata=_range(0))
    """The stream job's drift window (:mod:`udfs.strategy.drift`): per instrument, the live
    model's input features of this many feature rows (more when rows arrive out of exchange-time
    order) make one window, whose PSI per feature against the model card's
    ``drift_reference`` goes to the drift topic; 0: no drift rows."""
    registry_path: str = ""
    """The model registry (:mod:`udfs.strategy.registry`: live model, canary and its share),
    changed by ``bookstream model``; empty: ``<state>/models/registry.json``."""
    model_share: float = field(default=0.5, metadata=_range(0.0, 1.0))
    """A/B split: instruments whose stable hash falls below this share are traded by the model,
    the others by the rule strategy."""
    model_threshold: float = field(default=0.55, metadata=_range(0.5, 1.0))
    """Model probability of an up move above this goes long, below 1 - this goes short."""
    execution: Literal["direct", "twap", "pov"] = "direct"
    """How a decision's order is executed: ``direct`` (one order), ``twap`` or ``pov``."""
    twap_slices: int = field(default=4, metadata=_range(1, 10_000))
    twap_horizon_ms: int = field(default=2000, metadata=_range(0))
    """TWAP: child slices spread evenly over this much event time after the decision."""
    pov_participation: float = field(default=0.1, metadata=_range(0.0, 1.0, lo_open=True))
    """POV: children never exceed this share of the market volume traded since the decision."""


@dataclass(frozen=True, kw_only=True)
class SizingConfig:
    target_vol: float = field(default=0.0005, metadata=_range(0.0, lo_open=True))
    """Volatility target: the position's expected P&L std over the window, as a fraction of
    ``capital``."""
    capital: float = field(default=100_000.0, metadata=_range(0.0, lo_open=True))
    """Quote-currency capital the strategy sizes against."""
    kelly_fraction: float = field(default=0.25, metadata=_range(0.0, 1.0))
    """Fraction of the Kelly-optimal size allowed (fractional Kelly cap)."""
    max_position_notional: float = field(default=20_000.0, metadata=_range(0.0))
    """Hard cap on |target position| x price, quote currency."""
    capital_weights_path: str = ""
    """Per-instrument share of ``capital``: a JSON object ``{instrument: weight}`` (relative to
    the project root), e.g. hierarchical-risk-parity weights from the lake's returns
    (``udfs.research.portfolio``). An instrument is then sized against ``capital * weight`` (0
    when it has no weight). Empty (default): every instrument against the whole capital."""


@dataclass(frozen=True, kw_only=True)
class RiskConfig:
    max_order_notional: float = field(default=50_000.0, metadata=_range(0.0))
    """Largest single order, quote currency."""
    max_position_notional: float = field(default=60_000.0, metadata=_range(0.0))
    """Largest |position| x mark per instrument, quote currency."""
    price_band_bps: float = field(default=50.0, metadata=_range(0.0))
    """A limit price further than this from the current mid is refused."""
    max_orders_per_window: int = field(default=20, metadata=_range(1))
    """Order-rate throttle per instrument..."""
    throttle_window_ms: int = field(default=1000, metadata=_range(1))
    """...per this much event time."""
    max_drawdown: float = field(default=2_000.0, metadata=_range(0.0))
    """Realised + unrealised P&L this far below its peak trips the drawdown guard."""
    drawdown_mode: Literal["REDUCING", "HALTED"] = "REDUCING"
    """Trading mode the drawdown guard sets when it trips: ``REDUCING`` (only closing orders
    pass, so the position can still be taken off) or ``HALTED`` (nothing but cancels)."""
    max_order_lots: int = field(default=10**12, metadata=_range(1))
    """Largest quantity of one order, lots: a sanity bound (the notional limits do the real
    work) that keeps a corrupt quantity out of the exact arithmetic."""


@dataclass(frozen=True, kw_only=True)
class VenueConfig:
    feed_latency_ms: int = field(default=1, metadata=_range(0))
    """exchange -> decision"""
    entry_latency_ms: int = field(default=2, metadata=_range(0))
    """decision -> venue"""
    ack_latency_ms: int = field(default=1, metadata=_range(0))
    """venue -> acknowledgement back"""
    latency_seed: int = 7
    """Seed for latencies drawn from a recorded distribution (runs repeat exactly)."""
    latency_samples_path: str = ""
    """Recorded order-entry latencies (one ms value per line); empty: ``entry_latency_ms``."""
    feed_latency_samples_path: str = ""
    """Recorded feed latencies (exchange -> decision, ms per line); empty: the constant."""
    ack_latency_samples_path: str = ""
    """Recorded acknowledgement latencies (ms per line); empty: the constant."""
    maker_fee_bps: float = field(default=1.0, metadata=_range(-100.0, 100.0))
    taker_fee_bps: float = field(default=4.0, metadata=_range(-100.0, 100.0))
    resting_fill_rule: Literal["trade", "cross"] = "trade"
    """What fills a resting order: ``trade`` (only trades at or through its price, after the
    size ahead of it: conservative) or ``cross`` (also, wholly at its own price, once the
    opposite best price reaches it after a complete book update, as hftbacktest does:
    optimistic). Run both to bracket the fills a strategy could have had."""


@dataclass(frozen=True, kw_only=True)
class ExecutionConfig:
    read_ahead_ms: int = field(default=120_000, metadata=_range(0))
    """The execution sink stops reading (Kafka pause) an input partition whose newest record is
    more than this past the sequencer's safe time, and reads it again once the safe time has
    caught up: its inputs would only wait in the sequencer's queues, so over a backlog the
    queues hold about this much exchange time of input instead of all of it. Above the stream
    job's heartbeat period (one exchange-time minute), so a live sink keeping up never pauses.
    The output does not depend on it (the sequencer's order depends on the records only)."""
    commit_every: int = field(default=5_000, metadata=_range(1))
    """Inputs (market events, orders, control records) per Kafka transaction of the execution
    sink at most: outputs become readable (read_committed) only when their transaction
    commits. A sink keeping up commits whenever a poll comes back empty, so this binds only over
    a backlog (catch-up, a burst): larger batches amortise the transaction round trip, smaller
    ones make each batch's outputs visible sooner. 5,000 by ``make bench ARGS=--exec-sink`` (the
    full LOBSTER day): sink + broker CPU per input within 2% of 20,000's (1,000: +19%, 200:
    +100%), a batch's outputs visible ~3.6x sooner (README, Benchmark)."""


@dataclass(frozen=True, kw_only=True)
class Config:
    state_dir: Path = field(default_factory=lambda: PROJECT_ROOT / ".state")
    """Every service's data, logs and pids live under here; delete it for a clean slate."""
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    flink: FlinkConfig = field(default_factory=FlinkConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    feed: FeedConfig = field(default_factory=FeedConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    sizing: SizingConfig = field(default_factory=SizingConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)
    venue: VenueConfig = field(default_factory=VenueConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    lake: LakeConfig = field(default_factory=LakeConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    feast: FeastConfig = field(default_factory=FeastConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def for_run(self, run: str) -> Config:
        """This configuration with the topic set of one run (:meth:`TopicsConfig.for_run`)."""
        return dataclasses.replace(self, topics=self.topics.for_run(run))

    @property
    def jars_dir(self) -> Path:
        return self.state_dir / "jars"

    @property
    def kafka_connector_jar(self) -> Path:
        return (
            self.jars_dir
            / "flink"
            / f"flink-sql-connector-kafka-{self.flink.kafka_connector_version}.jar"
        )

    def replication(self, spec: TopicSpec | None = None) -> tuple[int, int]:
        """(replication factor, min.insync.replicas) of ``spec`` (or of a topic with no values
        of its own) from the configuration: ``topics.replication_factor`` (0: ``kafka.brokers``,
        at most 3), ``topics.min_insync_replicas`` (0: replicas - 1, at least 1)."""
        rf = spec.replication_factor if spec and spec.replication_factor else None
        rf = rf or self.topics.replication_factor or min(self.kafka.brokers, 3)
        isr = spec.min_insync_replicas if spec and spec.min_insync_replicas else None
        isr = isr or self.topics.min_insync_replicas or max(rf - 1, 1)
        if isr > rf:
            raise ConfigError(
                f"topics.min_insync_replicas={isr} > replication factor {rf}: "
                "no write could ever be acknowledged"
            )
        return rf, isr

    @property
    def glue_jar(self) -> Path:
        """jobs/java compiled by infra/install.sh."""
        return self.jars_dir / "flink" / "bookstream-flink-glue.jar"

    @property
    def checkpoint_uri(self) -> str:
        """``flink.checkpoint_dir`` as a URI (no trailing slash)."""
        return _dir_uri(self.flink.checkpoint_dir, self.state_dir / "flink" / "checkpoints")

    @property
    def savepoint_uri(self) -> str:
        """``flink.savepoint_dir`` as a URI (no trailing slash)."""
        return _dir_uri(self.flink.savepoint_dir, self.state_dir / "flink" / "savepoints")

    @property
    def checkpoint_dir(self) -> Path:
        """The checkpoint directory on this machine (``file://`` only: finding the latest
        checkpoint lists it)."""
        return _local_dir(self.checkpoint_uri, "flink.checkpoint_dir")

    @property
    def model_registry_path(self) -> Path:
        """``strategy.registry_path``, or ``<state>/models/registry.json``."""
        path = self.strategy.registry_path
        return Path(path) if path else self.state_dir / "models" / "registry.json"

    @property
    def flink_cluster_dir(self) -> Path:
        """The session cluster's generated configuration (``conf/``), libraries (``lib/``) and
        pids (``run/``): infra/flink/. Its logs: :attr:`flink_cluster_logs_dir`."""
        return self.state_dir / "flink-cluster"

    @property
    def flink_cluster_logs_dir(self) -> Path:
        """The session cluster's JobManager and TaskManager logs: with every other log."""
        return self.logs_dir / "flink-cluster"

    @property
    def flink_cluster_rest_url(self) -> str:
        return f"http://127.0.0.1:{self.flink.cluster_rest_port}"

    @property
    def logs_dir(self) -> Path:
        """Every service's and job's log: ``kafka.log``, ``postgres.log`` (infra/), and
        ``flink/`` (each Flink MiniCluster's own log, one file per process)."""
        return self.state_dir / "logs"

    @property
    def flink_logs_dir(self) -> Path:
        return self.logs_dir / "flink"

    def log_files(self) -> dict[str, Path]:
        """Where each service's log is (the newest Flink log, if any)."""
        flink = sorted(self.flink_logs_dir.glob("*.log"), key=lambda p: p.stat().st_mtime)
        return {
            "kafka": self.logs_dir / "kafka.log",
            "postgres": self.logs_dir / "postgres.log",
            "redis": self.logs_dir / "redis.log",
            "prometheus": self.logs_dir / "prometheus.log",
            "alertmanager": self.logs_dir / "alertmanager.log",
            "flink": flink[-1] if flink else self.flink_logs_dir,
            "flink-cluster": self.flink_cluster_logs_dir,
        }

    @property
    def lake_dir(self) -> Path:
        """The lake's root: warehouse, SQLite catalog and chDB's own data live under it (chDB
        reads only files under its working directory)."""
        if self.lake.root:
            return Path(self.lake.root).resolve()
        return self.state_dir / "lake"

    @property
    def warehouse_dir(self) -> Path:
        if self.lake.warehouse:
            return Path(self.lake.warehouse).resolve()
        return self.lake_dir / "warehouse"

    @property
    def catalog_uri(self) -> str:
        if self.lake.catalog_uri:
            return self.lake.catalog_uri
        if self.lake.catalog == "postgres":
            return "postgresql+psycopg2://" + self.postgres_dsn.removeprefix("postgresql://")
        return f"sqlite:///{self.lake_dir / 'catalog.db'}"

    @property
    def postgres_passfile(self) -> Path:
        """The libpq password file of the project's PostgreSQL (mode 0600 in a 0700 directory),
        written by infra/postgres/start.sh: one random password per role. libpq reads it (the
        URIs below name it); no password is ever in a URI, an argument or a log."""
        return self.state_dir / "secrets" / "pgpass"

    @property
    def postgres_dsn(self) -> str:
        """libpq URI of the project's PostgreSQL as the catalog's role, password from
        :attr:`postgres_passfile`."""
        lk = self.lake
        return (
            f"postgresql://{quote(lk.postgres_user, safe='')}@{lk.postgres_host}:"
            f"{lk.postgres_port}/{quote(lk.postgres_db, safe='')}"
            f"?passfile={quote(str(self.postgres_passfile), safe='/')}"
        )

    @property
    def kafka_credentials_dir(self) -> Path:
        """One ``<role>.properties`` (0600) per principal of ``kafka.security = "sasl"``."""
        if self.kafka.credentials_dir:
            return Path(self.kafka.credentials_dir).resolve()
        return self.state_dir / "kafka" / "credentials"

    def kafka_client_properties(self, role: str) -> dict[str, str]:
        """The client properties of a process connecting as ``role`` (passthrough names, not
        yet translated): with ``kafka.security = "sasl"`` on the project's own broker
        (:attr:`KafkaConfig.role_credentials`) the role's credential and mechanism,
        then the passthrough (``kafka.client``), which wins. Secrets: never print them."""
        props: dict[str, str] = {}
        if self.kafka.role_credentials:
            if role not in ROLES:
                raise ConfigError(f"kafka role {role!r}: not one of {', '.join(ROLES)}")
            path = self.kafka_credentials_dir / f"{role}.properties"
            try:
                cred = parse_properties(path.read_text())
            except OSError as exc:
                raise ConfigError(
                    f"kafka.security=sasl: no credential of {role} ({exc}); the broker's first "
                    "start (make up, infra/kafka/start.sh) generates them"
                ) from exc
            props = {
                "security.protocol": "SASL_PLAINTEXT",
                # the super user authenticates by PLAIN against the broker's own static list
                # (no SCRAM credential has to exist before it); every other role by SCRAM
                "sasl.mechanism": "PLAIN" if role == ADMIN else "SCRAM-SHA-512",
                "sasl.username": cred["sasl.username"],
                "sasl.password": cred["sasl.password"],
            }
        props.update(self.kafka.client_properties())
        return props

    @property
    def redis_password_file(self) -> Path:
        if self.redis.password_file:
            return Path(self.redis.password_file).resolve()
        return self.state_dir / "redis" / "password"

    @property
    def feast_repo(self) -> Path:
        return Path(self.feast.repo).resolve() if self.feast.repo else PROJECT_ROOT / "feature_repo"

    @property
    def feast_dir(self) -> Path:
        """Feast's state: the offline Parquet exported from the lake and its snapshot record."""
        return self.state_dir / "feast"

    @property
    def feast_registry_uri(self) -> str:
        """SQLAlchemy URI of Feast's SQL registry: database ``feast.registry_db`` of the
        project's PostgreSQL as the catalog's role, password from :attr:`postgres_passfile`."""
        lk = self.lake
        return (
            f"postgresql+psycopg2://{quote(lk.postgres_user, safe='')}@{lk.postgres_host}:"
            f"{lk.postgres_port}/{quote(self.feast.registry_db, safe='')}"
            f"?passfile={quote(str(self.postgres_passfile), safe='/')}"
        )


def _dir_uri(value: str, default: Path) -> str:
    """A directory setting as a URI: a URI (``scheme://...``) as given, a path resolved to a
    ``file://`` URI, empty: ``default``."""
    if "://" in value:
        return value.rstrip("/")
    return (Path(value).resolve() if value else default).as_uri()


def _local_dir(uri: str, key: str) -> Path:
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise ConfigError(
            f"{key}={uri}: not a directory of this machine; only a file:// location can be "
            "listed here (pass the checkpoint or savepoint URI explicitly)"
        )
    return Path(unquote(parsed.path))


_SECTIONS: dict[str, type] = {
    "kafka": KafkaConfig,
    "topics": TopicsConfig,
    "flink": FlinkConfig,
    "features": FeatureConfig,
    "feed": FeedConfig,
    "strategy": StrategyConfig,
    "sizing": SizingConfig,
    "risk": RiskConfig,
    "venue": VenueConfig,
    "execution": ExecutionConfig,
    "quality": QualityConfig,
    "lake": LakeConfig,
    "redis": RedisConfig,
    "feast": FeastConfig,
    "metrics": MetricsConfig,
    "energy": EnergyConfig,
    "report": ReportConfig,
}

Origin = str
"""Where a setting's value came from: ``default``, ``file <path>`` or ``env <NAME>``."""


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _check_client_table(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    """``kafka.client``: a TOML table, or a JSON object in the environment. Errors name the
    key, never a value (they may be secrets)."""
    table = value
    if isinstance(value, str):
        try:
            table = json.loads(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: expected a JSON object of properties") from exc
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table of properties")
    return tuple(sorted(_check_client(_flatten(table), where).items()))


def _check(value: Any, cls: type, name: str, where: str) -> Any:
    """``value`` (from a file or the environment) as the field's type, or a ConfigError that
    names ``where`` (the key and its origin), the value and what is allowed."""
    hint = get_type_hints(cls)[name]
    if get_origin(hint) is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(
                f"{where}: {value!r} is not allowed; allowed: {', '.join(map(str, allowed))}"
            )
        return value
    if get_origin(hint) is tuple:
        return _check_client_table(value, where)
    kind = hint
    if kind is bool:  # TOML true/false; from the environment the usual spellings
        if isinstance(value, bool):
            return value
        text = value.strip().lower() if isinstance(value, str) else None
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    try:
        if isinstance(value, bool):  # a bool is no number or text here
            raise TypeError
        if kind is int:
            coerced: Any = int(value) if not isinstance(value, float) else None
            if coerced is None:
                raise TypeError
        elif kind is float:
            coerced = float(value)
        elif kind is str:
            if not isinstance(value, str | int | float):
                raise TypeError
            coerced = str(value)
        else:
            coerced = value
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{where}: expected {getattr(kind, '__name__', kind)}, got {value!r}"
        ) from exc
    bounds = next((f.metadata.get("range") for f in fields(cls) if f.name == name), None)
    if bounds is not None and not bounds.admits(coerced):
        raise ConfigError(f"{where}: {coerced!r} is out of range; allowed: {bounds}")
    return coerced


def _build(
    cls: type, overrides: dict[str, tuple[Any, Origin]], section: str
) -> tuple[Any, dict[str, Origin]]:
    known = {f.name for f in fields(cls)}
    unknown = set(overrides) - known
    if unknown:
        keys = sorted(f"{section}.{k} ({overrides[k][1]})" for k in unknown)
        raise ConfigError(f"unknown setting(s) {keys}; known in [{section}]: {sorted(known)}")
    values = {
        k: _check(v, cls, k, f"{section}.{k} ({origin})") for k, (v, origin) in overrides.items()
    }
    origins = {f"{section}.{k}": overrides.get(k, (None, "default"))[1] for k in sorted(known)}
    return cls(**values), origins


def load_config_with_origins(
    path: str | Path | None = None, env: dict[str, str] | None = None
) -> tuple[Config, dict[str, Origin]]:
    """:func:`load_config`, plus where each value came from (``section.field`` -> origin)."""
    env = dict(os.environ if env is None else env)
    file_path = Path(path) if path else Path(env.get("BOOKSTREAM_CONFIG", "bookstream.toml"))
    from_file: dict[str, Any] = {}
    if file_path.is_file():
        try:
            with file_path.open("rb") as fh:
                from_file = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file_path}: not valid TOML: {exc}") from exc
    elif path is not None or "BOOKSTREAM_CONFIG" in env:
        raise ConfigError(f"config file {file_path} does not exist")

    state_dir = from_file.pop("state_dir", None)
    origins: dict[str, Origin] = {"state_dir": "default"}
    if state_dir is not None:
        origins["state_dir"] = f"file {file_path}"
    unknown_sections = set(from_file) - set(_SECTIONS)
    if unknown_sections:
        raise ConfigError(
            f"{file_path}: unknown section(s) {sorted(unknown_sections)}; known: {list(_SECTIONS)}"
        )
    env_sections = {f"BOOKSTREAM_{name.upper()}_": name for name in _SECTIONS}
    for key in env:
        stray = key.startswith("BOOKSTREAM_") and not key.startswith(tuple(env_sections))
        if stray and key not in _OTHER_ENV:
            raise ConfigError(
                f"unknown setting {key} (environment); settings are "
                f"BOOKSTREAM_<SECTION>_<FIELD> with a section of {list(_SECTIONS)}"
            )

    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = from_file.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{file_path}: [{name}] must be a table, got {table!r}")
        overrides = {k: (v, f"file {file_path}") for k, v in table.items()}
        prefix = f"BOOKSTREAM_{name.upper()}_"
        for key, value in env.items():
            if key.startswith(prefix):
                overrides[key[len(prefix) :].lower()] = (value, f"env {key}")
        sections[name], section_origins = _build(cls, overrides, name)
        origins.update(section_origins)

    if "BOOKSTREAM_STATE_DIR" in env:
        state_dir = env["BOOKSTREAM_STATE_DIR"]
        origins["state_dir"] = "env BOOKSTREAM_STATE_DIR"
    extra: dict[str, Any] = {"state_dir": Path(state_dir).resolve()} if state_dir else {}
    return Config(**sections, **extra), origins


_OTHER_ENV = frozenset(
    {"BOOKSTREAM_CONFIG", "BOOKSTREAM_STATE_DIR", "BOOKSTREAM_VENV", "BOOKSTREAM_PROJECT_ROOT"}
)
"""``BOOKSTREAM_*`` variables that are not ``<SECTION>_<FIELD>`` settings."""


def load_config(path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Defaults, then the TOML file (if any), then ``BOOKSTREAM_*`` environment variables.
    Every value is checked (type, allowed values, range) and a bad one refused with its key,
    its origin, the value and what is allowed (:class:`ConfigError`)."""
    return load_config_with_origins(path, env)[0]


def effective_settings(cfg: Config) -> dict[str, Any]:
    """``section.field`` -> value, for every setting (and ``state_dir``)."""
    values: dict[str, Any] = {"state_dir": str(cfg.state_dir)}
    for name in _SECTIONS:
        section = getattr(cfg, name)
        for f in fields(section):
            values[f"{name}.{f.name}"] = getattr(section, f.name)
    # the passthrough may hold credentials: shown with its secrets masked
    values["kafka.client"] = redacted_properties(dict(cfg.kafka.client))
    return values


def topics_env(topics: TopicsConfig) -> dict[str, str]:
    """``BOOKSTREAM_TOPICS_<FIELD>`` for every topic of ``topics``: the environment that hands a
    whole topic set (e.g. :meth:`TopicsConfig.for_run`) to a child process."""
    return {f"BOOKSTREAM_TOPICS_{f.upper()}": name for f, name in topics.names().items()}


def secure_state_dir(cfg: Config) -> Path:
    """Create the state directory if needed and close it to everyone but its owner (0700): it
    holds checkpoints (pickles: loading one runs code), the PostgreSQL password file and every
    service's data. Under root, infra/postgres/start.sh gives the server's OS user
    traverse-only access through the group (0710, group ``postgres``), which is kept. A shared
    directory (sticky bit, like /tmp) is left alone."""
    import stat

    path = cfg.state_dir
    path.mkdir(parents=True, exist_ok=True)
    st = path.stat()
    if st.st_mode & stat.S_ISVTX:
        return path
    mode = 0o700
    if os.geteuid() == 0:
        import grp

        try:
            if grp.getgrgid(st.st_gid).gr_name == "postgres":
                mode = 0o710
        except KeyError:
            pass
    if stat.S_IMODE(st.st_mode) != mode:
        path.chmod(mode)
    return path


def shell_values(cfg: Config) -> dict[str, str]:
    """The values infra/*.sh need, by the shell variable that holds each."""
    values = {
        "BOOKSTREAM_STATE_DIR": cfg.state_dir,
        "KAFKA_HOST": cfg.kafka.host,
        "KAFKA_PORT": cfg.kafka.port,
        "KAFKA_CONTROLLER_PORT": cfg.kafka.controller_port,
        "KAFKA_BROKERS": cfg.kafka.brokers,
        # node i (1-based): "port controller_port", space separated, one per node
        "KAFKA_NODE_PORTS": ",".join(f"{p} {c}" for p, c in cfg.kafka.node_ports),
        "KAFKA_BOOTSTRAP": cfg.kafka.bootstrap_servers,
        "KAFKA_SECURITY": cfg.kafka.security,
        "KAFKA_CREDENTIALS_DIR": cfg.kafka_credentials_dir,
        # the brokers' internal topics (offsets, transactions): as replicated as the nodes allow
        "KAFKA_INTERNAL_RF": min(cfg.kafka.brokers, 3),
        "KAFKA_INTERNAL_MIN_ISR": max(min(cfg.kafka.brokers, 3) - 1, 1),
        "FLINK_KAFKA_CONNECTOR_VERSION": cfg.flink.kafka_connector_version,
        "FLINK_CLUSTER_DIR": cfg.flink_cluster_dir,
        "FLINK_CLUSTER_LOG_DIR": cfg.flink_cluster_logs_dir,
        "FLINK_CLUSTER_REST_PORT": cfg.flink.cluster_rest_port,
        "FLINK_CLUSTER_RPC_PORT": cfg.flink.cluster_rpc_port,
        "FLINK_CLUSTER_TASKMANAGERS": cfg.flink.cluster_taskmanagers,
        "POSTGRES_HOST": cfg.lake.postgres_host,
        "POSTGRES_PORT": cfg.lake.postgres_port,
        "POSTGRES_DB": cfg.lake.postgres_db,
        "POSTGRES_USER": cfg.lake.postgres_user,
        "LAKE_CATALOG": cfg.lake.catalog,
        "FEAST_REGISTRY_DB": cfg.feast.registry_db,
        "REDIS_HOST": cfg.redis.host,
        "REDIS_PORT": cfg.redis.port,
        "REDIS_PASSWORD_FILE": cfg.redis_password_file,
        "METRICS_HOST": cfg.metrics.host,
        "FLINK_METRICS_PORTS": cfg.metrics.flink_ports,
        "FLINK_METRICS_REPORTER": cfg.metrics.flink_reporter,
        "ALERT_WEBHOOK_URL": cfg.metrics.alert_webhook_url,
        "ALERT_GROUP_WAIT_S": cfg.metrics.alert_group_wait_s,
        "PROMETHEUS_PORT": cfg.metrics.prometheus_port,
        "ALERTMANAGER_PORT": cfg.metrics.alertmanager_port,
        "SCRAPE_INTERVAL_S": cfg.metrics.scrape_interval_s,
    }
    return {k: str(v) for k, v in values.items()}


def shell_exports(cfg: Config) -> str:
    """``export NAME=value`` lines, each value quoted for a POSIX shell (``shlex.quote``): any
    text, quotes and ``$(...)`` included, stays a value when the lines are evaluated."""
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in shell_values(cfg).items())


def shell_values_nul(cfg: Config) -> bytes:
    """``NAME=value`` records each ending in NUL, what infra/lib.sh reads (no ``eval``): a NUL
    is the one byte no value can hold, so no value can end or forge a record."""
    out = b""
    for k, v in shell_values(cfg).items():
        if "\0" in v:
            raise ConfigError(f"{k}: a NUL byte in a configuration value")
        out += f"{k}={v}".encode() + b"\0"
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["shell"]:
        print(shell_exports(load_config()))
    elif sys.argv[1:] == ["shell-nul"]:
        sys.stdout.buffer.write(shell_values_nul(load_config()))
    elif sys.argv[1:] == ["java-client-properties"]:
        # the passthrough for Kafka's own (unshaded) Java tools, as a properties file's text:
        # infra/kafka/bin/kafka-tool writes it to a 0600 file, never to a terminal or a log
        java = java_properties(load_config().kafka_client_properties(ADMIN), shaded=False)
        for key, value in java.items():
            escaped = value.replace("\\", "\\\\").replace("\n", "\\n")
            sys.stdout.write(f"{key}={escaped}\n")
    else:
        print(load_config())
