#!/usr/bin/env bash
# Stops the project's Prometheus and Alertmanager: TERM to the exact pids we recorded, after
# checking each runs our config (KILL only after 20 s).
# shellcheck source=infra/prometheus/common.sh
source "$(dirname "$0")/common.sh"
for svc in prometheus alertmanager; do
  conf="$PROM_CONF"; [ "$svc" = alertmanager ] && conf="$AM_CONF"
  if is_ours "$svc" "$conf"; then stop_service "$svc"; else rm -f "$(pidfile "$svc")"; fi
done
