#!/usr/bin/env bash
# Stops the project's Flink session cluster: TERM to exactly the TaskManager and JobManager
# pids the wheel's scripts recorded under $STATE/flink-cluster/run (after checking each runs
# our configuration), KILL only after 20 s. Running jobs end with the cluster (their retained
# checkpoints stay).
# shellcheck source=infra/flink/common.sh
source "$(dirname "$0")/common.sh"
stop_pids() {
  local what="$1" pidfile="$2" pids pid
  pids="$(our_pids "$pidfile")"
  rm -f "$pidfile"
  [ -n "$pids" ] || return 0
  log "stopping flink $what (pid $(echo "$pids" | tr '\n' ' '))"
  for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in $pids; do
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then log "flink $what $pid did not stop in 20 s: KILL"; kill -KILL "$pid"; fi
  done
}
if [ -z "$(our_pids "$JM_PIDS")$(our_pids "$TM_PIDS")" ]; then
  log "flink: not running (no cluster started by this project with $FLINK_CONF_DIR)"
  rm -f "$JM_PIDS" "$TM_PIDS"
  exit 0
fi
stop_pids TaskManager "$TM_PIDS"
stop_pids JobManager "$JM_PIDS"
