"""The Iceberg lake: catalog, tables and exactly-once appends (pyiceberg).

Catalogs (``[lake] catalog``):

* ``sql`` -- pyiceberg's SQL catalog on a SQLite file under the state directory: the embedded
  default, one writer at a time;
* ``postgres`` -- the same SQL catalog on the project's PostgreSQL server
  (``infra/postgres/start.sh``): several writers commit concurrently, the catalog's row lock
  decides who wins and the loser retries on the new metadata;
* ``rest`` -- any Iceberg REST catalog (``rest_uri``) for a real deployment.

Exactly once: every append carries the Kafka offsets its rows run up to
(``bookstream.kafka.offsets``: topic -> partition -> next offset), in the snapshot's summary and
in the table's properties. Snapshot and offsets become visible in one atomic catalog commit, so
a writer killed at any point either committed rows and offsets together or neither, and
:func:`committed_offsets` tells a restarted writer where to resume. The property survives
snapshot expiry (a summary dies with its snapshot); a second writer on the same offsets appends
only the rows the first did not store.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import (
    BooleanType,
    DoubleType,
    IcebergType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestampType,
)

from udfs.audit import AUDIT_STREAM, Head, extend_chain
from udfs.config import Config
from udfs.history import Stream, rows_to_table, streams

__all__ = [
    "AUDIT_HEADS_PROPERTY",
    "OFFSETS_PROPERTY",
    "append_audit",
    "append_with_offsets",
    "audit_heads",
    "committed_offsets",
    "ensure_table",
    "history_streams",
    "open_catalog",
    "table_dir",
]

logger = logging.getLogger(__name__)

OFFSETS_PROPERTY = "bookstream.kafka.offsets"
"""Table-property and snapshot-summary key: JSON ``{topic: {partition: next offset}}`` of what
the table holds."""

AUDIT_HEADS_PROPERTY = "bookstream.audit.heads"
"""Table-property and snapshot-summary key of the audit table: JSON ``{chain: [seq, hash]}``,
the head of every chain as of this commit (the anchor ``bookstream audit verify`` checks the
data files against)."""

_ICEBERG: dict[pa.DataType, IcebergType] = {
    pa.string(): StringType(),
    pa.int64(): LongType(),
    pa.int32(): IntegerType(),
    pa.float64(): DoubleType(),
    pa.bool_(): BooleanType(),
    pa.timestamp("us"): TimestampType(),
}


def history_streams(cfg: Config) -> tuple[Stream, ...]:
    return streams(cfg.features.depth_levels)


def open_catalog(cfg: Config) -> Catalog:
    """The configured catalog, with the lake's namespace present."""
    cfg.lake_dir.mkdir(parents=True, exist_ok=True)
    warehouse = cfg.warehouse_dir
    kind = cfg.lake.catalog
    if kind in ("sql", "postgres"):
        if kind == "sql":
            warehouse.mkdir(parents=True, exist_ok=True)
        catalog: Catalog = SqlCatalog(
            "bookstream", uri=cfg.catalog_uri, warehouse=warehouse.as_uri()
        )
    elif kind == "rest":
        if not cfg.lake.rest_uri:
            raise ValueError("lake.catalog = 'rest' needs lake.rest_uri (BOOKSTREAM_LAKE_REST_URI)")
        catalog = load_catalog(
            "bookstream",
            type="rest",
            uri=cfg.lake.rest_uri,
            warehouse=cfg.lake.warehouse or warehouse.as_uri(),
        )
    else:
        raise ValueError(f"lake.catalog: unknown catalog {kind!r} (sql, postgres or rest)")
    catalog.create_namespace_if_not_exists(cfg.lake.namespace)
    return catalog


def iceberg_schema(stream: Stream) -> Schema:
    """The stream's columns as an Iceberg schema (field ids 1..n in column order; every column
    optional, so a later version may add columns and old rows read them as null)."""
    return Schema(
        *(
            NestedField(i, f.name, _ICEBERG[f.type], required=False)
            for i, f in enumerate(stream.arrow_schema, 1)
        )
    )


