"""Point-in-time training sets through Feast's historical retrieval (issue 12 §3).

``bookstream features training-set --from T --to T [--as-known-at|--event-time] --out F``:

1. export the lake's ``features`` table at its current Iceberg snapshot to the offline files
   Feast reads (:func:`jobs.feast_store.export_offline`; the snapshot id is kept);
2. entity rows: for each instrument with feature rows in ``[from, to)``, a grid of event
   times every ``--step-ms`` (aligned to multiples of the step since the epoch) from its first
   to its last feature row's exchange time inside the window. A grid, not the events
   themselves: its size is chosen (not the feed's burstiness), its times are unique per
   instrument (Feast's file store deduplicates entity rows on instrument and time), and it is
   the same for both joins, so the two can be compared row by row;
3. ``get_historical_features`` joins every feature of the chosen views to those rows:
   ``--as-known-at`` (default) through the registered views, whose source timestamp is the
   row's availability time (``ts_avail``: exchange time + modelled feed and processing
   latency), ``--event-time`` through the same views with the source's timestamp set to the
   exchange time (the lake's ``event_time``);
4. in chunks of ``--chunk-s`` of event time (default 600 s; 0: one call for the whole window
   through ``FeatureStore.get_historical_features``): Feast's file (dask) store merges every
   entity row with every feature row of its instrument before it filters by TTL
   (``feast/infra/offline_stores/dask.py``: ``_merge`` then ``_filter_ttl``), so one call
   over the full LOBSTER day asked for 52 GiB. A chunk's call sees the chunk's entity rows and
   a Parquet file of only the feature rows it can return: timestamp in ``[first entity time -
   TTL, last entity time]`` and, of those, the newest at or before some entity row of the
   chunk (:func:`_candidates`) (a copy of the registered view whose file
   source points there; the provider's ``get_historical_features``, the call the store makes
   itself), so memory is bounded by the chunk and time grows linearly with the window. The
   chunks' rows are concatenated in order: the result is the one-shot join's, byte for byte
   (tested on the sample);
5. Feast's file (dask) store drops an entity row whose instrument has rows but none inside
   the view's TTL before the entity's time (and with it that row's other views, in a call
   of several): each view is retrieved on its own and the results are joined back onto the
   entity rows here, so every entity row is in the output, with nulls where a view had no
   value, and those are counted per view (``missing``);
6. the Parquet file: the entity columns (``instrument``, ``event_timestamp``,
   ``entity_ts_ns``), then ``<view>__<feature>`` columns, sorted by instrument and time;
   its schema metadata ``bookstream.training_set`` holds the request, the lake table and
   snapshot id, each view's Feast version number and spec hash, TTL and join timestamp, and
   the counts. Nothing in it depends on the wall clock: the same request on the same lake
   snapshot gives the same bytes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.feast_store import export_offline, offline_event_time_path, open_store
from udfs.config import Config

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView, FileSource

__all__ = [
    "DEFAULT_VIEWS",
    "METADATA_KEY",
    "TrainingSetError",
    "TrainingSetRequest",
    "build_training_set",
    "entity_grid",
    "parse_time",
    "read_metadata",
]

Mode = Literal["as_known_at", "event_time"]


class TrainingSetError(ValueError):
    """The request cannot be built as asked; the message says why and what to do."""


DEFAULT_VIEWS = ("book_features", "window_features")
METADATA_KEY = b"bookstream.training_set"
_TIMESTAMP = {"as_known_at": "available_time", "event_time": "event_time"}


def parse_time(text: str) -> int:
    """ISO-8601 (UTC when no zone) or integer nanoseconds since the epoch -> ns."""
    if text.lstrip("-").isdigit():
        return int(text)
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1_000_000) * 1000


@dataclass(frozen=True)
class TrainingSetRequest:
    start_ns: int
    end_ns: int
    """window ``[start_ns, end_ns)`` of exchange time"""
    mode: Mode = "as_known_at"
    step_ms: int = 1000
    views: tuple[str, ...] = DEFAULT_VIEWS
    chunk_s: int = 600
    """entity rows are joined per ``chunk_s`` of event time (0: the whole window in one
    ``get_historical_features`` call). Not part of the result: any chunking gives the same
    bytes, so it is not in the file's metadata."""

    def __post_init__(self) -> None:
        if self.end_ns <= self.start_ns:
            raise TrainingSetError(f"--to ({self.end_ns}) must be after --from ({self.start_ns})")
        if self.step_ms < 1:
            raise TrainingSetError(f"--step-ms must be >= 1, got {self.step_ms}")
        if self.chunk_s < 0:
            raise TrainingSetError(f"--chunk-s must be >= 0 (0: one call), got {self.chunk_s}")
        if self.mode not in _TIMESTAMP:
            raise TrainingSetError(f"mode {self.mode!r}: as_known_at or event_time")


