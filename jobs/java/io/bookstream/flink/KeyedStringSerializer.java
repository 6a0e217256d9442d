package io.bookstream.flink;

import java.nio.charset.StandardCharsets;
import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.kafka.shaded.org.apache.kafka.clients.producer.ProducerRecord;

/**
 * Writes a Python string {@code "<key>\u001f<value>"} as a keyed Kafka record on a fixed topic,
 * with the element's event time as the record timestamp (so a downstream job can put event-time
 * watermarks on it). PyFlink's own record serialiser cannot take the key from the element.
 * Output of the end-of-input timer carries Flink's final watermark (Long.MAX_VALUE) as its time,
 * which no broker accepts: such a record goes without a timestamp (the broker stamps it).
 */
public class KeyedStringSerializer implements KafkaRecordSerializationSchema<String> {
    private static final long serialVersionUID = 1L;
    private final String topic;

    public KeyedStringSerializer(String topic) {
        this.topic = topic;
    }

    @Override
    public ProducerRecord<byte[], byte[]> serialize(
            String element, KafkaSinkContext context, Long timestamp) {
        int sep = element.indexOf('\u001f');
        byte[] key = sep < 0 ? null : element.substring(0, sep).getBytes(StandardCharsets.UTF_8);
        byte[] value = element.substring(sep + 1).getBytes(StandardCharsets.UTF_8);
        Long ts = timestamp == null || timestamp == Long.MAX_VALUE ? null : timestamp;
        Probe.written();
        return new ProducerRecord<>(topic, null, ts, key, value);
    }
}
