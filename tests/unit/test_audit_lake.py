"""The audit table's writer (jobs/lake.py:append_audit) on a local Iceberg lake (SQLite catalog,
no service): a writer that restarts from older offsets, or loses a commit race, continues the
chain from the committed head; it never stores a record twice and never forks a chain."""

from __future__ import annotations

from pathlib import Path

from pyiceberg.table import Table

from jobs.lake import (
    AUDIT_HEADS_PROPERTY,
    append_audit,
    audit_heads,
    committed_offsets,
    ensure_table,
    open_catalog,
)
from udfs.audit import AUDIT_STREAM, verify_rows
from udfs.config import Config, load_config
from udfs.schema import Control, ControlCommand, encode_record

TOPIC = "t.control"


def _cfg(tmp_path: Path) -> Config:
    return load_config(
        env={
            "BOOKSTREAM_LAKE_ROOT": str(tmp_path / "lake"),
            "BOOKSTREAM_STATE_DIR": str(tmp_path / "state"),
        }
    )


def _records(offsets: range) -> list[tuple[int, int, bytes]]:
    return [
        (0, o, encode_record(Control(ControlCommand.KILL, reason=f"r{o}", ts_event=o + 1)))
        for o in offsets
    ]


def _stored(table: Table) -> list[dict]:
    return table.refresh().scan().to_arrow().to_pylist()


def test_a_restart_from_older_offsets_continues_the_chain(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    table = ensure_table(open_catalog(cfg), cfg, AUDIT_STREAM)
    table, n, heads = append_audit(table, "control", TOPIC, _records(range(5)), {0: 5})
    assert n == 5 and heads[f"{TOPIC}/0"].seq == 5
    # killed after that commit, restarted from offset 2 (its consumer had not caught up)
    table, n, heads = append_audit(table, "control", TOPIC, _records(range(2, 8)), {0: 8})
    assert n == 3
    rows = _stored(table)
    assert sorted((r["seq"], r["_offset"]) for r in rows) == [(s, s - 1) for s in range(1, 9)]
    assert committed_offsets(table)[TOPIC] == {0: 8}
    assert audit_heads(table) == heads and AUDIT_HEADS_PROPERTY in table.properties
    assert verify_rows(rows, heads).ok
    # the same offsets once more: nothing appended, nothing changed
    table, n, _ = append_audit(table, "control", TOPIC, _records(range(8)), {0: 8})
    assert n == 0 and len(_stored(table)) == 8


def test_a_writer_that_loses_a_commit_race_chains_on_the_winners_head(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    catalog = open_catalog(cfg)
    ensure_table(catalog, cfg, AUDIT_STREAM)
    ident = f"{cfg.lake.namespace}.{AUDIT_STREAM.name}"
    first, second = catalog.load_table(ident), catalog.load_table(ident)  # same metadata
    append_audit(first, "control", TOPIC, _records(range(4)), {0: 4})
    # the second writer's metadata is stale: its commit is refused, it refreshes and re-chains
    second, n, heads = append_audit(second, "control", TOPIC, _records(range(6)), {0: 6})
    assert n == 2
    rows = _stored(second)
    assert sorted(r["seq"] for r in rows) == list(range(1, 7))  # one chain, no fork
    assert verify_rows(rows, heads).ok and heads[f"{TOPIC}/0"].seq == 6
