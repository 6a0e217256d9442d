"""The audit trail: an append-only, hash-chained record of every order, risk decision, kill
switch and configuration change. Pure (no Kafka, no Iceberg): what is audited, how a row is
hashed, how a chain grows and how it is verified. ``jobs/lake.py`` stores the rows in the lake's
``audit`` table (the history sink writes them), ``jobs/audit.py`` verifies the stored table.

What is audited (:data:`AUDITED_TOPICS`), read ``read_committed`` like the rest of history:

* ``orders`` -- every order and cancel of the trading stage (its event-time heartbeats are not
  orders and are left out);
* ``executions`` -- every decision of the execution sink: ``ack``/``reject`` are the pre-trade
  risk decisions (kind ``risk_decision``), fills and cancels kind ``execution``;
* ``control`` -- every kill switch, reduce, resume, cancel-all and the sink's own trips;
* ``risk`` -- every risk report (VaR, ES, drawdown, positions) the decisions were taken under;
* ``config`` -- each process's effective configuration when it started (a change between two
  starts of the same process is a row with another ``config_hash``).

A record that does not decode is audited too (kind ``malformed``): its raw text is evidence.

The chains. One chain per source partition (``<topic>/<partition>``, e.g.
``bookstream.orders.v1/0``),
its rows in Kafka offset order, numbered ``seq`` = 1, 2, ... Each row's

    hash = SHA-256( prev_hash + "\\n" + canonical(row) )      (hex, lower case)

where ``prev_hash`` is the previous row's ``hash`` (:data:`GENESIS` = 64 zeros for seq 1) and
``canonical(row)`` is the UTF-8 JSON object of the row's fields ``chain, seq, kind, instrument,
ts_event, partition, offset, record`` with sorted keys, no whitespace and ASCII escapes
(``json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=True)``). ``record`` is
the Kafka value exactly as published (UTF-8 text). A chain per partition, not one global chain,
because it is what a replay can reproduce: records of different partitions and topics arrive in
an order that depends on timing, the offsets within a partition do not. So the same topics give
the same chains, bit for bit, whenever and however often they are stored.

Verification (:func:`verify_rows`) recomputes every chain and names the first bad row:
``deleted`` (a seq missing, or the chain shorter than its anchor), ``inserted`` (a seq twice,
or rows beyond the anchor), ``reordered`` (seq order disagrees with offset order), ``edited``
(a row whose hash does not match its content, or whose successor recorded another hash for it).
The anchors (:class:`Head` per chain) are kept outside the data files, so deleting the last rows
is caught too.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa

from udfs.history import Stream
from udfs.schema import (
    ConfigRecord,
    Control,
    ExecKind,
    ExecReport,
    Order,
    OrderAction,
    RiskReport,
    SchemaError,
    decode_record,
)

__all__ = [
    "AUDITED_TOPICS",
    "AUDIT_STREAM",
    "GENESIS",
    "Head",
    "Verdict",
    "canonical_bytes",
    "config_record",
    "extend_chain",
    "redacted_settings",
    "row_hash",
    "verify_rows",
]

GENESIS = "0" * 64
"""``prev_hash`` of every chain's first row."""

AUDITED_TOPICS = ("orders", "executions", "control", "risk", "config")
"""The ``TopicsConfig`` fields whose records the audit table chains."""

HASHED_FIELDS = ("chain", "seq", "kind", "instrument", "ts_event", "partition", "offset", "record")
"""What ``canonical(row)`` covers (``partition``/``offset`` are the ``_partition``/``_offset``
columns). ``event_time`` is derived from ``ts_event`` and checked against it instead."""

_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("chain", pa.string()),
    ("seq", pa.int64()),
    ("kind", pa.string()),
    ("instrument", pa.string()),
    ("ts_event", pa.int64()),
    ("record", pa.string()),
    ("prev_hash", pa.string()),
    ("hash", pa.string()),
)


def _not_from_a_topic(_raw: bytes) -> dict[str, Any]:
    raise TypeError("the audit table is not fed from one topic: rows come from extend_chain")


AUDIT_STREAM = Stream(
    "audit",
    "",
    _FIELDS,
    _not_from_a_topic,
    lambda r: r["ts_event"],
    sort_by=("chain", "seq"),
)
"""The audit table's columns (plus ``event_time``, ``_partition``, ``_offset`` as every history
table: ``_partition``/``_offset`` are the audited record's Kafka position)."""


@dataclass(frozen=True)
class Head:
    """The last row of a chain: its seq and hash (the anchor a verifier checks against)."""

    seq: int
    hash: str


