# Shared by infra/prometheus/{start,check,stop}.sh: sourced, never run.
#
# The project's own Prometheus (scrapes every bookstream process, evaluates
# infra/prometheus/rules/) and Alertmanager (routes the alerts). Both are Debian's packages
# (infra/install.sh), run under $STATE/prometheus with configs generated at every start from
# the project's config ([metrics]); loopback only. Targets: file service discovery over
# $STATE/prometheus/targets/*.json, written by each process as it starts serving
# (jobs/metrics.py), so any number of stages on ports of their choosing are scraped.
# shellcheck source=infra/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
load_config
# shellcheck disable=SC2034  # used by the scripts that source this file
PROM_HOME="$STATE/prometheus"
PROM_CONF="$PROM_HOME/prometheus.yml"
AM_CONF="$PROM_HOME/alertmanager.yml"
RULES_DIR="$PROJECT_ROOT/infra/prometheus/rules"
case "$METRICS_HOST" in
  127.*) ;;
  *) die "metrics.host=$METRICS_HOST: the project's monitoring listens on loopback only" ;;
esac

prom_ready() { curl -fsS "http://$METRICS_HOST:$PROMETHEUS_PORT/-/ready" >/dev/null 2>&1; }
am_ready() { curl -fsS "http://$METRICS_HOST:$ALERTMANAGER_PORT/-/ready" >/dev/null 2>&1; }

# is_ours SERVICE CONF: the recorded pid is alive and runs with our config file
is_ours() {
  local pid
  pid="$(cat "$(pidfile "$1")" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2"
}
