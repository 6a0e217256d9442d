#!/usr/bin/env bash
# Health check: the broker answers a metadata request (not just an open port).
source "$(dirname "$0")/../lib.sh"
load_config
port_open "$KAFKA_HOST" "$KAFKA_PORT" || { echo "kafka: nothing listens on $KAFKA_HOST:$KAFKA_PORT"; exit 1; }
"$PY" - <<PYEOF
import sys
from confluent_kafka.admin import AdminClient
admin = AdminClient({"bootstrap.servers": "$KAFKA_HOST:$KAFKA_PORT"})
try:
    md = admin.list_topics(timeout=5)
except Exception as exc:
    print(f"kafka: no metadata from $KAFKA_HOST:$KAFKA_PORT: {exc}")
    sys.exit(1)
print(f"kafka: ok, {len(md.brokers)} broker(s), {len(md.topics)} topic(s)")
PYEOF