def _classify(field: str, value: bytes) -> tuple[str, str, int] | None:
    """(kind, instrument, ts_event) of one audited record, None when it is not audited (an
    order heartbeat). A record that does not decode is ``malformed``, never dropped."""
    try:
        if field == "orders":
            order = decode_record(Order, value)
            if order.action is OrderAction.HEARTBEAT:
                return None
            return "order", order.instrument, order.ts_event
        if field == "executions":
            rep = decode_record(ExecReport, value)
            decision = rep.kind in (ExecKind.ACK, ExecKind.REJECT)
            return ("risk_decision" if decision else "execution"), rep.instrument, rep.ts_event
        if field == "control":
            ctrl = decode_record(Control, value)
            return "control", ctrl.instrument, ctrl.ts_event
        if field == "risk":
            return "risk", "", decode_record(RiskReport, value).ts_event
        if field == "config":
            return "config", "", decode_record(ConfigRecord, value).ts_event
    except (SchemaError, ValueError, TypeError, KeyError):
        return "malformed", "", 0
    raise ValueError(f"{field!r} is not an audited topic ({', '.join(AUDITED_TOPICS)})")


def canonical_bytes(row: Mapping[str, Any]) -> bytes:
    """The bytes a row's hash covers (see the module docstring)."""
    doc = {
        "chain": row["chain"],
        "seq": row["seq"],
        "kind": row["kind"],
        "instrument": row["instrument"],
        "ts_event": row["ts_event"],
        "partition": row["_partition"],
        "offset": row["_offset"],
        "record": row["record"],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def row_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode("ascii") + b"\n" + canonical_bytes(row)).hexdigest()


def extend_chain(
    heads: Mapping[str, Head],
    field: str,
    topic: str,
    records: Iterable[tuple[int, int, bytes]],
) -> tuple[list[dict[str, Any]], dict[str, Head]]:
    """The audit rows of ``records`` ((partition, offset, value) of ``topic``, the topic of
    ``TopicsConfig.field``), chained on
    ``heads`` (chain -> its last row; absent: a new chain), and the new heads (every chain of
    ``heads`` included). Records are taken in (partition, offset) order whatever order they
    come in; the caller passes only records past what the chains already hold."""
    new_heads = dict(heads)
    rows: list[dict[str, Any]] = []
    for partition, offset, value in sorted(records, key=lambda r: (r[0], r[1])):
        classified = _classify(field, value)
        if classified is None:
            continue
        kind, instrument, ts_event = classified
        chain = f"{topic}/{partition}"
        head = new_heads.get(chain, Head(0, GENESIS))
        row: dict[str, Any] = {
            "chain": chain,
            "seq": head.seq + 1,
            "kind": kind,
            "instrument": instrument,
            "ts_event": ts_event,
            "record": value.decode("utf-8", "replace"),
            "prev_hash": head.hash,
            "_partition": partition,
            "_offset": offset,
        }
        row["hash"] = row_hash(head.hash, row)
        new_heads[chain] = Head(row["seq"], row["hash"])
        rows.append(row)
    return rows, new_heads


@dataclass(frozen=True)
class Verdict:
    """What :func:`verify_rows` found: ``ok``, or the first bad row (``chain``, ``seq``) and
    the ``reason`` (``edited``, ``deleted``, ``reordered``, ``inserted``) with a ``detail``."""

    rows: int
    chains: int
    chain: str | None = None
    first_bad_seq: int | None = None
    reason: str | None = None
    detail: str = ""
    anchor: str = ""
    """which of the ``kept`` anchors the chain broke (empty: the rows or the exact anchor)"""

    @property
    def ok(self) -> bool:
        return self.reason is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "chains": self.chains,
            "chain": self.chain,
            "first_bad_seq": self.first_bad_seq,
            "reason": self.reason,
            "detail": self.detail,
            "anchor": self.anchor or None,
        }


_Bad = tuple[int, str, str]
"""(seq, reason, detail) of a chain's first bad row"""


def _hashed_at(row: Mapping[str, Any], last_seq: int) -> int | None:
    """The seq a row's hash was written with, when only its seq was changed (a row moved to
    another place in the chain); None when no seq fits (its content was edited)."""
    for seq in range(1, last_seq + 1):
        if seq != row["seq"] and row_hash(row["prev_hash"], {**row, "seq": seq}) == row["hash"]:
            return seq
    return None


def _check_rows(rows: list[Mapping[str, Any]]) -> tuple[_Bad | None, Head]:
    """The chain's rows in seq order against each other: the first bad row (or None) and
    the head reached."""
    head = Head(0, GENESIS)
    last_offset = -1
    for r in rows:
        seq = r["seq"]
        if seq <= head.seq:
            return (seq, "inserted", f"seq {seq} appears more than once"), head
        if seq > head.seq + 1:
            return (head.seq + 1, "deleted", f"seq {head.seq + 1} is missing"), head
        if r["_offset"] <= last_offset:
            return (
                seq,
                "reordered",
                f"offset {r['_offset']} of seq {seq} is not after {last_offset} of seq {seq - 1}",
            ), head
        if "event_time_us" in r and r["event_time_us"] != max(r["ts_event"], 0) // 1000:
            return (seq, "edited", f"event_time of seq {seq} does not match its ts_event"), head
        if row_hash(r["prev_hash"], r) != r["hash"]:
            moved_from = _hashed_at(r, len(rows) + 1)
            if moved_from is not None:
                return (seq, "reordered", f"seq {seq} is the row written as seq {moved_from}"), head
            return (seq, "edited", f"seq {seq}'s content does not match its hash"), head
        if r["prev_hash"] != head.hash:  # the previous row was edited and its hash recomputed
            return (
                seq - 1,
                "edited",
                f"seq {seq - 1} no longer has the hash seq {seq} recorded for it",
            ), head
        head = Head(seq, r["hash"])
        last_offset = r["_offset"]
    return None, head


