#!/usr/bin/env bash
# Starts the Apache Kafka broker (single-node KRaft) from the jars infra/install.sh fetched.
# Idempotent: does nothing if our broker is already up. The log directory is formatted once
# (durable under $STATE/kafka/data) and reused on every later start.
source "$(dirname "$0")/../lib.sh"
load_config
SVC=kafka
JARS="$STATE/jars/kafka"
# PLAINTEXT without authentication: loopback only, like every listener of the project
case "$KAFKA_HOST" in
  127.*) ;;
  *) die "kafka.host=$KAFKA_HOST: the project's broker has no authentication, so it only listens \
on loopback (127.x.x.x); point kafka.host at another broker's clients instead" ;;
esac
# sed replacement text: \, | and & are literal
sed_text() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }
[ -f "$JARS/.complete" ] || die "Kafka jars missing in $JARS: run infra/install.sh"

if is_running "$SVC"; then log "kafka already running (pid $(cat "$(pidfile $SVC)"))"; exit 0; fi
if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
  die "port $KAFKA_HOST:$KAFKA_PORT is in use by a process this project did not start"
fi

mkdir -p "$STATE/kafka/data"
props="$STATE/kafka/server.properties"
sed -e "s|@KAFKA_HOST@|$(sed_text "$KAFKA_HOST")|g" -e "s|@KAFKA_PORT@|$(sed_text "$KAFKA_PORT")|g" \
    -e "s|@KAFKA_CONTROLLER_PORT@|$(sed_text "$KAFKA_CONTROLLER_PORT")|g" \
    -e "s|@STATE@|$(sed_text "$STATE")|g" \
    "$PROJECT_ROOT/infra/kafka/server.properties.template" > "$props"

JAVA_OPTS=(-Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$PROJECT_ROOT/infra/kafka/log4j2.yaml")

if [ ! -f "$STATE/kafka/data/meta.properties" ]; then
  cluster_id="$(java -cp "$JARS/*" kafka.tools.StorageTool random-uuid)"
  log "formatting KRaft log dir (cluster $cluster_id)"
  java "${JAVA_OPTS[@]}" -cp "$JARS/*" kafka.tools.StorageTool format \
    -t "$cluster_id" -c "$props" >>"$(logfile $SVC)" 2>&1 \
    || die "kafka storage format failed (log: $(logfile $SVC))"
fi

log "starting kafka on $KAFKA_HOST:$KAFKA_PORT (log: $(logfile $SVC))"
nohup java "${JAVA_OPTS[@]}" -cp "$JARS/*" kafka.Kafka "$props" >>"$(logfile $SVC)" 2>&1 &
echo $! > "$(pidfile $SVC)"
wait_ready "$SVC" 90 "$PROJECT_ROOT/infra/kafka/check.sh"
log "kafka ready"
