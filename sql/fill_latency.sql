-- Fill latency per instrument: from the order's decision to each of its fills, in event time.
--
-- latency = fill ts_event (venue time of the fill) - order ts_event (decision time: exchange
-- time of the triggering event + feed latency), in milliseconds. A taker fill's latency is the
-- entry latency to the venue; a maker fill's also includes the time the order rested in the
-- queue. Percentiles interpolate linearly between the two nearest ranks
-- (quantilesExactInclusive, the same as numpy.quantile's default 'linear' method). Fills and
-- orders are identified by report_id / order_id (a record stored twice counts once).
--
-- Columns:
--   instrument
--   fills                     fills with a known order
--   maker_fills, taker_fills
--   min_ms, p50_ms, p95_ms, p99_ms, max_ms, avg_ms   latency statistics, milliseconds
WITH
fills AS
(
    SELECT report_id, order_id, instrument, liquidity, ts_event
    FROM bookstream.executions
    WHERE kind = 'fill'
    ORDER BY _partition, _offset
    LIMIT 1 BY report_id
),
orders AS
(
    SELECT order_id, ts_event
    FROM bookstream.orders
    WHERE action = 'new'
    ORDER BY _partition, _offset
    LIMIT 1 BY order_id
),
latency AS
(
    SELECT f.instrument AS instrument, f.liquidity AS liquidity,
           (f.ts_event - o.ts_event) / 1e6 AS ms
    FROM fills AS f
    INNER JOIN orders AS o ON o.order_id = f.order_id
)
SELECT instrument, fills, maker_fills, taker_fills, min_ms,
       q[1] AS p50_ms, q[2] AS p95_ms, q[3] AS p99_ms, max_ms, avg_ms
FROM
(
    SELECT
        instrument,
        count() AS fills,
        countIf(liquidity = 'maker') AS maker_fills,
        countIf(liquidity = 'taker') AS taker_fills,
        min(ms) AS min_ms,
        quantilesExactInclusive(0.5, 0.95, 0.99)(ms) AS q,
        max(ms) AS max_ms,
        avg(ms) AS avg_ms
    FROM latency
    GROUP BY instrument
)
ORDER BY instrument
