#!/usr/bin/env bash
# A real Keycloak 26 for the identity tests (tests/identity/test_keycloak*.py): the
# org.keycloak:keycloak-quarkus-dist zip from Maven Central, cached, started with
# `kc.sh start-dev --import-realm` and the realm in keycloak/realm-secure-ds.json.
#
#   scripts/keycloak.sh [start]  download/unpack if needed, start, wait until the realm
#                                answers (idempotent: a running instance returns at once)
#   scripts/keycloak.sh stop     stop this instance (no error when it is not running)
#   scripts/keycloak.sh restart  stop, then start
#   scripts/keycloak.sh status   exit 0 when the realm answers, 1 when not
#   scripts/keycloak.sh env      print the SECURE_DS_TEST_KEYCLOAK_* variables the tests read
#
# Cache ($SECURE_DS_KEYCLOAK_CACHE, default ~/.cache/secure-ds/keycloak): the zip (its
# SHA-1 checked against the .sha1 Maven Central publishes beside it; the download itself
# is over https), the unpacked distribution, and a throwaway test PKI made with openssl
# on the first run (pki/): a CA, Keycloak's server certificate, the tls_client_auth
# client's certificate (CN=secure-ds-mtls, issued by that CA) and the private_key_jwt
# client's key and self-signed certificate. None of it is in the repository; the realm
# file reads the JWT client's certificate from SECURE_DS_KC_JWT_CERT (Keycloak replaces
# ${...} placeholders in imported realm files with environment variables).
#
# Instance: state (pid, log) in ${XDG_RUNTIME_DIR:-/tmp}/secure-ds-services/keycloak.
# http://127.0.0.1:18180 (the issuer: --hostname pins it, so tokens fetched over either
# listener carry the same `iss`) and https://127.0.0.1:18543 with
# --https-client-auth=request and the test CA as its trust store: X.509 client
# authentication and RFC 8705 certificate-bound tokens need the client's certificate
# in the TLS handshake. The database is dev-file, kept in the cached distribution: a
# restart reuses it (measured: the schema and the realm import are most of a cold
# start); when the realm file or the PKI changed it is deleted and the realm imported
# afresh (start also restarts a running instance whose realm is out of date).
# The JVM is kept small (-Xms64m -Xmx512m, C1 JIT only: start-up is JIT-bound
# and the token endpoint needs no peak throughput): the test machine has two cores.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
REALM_FILE="$(cd "$here/../keycloak" && pwd)/realm-secure-ds.json"
VERSIONS="${SECURE_DS_KEYCLOAK_VERSION:-26.7.3 26.5.6}" # the first one Maven Central serves
CACHE="${SECURE_DS_KEYCLOAK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/secure-ds/keycloak}"
DIR="${SECURE_DS_KEYCLOAK_DIR:-${XDG_RUNTIME_DIR:-/tmp}/secure-ds-services/keycloak}"
HTTP_PORT="${SECURE_DS_KEYCLOAK_HTTP_PORT:-18180}"
HTTPS_PORT="${SECURE_DS_KEYCLOAK_HTTPS_PORT:-18543}"
MGMT_PORT="${SECURE_DS_KEYCLOAK_MANAGEMENT_PORT:-18190}"
WAIT_S="${SECURE_DS_KEYCLOAK_WAIT_S:-600}" # the first start builds (minutes on 2 busy cores)
MAVEN="${SECURE_DS_MAVEN_URL:-https://repo1.maven.org/maven2}"
PKI="$CACHE/pki"
PIDFILE="$DIR/keycloak.pid"
LOG="$DIR/keycloak.log"
STAMP="$DIR/realm.sha256"
REALM=secure-ds

die() {
    echo "keycloak.sh: $*" >&2
    exit 1
}

for tool in curl unzip openssl sha1sum; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed; install it (apt-get install $tool) and rerun"
done

well_known() { echo "http://127.0.0.1:${HTTP_PORT}/realms/${REALM}/.well-known/openid-configuration"; }

answers() {
    [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$(well_known)" 2>/dev/null || true)" = "200" ]
}

# --------------------------------------------------------------------------- distribution

