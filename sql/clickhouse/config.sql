-- bookstream.config: the history table of the topics.config topic as a MergeTree table of a
-- ClickHouse server. Generated from udfs/history.py by jobs/sql.py (`bookstream sql --write-ddl`);
-- tests/unit/test_sql_runner.py keeps this file equal to the generated text. Columns: the record's
-- own fields in wire order (process, config_hash, settings, ts_event, host, pid, v), then
-- event_time (exchange time, UTC), _partition and _offset (its Kafka position). Key columns are
-- not Nullable; every other column is, as in Iceberg.
CREATE TABLE IF NOT EXISTS bookstream.config
(
    `process`     Nullable(String),
    `config_hash` Nullable(String),
    `settings`    Nullable(String),
    `ts_event`    Nullable(Int64),
    `host`        Nullable(String),
    `pid`         Nullable(Int64),
    `v`           Nullable(Int64),
    `event_time`  DateTime64(6, 'UTC'),
    `_partition`  Int32,
    `_offset`     Int64
)
ENGINE = MergeTree
PARTITION BY toDate(event_time)
ORDER BY (event_time, _partition, _offset)
