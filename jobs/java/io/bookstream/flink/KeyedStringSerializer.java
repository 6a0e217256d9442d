package io.bookstream.flink;

import java.nio.charset.StandardCharsets;
import org.apache.flink.connector.kafka.sink.KafkaRecordSerializationSchema;
import org.apache.flink.kafka.shaded.org.apache.kafka.clients.producer.ProducerRecord;

/**
 * Writes a Python string {@code "<key>\u001f<value>"} as a keyed Kafka record on a fixed topic,
 * with the element's event time as the record timestamp (so a downstream job can put event-time
 * watermarks on it). PyFlink's own record serialiser cannot take the key from the element.
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
        return new ProducerRecord<>(topic, null, timestamp, key, value);
    }
}
