#!/usr/bin/env bash
# Starts the project's Redis server (Feast's online store; see common.sh). Idempotent: if ours
# is already up it says so and exits 0. The password is generated once (32 random bytes, hex)
# into $REDIS_PASSWORD_FILE, mode 0600; the config file is rewritten at every start from the
# project's config (port, bind address, data dir).
# shellcheck source=infra/redis/common.sh
source "$(dirname "$0")/common.sh"

pid="$(cat "$(pidfile "$SVC")" 2>/dev/null || true)"
if is_our_redis "$pid"; then
  wait_ready "$SVC" 30 redis_ready
  log "redis already running (pid $pid)"
  exit 0
fi
rm -f "$(pidfile "$SVC")"
if port_open "$REDIS_HOST" "$REDIS_PORT"; then
  die "port $REDIS_HOST:$REDIS_PORT is in use by a process this project did not start"
fi

mkdir -p "$REDIS_DATA"
chmod 0700 "$REDIS_HOME"
umask 077
if [ ! -s "$REDIS_PASSWORD_FILE" ]; then
  mkdir -p "$(dirname "$REDIS_PASSWORD_FILE")"
  log "generating the Redis password into $REDIS_PASSWORD_FILE (mode 0600)"
  od -An -vtx1 -N32 /dev/urandom | tr -d ' \n' >"$REDIS_PASSWORD_FILE"
fi
chmod 0600 "$REDIS_PASSWORD_FILE"
# the config holds the password too, so it is written 0600 (umask above)
{
  echo "# written by infra/redis/start.sh at every start; mode 0600 (holds the password)"
  echo "bind $REDIS_HOST"
  echo "port $REDIS_PORT"
  echo "protected-mode yes"
  echo "daemonize no"
  echo "dir $REDIS_DATA"
  echo "dbfilename dump.rdb"
  echo "save 3600 1 300 100"
  echo "appendonly no"
  echo "loglevel notice"
  # the title names our config file: is_our_redis (common.sh) recognises the pid by it
  echo "proc-title-template \"{title} {listen-addr} {server-mode} {config-file}\""
  echo "logfile \"\""
  printf 'requirepass %s\n' "$(cat "$REDIS_PASSWORD_FILE")"
} >"$REDIS_CONF"
chmod 0600 "$REDIS_CONF"

log "starting redis on $REDIS_HOST:$REDIS_PORT (data: $REDIS_DATA, log: $(logfile "$SVC"))"
# setsid: its own session, so a Ctrl-C in the terminal that ran `make up` does not reach it;
# the subshell and setsid exec in place: $! is redis-server
(cd / && exec setsid redis-server "$REDIS_CONF") </dev/null >>"$(logfile "$SVC")" 2>&1 &
echo $! > "$(pidfile "$SVC")"
wait_ready "$SVC" 30 redis_ready
"$PROJECT_ROOT/infra/redis/check.sh" >&2 || die "redis started but the check failed"
log "redis ready"
