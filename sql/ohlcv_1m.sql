-- 1-minute OHLCV bars per instrument, from the trades in bookstream.events.
--
-- Trades are the events of kind execute, hidden_trade, cross_trade and trade (LOBSTER 4/5/6,
-- Binance trade prints); price is integer ticks of 10^price_exp, size integer lots of
-- 10^size_exp. Within a minute (UTC, of exchange time) the trades are ordered by
-- (ts_event, _partition, _offset), so open and close are the exact first and last print even
-- when several share a nanosecond. A trade stored twice (the same input published again:
-- same instrument, kind, side, price, size, order_id, seq and times) is counted once.
--
-- Columns:
--   instrument             SYMBOL.VENUE
--   minute                 start of the minute, UTC
--   open, high, low, close price units (ticks / 10^-price_exp)
--   open_ticks .. close_ticks  the same in integer ticks (exact)
--   volume                 traded quantity in units (lots / 10^-size_exp)
--   volume_lots            the same in integer lots (exact)
--   vwap                   volume-weighted average price, price units
--   notional               sum of price x quantity, quote currency
--   trades                 number of trades
--   first_trade, last_trade  exchange times of the open and the close
--   price_exp, size_exp    the exponents of the ticks and lots
WITH trades AS
(
    SELECT instrument, kind, side, price, size, order_id, seq, ts_event, ts_recv,
           price_exp, size_exp, event_time, _partition, _offset
    FROM bookstream.events
    WHERE kind IN ('execute', 'hidden_trade', 'cross_trade', 'trade')
    ORDER BY _partition, _offset
    LIMIT 1 BY instrument, kind, side, price, size, order_id, seq, ts_event, ts_recv
)
SELECT
    instrument,
    toStartOfMinute(event_time) AS minute,
    open_ticks / exp10(-price_exp) AS open,
    high_ticks / exp10(-price_exp) AS high,
    low_ticks / exp10(-price_exp) AS low,
    close_ticks / exp10(-price_exp) AS close,
    argMin(price, (ts_event, _partition, _offset)) AS open_ticks,
    max(price) AS high_ticks,
    min(price) AS low_ticks,
    argMax(price, (ts_event, _partition, _offset)) AS close_ticks,
    volume_lots / exp10(-size_exp) AS volume,
    sum(size) AS volume_lots,
    toFloat64(sum(toInt128(price) * size)) / volume_lots / exp10(-price_exp) AS vwap,
    toFloat64(sum(toInt128(price) * size)) / exp10(-price_exp - size_exp) AS notional,
    count() AS trades,
    min(event_time) AS first_trade,
    max(event_time) AS last_trade,
    price_exp,
    size_exp
FROM trades
GROUP BY instrument, minute, price_exp, size_exp
ORDER BY instrument, minute
