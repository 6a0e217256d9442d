"""Feast wiring: the environment ``feature_repo/feature_store.yaml`` expands, the offline
Parquet export of a recorded lake snapshot, and the pusher that moves the features topic into
the online store (Redis) through Feast's push API.

The repository's YAML holds no secret and no port: Feast expands ``${VAR}`` from the
environment when it loads the file, and :func:`feast_env` is that environment, read from the
project's config and the Redis password file."""

from __future__ import annotations

import json
import logging
import os
import shlex
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.stopping import StopFlag
from udfs.config import Config
from udfs.history import Stream, streams
from udfs.schema import SchemaError

if TYPE_CHECKING:
    from feast import FeatureStore

__all__ = [
    "PUSH_SOURCES",
    "export_offline",
    "feast_env",
    "feast_env_shell",
    "offline_event_time_path",
    "offline_frames",
    "open_store",
    "push_rows",
    "redis_password",
    "run_pusher",
    "trace_line",
]

log = logging.getLogger(__name__)

PUSHER_GROUP = "bookstream-feast-push"
"""The follow mode's consumer group: its committed offsets are where a restart resumes."""

PUSH_SOURCES = ("book_push", "window_push")
"""The PushSources of feature_repo/data_sources.py: every one is fed the whole feature row
(each view keeps its own columns)."""


def redis_password(cfg: Config) -> str:
    path = cfg.redis_password_file
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no Redis password file {path}: start Redis first (make up / infra/redis/start.sh)"
        ) from None


def feast_env(cfg: Config) -> dict[str, str]:
    """The variables feature_store.yaml expands (the password among them: keep it in memory)."""
    return {
        "FEAST_REGISTRY_URI": cfg.feast_registry_uri,
        "FEAST_REDIS_HOST": cfg.redis.host,
        "FEAST_REDIS_PORT": str(cfg.redis.port),
        "FEAST_REDIS_PASSWORD": redis_password(cfg),
    }


def feast_env_shell(cfg: Config) -> str:
    """:func:`feast_env` as ``export`` lines for ``eval``; the password is read from its file
    by the shell (``$(cat ...)``), so it is never printed."""
    lines = [
        f"export FEAST_REGISTRY_URI={shlex.quote(cfg.feast_registry_uri)}",
        f"export FEAST_REDIS_HOST={shlex.quote(cfg.redis.host)}",
        f"export FEAST_REDIS_PORT={cfg.redis.port}",
        f'export FEAST_REDIS_PASSWORD="$(cat {shlex.quote(str(cfg.redis_password_file))})"',
    ]
    return "\n".join(lines)


def open_store(cfg: Config) -> FeatureStore:
    """The project's FeatureStore (feature_repo/, the shared SQL registry, Redis)."""
    from feast import FeatureStore

    os.environ.update(feast_env(cfg))
    return FeatureStore(repo_path=str(cfg.feast_repo))


def _features_stream(cfg: Config) -> Stream:
    return next(s for s in streams(cfg.features.depth_levels) if s.name == "features")


def _ceil_us(ns: pa.Array) -> pa.Array:
    """ns -> microseconds rounded up (Feast keeps microseconds): a value available at
    1.5 us is taken as available at 2 us, never at 1."""
    return pc.divide(pc.add(ns, 999), 1000)  # integer division: times are positive


def offline_frames(cfg: Config, data: pa.Table) -> tuple[dict[str, pa.Table], int]:
    """The lake's feature rows as the two offline files Feast reads: ``as_known_at`` (timestamp
    ``available_time``: the registered source) and ``event_time`` (timestamp ``event_time``:
    what ``--event-time`` joins on), and how many rows had no ``ts_avail`` (rows written
    before it existed: derived from their exchange time with the configured latencies).

    Of rows of one instrument with the same timestamp (Feast keeps microseconds; Binance
    stamps milliseconds), each file keeps the last in stream order: it is what the live path
    held at that instant, and Feast's join would otherwise pick one of the tied rows in
    an order its sort does not fix. Sorted by instrument and timestamp, so the same lake
    snapshot gives the same bytes."""
    from udfs.latency import AvailabilityModel

    data = data.sort_by(
        [("instrument", "ascending"), ("_partition", "ascending"), ("_offset", "ascending")]
    )
    derived = 0
    if "ts_avail" in data.column_names:
        ts_avail = data["ts_avail"]
    else:
        ts_avail = pa.nulls(data.num_rows, pa.int64())
    if ts_avail.null_count:
        model = AvailabilityModel.from_config(cfg)
        fixed = [
            a if a is not None else model.ts_avail(i, q, e)
            for a, i, q, e in zip(
                ts_avail.to_pylist(),
                data["instrument"].to_pylist(),
                data["seq"].to_pylist(),
                data["ts_event"].to_pylist(),
                strict=True,
            )
        ]
        derived = ts_avail.null_count
        ts_avail = pa.array(fixed, pa.int64())
    if "ts_avail" in data.column_names:
        data = data.set_column(data.schema.get_field_index("ts_avail"), "ts_avail", ts_avail)
    else:
        data = data.append_column("ts_avail", ts_avail)
    # the FileSource's timestamp columns must be tz-aware (Feast compares with UTC datetimes)
    utc_us = pa.timestamp("us", "UTC")
    idx = data.schema.get_field_index("event_time")
    data = data.set_column(idx, "event_time", data["event_time"].cast(utc_us))
    available = _ceil_us(ts_avail.cast(pa.int64())).cast(pa.int64()).cast(utc_us)
    data = data.append_column("available_time", available)
    frames = {}
    for name, column in (("as_known_at", "available_time"), ("event_time", "event_time")):
        keys = pa.table({"i": data["instrument"], "t": data[column].cast(pa.int64())})
        last = keys.append_column("n", pa.array(range(data.num_rows), pa.int64()))
        last = last.group_by(["i", "t"], use_threads=False).aggregate([("n", "max")])
        kept = data.take(last["n_max"])
        frames[name] = kept.sort_by([("instrument", "ascending"), (column, "ascending")])
    return frames, derived