def verify_rows(
    rows: Iterable[Mapping[str, Any]],
    anchors: Mapping[str, Head] | None = None,
    *,
    exact: bool = True,
    kept: Sequence[tuple[str, Mapping[str, Head]]] = (),
) -> Verdict:
    """Recompute every chain of ``rows`` (audit rows in any order; ``event_time_us``, when a
    row has it, is checked against ``ts_event``) and check each against its anchor in
    ``anchors``: ``exact`` -- the chain must end at the anchor (the head the writer committed);
    not ``exact`` -- the anchor must be a row of the chain (a copy taken earlier). ``kept``:
    more anchors of the second kind, each with a name the verdict gives when it fails. A
    chain of the anchors that has no row at all was deleted. The first bad row of the first
    broken chain (in chain-name order) is reported."""
    by_chain: dict[str, list[Mapping[str, Any]]] = {}
    count = 0
    for r in rows:
        by_chain.setdefault(r["chain"], []).append(r)
        count += 1
    checks = [("", anchors or {}, exact), *((name, a, False) for name, a in kept)]
    chains = set(by_chain).union(*(a for _, a, _ in checks))
    for chain in sorted(chains):
        chain_rows = sorted(by_chain.get(chain, []), key=lambda r: (r["seq"], r["_offset"]))
        bad, head = _check_rows(chain_rows)
        failed = ""
        for name, anchor_set, is_exact in checks:
            anchor = anchor_set.get(chain)
            if bad is None and anchor is not None:
                bad = _against_anchor(chain_rows, head, anchor, is_exact)
                failed = name
        if bad is not None:
            seq, reason, detail = bad
            return Verdict(count, len(by_chain), chain, seq, reason, f"{chain}: {detail}", failed)
    return Verdict(rows=count, chains=len(by_chain))


def _against_anchor(
    rows: list[Mapping[str, Any]], head: Head, anchor: Head, exact: bool
) -> _Bad | None:
    if anchor.seq > head.seq:
        return (
            head.seq + 1,
            "deleted",
            f"the chain ends at seq {head.seq}, its anchor is at seq {anchor.seq}",
        )
    if exact and anchor.seq < head.seq:
        return (
            anchor.seq + 1,
            "inserted",
            f"rows after the anchored head seq {anchor.seq} (the chain ends at {head.seq})",
        )
    at = rows[anchor.seq - 1] if anchor.seq > 0 else None
    if at is not None and at["hash"] != anchor.hash:
        return (
            anchor.seq,
            "edited",
            f"seq {anchor.seq} has another hash than its anchor: the chain was rewritten",
        )
    return None


# ---------------------------------------------------------------------------------------------
# configuration records

_SECRET_NAME = re.compile(r"password|secret|token|credential|sasl|private_key", re.IGNORECASE)
_NOT_A_SECRET = ("_file", "_dir", "_path")
REDACTED = "<redacted>"


def _redact_uri(value: str) -> str:
    """A URI with a password in its user info, the password replaced."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return value
    if parts.password is None:
        return value
    netloc = parts.netloc.replace(f":{parts.password}@", f":{REDACTED}@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def redacted_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` (``section.field`` -> value) fit for the audit trail: the value of a key
    that names a secret (password, secret, token, credential, sasl, private key; not a
    ``*_file``/``*_dir``/``*_path`` that only says where one is) is replaced by
    :data:`REDACTED`, and so is a password inside a URI. Values become JSON values (paths and
    other objects their text)."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if _SECRET_NAME.search(key) and not key.endswith(_NOT_A_SECRET):
            out[key] = REDACTED
            continue
        if not isinstance(value, bool | int | float | str) and value is not None:
            value = str(value)
        if isinstance(value, str) and "@" in value and "://" in value:
            value = _redact_uri(value)
        out[key] = value
    return out


def config_record(
    process: str, settings: Mapping[str, Any], ts_event: int, host: str = "", pid: int = 0
) -> ConfigRecord:
    """The configuration record of a process starting with ``settings``
    (``udfs.config.effective_settings``): redacted, canonical JSON, hashed."""
    text = json.dumps(
        redacted_settings(settings), sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )
    return ConfigRecord(
        process=process,
        config_hash=hashlib.sha256(text.encode()).hexdigest(),
        settings=text,
        ts_event=ts_event,
        host=host,
        pid=pid,
    )
