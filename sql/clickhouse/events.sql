-- bookstream.events: the history table of the topics.events topic as a MergeTree table of a
-- ClickHouse server. Generated from udfs/history.py by jobs/sql.py (`bookstream sql --write-ddl`);
-- tests/unit/test_sql_runner.py keeps this file equal to the generated text. Columns: the record's
-- own fields in wire order (instrument, venue, kind, side, price, size, ts_event, ts_recv,
-- price_exp, size_exp, order_id, seq, seq_first, seq_prev, ts_proc, flags, v), then event_time
-- (exchange time, UTC), _partition and _offset (its Kafka position). Key columns are not Nullable;
-- every other column is, as in Iceberg.
CREATE TABLE IF NOT EXISTS bookstream.events
(
    `instrument` LowCardinality(String),
    `venue`      LowCardinality(Nullable(String)),
    `kind`       LowCardinality(Nullable(String)),
    `side`       LowCardinality(Nullable(String)),
    `price`      Nullable(Int64),
    `size`       Nullable(Int64),
    `ts_event`   Nullable(Int64),
    `ts_recv`    Nullable(Int64),
    `price_exp`  Nullable(Int64),
    `size_exp`   Nullable(Int64),
    `order_id`   Nullable(Int64),
    `seq`        Nullable(Int64),
    `seq_first`  Nullable(Int64),
    `seq_prev`   Nullable(Int64),
    `ts_proc`    Nullable(Int64),
    `flags`      Nullable(Int64),
    `v`          Nullable(Int64),
    `event_time` DateTime64(6, 'UTC'),
    `_partition` Int32,
    `_offset`    Int64
)
ENGINE = MergeTree
PARTITION BY toDate(event_time)
ORDER BY (instrument, event_time, _partition, _offset)