def export_offline(cfg: Config) -> dict[str, Any]:
    """Write the lake's ``features`` table at its current Iceberg snapshot to
    ``<state>/feast/offline/features.parquet`` (what the FileSource reads; timestamp
    ``available_time``) and ``features.event_time.parquet`` (timestamp ``event_time``), see
    :func:`offline_frames`, and the snapshot id with row counts beside them
    (``features.snapshot.json``), so a training set built from it names the lake state it
    came from and can be rebuilt. Atomic per file: a reader sees an old or a new file, never
    half of one."""
    from jobs.lake import open_catalog

    catalog = open_catalog(cfg)
    table = catalog.load_table((cfg.lake.namespace, "features"))
    snap = table.current_snapshot()
    if snap is None:
        raise ValueError("the lake's features table has no snapshot yet: run `make demo` first")
    data = table.scan(snapshot_id=snap.snapshot_id).to_arrow()
    frames, derived = offline_frames(cfg, data)
    out_dir = cfg.feast_dir / "offline"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "as_known_at": out_dir / "features.parquet",
        **{"event_time": offline_event_time_path(cfg)},
    }
    for name, target in paths.items():
        tmp = target.with_suffix(".parquet.tmp")
        pq.write_table(frames[name], tmp)
        os.replace(tmp, target)
    record = {
        "table": f"{cfg.lake.namespace}.features",
        "snapshot_id": snap.snapshot_id,
        "rows": data.num_rows,
        "rows_as_known_at": frames["as_known_at"].num_rows,
        "rows_event_time": frames["event_time"].num_rows,
        "availability_derived": derived,
        "parquet": str(paths["as_known_at"]),
        "parquet_event_time": str(paths["event_time"]),
    }
    meta = out_dir / "features.snapshot.json"
    meta_tmp = meta.with_suffix(".json.tmp")
    meta_tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(meta_tmp, meta)
    return record


def offline_event_time_path(cfg: Config) -> Path:
    """The offline file keyed on exchange time (``--event-time`` training sets)."""
    return cfg.feast_dir / "offline" / "features.event_time.parquet"


