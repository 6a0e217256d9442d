#!/usr/bin/env bash
# Starts the project's Alertmanager and Prometheus (see common.sh). Idempotent. The configs
# are rewritten at every start; `promtool check config` refuses a bad one before anything
# starts. Alerts go to [metrics] alert_webhook_url when set (any receiver speaking
# Alertmanager's webhook JSON); otherwise they are only in Alertmanager (its UI and API).
# shellcheck source=infra/prometheus/common.sh
source "$(dirname "$0")/common.sh"
for bin in prometheus prometheus-alertmanager promtool; do
  command -v "$bin" >/dev/null 2>&1 || die "$bin not found: run infra/install.sh (make install)"
done
mkdir -p "$PROM_HOME/targets" "$PROM_HOME/data" "$PROM_HOME/alertmanager"

{
  echo "# written by infra/prometheus/start.sh at every start"
  echo "route:"
  echo "  receiver: bookstream"
  echo "  group_by: [alertname, process]"
  echo "  group_wait: ${ALERT_GROUP_WAIT_S}s"
  echo "  group_interval: ${ALERT_GROUP_WAIT_S}s"
  echo "  repeat_interval: 1h"
  echo "receivers:"
  echo "  - name: bookstream"
  if [ -n "$ALERT_WEBHOOK_URL" ]; then
    echo "    webhook_configs:"
    echo "      - url: '$ALERT_WEBHOOK_URL'"
    echo "        send_resolved: true"
  fi
} >"$AM_CONF"

{
  echo "# written by infra/prometheus/start.sh at every start"
  echo "global:"
  echo "  scrape_interval: ${SCRAPE_INTERVAL_S}s"
  echo "  evaluation_interval: ${SCRAPE_INTERVAL_S}s"
  echo "rule_files:"
  echo "  - $RULES_DIR/*.rules.yml"
  echo "alerting:"
  echo "  alertmanagers:"
  echo "    - static_configs:"
  echo "        - targets: ['$METRICS_HOST:$ALERTMANAGER_PORT']"
  echo "scrape_configs:"
  echo "  - job_name: bookstream"
  echo "    file_sd_configs:"
  echo "      - files: ['$PROM_HOME/targets/*.json']"
  echo "        refresh_interval: ${SCRAPE_INTERVAL_S}s"
  if [ "$FLINK_METRICS_REPORTER" = True ]; then
    lo="${FLINK_METRICS_PORTS%-*}"; hi="${FLINK_METRICS_PORTS#*-}"
    echo "  - job_name: flink"
    echo "    static_configs:"
    printf "      - targets: ["
    for ((p = lo; p <= hi; p++)); do printf "'%s:%s'%s" "$METRICS_HOST" "$p" "$([ "$p" -lt "$hi" ] && echo ,)"; done
    echo "]"
  fi
} >"$PROM_CONF"
promtool check config "$PROM_CONF" >&2 || die "generated $PROM_CONF does not check"

if is_ours alertmanager "$AM_CONF"; then
  log "alertmanager already running (pid $(cat "$(pidfile alertmanager)")): reloading its config"
  kill -HUP "$(cat "$(pidfile alertmanager)")"
else
  port_open "$METRICS_HOST" "$ALERTMANAGER_PORT" \
    && die "port $METRICS_HOST:$ALERTMANAGER_PORT is in use by a process this project did not start"
  log "starting alertmanager on $METRICS_HOST:$ALERTMANAGER_PORT (log: $(logfile alertmanager))"
  # --cluster.listen-address= : no gossip port (one instance, loopback only)
  (cd / && exec setsid prometheus-alertmanager --config.file="$AM_CONF" \
    --storage.path="$PROM_HOME/alertmanager" \
    --web.listen-address="$METRICS_HOST:$ALERTMANAGER_PORT" --cluster.listen-address=) \
    </dev/null >>"$(logfile alertmanager)" 2>&1 &
  echo $! >"$(pidfile alertmanager)"
fi
wait_ready alertmanager 30 am_ready

if is_ours prometheus "$PROM_CONF"; then
  log "prometheus already running (pid $(cat "$(pidfile prometheus)")): reloading its config"
  kill -HUP "$(cat "$(pidfile prometheus)")"
else
  port_open "$METRICS_HOST" "$PROMETHEUS_PORT" \
    && die "port $METRICS_HOST:$PROMETHEUS_PORT is in use by a process this project did not start"
  log "starting prometheus on $METRICS_HOST:$PROMETHEUS_PORT (log: $(logfile prometheus))"
  (cd / && exec setsid prometheus --config.file="$PROM_CONF" \
    --storage.tsdb.path="$PROM_HOME/data" --storage.tsdb.retention.time=15d \
    --web.listen-address="$METRICS_HOST:$PROMETHEUS_PORT" --web.enable-lifecycle) \
    </dev/null >>"$(logfile prometheus)" 2>&1 &
  echo $! >"$(pidfile prometheus)"
fi
wait_ready prometheus 60 prom_ready
"$PROJECT_ROOT/infra/prometheus/check.sh" >&2 || die "prometheus started but the check failed"
log "prometheus ready: http://$METRICS_HOST:$PROMETHEUS_PORT (alerts: http://$METRICS_HOST:$ALERTMANAGER_PORT)"
