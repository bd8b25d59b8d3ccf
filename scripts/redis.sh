#!/usr/bin/env bash
# Starts a private redis-server for the Redis ledger's integration tests and waits
# until it answers.
#
# - Installs Debian's redis-server package when redis-server is not on PATH (CI and a
#   fresh machine start without it; we run as root there).
# - Runs its own instance on 127.0.0.1:6390, not the system default 6379, so it never
#   meets (or flushes) a Redis someone else runs on the host. Nothing is persisted:
#   the tests create what they need and flush their own namespace.
# - Idempotent: when the instance already answers PING it does nothing, so calling it
#   again (make test after make test) costs a few milliseconds.
#
# The tests read SECURE_DS_TEST_REDIS_URL (default redis://127.0.0.1:6390/0); this
# script prints that URL on its last line. Override the port with SECURE_DS_REDIS_PORT
# (then set SECURE_DS_TEST_REDIS_URL to match).
set -euo pipefail

PORT="${SECURE_DS_REDIS_PORT:-6390}"
STATE="${XDG_RUNTIME_DIR:-/tmp}/secure-ds-services/redis"
PIDFILE="$STATE/redis.pid"
LOG="$STATE/redis.log"
URL="redis://127.0.0.1:${PORT}/0"
WAIT_S=15

die() {
    echo "redis.sh: $*" >&2
    exit 1
}

answers() {
    [ "$(redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null || true)" = "PONG" ]
}

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 \
        || die "redis-server is not installed and apt-get is not available; install Redis >= 6.2 yourself and rerun"
    [ "$(id -u)" = "0" ] \
        || die "redis-server is not installed; run this script as root (it uses apt-get) or run: sudo apt-get install redis-server"
    echo "redis.sh: installing redis-server (Debian package)"
    # policy-rc.d exit 101 stops the package from starting the system-wide service on
    # 6379: we only want the binaries, and a container has no init to run it anyway
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
    fi
    status=0
    {
        apt-get update -qq \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                redis-server
    } >"${TMPDIR:-/tmp}/secure-ds-redis-apt.log" 2>&1 || status=$?
    if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi
    if [ "$status" != 0 ]; then
        tail -n 20 "${TMPDIR:-/tmp}/secure-ds-redis-apt.log" >&2 || true
        die "apt-get install redis-server failed (exit $status; full log in ${TMPDIR:-/tmp}/secure-ds-redis-apt.log); check the network and apt sources, then rerun"
    fi
    command -v redis-server >/dev/null 2>&1 || die "redis-server is still not on PATH after installing it"
fi

if answers; then
    echo "redis.sh: redis already running on port $PORT"
    echo "$URL"
    exit 0
fi

mkdir -p "$STATE"
# a stale pidfile from a killed instance would not stop redis-server starting, but
# remove it so the pid we report is this instance's
rm -f "$PIDFILE"
redis-server \
    --bind 127.0.0.1 --port "$PORT" --protected-mode yes \
    --save "" --appendonly no \
    --daemonize yes --pidfile "$PIDFILE" --logfile "$LOG" --dir "$STATE" \
    || die "redis-server failed to start on port $PORT; see $LOG"

deadline=$((SECONDS + WAIT_S))
until answers; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        tail -n 20 "$LOG" >&2 || true
        die "redis-server on 127.0.0.1:$PORT did not answer PING within ${WAIT_S} s (log: $LOG); is the port taken by another program?"
    fi
    sleep 0.1
done
echo "redis.sh: redis started on port $PORT (pid $(cat "$PIDFILE" 2>/dev/null || echo '?'), log $LOG)"
echo "$URL"