def _to_push_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The last row per instrument in topic order (an instrument's rows share one partition,
    in order): the online store keeps only the latest value, and Feast's Redis store drops a
    write whose event time is not newer than the stored one, so older rows of the same batch
    would only cost writes."""
    newest = {row["instrument"]: row for row in rows}
    frame = pd.DataFrame(list(newest.values()))
    frame["event_time"] = pd.to_datetime(frame["ts_event"], unit="ns", utc=True)
    # the views' timestamp (feature_repo/data_sources.py): availability, microseconds rounded up
    avail_us = -(-frame["ts_avail"].astype("int64") // 1000)
    frame["available_time"] = pd.to_datetime(avail_us, unit="us", utc=True)
    return frame


def push_rows(store: FeatureStore, rows: list[dict[str, Any]]) -> int:
    """Push the newest row per instrument of ``rows`` to every push source, online only (the
    offline history is the lake's). Returns how many instruments were written."""
    from feast.data_source import PushMode

    if not rows:
        return 0
    frame = _to_push_frame(rows)
    for source in PUSH_SOURCES:
        store.push(source, frame, to=PushMode.ONLINE)
    return len(frame)


def _decode(
    records: Iterable[Any], cfg: Config, counts: dict[str, float]
) -> Iterator[tuple[Any, dict]]:
    """(record, feature row) per record that decodes; a refused one is counted and logged."""
    decode = _features_stream(cfg).decode
    for rec in records:
        try:
            yield rec, decode(rec.value)
        except SchemaError as exc:
            counts["refused"] += 1
            log.warning(
                "feast-push: refused feature record %s[%d]@%d: %s",
                rec.topic,
                rec.partition,
                rec.offset,
                exc,
            )


def trace_line(read_ns: int, pushed_ns: int, pairs: list[tuple[Any, dict]]) -> str:
    """One push of the follow mode as a JSON line (``feast-push --trace``, read by the bench):
    when its records were read and when the push returned (wall clock, ns), how many rows it
    read, and per instrument the row it wrote (the newest): ``[instrument, ts_event, ts_recv,
    ts_proc, Kafka timestamp ms]`` (the job stamps exchange time; the bench's own topic has the
    broker's append time instead), the stamps of the freshness hops (``jobs/bench.py``)."""
    newest = {row["instrument"]: (rec, row) for rec, row in pairs}
    return json.dumps(
        {
            "read_ns": read_ns,
            "pushed_ns": pushed_ns,
            "rows": len(pairs),
            "newest": [
                [inst, row["ts_event"], row["ts_recv"], row.get("ts_proc", 0), rec.timestamp_ms]
                for inst, (rec, row) in newest.items()
            ],
        }
    )


def run_pusher(
    cfg: Config,
    *,
    bounded: bool,
    batch_rows: int = 5000,
    trace: Path | None = None,
) -> dict[str, Any]:
    """Read the features topic and push it to the online store. ``bounded``: from the start
    up to the end offsets as of the call, then return; else follow the topic with the project's
    reader (:class:`jobs.kafka_io.PartitionReader`, waiting at most ``feast.push_poll_ms`` for
    records) from consumer group :data:`PUSHER_GROUP`'s committed offsets, committing after
    each push, until SIGTERM/SIGINT (then it returns its summary). Following, the summary adds
    the wall clock (ns) of the first record read and of the last push's commit, and ``trace``
    (a file) gets one :func:`trace_line` per push."""
    from jobs.kafka_io import drain_topic

    store = open_store(cfg)
    topic = cfg.topics.features
    counts: dict[str, float] = {"read": 0, "refused": 0, "pushes": 0, "instruments_written": 0}
    started = time.monotonic()

    def flush(batch: list[dict[str, Any]]) -> None:
        if batch:
            counts["instruments_written"] += push_rows(store, batch)
            counts["pushes"] += 1
            batch.clear()

    batch: list[dict[str, Any]] = []
    if bounded:
        for _rec, row in _decode(_counted(drain_topic(cfg, topic), counts), cfg, counts):
            batch.append(row)
            if len(batch) >= batch_rows:
                flush(batch)
        flush(batch)
    else:
        from confluent_kafka import TopicPartition

        from jobs.kafka_io import (
            PartitionReader,
            committed_offsets,
            make_consumer,
            topic_end_offsets,
        )

        consumer = make_consumer(cfg, PUSHER_GROUP)
        stop = StopFlag("feast-push")
        restore = stop.install()
        trace_file = trace.open("w", buffering=1) if trace is not None else None
        try:
            marks = topic_end_offsets(cfg, topic)
            stored = committed_offsets(consumer, [TopicPartition(topic, p) for p in marks])
            # resume after the group's last commit; from the start where it has none (or
            # retention removed what it had)
            starts = {
                (topic, tp.partition): max(tp.offset, marks[tp.partition][0]) for tp in stored
            }
            reader = PartitionReader(
                consumer,
                starts,
                batch_size=batch_rows,
                poll_timeout_s=cfg.feast.push_poll_ms / 1000,
            )
            for poll in reader.polls():
                if stop.stop:  # SIGTERM/SIGINT: between pushes, everything pushed committed
                    break
                if not poll.records:
                    continue
                read_ns = poll.records[0].read_ns
                if counts["read"] == 0:
                    counts["first_read_ns"] = read_ns
                pairs = list(_decode(_counted(poll.records, counts), cfg, counts))
                batch.extend(row for _rec, row in pairs)
                flush(batch)
                pushed_ns = time.time_ns()
                consumer.commit(offsets=reader.positions(), asynchronous=False)
                counts["last_push_ns"] = time.time_ns()
                if trace_file is not None and pairs:
                    trace_file.write(trace_line(read_ns, pushed_ns, pairs) + "\n")
        finally:
            restore()
            consumer.close()
            if trace_file is not None:
                trace_file.close()
    counts["seconds"] = round(time.monotonic() - started, 3)
    return {"topic": topic, **counts}


def _counted(records: Iterable[Any], counts: dict[str, float]) -> Iterator[Any]:
    for rec in records:
        counts["read"] += 1
        yield rec


def offline_snapshot(cfg: Config) -> dict[str, Any] | None:
    """The snapshot record of the last export, if any."""
    meta = cfg.feast_dir / "offline" / "features.snapshot.json"
    return json.loads(meta.read_text()) if meta.is_file() else None
