package io.bookstream.flink;

import java.time.Instant;
import java.util.concurrent.atomic.AtomicLongArray;

/**
 * Throughput probe for {@code make bench}: the JVM-wide count of records read and the monotonic
 * times of the first read and of the last write, so a bench can tell the steady rate apart from
 * job start-up. Kept in the system properties (a JDK object), because the job's classes are loaded
 * by Flink's user-code class loader while the bench reads them through the PyFlink gateway's.
 * Costs two atomic writes per record.
 */
public final class Probe {
    private static final String KEY = "bookstream.probe";
    private static final int READ = 0;
    private static final int FIRST_READ_NS = 1;
    private static final int LAST_WRITE_NS = 2;
    private static final int WRITTEN = 3;
    private static volatile AtomicLongArray cells;

    private Probe() {}

    /** The probe's cells (created on first use): read, firstReadNs, lastWriteNs, written. */
    public static AtomicLongArray cells() {
        AtomicLongArray c = cells;
        if (c == null) {
            synchronized (System.class) {
                Object o = System.getProperties().get(KEY);
                if (!(o instanceof AtomicLongArray)) {
                    o = new AtomicLongArray(4);
                    System.getProperties().put(KEY, o);
                }
                c = cells = (AtomicLongArray) o;
            }
        }
        return c;
    }

    /** Starts a new measurement (the bench, between two jobs in one JVM). */
    public static void reset() {
        AtomicLongArray c = cells();
        for (int i = 0; i < c.length(); i++) {
            c.set(i, 0L);
        }
    }

    static void read() {
        AtomicLongArray c = cells();
        if (c.getAndIncrement(READ) == 0) {
            c.set(FIRST_READ_NS, System.nanoTime());
        }
    }

    static void written() {
        AtomicLongArray c = cells();
        c.set(LAST_WRITE_NS, System.nanoTime());
        c.getAndIncrement(WRITTEN);
    }

    /** Wall-clock time in ns (microsecond resolution on Linux), for the hop trace. */
    static long wallNs() {
        Instant now = Instant.now();
        return now.getEpochSecond() * 1_000_000_000L + now.getNano();
    }
}
