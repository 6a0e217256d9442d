-- bookstream.drift: the history table of the topics.drift topic as a MergeTree table of a
-- ClickHouse server. Generated from udfs/history.py by jobs/sql.py (`bookstream sql --write-ddl`);
-- tests/unit/test_sql_runner.py keeps this file equal to the generated text. Columns: the record's
-- own fields in wire order (instrument, model, model_version, feature, psi, threshold, alert,
-- rows, window_from_ns, window_to_ns, v), then event_time (exchange time, UTC), _partition and
-- _offset (its Kafka position). Key columns are not Nullable; every other column is, as in
-- Iceberg.
CREATE TABLE IF NOT EXISTS bookstream.drift
(
    `instrument`     LowCardinality(String),
    `model`          Nullable(String),
    `model_version`  LowCardinality(Nullable(String)),
    `feature`        Nullable(String),
    `psi`            Nullable(Float64),
    `threshold`      Nullable(Float64),
    `alert`          Nullable(Bool),
    `rows`           Nullable(Int64),
    `window_from_ns` Nullable(Int64),
    `window_to_ns`   Nullable(Int64),
    `v`              Nullable(Int64),
    `event_time`     DateTime64(6, 'UTC'),
    `_partition`     Int32,
    `_offset`        Int64
)
ENGINE = MergeTree
PARTITION BY toDate(event_time)
ORDER BY (instrument, event_time, _partition, _offset)
