#!/usr/bin/env bash
# Health check: both answer ready, Prometheus loaded our rule groups and knows Alertmanager.
# shellcheck source=infra/prometheus/common.sh
source "$(dirname "$0")/common.sh"
prom_ready || { echo "prometheus: not ready on $METRICS_HOST:$PROMETHEUS_PORT"; exit 1; }
am_ready || { echo "alertmanager: not ready on $METRICS_HOST:$ALERTMANAGER_PORT"; exit 1; }
base="http://$METRICS_HOST:$PROMETHEUS_PORT/api/v1"
groups="$(curl -fsS "$base/rules" | "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)["data"]["groups"]))')"
[ "$groups" -gt 0 ] || { echo "prometheus: no rule group loaded from $RULES_DIR"; exit 1; }
echo "prometheus: ok, $groups rule group(s), $METRICS_HOST:$PROMETHEUS_PORT; alertmanager $METRICS_HOST:$ALERTMANAGER_PORT"
