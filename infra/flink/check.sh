#!/usr/bin/env bash
# Health check: the JobManager's REST API answers /overview with every TaskManager registered
# (not just an open port).
# shellcheck source=infra/flink/common.sh
source "$(dirname "$0")/common.sh"
cd "$PROJECT_ROOT" && cluster_ready
