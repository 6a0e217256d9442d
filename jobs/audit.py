"""The audit trail's wiring: configuration records on start, the anchor file, and
``bookstream audit verify`` / ``bookstream audit head`` over the lake's ``audit`` table.

The chain itself (what is audited, how rows are hashed and verified) is ``udfs/audit.py``; the
history sink writes the table (``jobs/lake.py:append_audit``). Two anchors hold every chain's
head outside the table's data files:

* the ``bookstream.audit.heads`` table property (and snapshot summary), committed atomically
  with the rows: the chain must end exactly there;
* the anchor file ``<lake root>/audit-heads.json``, written by the history sink after each
  commit (so it may lag the table, never lead it): each head in it must be a row of its chain.

Deleting rows, at the tail too, or editing them through Iceberg leaves both anchors behind and
is found. Limit: whoever can rewrite the data files AND the table property AND the anchor file
can forge a consistent chain; ``bookstream audit head`` prints the heads so they can be kept
where that writer cannot reach (another machine, a WORM store, a ticket), and ``verify --anchor
FILE`` checks against such a copy.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from udfs.audit import AUDIT_STREAM, Head, config_record, verify_rows
from udfs.config import Config, effective_settings
from udfs.schema import encode_record

__all__ = [
    "audit_anchor_path",
    "audit_head",
    "publish_config",
    "read_anchor_file",
    "verify_audit",
    "write_audit_anchor",
]

logger = logging.getLogger(__name__)


def publish_config(cfg: Config, process: str) -> None:
    """Record ``process``'s effective configuration on the config topic (hash + non-secret
    settings) before it does anything else: a start that cannot record its configuration
    fails (the audit trail would have a hole)."""
    from jobs.kafka_io import create_topics, make_producer

    create_topics(cfg, [s for s in cfg.topics.specs() if s.name == cfg.topics.config])
    record = config_record(
        process, effective_settings(cfg), time.time_ns(), socket.gethostname(), os.getpid()
    )
    errors: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    producer = make_producer(cfg)
    producer.produce(
        cfg.topics.config, key=process.encode(), value=encode_record(record), on_delivery=delivered
    )
    left = producer.flush(30)
    if left or errors:
        raise RuntimeError(
            f"cannot record the configuration of {process} on {cfg.topics.config}: "
            f"{errors[0] if errors else 'not delivered in 30 s'}"
        )
    logger.info("%s: configuration %s recorded", process, record.config_hash[:12])


def audit_anchor_path(cfg: Config) -> Path:
    """The anchor file: outside the warehouse (no Iceberg write touches it)."""
    return cfg.lake_dir / "audit-heads.json"


def write_audit_anchor(path: Path, heads: dict[str, Head]) -> None:
    """Replace the anchor file atomically (write, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        json.dump({c: [h.seq, h.hash] for c, h in sorted(heads.items())}, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def read_anchor_file(path: Path) -> dict[str, Head]:
    """Heads from a file of ``{chain: [seq, hash]}`` (the anchor file, or ``audit head``'s
    ``heads``)."""
    doc = json.loads(path.read_text())
    if "heads" in doc and isinstance(doc["heads"], dict):
        doc = doc["heads"]
    return {chain: Head(int(seq), str(h)) for chain, (seq, h) in doc.items()}


def _load_audit_table(cfg: Config) -> Any:
    from pyiceberg.exceptions import NoSuchTableError

    from jobs.lake import open_catalog

    ident = f"{cfg.lake.namespace}.{AUDIT_STREAM.name}"
    try:
        return open_catalog(cfg).load_table(ident)
    except NoSuchTableError as exc:
        raise FileNotFoundError(
            f"the lake has no {ident} table yet: the history sink writes it (`bookstream "
            f"history-sink --bounded`)"
        ) from exc


def audit_head(cfg: Config) -> dict[str, Any]:
    """The heads the audit table's last commit recorded, to keep elsewhere."""
    from jobs.lake import audit_heads

    table = _load_audit_table(cfg)
    heads = audit_heads(table)
    snap = table.current_snapshot()
    return {
        "table": table.name(),
        "snapshot_id": snap.snapshot_id if snap else None,
        "heads": {c: [h.seq, h.hash] for c, h in sorted(heads.items())},
    }


def verify_audit(cfg: Config, anchor_file: Path | None = None) -> dict[str, Any]:
    """Read the whole audit table, recompute every chain and check it against the table's
    head property (exact), the anchor file (a prefix) and ``anchor_file`` if given (a prefix,
    e.g. a copy of ``audit head`` kept elsewhere). The first failure is the verdict."""
    from jobs.lake import audit_heads

    table = _load_audit_table(cfg)
    arrow = table.scan().to_arrow()
    rows = arrow.drop_columns(["event_time"]).to_pylist()
    event_us = arrow["event_time"].cast("int64").to_pylist()
    for row, us in zip(rows, event_us, strict=True):
        row["event_time_us"] = us
    kept: list[tuple[str, dict[str, Head]]] = []
    local = audit_anchor_path(cfg)
    if local.is_file():
        kept.append((str(local), read_anchor_file(local)))
    else:
        logger.warning("no anchor file at %s: checking against the table property only", local)
    if anchor_file is not None:
        kept.append((str(anchor_file), read_anchor_file(anchor_file)))
    verdict = verify_rows(rows, audit_heads(table), exact=True, kept=kept).as_dict()
    if not verdict["ok"]:
        verdict["anchor"] = verdict["anchor"] or "rows / table property"
        return verdict
    kinds: dict[str, int] = {}
    for row in rows:
        kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
    return {**verdict, "anchors": ["table property", *(n for n, _ in kept)], "kinds": kinds}