def _partition_spec(stream: Stream, schema: Schema) -> PartitionSpec:
    fields = [
        PartitionField(schema.find_field("event_time").field_id, 1000, DayTransform(), "event_day")
    ]
    if stream.partition_by_instrument:
        fields.append(
            PartitionField(
                schema.find_field("instrument").field_id, 1001, IdentityTransform(), "instrument"
            )
        )
    return PartitionSpec(*fields)


def ensure_table(catalog: Catalog, cfg: Config, stream: Stream) -> Table:
    """Load the stream's table, creating it if absent; a column the schema module added since
    the table was created is added to the table (additive evolution: old snapshots keep
    reading, their rows have null in the new column)."""
    ident = f"{cfg.lake.namespace}.{stream.name}"
    try:
        table = catalog.load_table(ident)
    except NoSuchTableError:
        schema = iceberg_schema(stream)
        sort = SortOrder(
            *(
                SortField(source_id=schema.find_field(c).field_id, transform=IdentityTransform())
                for c in stream.sort_by
            )
        )
        try:
            table = catalog.create_table(
                ident,
                schema=schema,
                partition_spec=_partition_spec(stream, schema),
                sort_order=sort,
                properties={
                    "write.parquet.compression-codec": "zstd",
                    "bookstream.stream": stream.name,
                },
            )
        except Exception:  # another writer created it first
            table = catalog.load_table(ident)
        return table
    have = set(table.schema().column_names)
    missing = [f for f in stream.arrow_schema if f.name not in have]
    if missing:
        logger.info("%s: adding column(s) %s", ident, [f.name for f in missing])
        with table.update_schema() as update:
            for f in missing:
                update.add_column(f.name, _ICEBERG[f.type])
        table = catalog.load_table(ident)
    return table


def _parse_offsets(raw: str) -> dict[str, dict[int, int]]:
    return {t: {int(p): int(o) for p, o in parts.items()} for t, parts in json.loads(raw).items()}


def committed_offsets(table: Table) -> dict[str, dict[int, int]]:
    """topic -> partition -> next offset the table holds. Read from the table property
    (committed with each append, so it survives snapshot expiry); a table written before the
    property existed falls back to the newest snapshot that recorded offsets (snapshots of
    other writers, e.g. a maintenance job, are skipped by walking parents)."""
    if OFFSETS_PROPERTY in table.properties:
        return _parse_offsets(table.properties[OFFSETS_PROPERTY])
    snap = table.current_snapshot()
    while snap is not None:
        props = snap.summary.additional_properties if snap.summary else {}
        if OFFSETS_PROPERTY in props:
            return _parse_offsets(props[OFFSETS_PROPERTY])
        snap = table.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id else None
    return {}


def _not_yet_stored(rows: pa.Table, have: dict[int, int]) -> pa.Table:
    """The rows whose (``_partition``, ``_offset``) lie at or past what the table holds."""
    if not have or rows.num_rows == 0 or "_offset" not in rows.column_names:
        return rows
    parts = rows["_partition"].to_pylist()
    offs = rows["_offset"].to_pylist()
    keep = [o >= have.get(p, -1) for p, o in zip(parts, offs, strict=True)]
    return rows if all(keep) else rows.filter(pa.array(keep))


