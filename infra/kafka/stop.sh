#!/usr/bin/env bash
# Stops exactly the Kafka processes this project started: the single broker and every node of a
# multi-node cluster that has a pid file (whatever kafka.brokers says now), each by its pid.
# A cluster's nodes get TERM together: one left alone has no controller quorum for its
# controlled shutdown and would only go at the KILL.
source "$(dirname "$0")/../lib.sh"
load_config
stop_service kafka
stops=()
for pf in "$STATE"/kafka/node-*/kafka.pid; do
  [ -f "$pf" ] || continue
  stop_service "kafka-$(basename "$(dirname "$pf")")" &
  stops+=("$!")
done
for pid in "${stops[@]}"; do wait "$pid"; done
