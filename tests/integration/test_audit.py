"""The audit table on a real live run (``demo_history``): complete, verifiable, the same chains
whoever stores them, continued across restarts, and tampering through Iceberg is named.

Tampering happens on a second lake the test builds from the same topics (``audit_lake``), never
on the run's own lake, which other tests share.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest
from it_helpers import BOOKSTREAM, config_for, run_cli
from pyiceberg.expressions import And, EqualTo
from pyiceberg.table import Table

from jobs.audit import audit_head, verify_audit
from jobs.kafka_io import delete_topics, drain_topic
from jobs.lake import open_catalog
from jobs.sql import query_rows
from udfs.audit import AUDITED_TOPICS
from udfs.config import PROJECT_ROOT
from udfs.schema import OrderAction

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def _verify_cli(env: dict[str, str]) -> tuple[dict, int]:
    """``bookstream audit verify``: its JSON last line and exit status."""
    proc = subprocess.run(
        [str(BOOKSTREAM), "audit", "verify"],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert lines, proc.stderr[-4000:]
    return json.loads(lines[-1]), proc.returncode


def _audit_table(env: dict[str, str]) -> Table:
    cfg = config_for(env)
    return open_catalog(cfg).load_table(f"{cfg.lake.namespace}.audit")


def test_every_order_decision_kill_and_configuration_is_chained(demo_history) -> None:
    cfg = demo_history.cfg
    verdict = verify_audit(cfg)  # the command's own function (its exit codes: tampering test)
    assert verdict["ok"], verdict
    stored = _audit_table(demo_history.env).scan().to_arrow()
    chained = sorted(zip(stored["chain"].to_pylist(), stored["_offset"].to_pylist(), strict=True))
    in_kafka = []
    processes = set()
    for field in AUDITED_TOPICS:
        topic = getattr(cfg.topics, field)
        for rec in drain_topic(cfg, topic, read_committed=True, idle_timeout_s=15):
            doc = json.loads(rec.value)
            if field == "orders" and doc["action"] == OrderAction.HEARTBEAT.value:
                continue  # not an order
            if field == "config":
                processes.add(doc["process"])
            in_kafka.append((f"{topic}/{rec.partition}", rec.offset))
    assert chained == sorted(in_kafka)  # every one, once
    assert verdict["rows"] == len(in_kafka)
    kinds = verdict["kinds"]
    assert kinds["order"] > 0 and kinds["risk_decision"] > 0 and kinds["risk"] > 0, kinds
    # each stage of the run recorded the configuration it started with
    assert processes >= {"publisher", "stream-job", "exec-sink", "history-sink"}
    assert kinds["config"] == len([k for k in in_kafka if k[0].startswith(cfg.topics.config)])
    # analysts query it like any lake table (chDB over the Iceberg files)
    by_kind = query_rows(cfg, "SELECT kind, count() AS n FROM bookstream.audit GROUP BY kind")
    assert {r["kind"]: r["n"] for r in by_kind} == kinds


@pytest.fixture(scope="module")
def audit_lake(demo_history, tmp_path_factory) -> dict[str, str]:
    """A second lake holding only the audit table of the run's topics, stored in small commits
    (500 records) by a sink of its own; its sinks record their configuration on a topic of their
    own, so the run's topics (and the tables other tests compare with them) stay as they are."""
    config_topic = f"{demo_history.cfg.topics.config}.second"
    env = {
        **demo_history.env,
        "BOOKSTREAM_LAKE_ROOT": str(tmp_path_factory.mktemp("audit-lake")),
        "BOOKSTREAM_TOPICS_CONFIG": config_topic,
        "BOOKSTREAM_LAKE_COMMIT_ROWS": "500",
    }
    run_cli(["history-sink", "--bounded", "--only", "audit"], env)
    yield env
    delete_topics(config_for(env), [config_topic])


