-- bookstream.signals: the history table of the topics.signals topic as a MergeTree table of a
-- ClickHouse server. Generated from udfs/history.py by jobs/sql.py (`bookstream sql --write-ddl`);
-- tests/unit/test_sql_runner.py keeps this file equal to the generated text. Columns: the record's
-- own fields in wire order (instrument, strategy, ts_event, seq, score, direction, traded,
-- model_version, v), then event_time (exchange time, UTC), _partition and _offset (its Kafka
-- position). Key columns are not Nullable; every other column is, as in Iceberg.
CREATE TABLE IF NOT EXISTS bookstream.signals
(
    `instrument`    LowCardinality(String),
    `strategy`      LowCardinality(Nullable(String)),
    `ts_event`      Nullable(Int64),
    `seq`           Nullable(Int64),
    `score`         Nullable(Float64),
    `direction`     Nullable(Int64),
    `traded`        Nullable(Bool),
    `model_version` LowCardinality(Nullable(String)),
    `v`             Nullable(Int64),
    `event_time`    DateTime64(6, 'UTC'),
    `_partition`    Int32,
    `_offset`       Int64
)
ENGINE = MergeTree
PARTITION BY toDate(event_time)
ORDER BY (instrument, event_time, _partition, _offset)
