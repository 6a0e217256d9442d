#!/usr/bin/env bash
# Health check: every node of the project's Kafka (kafka.brokers) listens, and the cluster
# answers a metadata request with all of them (not just an open port). The project's nodes are
# on loopback: probed without the client passthrough (kafka.client), as the super user when
# kafka.security=sasl.
source "$(dirname "$0")/../lib.sh"
load_config
IFS=, read -r -a NODES <<<"$KAFKA_NODE_PORTS"
own=""
for node in "${NODES[@]}"; do
  read -r port _cport <<<"$node"
  port_open "$KAFKA_HOST" "$port" || { echo "kafka: nothing listens on $KAFKA_HOST:$port"; exit 1; }
  own="${own:+$own,}$KAFKA_HOST:$port"
done
cd "$PROJECT_ROOT"
KAFKA_OWN="$own" "$PY" - <<'PYEOF'
import os
import sys

from confluent_kafka.admin import AdminClient

from udfs.config import parse_properties

own, want = os.environ["KAFKA_OWN"], int(os.environ["KAFKA_BROKERS"])
conf = {"bootstrap.servers": own}
if os.environ["KAFKA_SECURITY"] == "sasl":
    cred_file = os.path.join(os.environ["KAFKA_CREDENTIALS_DIR"], "admin.properties")
    with open(cred_file) as f:
        cred = parse_properties(f.read())
    conf |= {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "PLAIN",
        "sasl.username": cred["sasl.username"],
        "sasl.password": cred["sasl.password"],
    }
admin = AdminClient(conf)
try:
    md = admin.list_topics(timeout=5)
except Exception as exc:
    print(f"kafka: no metadata from {own}: {exc}")
    sys.exit(1)
if len(md.brokers) < want:
    print(f"kafka: {len(md.brokers)} of {want} broker(s) registered at {own}")
    sys.exit(1)
print(f"kafka: ok, {len(md.brokers)} broker(s) at {own}, {len(md.topics)} topic(s)")
PYEOF