# prints the unpacked distribution's directory on its last line
dist() {
    local v zip url
    for v in $VERSIONS; do
        if [ -x "$CACHE/keycloak-$v/bin/kc.sh" ]; then
            echo "$CACHE/keycloak-$v"
            return 0
        fi
    done
    mkdir -p "$CACHE"
    for v in $VERSIONS; do
        zip="$CACHE/keycloak-quarkus-dist-$v.zip"
        url="$MAVEN/org/keycloak/keycloak-quarkus-dist/$v/keycloak-quarkus-dist-$v.zip"
        if [ ! -f "$zip" ]; then
            echo "keycloak.sh: downloading Keycloak $v from $url (about 170 MB; cached in $CACHE)" >&2
            if ! curl -fsS --retry 2 -m 600 -o "$zip.part" "$url"; then
                rm -f "$zip.part"
                echo "keycloak.sh: Keycloak $v is not served at $url; trying the next version" >&2
                continue
            fi
            local want got
            want="$(curl -fsS -m 30 "$url.sha1" | cut -c1-40)" || die "cannot fetch $url.sha1 to check the download"
            got="$(sha1sum "$zip.part" | cut -c1-40)"
            [ "$want" = "$got" ] || {
                rm -f "$zip.part"
                die "the download of $url does not match its published SHA-1 ($got, expected $want); rerun"
            }
            mv -f "$zip.part" "$zip"
        fi
        rm -rf "$CACHE/unpack.$$"
        unzip -q "$zip" -d "$CACHE/unpack.$$" || die "cannot unpack $zip (delete it and rerun)"
        mv "$CACHE/unpack.$$/keycloak-$v" "$CACHE/keycloak-$v"
        rm -rf "$CACHE/unpack.$$"
        echo "$CACHE/keycloak-$v"
        return 0
    done
    die "none of Keycloak $VERSIONS could be downloaded from $MAVEN; is Maven Central reachable?"
}

# --------------------------------------------------------------------------- test PKI

