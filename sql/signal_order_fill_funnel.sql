-- Signal -> order -> fill funnel per instrument and strategy (signals, orders, executions).
--
-- How far each strategy's decisions got: the signals it emitted (shadow models' are recorded
-- with traded = false and never become orders), the new orders sent, how many of those the
-- execution sink acknowledged or rejected (pre-trade risk or the venue; a refused *cancel*
-- request, reason 'cancel: ...', is not a rejected order), and how many were filled.
-- Execution reports carry no strategy: they reach it through their order_id. Orders and
-- reports are identified by their ids (order_id + action, report_id), which are derived from
-- the inputs, so a record stored twice counts once; a signal stored twice (same content)
-- counts once too.
--
-- Columns:
--   instrument, strategy
--   signals             signals emitted (every direction, traded or shadow)
--   traded_signals      signals with traded = true (the strategy's orders follow from these)
--   directional_signals traded signals with direction != 0
--   orders              new orders (cancels and heartbeats excluded)
--   acked               orders with an ack from the venue
--   rejected            orders refused (risk or venue)
--   risk_rejected       of which by pre-trade risk
--   filled_orders       orders with at least one fill
--   fills               fill reports
--   filled_lots         lots filled in total
--   canceled            orders that ended canceled (by the strategy, a cancel-all or IOC)
--   ack_rate, fill_rate acked / orders, filled_orders / orders
WITH
sig AS
(
    SELECT instrument, strategy,
           count() AS signals,
           countIf(traded) AS traded_signals,
           countIf(traded AND direction != 0) AS directional_signals
    FROM
    (
        SELECT DISTINCT instrument, strategy, ts_event, seq, score, direction, traded,
                        model_version, v
        FROM bookstream.signals
    )
    GROUP BY instrument, strategy
),
ord AS
(
    SELECT DISTINCT order_id, instrument, strategy
    FROM bookstream.orders
    WHERE action = 'new'
),
rep AS
(
    SELECT order_id,
           countIf(kind = 'ack') > 0 AS acked,
           countIf(kind = 'reject' AND NOT startsWith(reason, 'cancel:')) > 0 AS rejected,
           countIf(kind = 'reject' AND endsWith(report_id, ':risk-reject')) > 0 AS risk_rejected,
           countIf(kind = 'fill') AS fills,
           sumIf(fill_qty, kind = 'fill') AS filled_lots,
           countIf(kind = 'canceled') > 0 AS canceled
    FROM
    (
        SELECT report_id, order_id, kind, reason, fill_qty
        FROM bookstream.executions
        ORDER BY _partition, _offset
        LIMIT 1 BY report_id
    )
    GROUP BY order_id
),
fun AS
(
    SELECT o.instrument AS instrument, o.strategy AS strategy,
           count() AS orders,
           countIf(r.acked) AS acked,
           countIf(r.rejected) AS rejected,
           countIf(r.risk_rejected) AS risk_rejected,
           countIf(r.fills > 0) AS filled_orders,
           sum(coalesce(r.fills, 0)) AS fills,
           sum(coalesce(r.filled_lots, 0)) AS filled_lots,
           countIf(r.canceled) AS canceled
    FROM ord AS o
    LEFT JOIN rep AS r ON r.order_id = o.order_id
    GROUP BY o.instrument, o.strategy
)
SELECT
    instrument,
    strategy,
    coalesce(sig.signals, 0) AS signals,
    coalesce(sig.traded_signals, 0) AS traded_signals,
    coalesce(sig.directional_signals, 0) AS directional_signals,
    coalesce(fun.orders, 0) AS orders,
    coalesce(fun.acked, 0) AS acked,
    coalesce(fun.rejected, 0) AS rejected,
    coalesce(fun.risk_rejected, 0) AS risk_rejected,
    coalesce(fun.filled_orders, 0) AS filled_orders,
    coalesce(fun.fills, 0) AS fills,
    coalesce(fun.filled_lots, 0) AS filled_lots,
    coalesce(fun.canceled, 0) AS canceled,
    acked / nullIf(orders, 0) AS ack_rate,
    filled_orders / nullIf(orders, 0) AS fill_rate
FROM sig
FULL OUTER JOIN fun USING (instrument, strategy)
ORDER BY instrument, strategy
SETTINGS join_use_nulls = 1
