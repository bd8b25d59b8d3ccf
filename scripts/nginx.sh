#!/usr/bin/env bash
# nginx as an independent mutual-TLS peer for secure-ds's identity tests.
#
#   bash scripts/nginx.sh start    install nginx if missing, make a test PKI, start a
#                                  private instance on 127.0.0.1:18443 and check it
#   bash scripts/nginx.sh status   does the private instance answer (exit 0) or not (3)
#   bash scripts/nginx.sh stop     stop the private instance (only ours, by its pid file)
#   bash scripts/nginx.sh check    install nginx if missing and `nginx -t` our config
#
# - Installs Debian's nginx-light (or nginx) when `nginx` is missing; the package's
#   system service is kept from starting (policy-rc.d), we never use or touch it.
# - The instance is private: its own prefix, config, pid and logs under
#   ~/.cache/secure-ds/nginx (SECURE_DS_NGINX_DIR), listening on 127.0.0.1 only, on
#   SECURE_DS_NGINX_PORT (18443). The PKI (an EC P-256 test CA, a server certificate for
#   127.0.0.1/localhost and one client certificate) is made once with openssl and kept in
#   $DIR/pki; this script prints where.
# - `ssl_verify_client on` against the test CA, `ssl_protocols TLSv1.2 TLSv1.3`.
#
# What nginx fronts, and why: it serves a fixed OpenAI-shaped `GET /v1/models` (and
# `/models`) itself (`return 200`) and echoes what *it* verified about the client in
# response headers: X-Client-Fingerprint ($ssl_client_fingerprint, SHA-1 of the client
# certificate), X-Client-Subject ($ssl_client_s_dn), X-Client-Verify and X-TLS-Protocol.
# It does not proxy to the sandbox: the sandbox binds tokens to the certificate *it*
# sees, which behind a proxy would be nginx's own, and making the sandbox trust a
# certificate header from a proxy would add a trust path that exists only for tests.
# So nginx stays an independent TLS implementation checking our client's handshake,
# and the sandbox keeps checking tokens end to end. For streamed calls the tests start
# their own nginx per test (tests/identity/test_nginx*.py: a config in tmp_path, certs
# rotated per test) that proxies /chat/completions to a tiny local HTTP upstream and
# passes X-Client-Fingerprint to it, with buffering off, so a stream stays in flight
# while the tests rotate the client certificate.
#
# Idempotent: `start` with the instance already answering returns at once.
set -euo pipefail

DIR="${SECURE_DS_NGINX_DIR:-${HOME}/.cache/secure-ds/nginx}"
PORT="${SECURE_DS_NGINX_PORT:-18443}"
PKI="$DIR/pki"
CONF="$DIR/nginx.conf"
PIDFILE="$DIR/nginx.pid"
LOG="$DIR/error.log"
WAIT_S=15

die() {
    echo "nginx.sh: $*" >&2
    exit 1
}

nginx_bin() {
    command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true
}

install_nginx() {
    [ -n "$(nginx_bin)" ] && return 0
    command -v apt-get >/dev/null 2>&1 \
        || die "nginx is not installed and apt-get is not available; install nginx (with the ssl module) yourself and rerun"
    [ "$(id -u)" = "0" ] \
        || die "nginx is not installed; run this script as root (it uses apt-get) or run: sudo apt-get install nginx-light"
    echo "nginx.sh: installing nginx (Debian package)"
    # policy-rc.d exit 101: the package must not start the system-wide nginx on port 80
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
    fi
    aptlog="${TMPDIR:-/tmp}/secure-ds-nginx-apt.log"
    status=0
    {
        apt-get update -qq \
            && {
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light \
                    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx
            }
    } >"$aptlog" 2>&1 || status=$?
    if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi
    if [ "$status" != 0 ]; then
        tail -n 20 "$aptlog" >&2 || true
        die "apt-get install nginx-light/nginx failed (exit $status; log in $aptlog); check the network and apt sources, then rerun"
    fi
    [ -n "$(nginx_bin)" ] || die "nginx is still not found after installing it"
}

