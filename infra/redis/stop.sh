#!/usr/bin/env bash
# Stops the project's Redis server: TERM (Redis saves and exits) to the exact pid we recorded,
# after checking it is a redis-server running our config; KILL only after 20 s.
# shellcheck source=infra/redis/common.sh
source "$(dirname "$0")/common.sh"
pf="$(pidfile "$SVC")"
pid="$(cat "$pf" 2>/dev/null || true)"
if ! is_our_redis "$pid"; then
  log "redis: not running (nothing started by this project with $REDIS_CONF)"
  rm -f "$pf"
  exit 0
fi
stop_service "$SVC"
