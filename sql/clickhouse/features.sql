-- bookstream.features: the history table of the topics.features topic as a MergeTree table of a
-- ClickHouse server. Generated from udfs/history.py by jobs/sql.py (`bookstream sql --write-ddl`);
-- tests/unit/test_sql_runner.py keeps this file equal to the generated text. Columns: the record's
-- own fields in wire order (instrument, ts_event, ts_recv, seq, price_exp, size_exp, best_bid,
-- best_ask, bid_size, ask_size, spread, mid, microprice, imbalance_1, imbalance_2, imbalance_3,
-- imbalance_4, imbalance_5, bid_depth, ask_depth, ofi, ofi_window, rv, trade_volume,
-- trade_signed_volume, trade_count, ts_proc, ts_avail, v, best_bid_px, best_ask_px, spread_px,
-- mid_px, microprice_px, bid_size_qty, ask_size_qty, bid_depth_qty, ask_depth_qty,
-- trade_volume_qty, trade_signed_volume_qty), then event_time (exchange time, UTC), _partition and
-- _offset (its Kafka position). Key columns are not Nullable; every other column is, as in
-- Iceberg.
CREATE TABLE IF NOT EXISTS bookstream.features
(
    `instrument`              LowCardinality(String),
    `ts_event`                Nullable(Int64),
    `ts_recv`                 Nullable(Int64),
    `seq`                     Nullable(Int64),
    `price_exp`               Nullable(Int64),
    `size_exp`                Nullable(Int64),
    `best_bid`                Nullable(Int64),
    `best_ask`                Nullable(Int64),
    `bid_size`                Nullable(Int64),
    `ask_size`                Nullable(Int64),
    `spread`                  Nullable(Int64),
    `mid`                     Nullable(Float64),
    `microprice`              Nullable(Float64),
    `imbalance_1`             Nullable(Float64),
    `imbalance_2`             Nullable(Float64),
    `imbalance_3`             Nullable(Float64),
    `imbalance_4`             Nullable(Float64),
    `imbalance_5`             Nullable(Float64),
    `bid_depth`               Nullable(Int64),
    `ask_depth`               Nullable(Int64),
    `ofi`                     Nullable(Float64),
    `ofi_window`              Nullable(Float64),
    `rv`                      Nullable(Float64),
    `trade_volume`            Nullable(Int64),
    `trade_signed_volume`     Nullable(Int64),
    `trade_count`             Nullable(Int64),
    `ts_proc`                 Nullable(Int64),
    `ts_avail`                Nullable(Int64),
    `v`                       Nullable(Int64),
    `best_bid_px`             Nullable(Float64),
    `best_ask_px`             Nullable(Float64),
    `spread_px`               Nullable(Float64),
    `mid_px`                  Nullable(Float64),
    `microprice_px`           Nullable(Float64),
    `bid_size_qty`            Nullable(Float64),
    `ask_size_qty`            Nullable(Float64),
    `bid_depth_qty`           Nullable(Float64),
    `ask_depth_qty`           Nullable(Float64),
    `trade_volume_qty`        Nullable(Float64),
    `trade_signed_volume_qty` Nullable(Float64),
    `event_time`              DateTime64(6, 'UTC'),
    `_partition`              Int32,
    `_offset`                 Int64
)
ENGINE = MergeTree
PARTITION BY toDate(event_time)
ORDER BY (instrument, event_time, _partition, _offset)
