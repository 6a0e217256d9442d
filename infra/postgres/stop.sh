#!/usr/bin/env bash
# Stops the project's PostgreSQL server: `pg_ctl stop -m fast` on our data dir (the postmaster
# pid it signals is checked to be ours first), else SIGINT (fast shutdown) to the exact pid we
# recorded; immediate shutdown (SIGQUIT), then KILL, only if that does not work.
# shellcheck source=infra/postgres/common.sh
source "$(dirname "$0")/common.sh"
pf="$(pidfile "$SVC")"
pid=""
for cand in "$(postmaster_pid)" "$(cat "$pf" 2>/dev/null || true)"; do
  if is_our_postgres "$cand"; then pid="$cand"; break; fi
done
if [ -z "$pid" ]; then
  log "postgres: not running (nothing started by this project on $PG_DATA)"
  rm -f "$pf"
  exit 0
fi
log "stopping postgres (pid $pid, fast shutdown)"
if [ "$pid" = "$(postmaster_pid)" ] \
   && as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 >/dev/null; then
  rm -f "$pf"
  exit 0
fi
kill -INT "$pid" 2>/dev/null || true
for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$pid" 2>/dev/null; then
  log "postgres did not stop in 30 s: immediate shutdown"
  kill -QUIT "$pid" 2>/dev/null || true
  for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
fi
rm -f "$pf"
