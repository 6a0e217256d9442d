"""Recorded runs: which Kafka offsets a demo or a live session wrote on each topic
(``<lake root>/runs/<run_id>.json``, the newest also ``latest.json``), for ``bookstream replay``
and ``bookstream report``. Apart from jobs/demo.py so that readers and the live supervisor do
not import PyFlink."""

from __future__ import annotations

import json
from pathlib import Path

from udfs.config import Config

__all__ = ["load_run", "record_run"]


def record_run(
    cfg: Config,
    run_id: str,
    before: dict[str, dict[int, int]],
    after: dict[str, dict[int, int]],
    *,
    topics: dict[str, str] | None = None,
) -> Path:
    """Remember which offsets of every topic one run wrote (``[before, after)``); ``topics``
    (field -> name): the run's own topic set, when it is not the configured one (a live
    session's)."""
    runs = cfg.lake_dir / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    record: dict[str, object] = {"run_id": run_id, "from": before, "to": after}
    if topics is not None:
        record["topics"] = topics
    doc = json.dumps(record, sort_keys=True)
    path = runs / f"{run_id}.json"
    path.write_text(doc)
    (runs / "latest.json").write_text(doc)
    return path


def load_run(cfg: Config, run_id: str = "latest") -> dict:
    """A recorded run: ``{"run_id", "from": {topic: {partition: offset}}, "to": ...}``."""
    path = cfg.lake_dir / "runs" / f"{run_id}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no recorded run {run_id!r} ({path}); `bookstream demo` records one"
        )
    doc = json.loads(path.read_text())
    for side in ("from", "to"):
        doc[side] = {t: {int(p): o for p, o in parts.items()} for t, parts in doc[side].items()}
    return doc
