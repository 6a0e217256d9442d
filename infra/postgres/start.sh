#!/usr/bin/env bash
# Starts the project's PostgreSQL server (the Iceberg SQL catalog; see common.sh for where it
# lives and how it runs under root). Idempotent: if ours is already up it says so, makes sure
# the role and database exist, and exits 0. The cluster is initialised once (initdb into
# $STATE/postgres/data) and reused on every later start; the listen address, port, socket dir
# and pg_hba.conf come from the config at every start.
# shellcheck source=infra/postgres/common.sh
source "$(dirname "$0")/common.sh"

# ensure_secrets: $PGPASSFILE holds a random password for the superuser and for
# $POSTGRES_USER (made once, kept across restarts); the file 0600, its directory 0700
ensure_secrets() {
  (umask 077 && mkdir -p "$PG_SECRETS")
  chmod 0700 "$PG_SECRETS"
  if ! pg_password postgres >/dev/null || ! pg_password "$POSTGRES_USER" >/dev/null; then
    log "generating PostgreSQL passwords -> $PGPASSFILE (mode 0600)"
    local tmp="$PGPASSFILE.tmp.$$" role
    (
      umask 077
      for role in postgres "$POSTGRES_USER"; do
        # 32 characters of [A-Za-z0-9] (192 random bits, base64 less its symbols)
        printf '*:*:*:%s:%s\n' "$(pgpass_escape "$role")" \
          "$(head -c 48 /dev/urandom | base64 -w0 | tr -d '/+=' | head -c 32)"
      done >"$tmp"
    )
    mv -f "$tmp" "$PGPASSFILE"
    rm -f "$PG_SECRETS/superuser.set"
  fi
  chmod 0600 "$PGPASSFILE"
}

# password_literal ROLE: its password, checked to be what ensure_secrets makes (so it can be
# written into SQL as a literal)
password_literal() {
  local pw
  pw="$(pg_password "$1")" || die "no password for role $1 in $PGPASSFILE"
  [[ "$pw" =~ ^[A-Za-z0-9]{32}$ ]] || die "$PGPASSFILE: the password of $1 is not 32 [A-Za-z0-9] \
(delete the file to make new ones)"
  printf '%s' "$pw"
}

# set_superuser_password: in single-user mode, before the server starts (no connection, so no
# authentication needed); the statement goes on stdin, its output nowhere
set_superuser_password() {
  if [ -f "$PG_SECRETS/superuser.set" ] && [ ! "$PGPASSFILE" -nt "$PG_SECRETS/superuser.set" ]; then
    return 0
  fi
  log "setting the superuser's password (single-user mode)"
  as_pg "$PG_BIN/postgres" --single -D "$PG_DATA" -c password_encryption=scram-sha-256 \
    postgres >/dev/null 2>&1 <<<"ALTER ROLE postgres PASSWORD '$(password_literal postgres)'" \
    || die "could not set the superuser's password in single-user mode"
  touch "$PG_SECRETS/superuser.set"
}

# ensure_role_db: role $POSTGRES_USER (LOGIN, its password) and database $POSTGRES_DB owned by it
ensure_role_db() {
  local sql=(pg_sql postgres postgres -tA -v role="$POSTGRES_USER" -v db="$POSTGRES_DB")
  if [ -z "$("${sql[@]}" <<<"SELECT 1 FROM pg_roles WHERE rolname = :'role'")" ]; then
    log "creating role $POSTGRES_USER"
    "${sql[@]}" <<<"SELECT format('CREATE ROLE %I LOGIN', :'role') \\gexec"
  fi
  # the password on stdin, never on a command line; set at every start (the file may be new)
  "${sql[@]}" <<<"SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', :'role', \
'$(password_literal "$POSTGRES_USER")') \\gexec"
  if [ -z "$("${sql[@]}" <<<"SELECT 1 FROM pg_database WHERE datname = :'db'")" ]; then
    log "creating database $POSTGRES_DB owned by $POSTGRES_USER"
    "${sql[@]}" <<<"SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role') \\gexec"
  fi
  # Feast's SQL registry (feature_repo/feature_store.yaml), owned by the same role
  sql=(pg_sql postgres postgres -tA -v role="$POSTGRES_USER" -v db="$FEAST_REGISTRY_DB")
  if [ -z "$("${sql[@]}" <<<"SELECT 1 FROM pg_database WHERE datname = :'db'")" ]; then
    log "creating database $FEAST_REGISTRY_DB (Feast registry) owned by $POSTGRES_USER"
    "${sql[@]}" <<<"SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role') \\gexec"
  fi
}

ensure_secrets
pid="$(postmaster_pid)"
if is_our_postgres "$pid"; then
  if [ ! -f "$PG_SECRETS/superuser.set" ] || [ "$PGPASSFILE" -nt "$PG_SECRETS/superuser.set" ]
  then
    die "postgres (pid $pid) runs with older passwords than $PGPASSFILE: restart it \
(bash infra/postgres/stop.sh; bash infra/postgres/start.sh)"
  fi
  echo "$pid" > "$(pidfile "$SVC")"
  wait_ready "$SVC" 60 pg_ready
  ensure_role_db
  log "postgres already running (pid $pid)"
  exit 0
