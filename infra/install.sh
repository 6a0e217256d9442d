#!/usr/bin/env bash
# Installs everything bookstream needs, idempotently, from the registries this project may use:
#   * uv (PyPI, hash-pinned: infra/uv-requirements.txt), then the locked Python environment
#     (uv.lock) into .venv, on any Python 3.11 uv finds
#   * the JVM jars (infra/pom.xml, Maven Central; checksums enforced, sha256 pinned in
#     infra/jars.sha256) into $STATE/jars/{kafka,flink}
#   * the PostgreSQL server binaries (apt-get; the only step that may need root)
# Java 17 and Maven are expected on the machine (`bookstream doctor` checks).
#
# usage: infra/install.sh [--dev] [--bench] [--audit] [--python-only]
#   (none)         the runtime (what `make demo` runs): no test tools, no training packages
#   --dev          also the dev group (pytest, ruff, pandas) and the train extra (tests retrain)
#   --bench        also the bench group (kafka-python, hftbacktest: for `make bench`), added to
#                  what is there
#   --audit        also the audit group (cyclonedx-bom, for `make audit`), added to what is there
#   --python-only  the Python environment alone: no jars, no PostgreSQL, never needs root
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
UV_VERSION=0.13.9
PROFILE=runtime
PYTHON_ONLY=0
BENCH=0
AUDIT=0
for arg in "$@"; do
  case "$arg" in
    --dev) PROFILE=dev ;;
    --bench) BENCH=1 ;;
    --audit) AUDIT=1 ;;
    --python-only) PYTHON_ONLY=1 ;;
    *) echo "usage: infra/install.sh [--dev] [--bench] [--audit] [--python-only]" >&2; exit 2 ;;
  esac
done

if ! command -v uv >/dev/null 2>&1 && [ ! -x "$ROOT/.tools/bin/uv" ]; then
  echo "[install] uv $UV_VERSION -> .tools/ (sha256 checked: infra/uv-requirements.txt)" >&2
  grep -q "^uv==$UV_VERSION " infra/uv-requirements.txt \
    || { echo "[install] infra/uv-requirements.txt does not pin uv $UV_VERSION" >&2; exit 1; }
  bootstrap="$(command -v python3.11 || command -v python3 || true)"
  [ -n "$bootstrap" ] || { echo "[install] no python3 to bootstrap uv with" >&2; exit 1; }
  "$bootstrap" -m venv "$ROOT/.tools"
  "$ROOT/.tools/bin/pip" install -q --disable-pip-version-check --require-hashes \
    --only-binary :all: -r infra/uv-requirements.txt
fi
UV="$(command -v uv || echo "$ROOT/.tools/bin/uv")"

# the lock is authoritative: --frozen fails instead of re-resolving. `--python 3.11`: any 3.11
# uv finds (PATH, pyenv, uv-managed), not only a python3 that happens to be 3.11. One stamp per
# profile; a dev environment holds the runtime too, so it satisfies a runtime install, and it
# stays a dev environment: after a change of the lock a runtime install re-syncs dev too
# instead of removing the test tools.
if [ "$PROFILE" = runtime ] && [ -f .venv/.bookstream-synced-dev ]; then PROFILE=dev; fi
sync_args=(--frozen --python 3.11)
if [ "$PROFILE" = dev ]; then sync_args+=(--group dev --extra train); fi
stamp_fresh() {
  [ -f "$1" ] && [ ! uv.lock -nt "$1" ] && [ ! pyproject.toml -nt "$1" ]
}
if ! stamp_fresh .venv/.bookstream-synced-dev \
   && { [ "$PROFILE" = dev ] || ! stamp_fresh .venv/.bookstream-synced-runtime; }; then
  echo "[install] python environment ($PROFILE) from uv.lock -> .venv" >&2
  "$UV" sync "${sync_args[@]}"
  rm -f .venv/.bookstream-synced-*
  touch ".venv/.bookstream-synced-$PROFILE"
fi
if [ "$BENCH" = 1 ]; then  # --inexact: added beside whatever is installed, nothing removed
  "$UV" sync --frozen --python 3.11 --inexact --group bench
fi
if [ "$AUDIT" = 1 ]; then
  "$UV" sync --frozen --python 3.11 --inexact --group audit
fi
# bytecode of every installed module, once per sync: uv installs without it, and where
# PYTHONDONTWRITEBYTECODE is set (CI images, this machine) Python never writes it either, so
# every process compiled apache_beam, pandas, pyflink... from source at each start (~7 s of CPU
# in the demo's job set-up alone, again in each sink and in the JVM's embedded Python)
if [ ! .venv/.bookstream-bytecode -nt .venv/pyvenv.cfg ] \
   || [ -n "$(find .venv/.bookstream-synced-* -newer .venv/.bookstream-bytecode 2>/dev/null)" ]; then
  echo "[install] bytecode of .venv's modules (compileall)" >&2
  .venv/bin/python -m compileall -q -j 0 .venv/lib/python3.11/site-packages >/dev/null || true
  touch .venv/.bookstream-bytecode
