-- Dead letters by source (Kafka topic or file), stage and reason code, from bookstream.dead_letters.
--
-- Every refused record is a row of bookstream.dead_letters: source is 'kafka:<topic>' (with the
-- record's partition and offset) or 'file:<path>' (offset = line number), stage says who refused
-- it (ingest, features or history) and reason_code why (malformed, schema, late,
-- sequence_gap, ...); reason has the detail. Each refusal counts once: a stage restarted from
-- its last checkpoint (the Flink job, the history sink) refuses the same record again, so rows
-- with the same source, partition, offset, stage and reason code are one dead letter.
--
-- Columns:
--   source_kind          kafka or file
--   source_name          the topic or the file path
--   stage, reason_code
--   dead_letters         rows
--   keys                 distinct Kafka keys (instruments) among them
--   partitions           the partitions they came from (sorted)
--   first_offset, last_offset   smallest and largest offset (line for files) in the group
--   first_time, last_time       exchange time (or refusal time when there is none), UTC
--   first_reason         the reason text of the earliest refusal (by partition, offset)
SELECT
    if(position(source, ':') > 0, substring(source, 1, position(source, ':') - 1), '')
        AS source_kind,
    if(position(source, ':') > 0, substring(source, position(source, ':') + 1), source)
        AS source_name,
    stage,
    reason_code,
    count() AS dead_letters,
    uniqExact(key) AS keys,
    arraySort(groupUniqArray(partition)) AS partitions,
    min(offset) AS first_offset,
    max(offset) AS last_offset,
    min(event_time) AS first_time,
    max(event_time) AS last_time,
    argMin(reason, (partition, offset)) AS first_reason
FROM
(
    SELECT *
    FROM bookstream.dead_letters
    ORDER BY _partition, _offset
    LIMIT 1 BY source, partition, offset, stage, reason_code
)
GROUP BY source, stage, reason_code
ORDER BY dead_letters DESC, source_kind, source_name, stage, reason_code
