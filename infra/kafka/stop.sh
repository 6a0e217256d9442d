#!/usr/bin/env bash
source "$(dirname "$0")/../lib.sh"
load_config
stop_service kafka
