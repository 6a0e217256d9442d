"""The Iceberg lake itself: exactly once across kills, time travel, schema evolution, and the
PostgreSQL catalog with two writers. Real broker, real pyiceberg catalogs (SQLite file and the
project's PostgreSQL server, both started by ``make up``)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import signal
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pytest
import sqlalchemy
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from it_helpers import config_for, run_cli, start_job, wait_for

from jobs.doctor import run_doctor
from jobs.history_sink import run_history_sink
from jobs.kafka_io import client_config, drain_topic, end_offsets, make_producer
from jobs.lake import (
    OFFSETS_PROPERTY,
    append_with_offsets,
    committed_offsets,
    ensure_table,
    history_streams,
    open_catalog,
)
from udfs.history import rows_to_table
from udfs.market.adapters.sources import Source
from udfs.schema import Reason, decode_dead_letter, encode_event

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _snapshots(cfg, name: str) -> int:
    try:
        table = open_catalog(cfg).load_table(f"{cfg.lake.namespace}.{name}")
    except Exception:  # not created yet
        return 0
    return len(table.snapshots())


def test_history_sink_killed_mid_stream_loses_and_duplicates_nothing(
    kafka_topics, tmp_path: Path
) -> None:
    cfg, env = kafka_topics(
        "lakekill",
        BOOKSTREAM_LAKE_ROOT=str(tmp_path / "lake"),
        BOOKSTREAM_LAKE_COMMIT_ROWS="1000",
        BOOKSTREAM_LAKE_COMMIT_INTERVAL_MS="60000",
    )
    published, _p, _e = run_cli(["publish", "--no-progress"], env)
    total = published["published"]
    assert total > 50_000
    topic = cfg.topics.events

    # killed (SIGKILL: no chance to finish a commit) after ~3, ~25 and ~50 of ~94 commits
    for kill_after in (3, 25, 50):
        log = tmp_path / f"sink-{kill_after}.log"
        proc = start_job(["history-sink", "--only", "events"], env, log)
        wait_for(
            lambda n=kill_after: _snapshots(cfg, "events") >= n + 1,
            120,
            f"{kill_after} commits",
            proc=proc,
            log=log,
            poll_s=0.1,
        )
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    table = open_catalog(cfg).load_table(f"{cfg.lake.namespace}.events")
    stored_before = table.scan(selected_fields=("_offset",)).to_arrow().num_rows
    assert 0 < stored_before < total  # really interrupted mid-stream

    summary, _p, _e = run_cli(["history-sink", "--bounded", "--only", "events"], env)
    assert summary["rows"]["events"] == total - stored_before  # resumed exactly after the last
    table = table.refresh()
    rows = table.scan(selected_fields=("_partition", "_offset")).to_arrow()
    stored = sorted(zip(rows["_partition"].to_pylist(), rows["_offset"].to_pylist(), strict=True))
    in_kafka = sorted((r.partition, r.offset) for r in drain_topic(cfg, topic))
    assert len(stored) == total
    assert stored == in_kafka  # 0 lost, 0 duplicated

    # exactly once at every snapshot: its rows are exactly the offsets its summary records,
    # and time travel by id and by timestamp reads the same snapshot
    snapshots = table.snapshots()
    assert len(snapshots) >= total // 1000
    for snap in snapshots[1:]:
        offsets = committed_offsets_at(table, snap.snapshot_id)[topic]
        by_id = table.scan(
            snapshot_id=snap.snapshot_id, selected_fields=("_partition", "_offset")
        ).to_arrow()
        assert by_id.num_rows == sum(offsets.values())
        for p, nxt in offsets.items():
            mask = pa.compute.equal(by_id["_partition"], p)
            assert pa.compute.max(by_id.filter(mask)["_offset"]).as_py() == nxt - 1
        as_of = table.snapshot_as_of_timestamp(snap.timestamp_ms)
        assert as_of is not None and as_of.snapshot_id == snap.snapshot_id
    assert {p: o for p, o in end_offsets(cfg, topic).items() if o} == committed_offsets(table)[
        topic
    ]


def committed_offsets_at(table, snapshot_id: int) -> dict[str, dict[int, int]]:
    props = table.snapshot_by_id(snapshot_id).summary.additional_properties
    return {
        t: {int(p): o for p, o in parts.items()}
        for t, parts in json.loads(props[OFFSETS_PROPERTY]).items()
    }


def _sample_rows(stream, n: int, skip: int = 0) -> pa.Table:
    events = []
    for i, ev in enumerate(Source.sample().events()):
        if i >= skip + n:
            break
        if i >= skip:
            events.append(ev)
    rows = [stream.decode(encode_event(ev)) for ev in events]
    return rows_to_table(stream, rows, [0] * len(rows), list(range(skip, skip + len(rows))))


def test_adding_a_field_keeps_old_snapshots_readable(tmp_path: Path) -> None:
    cfg = config_for({"BOOKSTREAM_LAKE_ROOT": str(tmp_path / "lake")})
    catalog = open_catalog(cfg)
    events = next(s for s in history_streams(cfg) if s.name == "events")
    table = ensure_table(catalog, cfg, events)
    append_with_offsets(table, _sample_rows(events, 500), "t", {0: 500})
    v1_snapshot = table.refresh().current_snapshot().snapshot_id

    # the procedure: the schema module gains a field (here: a gateway timestamp) ->
    # the stream's columns gain it -> ensure_table adds it as an optional column
    evolved = dataclasses.replace(events, fields=(*events.fields, ("ts_gateway", pa.int64())))
    table = ensure_table(catalog, cfg, evolved)
    assert "ts_gateway" in table.schema().column_names
    new_rows = _sample_rows(events, 300, skip=500)
    new_rows = new_rows.add_column(
        len(events.fields), "ts_gateway", pa.compute.subtract(new_rows["_offset"], 500)
    )
    append_with_offsets(table, new_rows, "t", {0: 800})
    table = table.refresh()

    old = table.scan(snapshot_id=v1_snapshot).to_arrow()
    assert old.num_rows == 500
    # time travel reads a snapshot in the schema it was written with
    assert "ts_gateway" not in old.column_names
    assert old["seq"].to_pylist() == _sample_rows(events, 500)["seq"].to_pylist()
    now = table.scan().to_arrow().sort_by("_offset")
    assert now.num_rows == 800
    # the current schema reads old rows with null in the new column
    assert now["ts_gateway"].to_pylist() == [None] * 500 + list(range(300))
    assert now["seq"].to_pylist()[:500] == old.sort_by("_offset")["seq"].to_pylist()


def test_postgres_catalog_takes_two_writers(tmp_path: Path) -> None:
    namespace = f"it_{uuid.uuid4().hex[:8]}"
    cfg = config_for(
        {
            "BOOKSTREAM_LAKE_CATALOG": "postgres",
            "BOOKSTREAM_LAKE_NAMESPACE": namespace,
            "BOOKSTREAM_LAKE_ROOT": str(tmp_path / "lake"),
        }
    )
    assert cfg.catalog_uri.startswith("postgresql")
    events = next(s for s in history_streams(cfg) if s.name == "events")
    writer_a = ensure_table(open_catalog(cfg), cfg, events)
    writer_b = open_catalog(cfg).load_table(f"{namespace}.events")  # same metadata version
    try:
        append_with_offsets(writer_a, _sample_rows(events, 200), "topic-a", {0: 200})
        # writer B commits on stale metadata: the catalog refuses, B refreshes and retries
        t0 = time.perf_counter()
        append_with_offsets(writer_b, _sample_rows(events, 100, skip=200), "topic-b", {0: 100})
        assert time.perf_counter() - t0 < 60
        table = open_catalog(cfg).load_table(f"{namespace}.events")
        assert table.scan().to_arrow().num_rows == 300
        assert committed_offsets(table) == {"topic-a": {0: 200}, "topic-b": {0: 100}}
        assert len(table.snapshots()) == 2
    finally:
        catalog = open_catalog(cfg)
        for ident in catalog.list_tables(namespace):
            catalog.purge_table(ident)
        catalog.drop_namespace(namespace)


def test_undecodable_records_are_dead_lettered_not_stored(kafka_topics, tmp_path: Path) -> None:
    """A record that does not decode for its table goes to the dead-letter topic with stage
    ``history`` and its reason; one on the dead-letter topic itself is stored as such (it
    cannot be dead-lettered again); the counts reconcile."""
    cfg, env = kafka_topics("lakebad", BOOKSTREAM_LAKE_ROOT=str(tmp_path / "lake"))
    events = list(itertools.islice(Source.sample().events(), 300))
    producer = make_producer(cfg)
    for i, ev in enumerate(events):
        producer.produce(cfg.topics.events, key=ev.instrument, value=encode_event(ev))
        if i == 100:
            producer.produce(cfg.topics.events, key=ev.instrument, value=b'{"v":1,"kind":')
    producer.produce(cfg.topics.signals, key=b"X", value=b'{"instrument":"X","v":7}')
    producer.produce(cfg.topics.dead_letter, value=b"not json at all")
    assert producer.flush(30) == 0

    summary, _p, _e = run_cli(["history-sink", "--bounded"], env)
    assert summary["rows"]["events"] == len(events)
    assert summary["rows"]["signals"] == 0
    assert summary["dead_lettered"] == 3
    dead = [
        decode_dead_letter(r.value)
        for r in drain_topic(cfg, cfg.topics.dead_letter)
        if r.value != b"not json at all"
    ]
    by_source = {d.source: d for d in dead}
    assert set(by_source) == {f"kafka:{cfg.topics.events}", f"kafka:{cfg.topics.signals}"}
    bad_event = by_source[f"kafka:{cfg.topics.events}"]
    assert bad_event.stage == "history" and bad_event.reason_code is Reason.MALFORMED
    assert bad_event.raw == '{"v":1,"kind":' and "malformed" in bad_event.reason
    assert "unknown schema version 7" in by_source[f"kafka:{cfg.topics.signals}"].reason
    # where it sat: the record at that partition/offset is the bad one
    stored = (
        open_catalog(cfg)
        .load_table(f"{cfg.lake.namespace}.events")
        .scan(selected_fields=("_partition", "_offset"))
        .to_arrow()
    )
    positions = set(
        zip(stored["_partition"].to_pylist(), stored["_offset"].to_pylist(), strict=True)
    )
    assert (bad_event.partition, bad_event.offset) not in positions
    assert len(positions) + 1 == sum(end_offsets(cfg, cfg.topics.events).values())
    # the dead-letter topic's own garbage is a row of the dead_letters table, with its reason
    table = open_catalog(cfg).load_table(f"{cfg.lake.namespace}.dead_letters")
    rows = table.scan().to_arrow().to_pylist()
    own = [r for r in rows if r["raw"] == "not json at all"]
    assert len(own) == 1 and own[0]["stage"] == "history"
    assert own[0]["source"] == f"kafka:{cfg.topics.dead_letter}"


def test_doctor_counts_the_rows_of_every_snapshot(tmp_path: Path) -> None:
    cfg = config_for({"BOOKSTREAM_LAKE_ROOT": str(tmp_path / "lake")})
    events = next(s for s in history_streams(cfg) if s.name == "events")
    table = ensure_table(open_catalog(cfg), cfg, events)
    append_with_offsets(table, _sample_rows(events, 500), "t", {0: 500})
    append_with_offsets(table.refresh(), _sample_rows(events, 300, skip=500), "t", {0: 800})
    ok, report = run_doctor(cfg, need_broker=False)
    assert ok and report["checks"]["lake"]["ok"] is True
    assert "events=800" in report["checks"]["lake"]["detail"].split()


def _expire_all_but_current(cfg, table) -> None:
    """What another engine's snapshot expiry does (pyiceberg 0.8 has none): new table metadata
    that keeps only the current snapshot, swapped in through the catalog's own row."""
    meta_path = Path(urlparse(table.metadata_location).path)
    meta = json.loads(meta_path.read_text())
    current = meta["current-snapshot-id"]
    meta["snapshots"] = [s for s in meta["snapshots"] if s["snapshot-id"] == current]
    meta["snapshot-log"] = [s for s in meta["snapshot-log"] if s["snapshot-id"] == current]
    meta["metadata-log"] = []
    new_path = meta_path.with_name(f"99999-{uuid.uuid4()}.metadata.json")
    new_path.write_text(json.dumps(meta))
    engine = sqlalchemy.create_engine(cfg.catalog_uri)
    with engine.begin() as conn:
        conn.execute(
            sqlalchemy.text(
                "UPDATE iceberg_tables SET metadata_location = :new, "
                "previous_metadata_location = :old WHERE table_name = :name"
            ),
            {"new": new_path.as_uri(), "old": table.metadata_location, "name": "events"},
        )


