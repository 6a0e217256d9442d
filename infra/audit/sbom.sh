#!/usr/bin/env bash
# `make audit`: CycloneDX SBOMs of what bookstream runs, and a licence report over them.
#   $STATE/audit/sbom-python.cdx.json  the locked Python environment (.venv, from uv.lock)
#   $STATE/audit/sbom-jars-<profile>.cdx.json  the JVM jars of each infra/pom.xml profile
#                                      (kafka, flink: runtime; perf: make bench)
#   $STATE/audit/licences.tsv          one row per component: ecosystem, name, version, scope,
#                                      licence, class (infra/audit/licences.py)
# Both SBOMs are reproducible (no timestamps or random serials), so two runs on the same lock
# give the same bytes. Network: PyPI (cyclonedx-bom, the audit group) and Maven Central (the
# CycloneDX Maven plugin), the registries the project already installs from.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
bash "$PROJECT_ROOT/infra/install.sh" --audit --python-only
load_config
out="$STATE/audit"
mkdir -p "$out"
CYCLONEDX_MAVEN_PLUGIN=org.cyclonedx:cyclonedx-maven-plugin:2.9.3

log "SBOM of the Python environment -> $out/sbom-python.cdx.json"
"$VENV/bin/cyclonedx-py" environment --pyproject "$PROJECT_ROOT/pyproject.toml" \
  --output-reproducible --of JSON -o "$out/sbom-python.cdx.json" "$PY"

# one SBOM per profile: install.sh resolves (and copies) each profile on its own, and a
# combined resolution would mediate versions differently (perf's slf4j 1.7 vs kafka's 2.0)
for profile in kafka flink perf; do
  log "SBOM of the JVM jars ($profile) -> $out/sbom-jars-$profile.cdx.json"
  mvn -q -B -Dstyle.color=never -f "$PROJECT_ROOT/infra/pom.xml" -P"$profile" \
    "$CYCLONEDX_MAVEN_PLUGIN:makeBom" -DoutputFormat=json -DoutputName="sbom-jars-$profile.cdx" \
    -DoutputDirectory="$out" -DincludeTestScope=false -DoutputReproducible=true
done

# the runtime set (what `make demo` installs), to tell runtime components from tooling
UV="$(command -v uv || echo "$PROJECT_ROOT/.tools/bin/uv")"
(cd "$PROJECT_ROOT" && "$UV" export --frozen --no-dev --no-hashes --no-emit-project \
  --format requirements-txt) >"$out/runtime-requirements.txt"

"$PY" "$PROJECT_ROOT/infra/audit/licences.py" --python-sbom "$out/sbom-python.cdx.json" \
  --jvm-sboms "$out"/sbom-jars-{kafka,flink,perf}.cdx.json --runtime "$out/runtime-requirements.txt" \
  --jars-dir "$STATE/jars" --out "$out/licences.tsv"