def test_the_same_topics_give_the_same_chains_and_a_restart_continues_them(
    demo_history, audit_lake
) -> None:
    ours = audit_head(config_for(audit_lake))["heads"]
    theirs = audit_head(demo_history.cfg)["heads"]
    shared = {c for c in theirs if not c.startswith(demo_history.cfg.topics.config + "/")}
    assert shared and {c: ours[c] for c in shared} == {c: theirs[c] for c in shared}
    # a restart with another setting: its configuration is chained after the first one
    config_chain = f"{audit_lake['BOOKSTREAM_TOPICS_CONFIG']}/0"
    changed = {**audit_lake, "BOOKSTREAM_LAKE_COMMIT_INTERVAL_MS": "4321"}
    summary, _, _ = run_cli(["history-sink", "--bounded", "--only", "audit"], changed)
    assert summary["audit_rows"] == 1  # its own configuration: the rest was stored already
    after = audit_head(config_for(audit_lake))["heads"]
    assert after[config_chain][0] == ours[config_chain][0] + 1
    assert {c: after[c] for c in shared} == {c: ours[c] for c in shared}
    assert verify_audit(config_for(audit_lake))["ok"]
    rows = (
        _audit_table(audit_lake)
        .scan(row_filter=EqualTo("chain", config_chain), selected_fields=("seq", "record"))
        .to_arrow()
        .sort_by("seq")
        .to_pylist()
    )
    first, second = (json.loads(r["record"]) for r in rows[-2:])
    assert first["config_hash"] != second["config_hash"]
    a, b = json.loads(first["settings"]), json.loads(second["settings"])
    assert {k for k in a if a[k] != b[k]} == {"lake.commit_interval_ms"}


def test_tampering_through_iceberg_is_named(audit_lake) -> None:
    table = _audit_table(audit_lake)
    original = table.scan().to_arrow()
    chains = Counter(original["chain"].to_pylist())
    chain = next(c for c, n in chains.most_common() if n >= 4 and ".orders" in c)
    last = chains[chain]
    at = next(
        i
        for i, (c, s) in enumerate(
            zip(original["chain"].to_pylist(), original["seq"].to_pylist(), strict=True)
        )
        if c == chain and s == 3
    )

    # edit one field of one row (a price in the order's record)
    records = original["record"].to_pylist()
    doc = json.loads(records[at])
    doc["price"] += 1
    records[at] = json.dumps(doc, separators=(",", ":"))
    col = original.schema.get_field_index("record")
    table.overwrite(original.set_column(col, "record", pa.array(records, pa.string())))
    verdict, status = _verify_cli(audit_lake)
    assert status == 1
    assert (verdict["reason"], verdict["chain"], verdict["first_bad_seq"]) == ("edited", chain, 3)

    def restore() -> None:
        table.overwrite(original)
        assert verify_audit(config_for(audit_lake))["ok"]

    restore()
    # delete a row in the middle, then the last row of the chain (only the anchors know it)
    for seq in (2, last):
        table.delete(And(EqualTo("chain", chain), EqualTo("seq", seq)))
        verdict = verify_audit(config_for(audit_lake))
        assert (verdict["reason"], verdict["chain"], verdict["first_bad_seq"]) == (
            "deleted",
            chain,
            seq,
        )
        restore()


def test_a_copy_of_the_heads_kept_elsewhere_catches_a_rewritten_anchor(
    audit_lake, tmp_path: Path
) -> None:
    cfg = config_for(audit_lake)
    kept = tmp_path / "heads.json"
    kept.write_text(json.dumps(audit_head(cfg)))
    table = _audit_table(audit_lake)
    original = table.scan().to_arrow()
    heads = json.loads(table.properties["bookstream.audit.heads"])
    chain = next(c for c, (seq, _) in heads.items() if seq >= 2 and ".orders" in c)
    seq = heads[chain][0]
    prev = next(
        r["hash"] for r in original.to_pylist() if r["chain"] == chain and r["seq"] == seq - 1
    )
    # drop the last row and move both anchors back to its predecessor: consistent again...
    heads[chain] = [seq - 1, prev]
    anchor_file = cfg.lake_dir / "audit-heads.json"
    saved_anchor = anchor_file.read_text()
    table.delete(And(EqualTo("chain", chain), EqualTo("seq", seq)))
    with table.transaction() as tx:
        tx.set_properties({"bookstream.audit.heads": json.dumps(heads)})
    anchor_file.write_text(json.dumps(heads))
    try:
        assert verify_audit(cfg)["ok"]  # the limit: whoever rewrites every anchor is not seen
        verdict = verify_audit(cfg, kept)  # ...unless a copy was kept where they cannot reach
        assert (verdict["reason"], verdict["chain"], verdict["first_bad_seq"]) == (
            "deleted",
            chain,
            seq,
        )
        assert verdict["anchor"] == str(kept)
    finally:
        table = _audit_table(audit_lake)
        table.overwrite(original)
        with table.transaction() as tx:
            tx.set_properties(
                {"bookstream.audit.heads": json.dumps(json.loads(kept.read_text())["heads"])}
            )
        anchor_file.write_text(saved_anchor)
    assert verify_audit(cfg)["ok"]
