#!/usr/bin/env bash
# A real OpenTelemetry Collector for the SIEM export tests: built from the collector's
# Go modules (audit/collector/otelcol: OTLP receiver gRPC + HTTP, batch processor, file
# and debug exporters), cached, and run on private loopback ports with a file exporter.
#
#   scripts/otelcol.sh [start]   build if needed, start, wait until it answers (idempotent)
#   scripts/otelcol.sh build     build only; prints the binary's path on its last line
#   scripts/otelcol.sh stop      stop this instance (no error when it is not running)
#   scripts/otelcol.sh restart   stop, then start
#   scripts/otelcol.sh status    exit 0 when it answers, 1 when not
#   scripts/otelcol.sh validate CONFIG...   the built binary's `validate` on each config
#
# Build: the binary is cached in $SECURE_DS_OTELCOL_CACHE (default
# ~/.cache/secure-ds/otelcol), keyed by the SHA-256 of main.go, go.mod, go.sum and the
# Go version, beside Go's own module and build caches, so only the first build takes
# minutes (about two on two cores) and a second run takes milliseconds. go.sum is
# committed and the build runs with -mod=readonly: the module proxy's content is checked
# against it. Needs the machine's Go (>= 1.26) and the Go module proxy the first time.
#
# Instance: one per state directory. Defaults: OTLP/HTTP on 127.0.0.1:14318, OTLP/gRPC
# on 127.0.0.1:14317, state in ${XDG_RUNTIME_DIR:-/tmp}/secure-ds-services/otelcol,
# what it receives written as OTLP JSON lines to $DIR/out/{logs,traces,metrics}.jsonl
# (appended to: a restarted instance keeps what the one before it wrote).
# Tests start their own instances (to stop and restart them mid-run) by setting
# SECURE_DS_OTELCOL_DIR, SECURE_DS_OTELCOL_HTTP_PORT and SECURE_DS_OTELCOL_GRPC_PORT.
# The collector's own telemetry is off, so instances never compete for port 8888.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
SRC="$(cd "$here/../audit/collector/otelcol" && pwd)"
CACHE="${SECURE_DS_OTELCOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/secure-ds/otelcol}"
DIR="${SECURE_DS_OTELCOL_DIR:-${XDG_RUNTIME_DIR:-/tmp}/secure-ds-services/otelcol}"
HTTP_PORT="${SECURE_DS_OTELCOL_HTTP_PORT:-14318}"
GRPC_PORT="${SECURE_DS_OTELCOL_GRPC_PORT:-14317}"
PIDFILE="$DIR/otelcol.pid"
LOG="$DIR/otelcol.log"
CONFIG="$DIR/config.yaml"
OUT="$DIR/out"
WAIT_S="${SECURE_DS_OTELCOL_WAIT_S:-20}"

die() {
    echo "otelcol.sh: $*" >&2
    exit 1
}

binary_path() {
    command -v go >/dev/null 2>&1 \
        || die "Go is not installed (the collector is built from its Go modules); install Go >= 1.26 and rerun"
    local key
    key="$(cat "$SRC/main.go" "$SRC/go.mod" "$SRC/go.sum" <(GOTOOLCHAIN=local go env GOVERSION) \
        | sha256sum | cut -c1-16)"
    echo "$CACHE/bin/otelcol-$key"
}

build() {
    local bin
    bin="$(binary_path)"
    if [ -x "$bin" ]; then
        echo "$bin"
        return 0
    fi
    mkdir -p "$CACHE/bin" "$CACHE/gomod" "$CACHE/gobuild"
    echo "otelcol.sh: building the collector (first time: a few minutes; cached in $CACHE)" >&2
    local started=$SECONDS tmp="$bin.tmp.$$"
    (
        cd "$SRC"
        GOTOOLCHAIN=local GOMODCACHE="$CACHE/gomod" GOCACHE="$CACHE/gobuild" GOFLAGS="-mod=readonly -buildvcs=false" \
            go build -trimpath -ldflags="-s -w" -o "$tmp" .
    ) >"$CACHE/build.log" 2>&1 || {
        tail -n 30 "$CACHE/build.log" >&2 || true
        rm -f "$tmp"
        die "go build of the collector failed (log: $CACHE/build.log); is the Go module proxy reachable?"
    }
    mv -f "$tmp" "$bin"
    echo "otelcol.sh: built $bin in $((SECONDS - started)) s" >&2
    echo "$bin"
}

