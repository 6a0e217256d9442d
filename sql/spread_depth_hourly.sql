-- Spread and depth statistics per instrument and hour, from bookstream.features.
--
-- One feature row per applied batch (book update) with both sides present: the statistics
-- below are per update (event-weighted), except twa_spread_ticks, which weights each row by
-- how long it prevailed: until the instrument's next row, at most until the end of the row's
-- hour (the last row of an instrument weighs nothing). Percentiles interpolate linearly
-- between the two nearest ranks (quantileExactInclusive = numpy's default 'linear').
-- A feature row stored twice (same instrument, seq, ts_event, ts_recv) is counted once.
--
-- Columns:
--   instrument, hour (UTC start)
--   updates                     feature rows in the hour
--   avg_spread_ticks, median_spread_ticks, p95_spread_ticks, max_spread_ticks   spread in ticks
--   twa_spread_ticks            time-weighted average spread, ticks
--   avg_spread, median_spread, p95_spread   the same in price units
--   avg_spread_bps              spread / mid x 10^4, averaged
--   avg_bid_size, avg_ask_size  top-of-book sizes, units (lots / 10^-size_exp)
--   avg_bid_depth, avg_ask_depth  size on the top N levels of each side (N = features.depth_levels)
--   price_exp, size_exp
WITH rows AS
(
    SELECT instrument, ts_event, ts_recv, seq, spread, mid, bid_size, ask_size, bid_depth,
           ask_depth, price_exp, size_exp, event_time, _partition, _offset
    FROM bookstream.features
    WHERE spread IS NOT NULL
    ORDER BY _partition, _offset
    LIMIT 1 BY instrument, seq, ts_event, ts_recv
),
timed AS
(
    SELECT *,
        (intDiv(ts_event, 3600000000000) + 1) * 3600000000000 AS hour_end_ns,
        leadInFrame(ts_event, 1, ts_event) OVER (
            PARTITION BY instrument ORDER BY ts_event, _partition, _offset
            ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING) AS next_ts
    FROM rows
)
SELECT
    instrument,
    toStartOfHour(event_time) AS hour,
    count() AS updates,
    avg(spread) AS avg_spread_ticks,
    quantileExactInclusive(0.5)(spread) AS median_spread_ticks,
    quantileExactInclusive(0.95)(spread) AS p95_spread_ticks,
    max(spread) AS max_spread_ticks,
    sum(toFloat64(spread) * (least(next_ts, hour_end_ns) - ts_event))
        / nullIf(sum(least(next_ts, hour_end_ns) - ts_event), 0) AS twa_spread_ticks,
    avg_spread_ticks / exp10(-price_exp) AS avg_spread,
    median_spread_ticks / exp10(-price_exp) AS median_spread,
    p95_spread_ticks / exp10(-price_exp) AS p95_spread,
    avg(spread / mid) * 10000 AS avg_spread_bps,
    avg(bid_size) / exp10(-size_exp) AS avg_bid_size,
    avg(ask_size) / exp10(-size_exp) AS avg_ask_size,
    avg(bid_depth) / exp10(-size_exp) AS avg_bid_depth,
    avg(ask_depth) / exp10(-size_exp) AS avg_ask_depth,
    price_exp,
    size_exp
FROM timed
GROUP BY instrument, hour, price_exp, size_exp
ORDER BY instrument, hour
