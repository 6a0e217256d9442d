-- Transaction-cost analysis: every fill against the mid at its order's decision (arrival mid).
--
-- The arrival mid is the mid of the feature row that triggered the order (the row of the
-- order's instrument with seq = source_seq and ts_recv = trigger_ts_recv: the book the strategy
-- saw when it decided). Should that row be missing, the mid of the book the venue decided the
-- fill on (book_bid/book_ask of the fill) is used and arrival_source says so. side_sign is +1
-- for a BUY and -1 for a SELL, so a positive slippage or shortfall is a cost, a negative one a
-- gain (a maker fill inside the spread earns part of it). Money is in the quote currency.
-- Fills and orders are identified by report_id / order_id (a record stored twice counts once).
--
-- Columns:
--   instrument, strategy, order_id, report_id, side, liquidity (maker / taker)
--   decision_time, fill_time      exchange/venue times (UTC)
--   order_qty, fill_qty           units (lots / 10^-size_exp)
--   fill_price                    price units
--   arrival_mid                   mid at the decision, price units
--   arrival_source                'features' (the triggering feature row) or 'fill_book'
--   fill_book_mid                 mid of the book the fill was decided on, price units
--   slippage_ticks                side_sign x (fill price - arrival mid), ticks
--   slippage_bps                  the same relative to the arrival mid, basis points
--   shortfall                     side_sign x (fill price - arrival mid) x fill qty, money
--   fee                           the fill's fee (positive = paid), money
--   total_cost, total_cost_bps    shortfall + fee, and that over the arrival notional
--   arrival_notional              arrival mid x fill qty, money
WITH
fills AS
(
    SELECT *
    FROM bookstream.executions
    WHERE kind = 'fill'
    ORDER BY _partition, _offset
    LIMIT 1 BY report_id
),
orders AS
(
    SELECT order_id, strategy, quantity, source_seq, trigger_ts_recv, event_time
    FROM bookstream.orders
    WHERE action = 'new'
    ORDER BY _partition, _offset
    LIMIT 1 BY order_id
),
decision AS
(
    SELECT instrument, seq, ts_recv, mid
    FROM bookstream.features
    ORDER BY _partition, _offset
    LIMIT 1 BY instrument, seq, ts_recv
),
joined AS
(
    SELECT
        f.instrument AS instrument,
        o.strategy AS strategy,
        f.order_id AS order_id,
        f.report_id AS report_id,
        f.side AS side,
        f.liquidity AS liquidity,
        o.event_time AS decision_time,
        f.event_time AS fill_time,
        if(f.side = 'BUY', 1, -1) AS side_sign,
        exp10(-f.price_exp) AS tick_div,
        exp10(-f.size_exp) AS lot_div,
        o.quantity AS order_lots,
        f.fill_qty AS fill_lots,
        f.fill_price AS fill_ticks,
        d.mid AS decision_mid_ticks,
        (f.book_bid + f.book_ask) / 2 AS book_mid_ticks,
        f.fee AS fee
    FROM fills AS f
    LEFT JOIN orders AS o ON o.order_id = f.order_id
    LEFT JOIN decision AS d
        ON d.instrument = f.instrument AND d.seq = o.source_seq
           AND d.ts_recv = o.trigger_ts_recv
)
SELECT
    instrument,
    strategy,
    order_id,
    report_id,
    side,
    liquidity,
    decision_time,
    fill_time,
    order_lots / lot_div AS order_qty,
    fill_lots / lot_div AS fill_qty,
    fill_ticks / tick_div AS fill_price,
    coalesce(decision_mid_ticks, book_mid_ticks) AS arrival_mid_ticks,
    arrival_mid_ticks / tick_div AS arrival_mid,
    if(decision_mid_ticks IS NULL, 'fill_book', 'features') AS arrival_source,
    book_mid_ticks / tick_div AS fill_book_mid,
    side_sign * (fill_ticks - arrival_mid_ticks) AS slippage_ticks,
    slippage_ticks / arrival_mid_ticks * 10000 AS slippage_bps,
    slippage_ticks / tick_div * fill_qty AS shortfall,
    fee,
    shortfall + fee AS total_cost,
    arrival_mid * fill_qty AS arrival_notional,
    total_cost / arrival_notional * 10000 AS total_cost_bps
FROM joined
ORDER BY instrument, fill_time, report_id
SETTINGS join_use_nulls = 1