def entity_grid(offline: pa.Table, start_ns: int, end_ns: int, step_ms: int) -> pd.DataFrame:
    """The entity rows (step 2 of the module doc): ``instrument``, ``entity_ts_ns`` (int, a
    whole microsecond) and ``event_timestamp`` (UTC), sorted by instrument and time."""
    step_ns = step_ms * 1_000_000
    frame = offline.select(["instrument", "ts_event"]).to_pandas()
    frame = frame[(frame["ts_event"] >= start_ns) & (frame["ts_event"] < end_ns)]
    instruments: list[str] = []
    times: list[int] = []
    for inst, ts in sorted(frame.groupby("instrument")["ts_event"]):
        first, last = int(ts.min()), int(ts.max())
        t = -(-first // step_ns) * step_ns
        while t <= last:
            instruments.append(str(inst))
            times.append(t)
            t += step_ns
    out = pd.DataFrame({"instrument": instruments, "entity_ts_ns": pd.array(times, "int64")})
    out["event_timestamp"] = pd.to_datetime(out["entity_ts_ns"], unit="ns", utc=True)
    return out


def _view_record(view: FeatureView, timestamp_field: str) -> dict[str, Any]:
    spec = view.to_proto().spec.SerializeToString(deterministic=True)
    return {
        "name": view.name,
        "version": view.version,
        # Feast numbers a view from v0 (its first apply; the proto reads 0 back as unset)
        "version_number": view.current_version_number or 0,
        "spec_sha256": hashlib.sha256(spec).hexdigest(),
        "ttl_s": view.ttl.total_seconds() if view.ttl else None,
        "timestamp_field": timestamp_field,
        "features": [f.name for f in view.features],
    }


def _retrieve(
    store: FeatureStore,
    cfg: Config,
    view: FeatureView,
    refs: list[str],
    entities: pd.DataFrame,
    mode: Mode,
) -> pd.DataFrame:
    """One call for all ``entities`` (``--chunk-s 0``)."""
    if mode == "as_known_at":
        # the registered view: its source's timestamp is the availability time
        return store.get_historical_features(
            entity_df=entities, features=refs, full_feature_names=True
        ).to_df()
    # the same view and join, on the exchange time of the same lake snapshot
    event_time_view = _view_on(view, offline_event_time_path(cfg), mode)
    return _provider_retrieve(store, event_time_view, refs, entities)


def _view_on(view: FeatureView, path: Path, mode: Mode) -> FeatureView:
    """A copy of ``view`` whose file source reads ``path`` keyed on the mode's timestamp."""
    view = copy.deepcopy(view)
    source = _file_source(view)
    source.timestamp_field = _TIMESTAMP[mode]
    source.file_options.uri = str(path)
    return view


def _provider_retrieve(
    store: FeatureStore, view: FeatureView, refs: list[str], entities: pd.DataFrame
) -> pd.DataFrame:
    # what FeatureStore.get_historical_features calls once it has the registered views
    job = store._get_provider().get_historical_features(
        config=store.config,
        feature_views=[view],
        feature_refs=refs,
        entity_df=entities,
        registry=store.registry,
        project=store.project,
        full_feature_names=True,
    )
    return job.to_df()


def _chunks(entities: pd.DataFrame, chunk_s: int) -> Iterator[pd.DataFrame]:
    """The entity rows by ``chunk_s`` of event time (aligned to multiples since the epoch),
    in time order; each chunk keeps the rows' order (instrument, time)."""
    chunk_ns = chunk_s * 1_000_000_000
    key = entities["entity_ts_ns"] // chunk_ns
    for _, part in entities.groupby(key, sort=True):
        yield part


def _candidates(ts_us: np.ndarray, entity_us: np.ndarray, ttl_us: int) -> np.ndarray:
    """Of one instrument's feature rows (``ts_us`` sorted, no equal times: the export keeps
    the last of equal times), the positions of those a point-in-time join can return for
    entity rows at ``entity_us``: for each entity time ``t`` the newest row at or before
    ``t``, if it is not older than ``t - ttl``. Every other row loses to a newer one for
    every entity row of the chunk, so leaving it out changes no result; it only spares
    Feast's file store the merge with it."""
    pos = np.searchsorted(ts_us, entity_us, side="right") - 1
    keep = pos >= 0
    if ttl_us:
        keep &= ts_us[np.maximum(pos, 0)] >= entity_us - ttl_us
    return np.unique(pos[keep])


def _retrieve_chunked(
    store: FeatureStore,
    view: FeatureView,
    refs: list[str],
    entities: pd.DataFrame,
    offline: pa.Table,
    request: TrainingSetRequest,
    scratch: Path,
) -> pd.DataFrame:
    """Step 4 of the module doc: per chunk, the view's feature rows that the chunk's entity
    rows can join (timestamp in ``[first - TTL, last]``, and of those the newest at or before
    some entity row: :func:`_candidates`) into a file of their own, one retrieval on it; the
    chunks' results in order."""
    mode, ts_column = request.mode, _TIMESTAMP[request.mode]
    columns = ["instrument", ts_column, *(f.name for f in view.features)]
    rows = offline.select(columns)  # sorted by instrument and timestamp (the export)
    ttl_us = int(view.ttl.total_seconds() * 1_000_000) if view.ttl else 0
    instruments = rows["instrument"].to_numpy(zero_copy_only=False)
    ts_all = rows[ts_column].cast(pa.int64()).to_numpy()
    spans: dict[str, tuple[int, np.ndarray]] = {}
    for inst in np.unique(instruments):
        lo, hi = (
            np.searchsorted(instruments, inst, "left"),
            np.searchsorted(instruments, inst, "right"),
        )
        spans[str(inst)] = (int(lo), ts_all[lo:hi])
    path = scratch / f"{view.name}.parquet"
    chunk_view = _view_on(view, path, mode)
    parts = []
    for chunk in _chunks(entities, request.chunk_s):
        picked = []
        for inst, times in chunk.groupby("instrument", sort=True)["entity_ts_ns"]:
            if str(inst) not in spans:
                continue
            offset, ts_us = spans[str(inst)]
            # Feast keeps microseconds: the entity times (a ms grid) are whole ones
            picked.append(offset + _candidates(ts_us, times.to_numpy() // 1000, ttl_us))
        part_rows = rows.take(np.concatenate(picked)) if picked else rows.slice(0, 0)
        # an instrument without rows here has no value in this chunk: Feast's left merge would
        # give it a NaN row, and a NaN turns an integer column into float
        present = set(pc.unique(part_rows["instrument"]).to_pylist())
        chunk = chunk[chunk["instrument"].isin(present)]
        if chunk.empty:
            continue
        pq.write_table(part_rows, path)
        parts.append(_provider_retrieve(store, chunk_view, refs, chunk))
    if not parts:
        return pd.DataFrame(columns=["instrument", "entity_ts_ns"])
    return pd.concat(parts, ignore_index=True)


def _file_source(view: FeatureView) -> FileSource:
    from feast import FileSource

    source = view.batch_source
    if not isinstance(source, FileSource):
        raise TrainingSetError(
            f"feature view {view.name}: its batch source is {type(source).__name__}, not the "
            "lake's FileSource (feature_repo/data_sources.py)"
        )
    return source


def _check_source(cfg: Config, view: FeatureView) -> None:
    want = cfg.feast_dir / "offline" / "features.parquet"
    source = _file_source(view)
    got = Path(source.path)
    if got.resolve() != want.resolve() or source.timestamp_field != "available_time":
        raise TrainingSetError(
            f"feature view {view.name} reads {got} on {source.timestamp_field!r}, "
            f"the export writes {want} keyed on 'available_time': run `feast -c "
            f"{cfg.feast_repo} apply` again with this state directory"
        )


def build_training_set(
    cfg: Config, request: TrainingSetRequest, out: Path, store: FeatureStore | None = None
) -> dict[str, Any]:
    """Write the training set of ``request`` to ``out`` (Parquet); returns the summary that
    is also the file's metadata."""
    store = store or open_store(cfg)
    views = [store.get_feature_view(name) for name in request.views]
    for view in views:
        _check_source(cfg, view)
    snapshot = export_offline(cfg)
    offline = pq.read_table(snapshot["parquet"], columns=["instrument", "ts_event"])
    entities = entity_grid(offline, request.start_ns, request.end_ns, request.step_ms)
    if entities.empty:
        raise TrainingSetError(
            "no feature rows in the window: the lake's features cover "
            f"{_span(offline)}; choose --from/--to inside it"
        )
    columns = [f"{v.name}__{f.name}" for v in views for f in v.features]
    int_columns = {
        f"{v.name}__{f.name}"
        for v in views
        for f in v.features
        if str(f.dtype) in ("Int64", "Int32", "UnixTimestamp")
    }
    offline_rows = None
    if request.chunk_s:
        path = snapshot["parquet" if request.mode == "as_known_at" else "parquet_event_time"]
        offline_rows = pq.read_table(path)
    # one retrieval per view: the file store drops an entity row that has no value inside a
    # view's TTL, and with several views in one call that row's other views went with it
    full = entities
    cfg.feast_dir.mkdir(parents=True, exist_ok=True)
    for view in views:
        refs = [f"{view.name}:{f.name}" for f in view.features]
        names = [f"{view.name}__{f.name}" for f in view.features]
        if offline_rows is None:
            joined = _retrieve(store, cfg, view, refs, entities, request.mode)
        else:
            with tempfile.TemporaryDirectory(prefix="chunks.", dir=cfg.feast_dir) as scratch:
                joined = _retrieve_chunked(
                    store, view, refs, entities, offline_rows, request, Path(scratch)
                )
        for name in names:
            if name not in joined.columns:  # no chunk had a value: all missing
                joined[name] = pd.Series(dtype="Int64" if name in int_columns else "float64")
            # a NaN would have made pandas turn the column into float (ns times lose digits)
            if name in int_columns:
                if joined[name].dtype.kind not in "iu" and str(joined[name].dtype) != "Int64":
                    raise TrainingSetError(f"{name} came back as {joined[name].dtype}")
                joined[name] = joined[name].astype("Int64")  # nullable: the join back keeps ints
        # every entity row, whether Feast returned it or not (step 4 of the module doc)
        full = full.merge(
            joined[["instrument", "entity_ts_ns", *names]],
            on=["instrument", "entity_ts_ns"],
            how="left",
            validate="1:1",
        )
    full = full.sort_values(["instrument", "entity_ts_ns"], kind="stable").reset_index(drop=True)
    fields = [
        pa.field("instrument", pa.string()),
        pa.field("event_timestamp", pa.timestamp("us", "UTC")),
        pa.field("entity_ts_ns", pa.int64()),
    ]
    arrays = [
        pa.array(full["instrument"], pa.string()),
        pa.array(full["entity_ts_ns"] // 1000, pa.int64()).cast(pa.timestamp("us", "UTC")),
        pa.array(full["entity_ts_ns"], pa.int64()),
    ]
    missing: dict[str, int] = {}
    for view in views:
        names = [f"{view.name}__{f.name}" for f in view.features]
        absent = full[names].isna().all(axis=1)
        missing[view.name] = int(absent.sum())
        for name in names:
            kind = pa.int64() if name in int_columns else pa.float64()
            values = full[name]
            mask = values.isna().to_numpy()
            data = values.fillna(0).astype("int64" if kind == pa.int64() else "float64")
            fields.append(pa.field(name, kind))
            arrays.append(pa.array(data.to_numpy(), kind, mask=mask))
    summary: dict[str, Any] = {
        "mode": request.mode,
        "from_ns": request.start_ns,
        "to_ns": request.end_ns,
        "step_ms": request.step_ms,
        "lake_table": snapshot["table"],
        "lake_snapshot_id": snapshot["snapshot_id"],
        "availability_derived": snapshot["availability_derived"],
        "feast_project": store.project,
        "feature_views": [_view_record(v, _TIMESTAMP[request.mode]) for v in views],
        "rows": len(full),
        "instruments": sorted(set(full["instrument"])),
        "entity_ts_ns": [int(full["entity_ts_ns"].min()), int(full["entity_ts_ns"].max())],
        "missing": missing,
        "features": len(columns),
    }
    schema = pa.schema(fields, metadata={METADATA_KEY: json.dumps(summary, sort_keys=True)})
    table = pa.Table.from_arrays(arrays, schema=schema)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, out)
    return {"out": str(out), **summary}


def read_metadata(path: Path) -> dict[str, Any]:
    """The ``bookstream.training_set`` metadata of a training-set Parquet file."""
    meta = pq.read_schema(path).metadata or {}
    if METADATA_KEY not in meta:
        raise TrainingSetError(
            f"{path}: not a bookstream training set (no {METADATA_KEY.decode()})"
        )
    return dict(json.loads(meta[METADATA_KEY]))


def _span(offline: pa.Table) -> str:
    if not offline.num_rows:
        return "nothing"
    ts = offline["ts_event"]
    lo = pd.Timestamp(pc.min(ts).as_py(), unit="ns", tz="UTC")
    hi = pd.Timestamp(pc.max(ts).as_py(), unit="ns", tz="UTC")
    return f"{lo.isoformat()} .. {hi.isoformat()}"
