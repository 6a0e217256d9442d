#!/usr/bin/env bash
# Installs everything bookstream needs, idempotently, from the registries this project may use:
#   * uv (PyPI), then the locked Python environment (uv.lock) into .venv
#   * the JVM jars (infra/pom.xml, Maven Central) into $STATE/jars/{kafka,flink}
# Java 17 and Maven are expected on the machine (`bookstream doctor` checks).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
UV_VERSION=0.13.9

if ! command -v uv >/dev/null 2>&1 && [ ! -x "$ROOT/.tools/bin/uv" ]; then
  echo "[install] uv $UV_VERSION -> .tools/" >&2
  python3 -m venv "$ROOT/.tools"
  "$ROOT/.tools/bin/pip" install -q "uv==$UV_VERSION"
fi
UV="$(command -v uv || echo "$ROOT/.tools/bin/uv")"

# the lock is authoritative: --frozen fails instead of re-resolving
if [ ! -f .venv/.bookstream-synced ] || [ uv.lock -nt .venv/.bookstream-synced ] \
   || [ pyproject.toml -nt .venv/.bookstream-synced ]; then
  echo "[install] python environment from uv.lock -> .venv" >&2
  "$UV" sync --frozen --extra dev --python "$(command -v python3)"
  touch .venv/.bookstream-synced
fi

source "$ROOT/infra/lib.sh"
load_config
for profile in kafka flink; do
  dest="$STATE/jars/$profile"
  stamp="$dest/.complete"
  if [ ! -f "$stamp" ] || [ infra/pom.xml -nt "$stamp" ]; then
    log "jars ($profile) from Maven Central -> $dest"
    rm -rf "$dest"; mkdir -p "$dest"
    mvn -q -B -Dstyle.color=never -f infra/pom.xml -P"$profile" dependency:copy-dependencies \
      -DoutputDirectory="$dest" -DincludeScope=runtime
    touch "$stamp"
  fi
done
# Java glue for the stream job (Kafka provenance deserialiser, keyed string serialiser):
# compiled against the jars above, no extra downloads
glue_src="$PROJECT_ROOT/jobs/java"
glue_jar="$STATE/jars/flink/bookstream-flink-glue.jar"
if [ ! -f "$glue_jar" ] || [ -n "$(find "$glue_src" -newer "$glue_jar" -name '*.java')" ]; then
  log "compiling Flink glue -> $glue_jar"
  flink_dist="$("$PY" -c 'import pyflink, glob, os; print(glob.glob(os.path.join(os.path.dirname(pyflink.__file__), "lib", "flink-dist-*.jar"))[0])')"
  build="$(mktemp -d)"
  javac -nowarn --release 17 -d "$build" \
    -cp "$flink_dist:$STATE/jars/flink/flink-sql-connector-kafka-$FLINK_KAFKA_CONNECTOR_VERSION.jar" \
    $(find "$glue_src" -name '*.java')
  jar cf "$glue_jar" -C "$build" .
  rm -rf "$build"
fi
# PostgreSQL server binaries for the Iceberg SQL catalog: infra/postgres/start.sh runs the
# project's own cluster under $STATE/postgres, so Debian's "main" cluster is neither created
# nor started (a createcluster.d drop-in turns it off before the package's postinst runs).
if [ -z "$(pg_bindir)" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then
      command -v sudo >/dev/null 2>&1 || die "PostgreSQL missing and not root without sudo: \
install it yourself (apt-get install --no-install-recommends postgresql)"
      SUDO=(sudo)
    fi
    apt_log="$STATE/logs/apt-postgresql.log"
    log "PostgreSQL server: apt-get install postgresql (log: $apt_log)"
    "${SUDO[@]}" mkdir -p /etc/postgresql-common/createcluster.d
    printf '%s\n' "# bookstream (infra/install.sh): no Debian main cluster on 5432; the project runs" \
      "# its own under its state dir (infra/postgres/start.sh)" "create_main_cluster = false" \
      | "${SUDO[@]}" tee /etc/postgresql-common/createcluster.d/bookstream.conf >/dev/null
    apt_install() {
      "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends postgresql >>"$apt_log" 2>&1
    }
    # a fresh machine has no package lists: update only when the first attempt fails
    if ! apt_install; then
      if ! { "${SUDO[@]}" apt-get update -q >>"$apt_log" 2>&1 && apt_install; }; then
        tail -n 20 "$apt_log" >&2
        die "apt-get install postgresql failed (log: $apt_log)"
      fi
    fi
    [ -n "$(pg_bindir)" ] || die "postgresql installed but no initdb under /usr/lib/postgresql/*/bin"
  else
    log "WARNING: no PostgreSQL server (initdb) and no apt-get: install PostgreSQL 15+ for the" \
        "Iceberg catalog server (infra/postgres/start.sh)"
  fi
fi
log "install complete"
