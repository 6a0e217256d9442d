#!/usr/bin/env bash
# Stops a live session (`bookstream live`, `make live`): SIGTERM to its supervisor, which passes
# it to every process (the sinks commit and print their summary) and waits for them; KILL only
# if the whole session has not ended after 90 s.
# shellcheck source=infra/lib.sh
source "$(dirname "$0")/../lib.sh"
load_config
pf="$(pidfile live)"
pid="$(cat "$pf" 2>/dev/null || true)"
if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null \
   || ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "bookstream.* live\|jobs.cli live"; then
  rm -f "$pf"
  exit 0
fi
log "stopping the live session (supervisor pid $pid)"
kill -TERM "$pid"
for _ in $(seq 1 180); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$pid" 2>/dev/null; then log "live session did not stop in 90 s: KILL"; kill -KILL "$pid"; fi
rm -f "$pf"
