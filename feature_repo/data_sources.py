"""Feast data sources over the lake's ``features`` table.

Batch: the Parquet export of one recorded Iceberg snapshot (``bookstream feast-export`` writes
it under ``<state>/feast/offline/`` with the snapshot id beside it). Stream: one
``PushSource`` per stream-fed view (``bookstream feast-push`` pushes the features topic there).
The source's timestamp is ``available_time``: when the live path could first have used the
row, in event time (the row's ``ts_avail``: exchange time + modelled feed and processing
latency, rounded *up* to Feast's microseconds so no value is joined before it was available).
Feast's point-in-time join on it gives training sets "as known at" each entity row's time;
``event_time`` (the exchange time, the lake's timestamp column) stays in the file, and
``bookstream features training-set --event-time`` joins on it instead, to show the
difference."""

from feast import FileSource, PushSource
from feast.data_format import ParquetFormat

from udfs.config import load_config

OFFLINE_FEATURES = load_config().feast_dir / "offline" / "features.parquet"
"""Where ``bookstream feast-export`` writes the features table (absolute: the SQL registry is
shared by processes with different working directories)."""

features_batch = FileSource(
    name="features_lake",
    path=str(OFFLINE_FEATURES),
    file_format=ParquetFormat(),
    timestamp_field="available_time",
    description="The lake's features table at a recorded Iceberg snapshot.",
    owner="quant@bookstream",
    tags={"lake_table": "features"},
)

book_push = PushSource(
    name="book_push",
    batch_source=features_batch,
    description="Per-event book features pushed from the features topic.",
)

window_push = PushSource(
    name="window_push",
    batch_source=features_batch,
    description="Windowed features (volatility, trade flow, OFI) pushed from the features topic.",
)
