#!/usr/bin/env bash
# Health check: the server accepts connections (pg_isready) and answers `select 1` as the
# catalog's role on the catalog's database (not just an open port).
# shellcheck source=infra/postgres/common.sh
source "$(dirname "$0")/common.sh"
where="$POSTGRES_USER@$POSTGRES_HOST:$POSTGRES_PORT/$POSTGRES_DB"
pg_ready || { echo "postgres: nothing accepts connections on $POSTGRES_HOST:$POSTGRES_PORT"; exit 1; }
if ! out="$(pg_sql "$POSTGRES_USER" "$POSTGRES_DB" -tA -c 'select 1' 2>&1)" || [ "$out" != 1 ]; then
  echo "postgres: server up but 'select 1' as $where failed: $out"
  exit 1
fi
version="$(pg_sql "$POSTGRES_USER" "$POSTGRES_DB" -tA -c 'show server_version')"
echo "postgres: ok, PostgreSQL $version, $where"
