-- bookstream.quality: the history table of the topics.quality topic as a MergeTree table of a
-- ClickHouse server. Generated from udfs/history.py by jobs/sql.py (`bookstream sql --write-ddl`);
-- tests/unit/test_sql_runner.py keeps this file equal to the generated text. Columns: the record's
-- own fields in wire order (instrument, minute_start, events, sequence_gaps, resyncs, crossed,
-- locked, stale_gaps, max_gap_ms, out_of_order, late, duplicates, v), then event_time (exchange
-- time, UTC), _partition and _offset (its Kafka position). Key columns are not Nullable; every
-- other column is, as in Iceberg.
CREATE TABLE IF NOT EXISTS bookstream.quality
(
    `instrument`    LowCardinality(String),
    `minute_start`  Nullable(Int64),
    `events`        Nullable(Int64),
    `sequence_gaps` Nullable(Int64),
    `resyncs`       Nullable(Int64),
    `crossed`       Nullable(Int64),
    `locked`        Nullable(Int64),
    `stale_gaps`    Nullable(Int64),
    `max_gap_ms`    Nullable(Float64),
    `out_of_order`  Nullable(Int64),
    `late`          Nullable(Int64),
    `duplicates`    Nullable(Int64),
    `v`             Nullable(Int64),
    `event_time`    DateTime64(6, 'UTC'),
    `_partition`    Int32,
    `_offset`       Int64
)
ENGINE = MergeTree
PARTITION BY toDate(event_time)
ORDER BY (instrument, event_time, _partition, _offset)
