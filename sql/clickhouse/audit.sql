-- bookstream.audit: the hash-chained audit table (udfs/audit.py) as a MergeTree table of a
-- ClickHouse server. Generated from udfs/history.py by jobs/sql.py (`bookstream sql --write-ddl`);
-- tests/unit/test_sql_runner.py keeps this file equal to the generated text. Columns: the record's
-- own fields in wire order (chain, seq, kind, instrument, ts_event, record, prev_hash, hash), then
-- event_time (exchange time, UTC), _partition and _offset (its Kafka position). Key columns are
-- not Nullable; every other column is, as in Iceberg.
CREATE TABLE IF NOT EXISTS bookstream.audit
(
    `chain`      String,
    `seq`        Int64,
    `kind`       LowCardinality(Nullable(String)),
    `instrument` LowCardinality(Nullable(String)),
    `ts_event`   Nullable(Int64),
    `record`     Nullable(String),
    `prev_hash`  Nullable(String),
    `hash`       Nullable(String),
    `event_time` DateTime64(6, 'UTC'),
    `_partition` Nullable(Int32),
    `_offset`    Nullable(Int64)
)
ENGINE = MergeTree
PARTITION BY toDate(event_time)
ORDER BY (chain, seq, event_time)