fi
rm -f "$(pidfile "$SVC")"
# a postmaster killed a moment ago lingers as a zombie until it is reaped, and postgres would
# take its postmaster.pid for a live server: give the reaper a few seconds
zombie() { [ -n "$1" ] && [ "$(sed -E 's/.*\) (.).*/\1/' "/proc/$1/stat" 2>/dev/null)" = Z ]; }
for _ in $(seq 1 20); do if zombie "$pid"; then sleep 0.5; else break; fi; done
if port_open "$POSTGRES_HOST" "$POSTGRES_PORT"; then
  die "port $POSTGRES_HOST:$POSTGRES_PORT is in use by a process this project did not start"
fi

mkdir -p "$PG_HOME"
if [ "$(id -u)" -eq 0 ]; then
  if ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
    log "creating system user $PG_OS_USER (PostgreSQL refuses to run as root)"
    getent group "$PG_OS_USER" >/dev/null || groupadd --system "$PG_OS_USER"
    useradd --system --gid "$PG_OS_USER" --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$PG_OS_USER"
  fi
  # top-down: a parent's grant must come first for the check on its children to be meaningful
  parents=()
  d="$PG_HOME"
  while d="$(dirname "$d")"; [ "$d" != / ]; do parents=("$d" "${parents[@]}"); done
  for d in "${parents[@]}"; do
    as_pg test -x "$d" && continue
    if [ "$d" = "$STATE" ]; then
      # the state dir stays closed to everyone else: 0710, group = the server's group
      chgrp "$(id -g "$PG_OS_USER")" "$d"
      chmod 0710 "$d"
      log "granted traverse-only (group $(id -gn "$PG_OS_USER"), 0710) on $d for the server"
    elif command -v setfacl >/dev/null 2>&1 && setfacl -m "u:$PG_OS_USER:x" "$d" 2>/dev/null; then
      log "granted traverse-only (ACL u:$PG_OS_USER:x) on $d so the server can reach $PG_HOME"
    else
      chmod o+x "$d"
      log "granted traverse-only (chmod o+x) on $d so the server can reach $PG_HOME"
    fi
    as_pg test -x "$d" || die "$PG_OS_USER still cannot traverse $d"
  done
  chown "$PG_OS_USER:" "$PG_HOME"
  if [ -d "$PG_DATA" ] && [ "$(stat -c %U "$PG_DATA")" != "$PG_OS_USER" ]; then
    chown -R "$PG_OS_USER:" "$PG_DATA"
  fi
fi
chmod 0700 "$PG_HOME"

if [ ! -s "$PG_DATA/PG_VERSION" ]; then
  log "initialising the PostgreSQL cluster in $PG_DATA (as $PG_OS_USER)"
  # --auth=reject: no way in until pg_hba.conf below (scram) and the superuser's password
  as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=reject --no-locale -E UTF8 \
    --no-instructions >>"$(logfile "$SVC")" 2>&1 \
    || { tail -n 20 "$(logfile "$SVC")" >&2; die "initdb failed (log: $(logfile "$SVC"))"; }
fi
bin_major="$("$PG_BIN/postgres" -V | sed -nE 's/^[^0-9]*([0-9]+).*/\1/p')"
data_major="$(cat "$PG_DATA/PG_VERSION")"
[ "$bin_major" = "$data_major" ] || die "$PG_DATA holds a PostgreSQL $data_major cluster but \
the server binaries ($PG_BIN) are $bin_major: install $data_major or delete $PG_DATA"

# a password (scram-sha-256) for every role, on our unix socket and loopback only
as_pg tee "$PG_DATA/pg_hba.conf" >/dev/null <<'HBA'
# written by infra/postgres/start.sh at every start: scram-sha-256 passwords for every role,
# on the unix socket and loopback only (passwords: $STATE/secrets/pgpass)
local all all              scram-sha-256
host  all all 127.0.0.0/8  scram-sha-256
HBA
set_superuser_password

# the unix socket goes in $PG_HOME; sun_path holds 107 bytes, so a very deep state dir gets
# TCP only (every client here uses TCP anyway)
socket_dir="$PG_HOME"
if [ $(( ${#PG_HOME} + ${#POSTGRES_PORT} + 10 )) -gt 107 ]; then
  log "state dir too deep for a unix socket path (107 bytes max): TCP only"
  socket_dir=""
fi

log "starting postgres on $POSTGRES_HOST:$POSTGRES_PORT (data: $PG_DATA, log: $(logfile "$SVC"))"
# setsid: its own session, so a Ctrl-C in the terminal that ran `make up` (SIGINT = fast
# shutdown for postgres) does not reach it. The subshell, setsid (not a group leader here) and
# setpriv all exec in place: $! is the postmaster.
set_as_pg
(cd / && exec setsid "${AS_PG[@]}" "$PG_BIN/postgres" -D "$PG_DATA" -p "$POSTGRES_PORT" \
   -c listen_addresses="$POSTGRES_HOST" -c unix_socket_directories="$socket_dir" \
   -c password_encryption=scram-sha-256) \
  </dev/null >>"$(logfile "$SVC")" 2>&1 &
echo $! > "$(pidfile "$SVC")"
wait_ready "$SVC" 60 pg_ready
# the postmaster's own record of its pid is authoritative (same pid unless runuser forked)
postmaster_pid > "$(pidfile "$SVC")"
ensure_role_db
"$PROJECT_ROOT/infra/postgres/check.sh" >&2 || die "postgres started but the check failed"
log "postgres ready"
