-- bookstream.risk: the history table of the topics.risk topic as a MergeTree table of a ClickHouse
-- server. Generated from udfs/history.py by jobs/sql.py (`bookstream sql --write-ddl`);
-- tests/unit/test_sql_runner.py keeps this file equal to the generated text. Columns: the record's
-- own fields in wire order (ts_event, var_99, es_99, drawdown, equity, realised_pnl,
-- unrealised_pnl, fees, positions, scenarios, v), then event_time (exchange time, UTC), _partition
-- and _offset (its Kafka position). Key columns are not Nullable; every other column is, as in
-- Iceberg.
CREATE TABLE IF NOT EXISTS bookstream.risk
(
    `ts_event`       Nullable(Int64),
    `var_99`         Nullable(Float64),
    `es_99`          Nullable(Float64),
    `drawdown`       Nullable(Float64),
    `equity`         Nullable(Float64),
    `realised_pnl`   Nullable(Float64),
    `unrealised_pnl` Nullable(Float64),
    `fees`           Nullable(Float64),
    `positions`      Nullable(String),
    `scenarios`      Nullable(Int64),
    `v`              Nullable(Int64),
    `event_time`     DateTime64(6, 'UTC'),
    `_partition`     Int32,
    `_offset`        Int64
)
ENGINE = MergeTree
PARTITION BY toDate(event_time)
ORDER BY (event_time, _partition, _offset)
