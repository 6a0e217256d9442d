# Shared helpers for infra/*.sh: sourced, never run. Resolves the project's config once
# (udfs/config.py is the single source of ports and the state dir) and gives each service
# the same pid/log/readiness conventions:
#   $STATE/run/<service>.pid   pid of the process the project started
#   $STATE/logs/<service>.log  its stdout+stderr
set -euo pipefail

PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BOOKSTREAM_VENV:-$PROJECT_ROOT/.venv}"
PY="$VENV/bin/python"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# load_config: the variables of udfs/config.py shell_values, read as data (NUL-terminated
# NAME=value records, assigned with printf -v): no configuration value is ever evaluated
load_config() {
  [ -x "$PY" ] || die "no Python venv at $VENV: run infra/install.sh (or make install) first"
  local records name value rec
  records="$(mktemp)"
  (cd "$PROJECT_ROOT" && "$PY" -m udfs.config shell-nul) >"$records" \
    || { rm -f "$records"; die "udfs/config.py could not load the configuration"; }
  while IFS= read -r -d '' rec; do
    name="${rec%%=*}"
    value="${rec#*=}"
    [[ "$name" =~ ^[A-Z][A-Z0-9_]*$ ]] || { rm -f "$records"; die "bad config record name"; }
    printf -v "$name" '%s' "$value"
    export "${name?}"
  done <"$records"
  rm -f "$records"
  STATE="$BOOKSTREAM_STATE_DIR"
  secure_state_dir
  mkdir -p "$STATE/run" "$STATE/logs"
}

# secure_state_dir: $STATE is its owner's alone (0700): it holds checkpoints (pickles, which
# run code when loaded), the PostgreSQL password file and every service's data. The one
# exception: under root, infra/postgres/start.sh gives the server's OS user traverse-only
# access through the directory's group (0710, group postgres), which is kept. A shared directory
# (sticky bit, like /tmp) is left alone. Same rule as udfs/config.py secure_state_dir.
secure_state_dir() {
  mkdir -p "$STATE"
  if [ -k "$STATE" ]; then return 0; fi
  if [ "$(id -u)" -eq 0 ] && [ "$(stat -c %G "$STATE")" = postgres ]; then
    chmod 0710 "$STATE"
  else
    chmod 0700 "$STATE"
  fi
}

# a node of a multi-node Kafka (kafka-node-N) keeps its pid and log beside its data
pidfile() {
  case "$1" in
    kafka-node-*) echo "$STATE/kafka/node-${1#kafka-node-}/kafka.pid" ;;
    *) echo "$STATE/run/$1.pid" ;;
  esac
}
logfile() {
  case "$1" in
    kafka-node-*) echo "$STATE/kafka/node-${1#kafka-node-}/kafka.log" ;;
    *) echo "$STATE/logs/$1.log" ;;
  esac
}

# is_running SERVICE: the pid we recorded is alive
is_running() {
  local pf; pf="$(pidfile "$1")"
  [ -f "$pf" ] && kill -0 "$(cat "$pf")" 2>/dev/null
}

# port_open HOST PORT
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_ready SERVICE TIMEOUT_S CHECK_CMD...: poll until CHECK_CMD succeeds
wait_ready() {
  local svc="$1" timeout="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ! is_running "$svc"; then
      log "$svc exited during start-up; last lines of $(logfile "$svc"):"
      tail -n 30 "$(logfile "$svc")" >&2 || true
      die "$svc failed to start (log: $(logfile "$svc"))"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 "$(logfile "$svc")" >&2 || true
      die "$svc not ready after ${timeout}s (log: $(logfile "$svc"))"
    fi
    sleep 0.5
  done
}

# stop_service SERVICE: stop exactly the pid we started (TERM, then KILL after 20 s)
stop_service() {
  local svc="$1" pf pid
  pf="$(pidfile "$svc")"
  if [ ! -f "$pf" ]; then log "$svc: not started by this project"; return 0; fi
  pid="$(cat "$pf")"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $svc (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then log "$svc did not stop in 20 s: KILL"; kill -KILL "$pid"; fi
  fi
  rm -f "$pf"
}

# pg_bindir: directory of the PostgreSQL server binaries (initdb, postgres, pg_ctl, psql,
# pg_isready): Debian's /usr/lib/postgresql/<major>/bin of the newest major, else pg_config's
# bindir or initdb on PATH. Prints nothing when there is none (infra/install.sh installs it).
pg_bindir() {
  local d
  d="$(printf '%s\n' /usr/lib/postgresql/*/bin/initdb | sort -V \
       | while read -r f; do if [ -x "$f" ]; then dirname "$f"; fi; done | tail -n 1)"
  if [ -z "$d" ] && command -v pg_config >/dev/null 2>&1; then
    d="$(pg_config --bindir 2>/dev/null || true)"
    [ -x "$d/initdb" ] || d=""
  fi
  if [ -z "$d" ] && command -v initdb >/dev/null 2>&1; then
    d="$(dirname "$(command -v initdb)")"
  fi
  if [ -n "$d" ]; then echo "$d"; fi
}
