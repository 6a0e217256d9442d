#!/usr/bin/env bash
# Starts the project's Apache Kafka (KRaft) from the jars infra/install.sh fetched:
#   kafka.brokers = 1 (default): one broker+controller node; data $STATE/kafka/data, pid
#     $STATE/run/kafka.pid, log $STATE/logs/kafka.log.
#   kafka.brokers = N > 1 (`make up KAFKA_BROKERS=3`): N combined broker+controller nodes (an
#     N-voter quorum), node i on kafka.port + (i-1)*kafka.node_port_step (controller likewise);
#     each node's config, data, pid and log under $STATE/kafka/node-i/.
# Idempotent: a node already up is left alone. A node's log directory is formatted once (all
# nodes with one cluster id) and reused on every later start.
source "$(dirname "$0")/../lib.sh"
load_config
JARS="$STATE/jars/kafka"
# PLAINTEXT (or SASL_PLAINTEXT, kafka.security=sasl: authenticated, not encrypted): loopback
# only, like every listener of the project
case "$KAFKA_HOST" in
  127.*) ;;
  *) die "kafka.host=$KAFKA_HOST: the project's broker has no encryption, so it only listens \
on loopback (127.x.x.x); point kafka.bootstrap at another deployment's brokers instead" ;;
esac
# kafka.security=sasl: one credential per role, generated once (0600 files, never printed)
if [ "$KAFKA_SECURITY" = sasl ]; then
  (cd "$PROJECT_ROOT" && umask 077 && "$PY" -m jobs.kafka_security credentials) >&2 \
    || die "could not generate the Kafka credentials in $KAFKA_CREDENTIALS_DIR"
fi
# sed replacement text: \, | and & are literal
sed_text() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }
[ -f "$JARS/.complete" ] || die "Kafka jars missing in $JARS: run infra/install.sh"

IFS=, read -r -a NODES <<<"$KAFKA_NODE_PORTS"   # "port controller_port" per node
if [ "$KAFKA_BROKERS" -eq 1 ]; then
  is_running kafka-node-1 && die "a ${KAFKA_BROKERS}-node setting, but nodes of a multi-node \
cluster run in $STATE/kafka/node-*: make stop first"
else
  is_running kafka && die "kafka.brokers=$KAFKA_BROKERS, but the single broker runs \
(pid $(cat "$(pidfile kafka)")): make stop first"
fi

# node_svc I: the service name of node I (pid/log paths: infra/lib.sh pidfile, logfile)
node_svc() { if [ "$KAFKA_BROKERS" -eq 1 ]; then echo kafka; else echo "kafka-node-$1"; fi; }
node_dir() { if [ "$KAFKA_BROKERS" -eq 1 ]; then echo "$STATE/kafka"; else echo "$STATE/kafka/node-$1"; fi; }

voters=""
for i in $(seq 1 "$KAFKA_BROKERS"); do
  read -r _port cport <<<"${NODES[$((i - 1))]}"
  voters="${voters:+$voters,}$i@$KAFKA_HOST:$cport"
done

if [ "$KAFKA_BROKERS" -eq 1 ]; then
  HEAP=(-Xms256m -Xmx1g)
else
  HEAP=(-Xms128m -Xmx512m)   # N JVMs on one small machine
fi
JAVA_OPTS=("${HEAP[@]}" -XX:+UseG1GC -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$PROJECT_ROOT/infra/kafka/log4j2.yaml")

# one cluster id for every node, kept beside them
cluster_id_file="$STATE/kafka/cluster-id-$KAFKA_BROKERS"
mkdir -p "$STATE/kafka"
started=()   # "service:properties:port" of each node to start
formats=()   # "pid:service" of each storage format under way
for i in $(seq 1 "$KAFKA_BROKERS"); do
  svc="$(node_svc "$i")"; dir="$(node_dir "$i")"
  read -r port cport <<<"${NODES[$((i - 1))]}"
  if is_running "$svc"; then log "$svc already running (pid $(cat "$(pidfile "$svc")"))"; continue; fi
  for p in "$port" "$cport"; do
    if port_open "$KAFKA_HOST" "$p"; then
      die "port $KAFKA_HOST:$p is in use by a process this project did not start"
    fi
  done
  mkdir -p "$dir/data"
  props="$dir/server.properties"
  sed -e "s|@KAFKA_HOST@|$(sed_text "$KAFKA_HOST")|g" -e "s|@KAFKA_PORT@|$port|g" \
      -e "s|@KAFKA_CONTROLLER_PORT@|$cport|g" -e "s|@NODE_ID@|$i|g" \
      -e "s|@VOTERS@|$(sed_text "$voters")|g" -e "s|@DATA_DIR@|$(sed_text "$dir/data")|g" \
      -e "s|@INTERNAL_RF@|$KAFKA_INTERNAL_RF|g" -e "s|@INTERNAL_MIN_ISR@|$KAFKA_INTERNAL_MIN_ISR|g" \
      "$PROJECT_ROOT/infra/kafka/server.properties.template" > "$props"
  chmod 0600 "$props"   # with kafka.security=sasl it holds the super user's password
  if [ "$KAFKA_SECURITY" = sasl ]; then
    (cd "$PROJECT_ROOT" && "$PY" -m jobs.kafka_security server-properties "$KAFKA_HOST" \
      "$port" "$cport") >>"$props" || die "could not render the SASL settings of $svc"
  fi
  if [ ! -f "$dir/data/meta.properties" ]; then
    if [ "$KAFKA_BROKERS" -eq 1 ] || [ ! -f "$cluster_id_file" ]; then
      java -cp "$JARS/*" kafka.tools.StorageTool random-uuid > "$cluster_id_file"
    fi
    log "formatting KRaft log dir of $svc (cluster $(cat "$cluster_id_file"))"
    # the nodes' formats run side by side (a JVM start each)
    java "${JAVA_OPTS[@]}" -cp "$JARS/*" kafka.tools.StorageTool format \
      -t "$(cat "$cluster_id_file")" -c "$props" >>"$(logfile "$svc")" 2>&1 &
    formats+=("$!:$svc")
  fi
  started+=("$svc:$dir/server.properties:$port")
done
for f in "${formats[@]}"; do
  wait "${f%%:*}" || die "kafka storage format failed (log: $(logfile "${f#*:}"))"
done
for s in "${started[@]}"; do
  IFS=: read -r svc props port <<<"$s"
  log "starting $svc on $KAFKA_HOST:$port (log: $(logfile "$svc"))"
  nohup java "${JAVA_OPTS[@]}" -cp "$JARS/*" kafka.Kafka "$props" >>"$(logfile "$svc")" 2>&1 &
  echo $! > "$(pidfile "$svc")"
done
# every node is started before any is waited for: a quorum of N needs a majority up
for s in "${started[@]}"; do
  wait_ready "${s%%:*}" 120 "$PROJECT_ROOT/infra/kafka/check.sh"
done
if [ "$KAFKA_SECURITY" = sasl ]; then
  # the roles' SCRAM credentials, as the super user (idempotent: after every start)
  (cd "$PROJECT_ROOT" && "$PY" -m jobs.kafka_security users) >&2 \
    || die "could not register the Kafka SCRAM users"
fi
log "kafka ready ($KAFKA_BROKERS node(s): $KAFKA_BOOTSTRAP, security $KAFKA_SECURITY)"
