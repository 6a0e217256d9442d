#!/usr/bin/env bash
# Starts the project's Flink session cluster (see common.sh): a JobManager, then the
# TaskManagers; ready when the REST API reports all of them. Idempotent: if ours is already up
# it says so and exits 0. The configuration is rewritten at every start from udfs/config.py.
# shellcheck source=infra/flink/common.sh
source "$(dirname "$0")/common.sh"
cd "$PROJECT_ROOT"
for jar in "$STATE/jars/flink/flink-sql-connector-kafka-$FLINK_KAFKA_CONNECTOR_VERSION.jar" \
           "$STATE/jars/flink/bookstream-flink-glue.jar"; do
  [ -f "$jar" ] || die "$jar missing: run infra/install.sh (make install)"
done

if [ -n "$(our_pids "$JM_PIDS")" ]; then
  # a TaskManager that died (crash, OOM kill) is started again: its slots come back and a job
  # waiting for them restarts from its last checkpoint
  PYTHONPATH="$("$PY" -c 'import os, site; print(os.pathsep.join(site.getsitepackages()))')"
  export PYTHONPATH
  alive=$(our_pids "$TM_PIDS" | grep -c . || true)
  for _ in $(seq $((alive + 1)) "$FLINK_CLUSTER_TASKMANAGERS"); do
    log "flink: $alive of $FLINK_CLUSTER_TASKMANAGERS TaskManager(s) alive: starting one"
    (cd / && setsid "$FLINK_HOME/bin/taskmanager.sh" start) >>"$(logfile "$SVC")" 2>&1 \
      || die "taskmanager.sh failed (log: $(logfile "$SVC"))"
  done
  until_ready=$((SECONDS + 90))
  until cluster_ready >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$until_ready" ] || die "flink cluster running but not ready (log: $FLINK_LOG_DIR)"
    sleep 0.5
  done
  log "flink cluster already running (JobManager pid $(our_pids "$JM_PIDS" | tr '\n' ' '))"
  exit 0
fi
for port in "$FLINK_CLUSTER_REST_PORT" "$FLINK_CLUSTER_RPC_PORT"; do
  if port_open 127.0.0.1 "$port"; then
    die "port 127.0.0.1:$port is in use by a process this project did not start"
  fi
done
rm -f "$JM_PIDS" "$TM_PIDS"
"$PY" -m jobs.cluster conf >/dev/null || die "could not write the Flink configuration"
# thread mode runs Python inside the TaskManagers (PEMJA): they need this venv's packages
PYTHONPATH="$("$PY" -c 'import os, site; print(os.pathsep.join(site.getsitepackages()))')"
export PYTHONPATH

log "starting flink session cluster on 127.0.0.1:$FLINK_CLUSTER_REST_PORT: 1 JobManager, \
$FLINK_CLUSTER_TASKMANAGERS TaskManager(s) (logs: $FLINK_LOG_DIR)"
# setsid: their own session, so a Ctrl-C in the terminal that ran `make cluster-up` does not
# reach them
# the JobManager's script runs beside the TaskManagers' (each parses the configuration with a
# JVM of its own: seconds); TaskManagers retry until the JobManager answers. The TaskManagers'
# own scripts run one after the other: each numbers its log by the pids already recorded.
(cd / && setsid "$FLINK_HOME/bin/jobmanager.sh" start) >>"$(logfile "$SVC")" 2>&1 &
jm_script=$!
for _ in $(seq 1 "$FLINK_CLUSTER_TASKMANAGERS"); do
  (cd / && setsid "$FLINK_HOME/bin/taskmanager.sh" start) >>"$(logfile "$SVC")" 2>&1 \
    || die "taskmanager.sh failed (log: $(logfile "$SVC"))"
done
wait "$jm_script" || die "jobmanager.sh failed (log: $(logfile "$SVC"))"
deadline=$((SECONDS + 120))
until cluster_ready >/dev/null 2>&1; do
  if [ -z "$(our_pids "$JM_PIDS")" ]; then
    tail -n 30 "$FLINK_LOG_DIR"/*standalonesession*.log >&2 || true
    die "the JobManager exited during start-up (logs: $FLINK_LOG_DIR)"
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    cluster_ready >&2 || true
    die "flink cluster not ready after 120 s (logs: $FLINK_LOG_DIR)"
  fi
  sleep 0.5
done
cluster_ready >&2
log "flink cluster ready: web UI http://127.0.0.1:$FLINK_CLUSTER_REST_PORT"
