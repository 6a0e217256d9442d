# Shared by infra/redis/{start,check,stop}.sh: sourced, never run.
#
# The project's own Redis server: Feast's online store. Everything lives under $STATE/redis
# (config, data dir); it listens on $REDIS_HOST:$REDIS_PORT only (loopback, 127.0.0.1:16379 by
# default, never 6379) and requires the password in $REDIS_PASSWORD_FILE (generated at first
# start, mode 0600). The password reaches the server through the generated config file (also
# 0600) and clients through REDISCLI_AUTH / the environment, never through argv or a log.
# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
load_config
# shellcheck disable=SC2034  # used by the scripts that source this file
SVC=redis
REDIS_HOME="$STATE/redis"
REDIS_DATA="$REDIS_HOME/data"
REDIS_CONF="$REDIS_HOME/redis.conf"
command -v redis-server >/dev/null 2>&1 || die "redis-server not found: run infra/install.sh \
(make install)"
case "$REDIS_HOST" in
  127.*) ;;
  *) die "redis.host=$REDIS_HOST: the project's Redis listens on loopback (127.x.x.x) only" ;;
esac

# redis_cli ARGS...: redis-cli against our server, password from the file via REDISCLI_AUTH
redis_cli() {
  [ -r "$REDIS_PASSWORD_FILE" ] || { echo "no password file $REDIS_PASSWORD_FILE" >&2; return 1; }
  REDISCLI_AUTH="$(cat "$REDIS_PASSWORD_FILE")" redis-cli --no-auth-warning \
    -h "$REDIS_HOST" -p "$REDIS_PORT" "$@"
}

redis_ready() { [ "$(redis_cli ping 2>/dev/null)" = PONG ]; }

# is_our_redis PID: alive, and a redis-server started with *our* config file (a stale pid
# file whose pid was reused by another process is never signalled). Redis rewrites its process
# title, so start.sh's proc-title-template puts the config file's path into it.
is_our_redis() {
  local pid="$1"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ -r "/proc/$pid/cmdline" ] || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$REDIS_CONF"
}
