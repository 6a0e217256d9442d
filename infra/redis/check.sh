#!/usr/bin/env bash
# Health check: the server answers PING with our password and refuses a client without it
# (not just an open port).
# shellcheck source=infra/redis/common.sh
source "$(dirname "$0")/common.sh"
where="$REDIS_HOST:$REDIS_PORT"
port_open "$REDIS_HOST" "$REDIS_PORT" || { echo "redis: nothing accepts connections on $where"; exit 1; }
if ! out="$(redis_cli ping 2>&1)" || [ "$out" != PONG ]; then
  echo "redis: $where up but PING with the password failed: $out"
  exit 1
fi
anon="$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>&1 || true)"
case "$anon" in
  *NOAUTH*) ;;
  *) echo "redis: $where answers without the password ($anon)"; exit 1 ;;
esac
version="$(redis_cli info server | sed -nE 's/^redis_version:([^[:space:]]+).*/\1/p')"
echo "redis: ok, Redis $version, $where (password required)"
