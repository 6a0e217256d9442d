package io.bookstream.flink;

import java.nio.charset.StandardCharsets;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.typeutils.RowTypeInfo;
import org.apache.flink.connector.kafka.source.reader.deserializer.KafkaRecordDeserializationSchema;
import org.apache.flink.kafka.shaded.org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.flink.types.Row;
import org.apache.flink.util.Collector;

/**
 * Each Kafka record as a row {@code (key, partition, offset, readNs, value)} for the
 * {@link MicroBatcher}: the key first (Flink keys by field 0 on the JVM side), the provenance a
 * dead letter must name, and the wall-clock time the record was read ({@code readNs}, the first
 * hop of the latency trace). The record's timestamp (exchange time) stays the event time.
 */
public class EventDeserializer implements KafkaRecordDeserializationSchema<Row> {
    private static final long serialVersionUID = 1L;

    @Override
    public void deserialize(ConsumerRecord<byte[], byte[]> record, Collector<Row> out) {
        String key = record.key() == null ? "" : new String(record.key(), StandardCharsets.UTF_8);
        String value =
                record.value() == null ? "" : new String(record.value(), StandardCharsets.UTF_8);
        Probe.read();
        out.collect(Row.of(key, record.partition(), record.offset(), Probe.wallNs(), value));
    }

    @Override
    public TypeInformation<Row> getProducedType() {
        return new RowTypeInfo(Types.STRING, Types.INT, Types.LONG, Types.LONG, Types.STRING);
    }
}
