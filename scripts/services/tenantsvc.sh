#!/usr/bin/env bash
# Fake tenant service (test/fakes/tenant_service.py) for scripts/with-services.sh.
#   tenantsvc.sh start STATEDIR   start on 127.0.0.1:$HG_TEST_TENANT_SERVICE_PORT (14571), wait
#                                 until it answers, print HG_TEST_TENANT_SERVICE_URL and _TOKEN
#   tenantsvc.sh stop STATEDIR    stop it (pidfile)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
port=${HG_TEST_TENANT_SERVICE_PORT:-14571}
token=test-tenant-token
cmd=${1:-}
state=${2:-}
[ -n "$cmd" ] && [ -n "$state" ] || { echo "usage: $0 start|stop STATEDIR" >&2; exit 2; }
mkdir -p "$state"
state=$(cd "$state" && pwd)
pidfile=$state/tenantsvc.pid

answering() {
  curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/_test/stats"
}

do_stop() {
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null && grep -q tenant_service "/proc/$pid/cmdline" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

do_start() {
  do_stop
  if answering; then
    echo "tenantsvc.sh: port $port is already taken by something else" >&2
    exit 1
  fi
  nohup python3 "$root/test/fakes/tenant_service.py" --port "$port" --token "$token" \
    >"$state/tenantsvc.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    answering && return 0
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "tenantsvc.sh: server exited; log follows" >&2
      cat "$state/tenantsvc.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "tenantsvc.sh: server did not answer within 10 s" >&2
  do_stop
  exit 1
}

case "$cmd" in
  start)
    do_start
    echo "HG_TEST_TENANT_SERVICE_URL=http://127.0.0.1:$port"
    echo "HG_TEST_TENANT_SERVICE_TOKEN=$token"
    ;;
  stop) do_stop ;;
  *) echo "usage: $0 start|stop STATEDIR" >&2; exit 2 ;;
esac
