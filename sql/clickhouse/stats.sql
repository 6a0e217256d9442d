-- bookstream.stats: the history table of the topics.stats topic as a MergeTree table of a
-- ClickHouse server. Generated from udfs/history.py by jobs/sql.py (`bookstream sql --write-ddl`);
-- tests/unit/test_sql_runner.py keeps this file equal to the generated text. Columns: the record's
-- own fields in wire order (instrument, watermark_ms, events_in, events_processed, dead_lettered,
-- signals, orders, book_levels, unkeyed_dead, ts_proc, v), then event_time (exchange time, UTC),
-- _partition and _offset (its Kafka position). Key columns are not Nullable; every other column
-- is, as in Iceberg.
CREATE TABLE IF NOT EXISTS bookstream.stats
(
    `instrument`       LowCardinality(String),
    `watermark_ms`     Nullable(Int64),
    `events_in`        Nullable(Int64),
    `events_processed` Nullable(Int64),
    `dead_lettered`    Nullable(Int64),
    `signals`          Nullable(Int64),
    `orders`           Nullable(Int64),
    `book_levels`      Nullable(Int64),
    `unkeyed_dead`     Nullable(Int64),
    `ts_proc`          Nullable(Int64),
    `v`                Nullable(Int64),
    `event_time`       DateTime64(6, 'UTC'),
    `_partition`       Int32,
    `_offset`          Int64
)
ENGINE = MergeTree
PARTITION BY toDate(event_time)
ORDER BY (instrument, event_time, _partition, _offset)