def test_offsets_survive_snapshot_expiry(tmp_path: Path) -> None:
    """A maintenance job rewrites the table (no offsets in its snapshot) and the snapshots that
    recorded offsets expire: the table still knows what it holds."""
    cfg = config_for({"BOOKSTREAM_LAKE_ROOT": str(tmp_path / "lake")})
    events = next(s for s in history_streams(cfg) if s.name == "events")
    table = ensure_table(open_catalog(cfg), cfg, events)
    append_with_offsets(table, _sample_rows(events, 500), "t", {0: 500})
    table = open_catalog(cfg).load_table(f"{cfg.lake.namespace}.events")
    table.overwrite(table.scan().to_arrow())  # a compaction, say
    _expire_all_but_current(cfg, table)
    table = open_catalog(cfg).load_table(f"{cfg.lake.namespace}.events")
    assert len(table.snapshots()) == 1
    assert committed_offsets(table) == {"t": {0: 500}}


def test_two_writers_never_store_the_same_offsets_twice(tmp_path: Path) -> None:
    """Writer B read the table before writer A stored offsets [0, 200); B then appends
    [100, 300): only [200, 300) of it is new."""
    cfg = config_for({"BOOKSTREAM_LAKE_ROOT": str(tmp_path / "lake")})
    events = next(s for s in history_streams(cfg) if s.name == "events")
    writer_a = ensure_table(open_catalog(cfg), cfg, events)
    writer_b = open_catalog(cfg).load_table(f"{cfg.lake.namespace}.events")
    append_with_offsets(writer_a, _sample_rows(events, 200), "t", {0: 200})
    append_with_offsets(writer_b, _sample_rows(events, 200, skip=100), "t", {0: 300})
    table = open_catalog(cfg).load_table(f"{cfg.lake.namespace}.events")
    offsets = table.scan(selected_fields=("_offset",)).to_arrow()["_offset"].to_pylist()
    assert sorted(offsets) == list(range(300))
    assert committed_offsets(table) == {"t": {0: 300}}


