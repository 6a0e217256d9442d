-- bookstream.executions: the history table of the topics.executions topic as a MergeTree table of
-- a ClickHouse server. Generated from udfs/history.py by jobs/sql.py (`bookstream sql --write-
-- ddl`); tests/unit/test_sql_runner.py keeps this file equal to the generated text. Columns: the
-- record's own fields in wire order (report_id, order_id, instrument, kind, ts_event, reason,
-- side, fill_price, fill_qty, leaves_qty, fee, liquidity, book_bid, book_ask, book_bid_size,
-- book_ask_size, queue_ahead, position, price_exp, size_exp, v), then event_time (exchange time,
-- UTC), _partition and _offset (its Kafka position). Key columns are not Nullable; every other
-- column is, as in Iceberg.
CREATE TABLE IF NOT EXISTS bookstream.executions
(
    `report_id`     Nullable(String),
    `order_id`      Nullable(String),
    `instrument`    LowCardinality(String),
    `kind`          LowCardinality(Nullable(String)),
    `ts_event`      Nullable(Int64),
    `reason`        Nullable(String),
    `side`          LowCardinality(Nullable(String)),
    `fill_price`    Nullable(Int64),
    `fill_qty`      Nullable(Int64),
    `leaves_qty`    Nullable(Int64),
    `fee`           Nullable(Float64),
    `liquidity`     LowCardinality(Nullable(String)),
    `book_bid`      Nullable(Int64),
    `book_ask`      Nullable(Int64),
    `book_bid_size` Nullable(Int64),
    `book_ask_size` Nullable(Int64),
    `queue_ahead`   Nullable(Int64),
    `position`      Nullable(Int64),
    `price_exp`     Nullable(Int64),
    `size_exp`      Nullable(Int64),
    `v`             Nullable(Int64),
    `event_time`    DateTime64(6, 'UTC'),
    `_partition`    Int32,
    `_offset`       Int64
)
ENGINE = MergeTree
PARTITION BY toDate(event_time)
ORDER BY (instrument, event_time, _partition, _offset)
