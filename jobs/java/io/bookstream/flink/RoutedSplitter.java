package io.bookstream.flink;

import org.apache.flink.api.common.functions.FlatMapFunction;
import org.apache.flink.util.Collector;

/**
 * Splits the one string the Python operator yields per batch into its output records: records
 * separated by {@code \u001e}, each {@code route \u001f key \u001f ts \u001f hops \u001f value}
 * (see {@link RoutedSerializer}). The values are JSON, whose encoders escape every control
 * character, so neither separator can occur inside one.
 */
public class RoutedSplitter implements FlatMapFunction<String, String> {
    private static final long serialVersionUID = 1L;

    @Override
    public void flatMap(String batch, Collector<String> out) {
        int start = 0;
        int n = batch.length();
        while (start < n) {
            int end = batch.indexOf('\u001e', start);
            if (end < 0) {
                end = n;
            }
            if (end > start) {
                out.collect(batch.substring(start, end));
            }
            start = end + 1;
        }
    }
}