def test_offsets_deleted_by_retention_are_reported(kafka_topics, tmp_path: Path) -> None:
    cfg, _ = kafka_topics("lakeret", BOOKSTREAM_LAKE_ROOT=str(tmp_path / "lake"))
    events = [ev for ev in itertools.islice(Source.sample().events(), 400)]
    instrument = events[0].instrument
    events = [ev for ev in events if ev.instrument == instrument][:200]
    assert len(events) == 200

    def produce(evs) -> None:
        producer = make_producer(cfg)
        for ev in evs:
            producer.produce(cfg.topics.events, key=ev.instrument, value=encode_event(ev))
        assert producer.flush(30) == 0

    produce(events[:100])
    first = run_history_sink(cfg, bounded=True, only=["events"])
    assert first.rows["events"] == 100 and not first.lost_to_retention
    produce(events[100:])
    (partition,) = [p for p, end in end_offsets(cfg, cfg.topics.events).items() if end]
    admin = AdminClient(client_config(cfg, {}))
    for fut in admin.delete_records([TopicPartition(cfg.topics.events, partition, 150)]).values():
        fut.result()

    second = run_history_sink(cfg, bounded=True, only=["events"])

    assert second.lost_to_retention == {"events": {partition: (100, 150)}}
    assert second.rows["events"] == 50
