#!/usr/bin/env bash
# Starts the real services the integration tests need and waits until they answer.
#
# Today the suite needs none beyond the in-process DeepSeek sandbox (started by the
# tests themselves). Later issues add Keycloak, the OpenTelemetry Collector, nginx,
# SoftHSM2 and Redis here, each installed and cached by its own scripts/*.sh.
set -euo pipefail
echo "start-services: no external services required yet"
