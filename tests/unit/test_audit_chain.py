"""The audit chain (udfs/audit.py): built deterministically, and every kind of tampering
(edit, delete, reorder, insert, truncation at the tail, a rewritten chain) is named."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from udfs.audit import (
    GENESIS,
    REDACTED,
    Head,
    canonical_bytes,
    config_record,
    extend_chain,
    redacted_settings,
    row_hash,
    verify_rows,
)
from udfs.config import Config, effective_settings
from udfs.schema import (
    Control,
    ControlCommand,
    ExecKind,
    ExecReport,
    Order,
    OrderAction,
    OrderSide,
    OrderType,
    encode_record,
)


def _order(i: int, action: OrderAction = OrderAction.NEW) -> bytes:
    return encode_record(
        Order(
            order_id=f"o{i}",
            instrument="AAPL.XNAS",
            strategy="imbalance",
            action=action,
            side=OrderSide.BUY,
            order_type=OrderType.LIMIT,
            price=100 + i,
            quantity=1,
            price_exp=-2,
            size_exp=0,
            ts_event=1_000 + i,
            source_seq=i,
        )
    )


def _chain(n: int = 6) -> tuple[list[dict], dict[str, Head]]:
    """n orders on partition 0 (offsets 10, 12, 14...: offsets may skip, seqs may not)."""
    return extend_chain({}, "orders", "o", [(0, 10 + 2 * i, _order(i)) for i in range(n)])


def test_chain_rows_are_numbered_linked_and_hashed_over_canonical_bytes() -> None:
    rows, heads = _chain(3)
    assert [r["seq"] for r in rows] == [1, 2, 3]
    assert rows[0]["prev_hash"] == GENESIS
    assert [r["prev_hash"] for r in rows[1:]] == [r["hash"] for r in rows[:-1]]
    first = rows[0]
    canonical = json.dumps(
        {
            "chain": "o/0",
            "seq": 1,
            "kind": "order",
            "instrument": "AAPL.XNAS",
            "ts_event": 1000,
            "partition": 0,
            "offset": 10,
            "record": _order(0).decode(),
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    assert canonical_bytes(first) == canonical
    assert first["hash"] == hashlib.sha256(GENESIS.encode() + b"\n" + canonical).hexdigest()
    assert heads == {"o/0": Head(3, rows[-1]["hash"])}
    assert verify_rows(rows, heads).ok


def test_chain_is_deterministic_in_offset_order_and_continues_after_a_restart() -> None:
    records = [(p, o, _order(10 * p + o)) for p in (0, 1) for o in range(4)]
    whole, heads = extend_chain({}, "orders", "o", records)
    # the same records in another arrival order, stored in two commits (a restart between)
    shuffled = list(reversed(records))
    first, mid = extend_chain({}, "orders", "o", [r for r in shuffled if r[1] < 2])
    second, end = extend_chain(mid, "orders", "o", [r for r in shuffled if r[1] >= 2])
    assert sorted(first + second, key=lambda r: (r["chain"], r["seq"])) == sorted(
        whole, key=lambda r: (r["chain"], r["seq"])
    )
    assert end == heads and set(heads) == {"o/0", "o/1"}
    assert verify_rows(first + second, end).as_dict()["ok"] is True


def test_what_is_audited_and_how_it_is_classified() -> None:
    reject = ExecReport("r1", "o1", "AAPL.XNAS", ExecKind.REJECT, 5, reason="max_position")
    fill = ExecReport("r2", "o2", "AAPL.XNAS", ExecKind.FILL, 6, fill_qty=1)
    rows, _ = extend_chain(
        {}, "executions", "x", [(0, 0, encode_record(reject)), (0, 1, encode_record(fill))]
    )
    assert [r["kind"] for r in rows] == ["risk_decision", "execution"]
    kill = Control(ControlCommand.KILL, reason="desk", ts_event=7)
    (row,), _ = extend_chain({}, "control", "c", [(0, 3, encode_record(kill))])
    assert (row["kind"], row["ts_event"], row["record"]) == (
        "control",
        7,
        encode_record(kill).decode(),
    )
    # a heartbeat is not an order; a record that does not decode is evidence all the same
    rows, _ = extend_chain(
        {}, "orders", "o", [(0, 0, _order(1, OrderAction.HEARTBEAT)), (0, 1, b"{not json")]
    )
    assert [(r["kind"], r["seq"], r["record"]) for r in rows] == [("malformed", 1, "{not json")]
    with pytest.raises(ValueError, match="not an audited topic"):
        extend_chain({}, "events", "e", [(0, 0, b"{}")])


def _edit(rows: list[dict], i: int, **changes: object) -> list[dict]:
    out = [dict(r) for r in rows]
    out[i].update(changes)
    return out


def test_an_edited_row_is_named() -> None:
    rows, heads = _chain()
    verdict = verify_rows(_edit(rows, 2, record=rows[2]["record"].replace("o2", "oX")), heads)
    assert (verdict.reason, verdict.chain, verdict.first_bad_seq) == ("edited", "o/0", 3)


def test_an_edited_row_whose_hash_was_recomputed_is_named_by_its_successor() -> None:
    rows, heads = _chain()
    forged = _edit(rows, 2, instrument="MSFT.XNAS")
    forged[2]["hash"] = row_hash(forged[2]["prev_hash"], forged[2])
    verdict = verify_rows(forged, heads)
    assert (verdict.reason, verdict.first_bad_seq) == ("edited", 3)


def test_a_deleted_row_is_named() -> None:
    rows, heads = _chain()
    verdict = verify_rows(rows[:3] + rows[4:], heads)
    assert (verdict.reason, verdict.first_bad_seq) == ("deleted", 4)
    assert verify_rows(rows[1:], heads).first_bad_seq == 1


def test_reordered_rows_are_named() -> None:
    rows, heads = _chain()
    swapped = _edit(_edit(rows, 2, seq=4), 3, seq=3)
    verdict = verify_rows(swapped, heads)
    assert (verdict.reason, verdict.first_bad_seq) == ("reordered", 3)
    # the order rows are read in does not matter (a table has none): only seq and offsets do
    assert verify_rows(list(reversed(rows)), heads).ok
    # a chain rebuilt in another order, every hash recomputed: consistent, but not the topic's
    forged, prev = [], GENESIS
    for seq, r in enumerate([rows[0], rows[2], rows[1], *rows[3:]], 1):
        row = {**r, "seq": seq, "prev_hash": prev}
        row["hash"] = prev = row_hash(prev, row)
        forged.append(row)
    verdict = verify_rows(forged)
    assert (verdict.reason, verdict.first_bad_seq) == ("reordered", 3)


def test_an_inserted_row_is_named() -> None:
    rows, heads = _chain()
    duplicate = [*rows[:3], dict(rows[2]), *rows[3:]]
    verdict = verify_rows(duplicate, heads)
    assert (verdict.reason, verdict.first_bad_seq) == ("inserted", 3)
    # a well-formed row appended after the head: only the anchor knows it is not the writer's
    (extra,), _ = extend_chain(heads, "orders", "o", [(0, 99, _order(99))])
    assert verify_rows([*rows, extra]).ok
    verdict = verify_rows([*rows, extra], heads)
    assert (verdict.reason, verdict.first_bad_seq) == ("inserted", 7)


def test_rows_deleted_at_the_tail_are_caught_by_the_anchor_only() -> None:
    rows, heads = _chain()
    assert verify_rows(rows[:4]).ok  # without an anchor a shorter chain is still a chain
    verdict = verify_rows(rows[:4], heads)
    assert (verdict.reason, verdict.first_bad_seq) == ("deleted", 5)
    # a whole chain gone
    verdict = verify_rows([], heads)
    assert (verdict.reason, verdict.chain, verdict.first_bad_seq) == ("deleted", "o/0", 1)


def test_a_rewritten_chain_is_caught_by_an_anchor_kept_elsewhere() -> None:
    rows, heads = _chain()
    copied = dict(heads)  # a copy of the head taken earlier, kept outside the lake
    # rewrite from seq 3 on (edited record, every later hash recomputed) and re-anchor
    rewritten, new_heads = extend_chain(
        {"o/0": Head(2, rows[1]["hash"])},
        "orders",
        "o",
        [(0, r["_offset"], r["record"].replace("imbalance", "forged").encode()) for r in rows[2:]],
    )
    tampered = rows[:2] + rewritten
    assert verify_rows(tampered, new_heads).ok  # the writer's own anchor was rewritten too
    verdict = verify_rows(tampered, copied, exact=False)
    assert (verdict.reason, verdict.first_bad_seq) == ("edited", 6)
    verdict = verify_rows(tampered, new_heads, kept=[("copy kept elsewhere", copied)])
    assert (verdict.reason, verdict.first_bad_seq, verdict.anchor) == (
        "edited",
        6,
        "copy kept elsewhere",
    )
    # an earlier copy is a prefix anchor: a chain that grew since still passes
    assert verify_rows(rows, {"o/0": Head(4, rows[3]["hash"])}, exact=False).ok


def test_event_time_is_checked_against_ts_event() -> None:
    rows, heads = _chain()
    with_time = [{**r, "event_time_us": r["ts_event"] // 1000} for r in rows]
    assert verify_rows(with_time, heads).ok
    verdict = verify_rows(_edit(with_time, 1, event_time_us=123), heads)
    assert (verdict.reason, verdict.first_bad_seq) == ("edited", 2)


def test_config_records_hash_the_redacted_effective_settings() -> None:
    cfg = Config()
    settings = effective_settings(cfg)
    rec = config_record("exec-sink", settings, ts_event=5, host="h", pid=1)
    assert rec.config_hash == hashlib.sha256(rec.settings.encode()).hexdigest()
    assert json.loads(rec.settings)["risk.max_drawdown"] == cfg.risk.max_drawdown
    changed = dataclasses.replace(cfg, risk=dataclasses.replace(cfg.risk, max_drawdown=1.0))
    assert config_record("exec-sink", effective_settings(changed), 6).config_hash != rec.config_hash
    redacted = redacted_settings(
        {
            "kafka.sasl_password": "hunter2",
            "redis.password_file": "/s/redis/password",
            "lake.catalog_uri": "postgresql://u:hunter2@h/db",
        }
    )
    assert redacted["kafka.sasl_password"] == REDACTED
    assert redacted["redis.password_file"] == "/s/redis/password"
    assert "hunter2" not in json.dumps(redacted)
