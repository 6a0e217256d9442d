package io.bookstream.flink;

import org.apache.flink.api.common.eventtime.Watermark;
import org.apache.flink.api.common.eventtime.WatermarkGenerator;
import org.apache.flink.api.common.eventtime.WatermarkGeneratorSupplier;
import org.apache.flink.api.common.eventtime.WatermarkOutput;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;

/**
 * Bounded out-of-orderness watermarks (greatest timestamp seen minus {@code outOfOrdernessMs})
 * that one implausible record cannot move: a record stamped more than {@code maxAheadMs} ahead of
 * the greatest plausible timestamp of its split (Kafka partition) leaves the watermark where it
 * is, unless {@code confirm} such records in a row agree (each within {@code outOfOrdernessMs} of
 * the one before): then the feed really jumped (a resumption after a long halt, the next session)
 * and the jump is taken. The same rule, with the same settings ({@code flink.max_ahead_ms},
 * {@code flink.future_confirm}), dead-letters such a record as {@code future} in Python
 * ({@code udfs/pipeline.py}); without it here, the job's event-time timers (stats, heartbeats)
 * would see a watermark far in the future after one bad timestamp.
 *
 * <p>The first record of a split is taken as it is (there is nothing to judge it against), as in
 * Python. Timestamps are the source's (Kafka record timestamp = exchange time, ms).
 */
public final class PlausibleWatermarks<T> implements WatermarkGenerator<T> {
    private final long outOfOrdernessMs;
    private final long maxAheadMs;
    private final int confirm;
    private boolean seen;
    private long maxTs;
    private long aheadTs;
    private int aheadRun;

    public PlausibleWatermarks(long outOfOrdernessMs, long maxAheadMs, int confirm) {
        this.outOfOrdernessMs = outOfOrdernessMs;
        this.maxAheadMs = maxAheadMs;
        this.confirm = confirm;
    }

    /** The strategy for {@code env.fromSource}: idleness is added on top as usual. */
    public static <T> WatermarkStrategy<T> strategy(
            long outOfOrdernessMs, long maxAheadMs, int confirm) {
        WatermarkGeneratorSupplier<T> supplier =
                ctx -> new PlausibleWatermarks<>(outOfOrdernessMs, maxAheadMs, confirm);
        return WatermarkStrategy.forGenerator(supplier);
    }

    @Override
    public void onEvent(T event, long eventTimestamp, WatermarkOutput output) {
        if (seen && eventTimestamp - maxTs > maxAheadMs) {
            // far ahead: one record must not move the clock; a run of them that agree may
            if (aheadRun > 0 && Math.abs(eventTimestamp - aheadTs) <= outOfOrdernessMs) {
                aheadRun++;
            } else {
                aheadRun = 1;
            }
            aheadTs = eventTimestamp;
            if (aheadRun < confirm) {
                return;
            }
        }
        aheadRun = 0;
        maxTs = seen ? Math.max(maxTs, eventTimestamp) : eventTimestamp;
        seen = true;
    }

    @Override
    public void onPeriodicEmit(WatermarkOutput output) {
        if (seen) {
            // as Flink's BoundedOutOfOrdernessWatermarks: everything up to here has been seen
            output.emitWatermark(new Watermark(maxTs - outOfOrdernessMs - 1));
        }
    }
}
