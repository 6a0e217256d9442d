-- Data quality per instrument and minute, plus a total per instrument, from bookstream.quality.
--
-- The stream job counts, per instrument and minute of exchange time (udfs/market/quality.py): events,
-- sequence gaps (chain breaks), re-syncs (snapshots after the first), crossed and locked books,
-- stale gaps (silences longer than quality.stale_after_ms), the longest silence, out-of-order,
-- late and duplicate events. A minute can be emitted again, complete, when a stream resumes
-- after its end: per (instrument, minute_start) the row stored last (largest Kafka position)
-- wins. The total row of an instrument (row_kind = 'total', minute NULL) sums its minutes
-- (max_gap_ms: the largest).
--
-- Columns:
--   instrument
--   row_kind             'minute' or 'total' (the total follows the instrument's minutes)
--   minute               start of the minute, UTC (NULL on the total)
--   minutes              minutes covered (1 on a minute row)
--   events, sequence_gaps, resyncs, crossed, locked, stale_gaps, out_of_order, late, duplicates
--   max_gap_ms           longest silence between two records ending in the minute(s), ms
--   issues               sequence_gaps + resyncs + crossed + locked + stale_gaps + out_of_order
--                        + late + duplicates
--   issues_per_1k_events issues / events x 1000
WITH latest AS
(
    SELECT *
    FROM bookstream.quality
    ORDER BY _partition DESC, _offset DESC
    LIMIT 1 BY instrument, minute_start
)
SELECT
    instrument,
    if(grouping(minute_start) = 1, 'total', 'minute') AS row_kind,
    if(grouping(minute_start) = 1, NULL, fromUnixTimestamp64Nano(minute_start, 'UTC'))
        AS minute,
    count() AS minutes,
    sum(events) AS events,
    sum(sequence_gaps) AS sequence_gaps,
    sum(resyncs) AS resyncs,
    sum(crossed) AS crossed,
    sum(locked) AS locked,
    sum(stale_gaps) AS stale_gaps,
    sum(out_of_order) AS out_of_order,
    sum(late) AS late,
    sum(duplicates) AS duplicates,
    max(max_gap_ms) AS max_gap_ms,
    sequence_gaps + resyncs + crossed + locked + stale_gaps + out_of_order + late + duplicates
        AS issues,
    issues / nullIf(events, 0) * 1000 AS issues_per_1k_events
FROM latest
GROUP BY GROUPING SETS ((instrument, minute_start), (instrument))
ORDER BY instrument, grouping(minute_start), minute_start