def append_with_offsets(
    table: Table, rows: pa.Table, topic: str, offsets: dict[int, int], attempts: int = 5
) -> Table:
    """Append ``rows`` and record that the table now holds ``topic`` up to ``offsets`` (next
    offset per partition), in one commit: the snapshot (its summary) and the table property.
    On a commit conflict (another writer committed first) the table is refreshed and the
    append retried with only the rows past what the other writer stored, so two writers never
    store the same offsets twice (nothing at all when it covered them)."""
    for attempt in range(attempts):
        known = committed_offsets(table)
        have = known.get(topic, {})
        if have and all(have.get(p, -1) >= o for p, o in offsets.items()):
            logger.warning("%s: offsets %s already committed, skipping", table.name(), offsets)
            return table
        fresh = _not_yet_stored(rows, have)
        if fresh.num_rows < rows.num_rows:
            logger.warning(
                "%s: %d rows of %s already stored by another writer (up to %s), not appended again",
                table.name(),
                rows.num_rows - fresh.num_rows,
                topic,
                have,
            )
        merged = {t: {str(p): o for p, o in parts.items()} for t, parts in known.items()}
        merged.setdefault(topic, {}).update(
            {str(p): max(o, have.get(p, -1)) for p, o in offsets.items()}
        )
        encoded = json.dumps(merged, sort_keys=True, separators=(",", ":"))
        try:
            with table.transaction() as tx:
                tx.append(fresh, snapshot_properties={OFFSETS_PROPERTY: encoded})
                tx.set_properties({OFFSETS_PROPERTY: encoded})
            return table
        except CommitFailedException:
            if attempt == attempts - 1:
                raise
            table = table.refresh()
    return table


def table_dir(table: Table) -> Path:
    """The table's directory on the local file system (for chDB's ``icebergLocal``)."""
    loc = urlparse(table.location())
    if loc.scheme not in ("", "file"):
        raise ValueError(f"{table.name()} lives at {table.location()}, not on a local disk")
    return Path(loc.path)


def audit_heads(table: Table) -> dict[str, Head]:
    """chain -> its head as the audit table's last commit recorded it (empty: no row yet)."""
    raw = table.properties.get(AUDIT_HEADS_PROPERTY)
    if not raw:
        return {}
    return {chain: Head(int(seq), str(h)) for chain, (seq, h) in json.loads(raw).items()}


def encode_heads(heads: dict[str, Head]) -> str:
    return json.dumps({c: [h.seq, h.hash] for c, h in sorted(heads.items())}, separators=(",", ":"))


def append_audit(
    table: Table,
    field: str,
    topic: str,
    records: list[tuple[int, int, bytes]],
    offsets: dict[int, int],
    attempts: int = 5,
) -> tuple[Table, int, dict[str, Head]]:
    """Chain ``records`` ((partition, offset, value) of the topic of ``TopicsConfig.field``)
    onto the audit table's heads and append them, with the offsets they reach and the new
    heads, in one commit: (table, rows appended, heads). The chain is computed inside each
    attempt from the heads the table holds then, so a commit conflict (another writer went
    first) never forks a chain: the retry chains only the records the other writer did not
    store onto its heads."""
    for attempt in range(attempts):
        known = committed_offsets(table)
        have = known.get(topic, {})
        if have and all(have.get(p, -1) >= o for p, o in offsets.items()):
            return table, 0, audit_heads(table)
        fresh = [r for r in records if r[1] >= have.get(r[0], -1)]
        rows, heads = extend_chain(audit_heads(table), field, topic, fresh)
        merged = {t: {str(p): o for p, o in parts.items()} for t, parts in known.items()}
        merged.setdefault(topic, {}).update(
            {str(p): max(o, have.get(p, -1)) for p, o in offsets.items()}
        )
        props = {
            OFFSETS_PROPERTY: json.dumps(merged, sort_keys=True, separators=(",", ":")),
            AUDIT_HEADS_PROPERTY: encode_heads(heads),
        }
        arrow = rows_to_table(
            AUDIT_STREAM, rows, [r["_partition"] for r in rows], [r["_offset"] for r in rows]
        )
        try:
            with table.transaction() as tx:
                tx.append(arrow, snapshot_properties=props)
                tx.set_properties(props)
            return table, len(rows), heads
        except CommitFailedException:
            if attempt == attempts - 1:
                raise
            table = table.refresh()
    return table, 0, audit_heads(table)
