package io.bookstream.flink;

import java.nio.charset.StandardCharsets;
import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.kafka.shaded.org.apache.kafka.clients.producer.ProducerRecord;

/**
 * One Kafka sink for every output topic of the stream job: an element {@code route \u001f key
 * \u001f ts \u001f hops \u001f value} goes to {@code topics[route]} with that key, and with
 * {@code ts} (ms) as the record timestamp: the exchange time of the event that produced it, on
 * every topic (the element's Flink timestamp is not used: in thread mode PyFlink drops it for
 * side outputs). An empty {@code ts} lets the broker stamp the record.
 *
 * <p>{@code hops}, when not empty, is the latency trace of the record ({@code readNs,pyInNs,
 * featureNs,signalNs,orderNs}, wall clock; udfs/latency.py): it goes out as the header
 * {@code bookstream.hops} with the serialisation time appended, for the per-hop latency
 * histograms of the execution sink and the bench.
 */
public class RoutedSerializer implements KafkaRecordSerializationSchema<String> {
    private static final long serialVersionUID = 1L;
    public static final String HOPS_HEADER = "bookstream.hops";
    private final String[] topics;

    public RoutedSerializer(String[] topics) {
        this.topics = topics.clone();
    }

    @Override
    public ProducerRecord<byte[], byte[]> serialize(
            String element, KafkaSinkContext context, Long timestamp) {
        int a = element.indexOf('\u001f');
        int b = element.indexOf('\u001f', a + 1);
        int c = element.indexOf('\u001f', b + 1);
        int d = element.indexOf('\u001f', c + 1);
        if (a < 0 || b < 0 || c < 0 || d < 0) {
            throw new IllegalArgumentException(
                    "routed record without its 5 fields: "
                            + element.substring(0, Math.min(200, element.length())));
        }
        String topic = topics[Integer.parseInt(element, 0, a, 10)];
        byte[] key = element.substring(a + 1, b).getBytes(StandardCharsets.UTF_8);
        Long ts = c == b + 1 ? null : Long.parseLong(element, b + 1, c, 10);
        byte[] value = element.substring(d + 1).getBytes(StandardCharsets.UTF_8);
        ProducerRecord<byte[], byte[]> record = new ProducerRecord<>(topic, null, ts, key, value);
        if (d > c + 1) {
            String hops = element.substring(c + 1, d) + "," + Probe.wallNs();
            record.headers().add(HOPS_HEADER, hops.getBytes(StandardCharsets.UTF_8));
        }
        Probe.written();
        return record;
    }
}