command -v curl >/dev/null 2>&1 || die "curl is not installed (it checks that the collector answers); install it (apt-get install curl) and rerun"

answers() {
    # an empty OTLP/HTTP logs request: 200 once the receiver is up
    [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' -X POST \
        -H 'Content-Type: application/json' -d '{}' \
        "http://127.0.0.1:${HTTP_PORT}/v1/logs" 2>/dev/null || true)" = "200" ]
}

write_config() {
    mkdir -p "$OUT"
    cat >"$CONFIG" <<EOF
# written by scripts/otelcol.sh: OTLP in on loopback, every signal to its own JSON-lines file
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${GRPC_PORT}
      http:
        endpoint: 127.0.0.1:${HTTP_PORT}
exporters:
  file/logs:
    path: ${OUT}/logs.jsonl
    append: true
    flush_interval: 50ms
  file/traces:
    path: ${OUT}/traces.jsonl
    append: true
    flush_interval: 50ms
  file/metrics:
    path: ${OUT}/metrics.jsonl
    append: true
    flush_interval: 50ms
service:
  telemetry:
    logs:
      level: warn
    metrics:
      level: none
  pipelines:
    logs:
      receivers: [otlp]
      exporters: [file/logs]
    traces:
      receivers: [otlp]
      exporters: [file/traces]
    metrics:
      receivers: [otlp]
      exporters: [file/metrics]
EOF
}

start() {
    if answers; then
        echo "otelcol.sh: collector already running on 127.0.0.1:$HTTP_PORT (state $DIR)"
        echo "http://127.0.0.1:${HTTP_PORT}"
        return 0
    fi
    local bin
    bin="$(build | tail -n 1)"
    mkdir -p "$DIR"
    write_config
    rm -f "$PIDFILE"
    # setsid: the collector outlives this script and is not killed with its shell
    setsid "$bin" --config="$CONFIG" >"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    local deadline=$((SECONDS + WAIT_S))
    until answers; do
        if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
            tail -n 20 "$LOG" >&2 || true
            die "the collector exited at start (log: $LOG); is port $HTTP_PORT or $GRPC_PORT taken?"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$LOG" >&2 || true
            die "the collector on 127.0.0.1:$HTTP_PORT did not answer within ${WAIT_S} s (log: $LOG)"
        fi
        sleep 0.05
    done
    echo "otelcol.sh: collector started on 127.0.0.1:$HTTP_PORT (pid $(cat "$PIDFILE"), output $OUT, log $LOG)"
    echo "http://127.0.0.1:${HTTP_PORT}"
}

stop() {
    [ -f "$PIDFILE" ] || return 0
    local pid
    pid="$(cat "$PIDFILE")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 10))
        while kill -0 "$pid" 2>/dev/null; do
            if [ "$SECONDS" -ge "$deadline" ]; then
                kill -9 "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.05
        done
    fi
    rm -f "$PIDFILE"
    echo "otelcol.sh: collector stopped (state $DIR)"
}

case "${1:-start}" in
    build) build ;;
    start) start ;;
    stop) stop ;;
    restart)
        stop
        start
        ;;
    status) answers ;;
    validate)
        shift
        bin="$(build | tail -n 1)"
        for config in "$@"; do
            "$bin" validate --config="$config" || die "$config is not a valid configuration for this collector"
            echo "otelcol.sh: $config is valid"
        done
        ;;
    *) die "unknown command ${1}; use start, build, stop, restart, status or validate CONFIG..." ;;
esac
