# Shared by infra/flink/{start,check,stop}.sh: sourced, never run.
#
# The project's Flink session cluster: one JobManager and $FLINK_CLUSTER_TASKMANAGERS
# TaskManagers (one slot each), started by the apache-flink wheel's own scripts
# (pyflink/bin/jobmanager.sh, taskmanager.sh) with a configuration generated from udfs/config.py
# (jobs/cluster.py write_cluster_conf): everything on 127.0.0.1, REST/web UI on
# $FLINK_CLUSTER_REST_PORT, configuration, logs and pids under $STATE/flink-cluster.
# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
load_config
# shellcheck disable=SC2034  # used by the scripts that source this file
SVC=flink
FLINK_HOME="$("$PY" -c 'import os, pyflink; print(os.path.dirname(os.path.abspath(pyflink.__file__)))')" \
  || die "pyflink is not installed in $VENV: run infra/install.sh (make install)"
export FLINK_CONF_DIR="$FLINK_CLUSTER_DIR/conf"
export FLINK_LIB_DIR="$FLINK_CLUSTER_DIR/lib"  # the wheel's lib/ + flink-python: jobs/cluster.py
export FLINK_LOG_DIR="$FLINK_CLUSTER_LOG_DIR"
export FLINK_PID_DIR="$FLINK_CLUSTER_DIR/run"
export FLINK_IDENT_STRING=bookstream
JM_PIDS="$FLINK_PID_DIR/flink-$FLINK_IDENT_STRING-standalonesession.pid"
TM_PIDS="$FLINK_PID_DIR/flink-$FLINK_IDENT_STRING-taskexecutor.pid"

# our_pids FILE: the pids of FILE that are alive and run Flink from this wheel with our config
our_pids() {
  local pid
  [ -f "$1" ] || return 0
  while IFS= read -r pid || [ -n "$pid" ]; do
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || continue
    if [ -r "/proc/$pid/cmdline" ] \
        && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$FLINK_CONF_DIR"; then
      continue  # a reused pid: not ours
    fi
    echo "$pid"
  done <"$1"
}

cluster_ready() { "$PY" -m jobs.cluster check "$FLINK_CLUSTER_TASKMANAGERS"; }
