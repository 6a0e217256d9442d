"""``make bench``, stage "clients": why the project produces with confluent-kafka (librdkafka)
and not kafka-python, the client the design card names. The same serialised events (the
sample's, as the publisher encodes them) are produced to a topic of their own by each client
with the same delivery settings (acks=all, idempotent, linger 20 ms, batches up to 1 MB, no
compression, keyed by instrument), each waiting for every acknowledgement; the best of
``--repeat`` runs is reported with the ratio. Not a test: it prints figures. kafka-python is
a bench-only dependency (the ``bench`` dependency group), imported only here.

    python -m jobs.bench_clients [--events N] [--repeat K]
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Callable

from udfs.config import Config, TopicSpec, librdkafka_properties, load_config
from udfs.kafka_acl import ADMIN

Records = list[tuple[bytes, bytes]]


def sample_records(limit: int) -> Records:
    """``(key, value)`` of the sample's events, as the publisher sends them; repeated up to
    ``limit`` records."""
    from udfs.market.adapters.sources import Source
    from udfs.schema import encode_event

    base = [(ev.instrument.encode(), encode_event(ev)) for ev in Source.sample().events()]
    out: Records = []
    while len(out) < limit:
        out.extend(base[: limit - len(out)])
    return out


def produce_confluent(cfg: Config, topic: str, records: Records) -> float:
    """The project's producer (``kafka_io.make_producer``), compression off."""
    from jobs.kafka_io import make_producer

    producer = make_producer(cfg, **{"compression.type": "none"})
    t = time.perf_counter()
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) != 0:
        raise RuntimeError("confluent-kafka: records left undelivered")
    return len(records) / (time.perf_counter() - t)


_KAFKA_PYTHON_NAMES = {
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.username": "sasl_plain_username",
    "sasl.password": "sasl_plain_password",
    "ssl.ca.location": "ssl_cafile",
    "ssl.certificate.location": "ssl_certfile",
    "ssl.key.location": "ssl_keyfile",
    "ssl.key.password": "ssl_password",
    "client.id": "client_id",
}
"""The passthrough's names kafka-python knows (its own spelling)."""


def kafka_python_options(cfg: Config) -> dict[str, str]:
    """The passthrough (``kafka.client``) as kafka-python options; a property it has no name
    for is refused (the comparison would not be like for like)."""
    props = librdkafka_properties(cfg.kafka_client_properties(ADMIN))
    unknown = sorted(set(props) - set(_KAFKA_PYTHON_NAMES))
    if unknown:
        raise ValueError(f"kafka-python: no option for client properties {unknown}")
    return {_KAFKA_PYTHON_NAMES[k]: v for k, v in props.items()}


def produce_kafka_python(cfg: Config, topic: str, records: Records) -> float:
    from kafka import KafkaProducer

    producer = KafkaProducer(
        **kafka_python_options(cfg),
        bootstrap_servers=cfg.kafka.bootstrap_servers.split(","),
        enable_idempotence=True,
        acks="all",
        linger_ms=20,
        compression_type=None,
        batch_size=1_000_000,  # librdkafka's batches above hold up to 1 MB too
    )
    t = time.perf_counter()
    futures = [producer.send(topic, value=value, key=key) for key, value in records]
    producer.flush(120)
    for f in futures:
        f.get(timeout=0)  # raises the delivery error of any record
    rate = len(records) / (time.perf_counter() - t)
    producer.close()
    return rate


CLIENTS: dict[str, Callable[[Config, str, Records], float]] = {
    "confluent-kafka": produce_confluent,
    "kafka-python": produce_kafka_python,
}


def run(cfg: Config, events: int, repeat: int) -> dict:
    from importlib.metadata import version

    from jobs.kafka_io import create_topics, delete_topics

    records = sample_records(events)
    topic = f"bench.{uuid.uuid4().hex[:6]}.clients"
    create_topics(cfg, [TopicSpec(name=topic, partitions=cfg.topics.partitions, retention_ms=-1)])
    try:
        rates = {
            name: max(produce(cfg, topic, records) for _ in range(repeat))
            for name, produce in CLIENTS.items()
        }
    finally:
        delete_topics(cfg, [topic])
    return {
        "events": len(records),
        "events_per_s": rates,
        "versions": {n: version(n) for n in CLIENTS},
        "ratio": rates["confluent-kafka"] / rates["kafka-python"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.bench_clients", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    result = run(load_config(), args.events, args.repeat)
    rates = result["events_per_s"]
    print(
        f"clients: {result['events']} records produced, acks=all, idempotent: "
        + "  ".join(f"{n} {r:,.0f} ev/s" for n, r in rates.items())
        + f"  ratio confluent/kafka-python = {result['ratio']:.1f}x"
    )
    print(json.dumps({"clients": result}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