fi
if [ "$PYTHON_ONLY" = 1 ]; then exit 0; fi

source "$ROOT/infra/lib.sh"
load_config

# verify_jars PROFILE: the jars in $STATE/jars/PROFILE are exactly those pinned in
# infra/jars.sha256, each with its pinned sha256 (also catches a tampered ~/.m2 cache, which
# Maven does not re-check)
verify_jars() {
  local profile="$1" pinned have
  pinned="$(grep -v '^#' "$PROJECT_ROOT/infra/jars.sha256" | grep "  $profile/" || true)"
  have="$(cd "$STATE/jars" && ls "$profile"/*.jar | grep -v '/bookstream-flink-glue.jar$' | sort)"
  if [ "$have" != "$(awk '{print $2}' <<<"$pinned" | sort)" ]; then
    die "jars ($profile) differ from infra/jars.sha256 (infra/pom.xml changed?): $(diff \
<(awk '{print $2}' <<<"$pinned" | sort) <(echo "$have") | grep '^[<>]' | tr '\n' ' ')"
  fi
  (cd "$STATE/jars" && sha256sum --quiet --strict -c <<<"$pinned") >&2 \
    || die "jars ($profile): sha256 differs from infra/jars.sha256"
}

for profile in kafka flink perf; do
  dest="$STATE/jars/$profile"
  stamp="$dest/.complete"
  if [ ! -f "$stamp" ] || [ infra/pom.xml -nt "$stamp" ] || [ infra/jars.sha256 -nt "$stamp" ]; then
    log "jars ($profile) from Maven Central -> $dest"
    rm -rf "$dest"; mkdir -p "$dest"
    # --strict-checksums: a download that does not match Central's checksum fails the build
    mvn -q -B -C -Dstyle.color=never -f infra/pom.xml -P"$profile" \
      dependency:copy-dependencies -DoutputDirectory="$dest" -DincludeScope=runtime
    verify_jars "$profile"
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
# Redis (Feast's online store), Prometheus and Alertmanager (metrics and alerts): the project's
# scripts (infra/redis/, infra/prometheus/) run them under $STATE with their own config, so
# Debian's services must neither start nor matter. Debian starts services through invoke-rc.d,
# which asks /usr/sbin/policy-rc.d; where there is none, one that forbids every start (exit 101)
# is put in place for the install and removed afterwards (Docker images ship exactly that file
# permanently).
# apt_install_service WHAT COMMAND PACKAGE...: install PACKAGEs unless COMMAND is on PATH
apt_install_service() {
  local what="$1" command="$2"; shift 2
  command -v "$command" >/dev/null 2>&1 && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    log "WARNING: no $command and no apt-get: install $* yourself ($what)"
    return 0
  fi
  local SUDO=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "$command missing and not root without sudo: \
install it yourself (apt-get install --no-install-recommends $*)"
    SUDO=(sudo)
  fi
  local apt_log="$STATE/logs/apt-$command.log" policy=/usr/sbin/policy-rc.d own_policy="" ok=1
  log "$what: apt-get install $* (log: $apt_log)"
  if [ ! -e "$policy" ]; then
    printf '%s\n' '#!/bin/sh' "# bookstream (infra/install.sh), removed after the install: \
no service starts" 'exit 101' | "${SUDO[@]}" tee "$policy" >/dev/null
    "${SUDO[@]}" chmod 0755 "$policy"
    own_policy=1
  fi
  apt_install() {
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends "$@" >>"$apt_log" 2>&1
  }
  # a fresh machine has no package lists: update only when the first attempt fails
  if ! apt_install "$@"; then
    "${SUDO[@]}" apt-get update -q >>"$apt_log" 2>&1 && apt_install "$@" || ok=""
  fi
  if [ -n "$own_policy" ]; then "${SUDO[@]}" rm -f "$policy"; fi
  if [ -z "$ok" ]; then
    tail -n 20 "$apt_log" >&2
    die "apt-get install $* failed (log: $apt_log)"
  fi
  command -v "$command" >/dev/null 2>&1 || die "$* installed but $command is not on PATH"
}
apt_install_service "Redis server" redis-server redis-server
apt_install_service "Prometheus and Alertmanager" prometheus-alertmanager \
  prometheus prometheus-alertmanager
if [ "$PROFILE" = dev ]; then  # tests/integration/test_live.py drives it through Playwright
  apt_install_service "Chromium (the live page's browser test)" chromium chromium
fi
log "install complete"
