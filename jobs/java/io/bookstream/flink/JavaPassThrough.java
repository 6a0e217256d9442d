package io.bookstream.flink;

import org.apache.flink.streaming.api.functions.ProcessFunction;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

/**
 * Bench rungs without Python (``make bench``'s ablation ladder): each {@link EventDeserializer}
 * row forwarded unchanged as a routed record for {@link RoutedSerializer} (route 0, same key,
 * same timestamp, same value). {@link JavaKeyedNoop} is the same behind a keyBy.
 */
public class JavaPassThrough extends ProcessFunction<Row, String> {
    private static final long serialVersionUID = 1L;

    static String route(Row row, Long ts) {
        return "0\u001f" + row.getField(0) + "\u001f" + (ts == null ? "" : ts) + "\u001f\u001f"
                + row.getField(4);
    }

    @Override
    public void processElement(Row row, Context ctx, Collector<String> out) {
        out.collect(route(row, ctx.timestamp()));
    }
}