make_pki() {
    [ -s "$PKI/client.pem" ] && [ -s "$PKI/server.pem" ] && return 0
    command -v openssl >/dev/null 2>&1 || die "openssl is needed to make the test PKI; apt-get install openssl"
    mkdir -p "$PKI"
    chmod 700 "$PKI"
    (
        cd "$PKI"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
            -subj "/CN=secure-ds nginx test CA" -keyout ca-key.pem -out ca.pem \
            -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -subj "/CN=127.0.0.1" -keyout server-key.pem -out server.csr 2>/dev/null
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=critical,CA:FALSE\n' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 \
            -extfile server.ext -out server.pem 2>/dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -subj "/CN=nginx-smoke" -keyout client-key.pem -out client.csr 2>/dev/null
        printf 'extendedKeyUsage=clientAuth\nbasicConstraints=critical,CA:FALSE\n' >client.ext
        openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 \
            -extfile client.ext -out client.pem 2>/dev/null
        rm -f ./*.csr ./*.ext ca.srl
        chmod 600 ./*-key.pem
    ) || die "openssl failed to make the test PKI in $PKI"
}

write_conf() {
    mkdir -p "$DIR/tmp"
    # as root the workers would switch to nobody and could not read $DIR
    user_line=""
    if [ "$(id -u)" = "0" ]; then user_line="user root;"; fi
    cat >"$CONF" <<EOF
# written by scripts/nginx.sh; a private instance, not the system's nginx
$user_line
worker_processes 1;
pid $PIDFILE;
error_log $LOG info;
events { worker_connections 128; }
http {
    access_log off;
    client_body_temp_path $DIR/tmp/body;
    proxy_temp_path $DIR/tmp/proxy;
    fastcgi_temp_path $DIR/tmp/fastcgi;
    uwsgi_temp_path $DIR/tmp/uwsgi;
    scgi_temp_path $DIR/tmp/scgi;
    server {
        listen 127.0.0.1:$PORT ssl;
        ssl_certificate $PKI/server.pem;
        ssl_certificate_key $PKI/server-key.pem;
        ssl_client_certificate $PKI/ca.pem;
        ssl_verify_client on;
        ssl_verify_depth 2;
        ssl_protocols TLSv1.2 TLSv1.3;
        add_header X-Client-Fingerprint \$ssl_client_fingerprint always;
        add_header X-Client-Subject \$ssl_client_s_dn always;
        add_header X-Client-Verify \$ssl_client_verify always;
        add_header X-TLS-Protocol \$ssl_protocol always;
        location ~ ^(/v1)?/models\$ {
            default_type application/json;
            return 200 '{"object":"list","data":[{"id":"deepseek-chat","object":"model","owned_by":"deepseek"},{"id":"deepseek-reasoner","object":"model","owned_by":"deepseek"}]}';
        }
        location / {
            default_type application/json;
            return 404 '{"error":{"message":"not served by the nginx test peer","type":"invalid_request_error"}}';
        }
    }
}
EOF
}

answers() {
    [ -s "$PKI/client.pem" ] || return 1
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 \
        --cacert "$PKI/ca.pem" --cert "$PKI/client.pem" --key "$PKI/client-key.pem" \
        "https://127.0.0.1:$PORT/v1/models" 2>/dev/null || true)" = "200" ]
}

cmd="${1:-start}"
case "$cmd" in
check)
    install_nginx
    make_pki
    write_conf
    "$(nginx_bin)" -t -q -p "$DIR" -c "$CONF" || die "nginx -t refused $CONF"
    echo "nginx.sh: $("$(nginx_bin)" -v 2>&1) accepts $CONF"
    ;;
start)
    install_nginx
    if answers; then
        echo "nginx.sh: nginx already answering on https://127.0.0.1:$PORT (pki in $PKI)"
        exit 0
    fi
    command -v curl >/dev/null 2>&1 || die "curl is needed for the readiness check; apt-get install curl"
    make_pki
    write_conf
    "$(nginx_bin)" -t -q -p "$DIR" -c "$CONF" || die "nginx -t refused $CONF"
    rm -f "$PIDFILE"
    "$(nginx_bin)" -p "$DIR" -c "$CONF" || die "nginx failed to start on 127.0.0.1:$PORT; see $LOG (port taken?)"
    deadline=$((SECONDS + WAIT_S))
    until answers; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$LOG" >&2 || true
            die "nginx on 127.0.0.1:$PORT did not answer an mTLS GET /v1/models within ${WAIT_S} s (log: $LOG)"
        fi
        sleep 0.1
    done
    # a handshake without a client certificate must be refused (400 from nginx)
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 --cacert "$PKI/ca.pem" \
        "https://127.0.0.1:$PORT/v1/models" || true)"
    [ "$code" != "200" ] || die "nginx answered 200 without a client certificate; ssl_verify_client is not in effect"
    echo "nginx.sh: nginx started on https://127.0.0.1:$PORT (pid $(cat "$PIDFILE" 2>/dev/null || echo '?'))"
    echo "nginx.sh: pki in $PKI (ca.pem, client.pem, client-key.pem), config $CONF, log $LOG"
    ;;
status)
    if answers; then
        echo "nginx.sh: answering on https://127.0.0.1:$PORT (pki in $PKI)"
    else
        echo "nginx.sh: not answering on https://127.0.0.1:$PORT"
        exit 3
    fi
    ;;
stop)
    if [ -s "$PIDFILE" ]; then
        # SIGQUIT: graceful shutdown of our own master (and so its workers), by pid
        kill -QUIT "$(cat "$PIDFILE")" 2>/dev/null || true
        echo "nginx.sh: stopped the instance with pid file $PIDFILE"
    else
        echo "nginx.sh: no instance running from $DIR"
    fi
    ;;
*)
    die "unknown command '$cmd'; use start, stop, status or check"
    ;;
esac