pki() {
    [ -f "$PKI/.complete" ] && return 0
    echo "keycloak.sh: making the throwaway test PKI in $PKI" >&2
    rm -rf "$PKI"
    mkdir -p "$PKI"
    chmod 700 "$PKI"
    (
        cd "$PKI"
        local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
        openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 3650 \
            -subj "/CN=secure-ds Keycloak test CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
        openssl req "${ec[@]}" -keyout server.key -out server.csr -subj "/CN=127.0.0.1"
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 -out server.pem \
            -extfile <(printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n')
        openssl req "${ec[@]}" -keyout mtls-client.key -out mtls-client.csr -subj "/CN=secure-ds-mtls"
        openssl x509 -req -in mtls-client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 -out mtls-client.pem \
            -extfile <(printf 'extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n')
        # the private_key_jwt client's signing key: Keycloak is given its certificate
        openssl req -x509 "${ec[@]}" -keyout jwt-client.key -out jwt-client.pem -days 3650 -subj "/CN=secure-ds-jwt"
        rm -f ./*.csr ./*.srl
        chmod 600 ./*.key
    ) >"$CACHE/pki.log" 2>&1 || {
        cat "$CACHE/pki.log" >&2
        die "openssl failed to make the test PKI (log: $CACHE/pki.log)"
    }
    touch "$PKI/.complete"
}

jwt_cert_b64() { openssl x509 -in "$PKI/jwt-client.pem" -outform DER | base64 -w0; }

stamp() { cat "$REALM_FILE" "$PKI/ca.pem" "$PKI/jwt-client.pem" | sha256sum | cut -c1-64; }

# --------------------------------------------------------------------------- instance

java_home() {
    # Keycloak 26 runs on Java 17 (deprecated there) and 21+: prefer a newer JDK when the
    # machine has one, as Keycloak recommends
    local j
    if [ -n "${JAVA_HOME:-}" ]; then
        echo "$JAVA_HOME"
        return 0
    fi
    for j in /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/temurin-21-jdk-amd64 /usr/lib/jvm/java-21-openjdk-amd64; do
        if [ -x "$j/bin/java" ]; then
            echo "$j"
            return 0
        fi
    done
    command -v java >/dev/null 2>&1 || die "no Java found; install a JDK 17+ (apt-get install openjdk-17-jre-headless) and rerun"
    dirname "$(dirname "$(readlink -f "$(command -v java)")")"
}

start() {
    pki
    if answers; then
        if [ "$(cat "$STAMP" 2>/dev/null || true)" = "$(stamp)" ]; then
            echo "keycloak.sh: Keycloak already running on 127.0.0.1:$HTTP_PORT (state $DIR)"
            echo "http://127.0.0.1:${HTTP_PORT}"
            return 0
        fi
        echo "keycloak.sh: the realm file or the test PKI changed since this Keycloak started; restarting" >&2
        stop
    fi
    local home
    home="$(dist | tail -n 1)"
    mkdir -p "$DIR" "$home/data/import"
    # dev-file keeps the database (schema, master realm, the imported realm) in the cached
    # distribution, so a restart skips its creation; --import-realm skips a realm that
    # exists, so when the realm file or the PKI changed the database is started afresh
    if [ "$(cat "$home/data/realm.sha256" 2>/dev/null || true)" != "$(stamp)" ]; then
        rm -rf "$home/data/h2"
        stamp >"$home/data/realm.sha256"
    fi
    cp "$REALM_FILE" "$home/data/import/realm-secure-ds.json"
    rm -f "$PIDFILE"
    local started=$SECONDS
    # setsid: Keycloak outlives this script and is not killed with its shell; the pid
    # written is kc.sh's, which leads a process group of its own with the JVM it starts,
    # so stop signals the whole group.
    SECURE_DS_KC_JWT_CERT="$(jwt_cert_b64)" \
        JAVA_HOME="$(java_home)" \
        JAVA_OPTS_KC_HEAP="${SECURE_DS_KEYCLOAK_HEAP:--Xms64m -Xmx512m}" \
        JAVA_OPTS_APPEND="${SECURE_DS_KEYCLOAK_JAVA_OPTS:--XX:TieredStopAtLevel=1}" \
        KC_BOOTSTRAP_ADMIN_USERNAME="${KC_BOOTSTRAP_ADMIN_USERNAME:-admin}" \
        KC_BOOTSTRAP_ADMIN_PASSWORD="${KC_BOOTSTRAP_ADMIN_PASSWORD:-admin-test-password-not-for-production}" \
        setsid "$home/bin/kc.sh" start-dev --import-realm \
        --db=dev-file \
        --http-host=127.0.0.1 --http-port="$HTTP_PORT" \
        --https-port="$HTTPS_PORT" \
        --https-certificate-file="$PKI/server.pem" --https-certificate-key-file="$PKI/server.key" \
        --https-client-auth=request --https-trust-store-file="$PKI/ca.pem" \
        --hostname="http://127.0.0.1:$HTTP_PORT" \
        --http-management-port="$MGMT_PORT" \
        >"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    local deadline=$((SECONDS + WAIT_S))
    until answers; do
        if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
            tail -n 30 "$LOG" >&2 || true
            die "Keycloak exited at start (log: $LOG); is port $HTTP_PORT or $HTTPS_PORT taken?"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 30 "$LOG" >&2 || true
            die "Keycloak on 127.0.0.1:$HTTP_PORT did not serve realm $REALM within ${WAIT_S} s (log: $LOG)"
        fi
        sleep 0.2
    done
    stamp >"$STAMP"
    echo "keycloak.sh: Keycloak started on 127.0.0.1:$HTTP_PORT and https 127.0.0.1:$HTTPS_PORT in $((SECONDS - started)) s (pid $(cat "$PIDFILE"), log $LOG)"
    echo "http://127.0.0.1:${HTTP_PORT}"
}

stop() {
    [ -f "$PIDFILE" ] || return 0
    local pid
    pid="$(cat "$PIDFILE")"
    if kill -0 "$pid" 2>/dev/null; then
        # the process group setsid made: kc.sh and the JVM it started
        kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 20))
        while kill -0 "$pid" 2>/dev/null; do
            if [ "$SECONDS" -ge "$deadline" ]; then
                kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
    fi
    rm -f "$PIDFILE" "$STAMP"
    echo "keycloak.sh: Keycloak stopped (state $DIR)"
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    restart)
        stop
        start
        ;;
    status) answers ;;
    env)
        pki
        echo "SECURE_DS_TEST_KEYCLOAK_URL=http://127.0.0.1:${HTTP_PORT}"
        echo "SECURE_DS_TEST_KEYCLOAK_MTLS_URL=https://127.0.0.1:${HTTPS_PORT}"
        echo "SECURE_DS_TEST_KEYCLOAK_PKI=${PKI}"
        ;;
    *) die "unknown command ${1}; use start, stop, restart, status or env" ;;
esac
