# Shared by infra/postgres/{start,check,stop}.sh: sourced, never run.
#
# The project's own PostgreSQL server: the Iceberg SQL catalog for more than one writer.
# Everything lives under $STATE/postgres (data dir + unix socket); it listens on
# $POSTGRES_HOST:$POSTGRES_PORT only (loopback, 127.0.0.1:15432 by default, never 5432; any
# other host is refused) with scram-sha-256 password authentication for every role, on TCP and
# on the unix socket. The passwords (one per role: the superuser `postgres`, the catalog's
# $POSTGRES_USER) are random, made once by start.sh into the libpq password file $PGPASSFILE =
# $STATE/secrets/pgpass (mode 0600, directory 0700): psql and pg_isready here, psycopg2 in
# Python (the catalog URI names the file: udfs/config.py Config.catalog_uri) read them from
# there; no password is ever on a command line, in the environment or in a log.
#
# Root: PostgreSQL refuses to run as root (initdb, postgres and pg_ctl all check), so under
# root the server runs as the `postgres` system user (Debian's package creates it; start.sh
# creates it if missing) via `setpriv`, which execs in place: the pid we record is the
# postmaster's. $STATE/postgres is chowned to that user, the rest of the state dir (logs, pid
# files) stays root's: the log is opened by our shell, not by the server. That user must be
# able to *traverse* every parent of $STATE; start.sh checks each one and, only on those it
# cannot cross (e.g. a checkout under /root, drwx------), grants search permission alone
# (an ACL entry u:postgres:x where setfacl works, else o+x) and logs it. Nothing becomes
# listable or readable. Alternatives rejected: a data dir outside the state dir (`rm -rf
# .state` must stay a clean slate), user namespaces or capabilities (unavailable in many
# containers, and a postgres holding CAP_DAC_* is root-equivalent for files).
# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
load_config
# shellcheck disable=SC2034  # used by the scripts that source this file
SVC=postgres
PG_HOME="$STATE/postgres"
PG_DATA="$PG_HOME/data"
PG_BIN="$(pg_bindir)"
[ -n "$PG_BIN" ] || die "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin): \
run infra/install.sh (make install)"
case "$POSTGRES_HOST" in
  127.*) ;;
  *) die "lake.postgres_host=$POSTGRES_HOST: the project's server only listens on loopback \
(127.x.x.x); point lake.catalog_uri at another server instead" ;;
esac
PG_SECRETS="$STATE/secrets"
export PGPASSFILE="$PG_SECRETS/pgpass"

# pgpass_escape TEXT: a field of a libpq password file (\ and : escaped)
pgpass_escape() { local s="${1//\\/\\\\}"; printf '%s' "${s//:/\\:}"; }

# pg_password ROLE: the role's password from $PGPASSFILE (start.sh writes one line per role)
pg_password() {
  local prefix line
  prefix="*:*:*:$(pgpass_escape "$1"):"
  [ -r "$PGPASSFILE" ] || return 1
  while IFS= read -r line; do
    if [[ "$line" == "$prefix"* ]]; then printf '%s' "${line#"$prefix"}"; return 0; fi
  done <"$PGPASSFILE"
  return 1
}

if [ "$(id -u)" -eq 0 ]; then PG_OS_USER=postgres; else PG_OS_USER="$(id -un)"; fi

# AS_PG: the command prefix that runs a command as the server's OS user (empty unless root).
# setpriv execs in place (no parent left behind); runuser is the fallback where it is missing.
set_as_pg() {
  AS_PG=()
  if [ "$(id -u)" -ne 0 ]; then return; fi
  if command -v setpriv >/dev/null 2>&1; then
    AS_PG=(setpriv --reuid="$PG_OS_USER" --regid="$(id -g "$PG_OS_USER")" --init-groups --)
  else
    AS_PG=(runuser -u "$PG_OS_USER" --)
  fi
}

# as_pg CMD...: run CMD as the server's OS user, from / (that user may not be able to enter
# the caller's working directory)
as_pg() { set_as_pg; (cd / && exec "${AS_PG[@]}" "$@"); }

# pg_ready: the server accepts connections (as the superuser initdb made, which always exists:
# no "role does not exist" line in the log while start.sh waits)
pg_ready() {
  "$PG_BIN/pg_isready" -q -h "$POSTGRES_HOST" -p "$POSTGRES_PORT" -U postgres -d postgres -t 2
}

# pg_sql ROLE DB [psql args...]: psql over TCP (password from $PGPASSFILE), no ~/.psqlrc,
# stop on error, never a password prompt
pg_sql() {
  local role="$1" db="$2"; shift 2
  "$PG_BIN/psql" -X -q -w -v ON_ERROR_STOP=1 -h "$POSTGRES_HOST" -p "$POSTGRES_PORT" \
    -U "$role" -d "$db" "$@"
}

# postmaster_pid: pid in our data dir's postmaster.pid (empty when there is none)
postmaster_pid() {
  if [ -f "$PG_DATA/postmaster.pid" ]; then head -n 1 "$PG_DATA/postmaster.pid"; fi
}

# is_our_postgres PID: alive, and a postgres serving *our* data dir (a stale pid file whose pid
# was reused by another process is never signalled)
is_our_postgres() {
  local pid="$1"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ -r "/proc/$pid/cmdline" ] || return 0
  tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qxF -- "$PG_DATA"
}
