package io.bookstream.flink;

import java.util.LinkedHashMap;
import java.util.Map;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.typeutils.RowTypeInfo;
import org.apache.flink.streaming.api.operators.AbstractStreamOperator;
import org.apache.flink.streaming.api.operators.BoundedOneInput;
import org.apache.flink.streaming.api.operators.OneInputStreamOperator;
import org.apache.flink.streaming.api.watermark.Watermark;
import org.apache.flink.streaming.runtime.streamrecord.StreamRecord;
import org.apache.flink.types.Row;

/**
 * Hands all queued records of one instrument to ONE Python call: rows {@code (key, partition,
 * offset, readNs, value)} of {@link EventDeserializer} in, rows {@code (key, batch)} out, where
 * {@code batch} holds the key's records in arrival order as
 *
 * <pre>
 *   "p:o:ts:readNs:n p:o:ts:readNs:n ...\n" + value1 + value2 + ...
 * </pre>
 *
 * ({@code ts}: the record's timestamp = exchange time in ms, or empty; {@code n}: the value's
 * length in code points, so Python slices it exactly whatever bytes it holds).
 *
 * <p>Why: PyFlink's thread mode makes one synchronous Java-to-Python call per record (its bundle
 * settings do nothing there), and the calls, not the per-record logic, bound the job.
 *
 * <p>A key's batch is sent when it reaches {@code maxRecords}; everything queued is sent when the
 * oldest queued record has waited {@code maxDelayMs} (processing time), before every watermark
 * is forwarded (so event-time timers downstream fire after the records they cover, exactly as
 * unbatched), before every checkpoint barrier (so nothing is held in this operator's memory
 * across a checkpoint: it has no state) and at the end of input. Per key, order is kept; the
 * Python side applies the unchanged per-record logic to each record in order.
 */
public class MicroBatcher extends AbstractStreamOperator<Row>
        implements OneInputStreamOperator<Row, Row>, BoundedOneInput {
    private static final long serialVersionUID = 1L;
    private final int maxRecords;
    private final long maxDelayMs;
    private transient Map<String, Batch> queued;
    private transient boolean timerSet;

    private static final class Batch {
        final StringBuilder head = new StringBuilder(256);
        final StringBuilder body = new StringBuilder(4096);
        int records;
        long lastTs = Long.MIN_VALUE;
        boolean hasTs;
    }

    public MicroBatcher(int maxRecords, long maxDelayMs) {
        this.maxRecords = Math.max(1, maxRecords);
        this.maxDelayMs = Math.max(0, maxDelayMs);
    }

    /** The rows this operator emits: {@code (key, batch)}, the shape PyFlink's keyed Python
     * operators take. */
    public static TypeInformation<Row> outputType() {
        return new RowTypeInfo(Types.STRING, Types.STRING);
    }

    @Override
    public void open() throws Exception {
        super.open();
        queued = new LinkedHashMap<>();
        timerSet = false;
    }

    @Override
    public void processElement(StreamRecord<Row> element) throws Exception {
        Row row = element.getValue();
        String key = (String) row.getField(0);
        String value = (String) row.getField(4);
        Batch batch = queued.get(key);
        if (batch == null) {
            batch = new Batch();
            queued.put(key, batch);
        }
        if (batch.records > 0) {
            batch.head.append(' ');
        }
        batch.head.append(row.getField(1)).append(':').append(row.getField(2)).append(':');
        if (element.hasTimestamp()) {
            batch.head.append(element.getTimestamp());
            batch.lastTs = element.getTimestamp();
            batch.hasTs = true;
        }
        batch.head
                .append(':')
                .append(row.getField(3))
                .append(':')
                .append(value.codePointCount(0, value.length()));
        batch.body.append(value);
        batch.records++;
        if (batch.records >= maxRecords) {
            queued.remove(key);
            emit(key, batch);
        } else if (!timerSet) {
            timerSet = true;
            long now = getProcessingTimeService().getCurrentProcessingTime();
            getProcessingTimeService().registerTimer(now + maxDelayMs, t -> onTimer());
        }
    }

    private void onTimer() {
        timerSet = false;
        flushAll();
    }

    private void emit(String key, Batch batch) {
        String out = batch.head.append('\n').append(batch.body).toString();
        StreamRecord<Row> record = new StreamRecord<>(Row.of(key, out));
        if (batch.hasTs) {
            record.setTimestamp(batch.lastTs);
        }
        output.collect(record);
    }

    private void flushAll() {
        if (queued.isEmpty()) {
            return;
        }
        for (Map.Entry<String, Batch> e : queued.entrySet()) {
            emit(e.getKey(), e.getValue());
        }
        queued.clear();
    }

    @Override
    public void processWatermark(Watermark mark) throws Exception {
        flushAll();
        super.processWatermark(mark);
    }

    @Override
    public void prepareSnapshotPreBarrier(long checkpointId) throws Exception {
        flushAll();
        super.prepareSnapshotPreBarrier(checkpointId);
    }

    @Override
    public void endInput() throws Exception {
        flushAll();
    }

    @Override
    public void finish() throws Exception {
        flushAll();
        super.finish();
    }
}
