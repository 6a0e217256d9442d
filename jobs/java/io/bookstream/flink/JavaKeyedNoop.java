package io.bookstream.flink;

import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

/** The bench's keyed Java no-op: {@link JavaPassThrough} behind a keyBy. */
public class JavaKeyedNoop extends KeyedProcessFunction<Row, Row, String> {
    private static final long serialVersionUID = 1L;

    @Override
    public void processElement(Row row, Context ctx, Collector<String> out) {
        out.collect(JavaPassThrough.route(row, ctx.timestamp()));
    }
}
