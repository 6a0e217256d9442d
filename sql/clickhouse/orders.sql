-- bookstream.orders: the history table of the topics.orders topic as a MergeTree table of a
-- ClickHouse server. Generated from udfs/history.py by jobs/sql.py (`bookstream sql --write-ddl`);
-- tests/unit/test_sql_runner.py keeps this file equal to the generated text. Columns: the record's
-- own fields in wire order (order_id, instrument, strategy, action, side, order_type, price,
-- quantity, price_exp, size_exp, ts_event, source_seq, parent_id, reduce_only, tif,
-- trigger_ts_recv, v), then event_time (exchange time, UTC), _partition and _offset (its Kafka
-- position). Key columns are not Nullable; every other column is, as in Iceberg.
CREATE TABLE IF NOT EXISTS bookstream.orders
(
    `order_id`        Nullable(String),
    `instrument`      LowCardinality(String),
    `strategy`        LowCardinality(Nullable(String)),
    `action`          LowCardinality(Nullable(String)),
    `side`            LowCardinality(Nullable(String)),
    `order_type`      LowCardinality(Nullable(String)),
    `price`           Nullable(Int64),
    `quantity`        Nullable(Int64),
    `price_exp`       Nullable(Int64),
    `size_exp`        Nullable(Int64),
    `ts_event`        Nullable(Int64),
    `source_seq`      Nullable(Int64),
    `parent_id`       Nullable(String),
    `reduce_only`     Nullable(Bool),
    `tif`             LowCardinality(Nullable(String)),
    `trigger_ts_recv` Nullable(Int64),
    `v`               Nullable(Int64),
    `event_time`      DateTime64(6, 'UTC'),
    `_partition`      Int32,
    `_offset`         Int64
)
ENGINE = MergeTree
PARTITION BY toDate(event_time)
ORDER BY (instrument, event_time, _partition, _offset)
