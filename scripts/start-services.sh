#!/usr/bin/env bash
# Starts the real services the integration tests need and waits until they answer.
#
# - redis (scripts/redis.sh): a private redis-server on 127.0.0.1:6390 for the Redis
#   ledger's tests (tests/integration/test_redis_ledger.py); installed from Debian's
#   packages when missing.
# The DeepSeek sandbox is in-process (started by the tests themselves). Later issues add
# Keycloak, the OpenTelemetry Collector, nginx and SoftHSM2 here, each installed and
# cached by its own scripts/*.sh. Any failure exits non-zero: with
# SECURE_DS_REQUIRE_SERVICES=1 (CI) the tests would fail anyway, and this says why first.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

# Keycloak takes longest (about 45 s from its cache, 3 min the first time: download,
# Quarkus build, realm import), so it starts first, in the background, and is waited
# for last, while the others come up.
keycloak_log="$(mktemp)"
bash "$here/keycloak.sh" start >"$keycloak_log" 2>&1 &
keycloak_pid=$!

bash "$here/redis.sh" || {
    echo "start-services: redis failed to start (see the message above)" >&2
    exit 1
}
# - the OpenTelemetry Collector (scripts/otelcol.sh): built from its Go modules on the
#   first run (a few minutes, then cached in ~/.cache/secure-ds/otelcol), OTLP on
#   127.0.0.1:14318 (HTTP) / 14317 (gRPC), for the SIEM export tests (tests/siem/).
bash "$here/otelcol.sh" start || {
    echo "start-services: the OpenTelemetry Collector failed to build or start (see above)" >&2
    exit 1
}
# - nginx (scripts/nginx.sh): Debian's nginx-light, a private instance on 127.0.0.1:18443
#   with ssl_verify_client on (its test PKI in ~/.cache/secure-ds/nginx/pki); the identity
#   tests (tests/identity/test_nginx.py) start their own per-test instances of it.
bash "$here/nginx.sh" start || {
    echo "start-services: nginx failed to install or start (see the message above)" >&2
    exit 1
}
# - SoftHSM2 (scripts/softhsm.sh): a private PKCS#11 token under
#   ~/.cache/secure-ds/softhsm with the audit signer's test keys (no daemon: a library),
#   for tests/audit/test_pkcs11*.py and the HSM rotation test.
bash "$here/softhsm.sh" >/dev/null || {
    echo "start-services: the SoftHSM2 token could not be prepared (see the message above)" >&2
    exit 1
}
# - Keycloak 26 (scripts/keycloak.sh): the keycloak-quarkus-dist zip from Maven Central,
#   cached with its database and test PKI in ~/.cache/secure-ds/keycloak (the first start
#   takes minutes: download and Quarkus build; a restart about 40 s); realm secure-ds
#   from keycloak/realm-secure-ds.json on http 127.0.0.1:18180 and https (mTLS) :18543,
#   for the Keycloak token tests (tests/identity/test_keycloak*.py).
if ! wait "$keycloak_pid"; then
    cat "$keycloak_log" >&2
    echo "start-services: Keycloak failed to download or start (see the message above)" >&2
    exit 1
fi
rm -f "$keycloak_log"
echo "start-services: all services are up"
