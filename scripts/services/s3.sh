#!/usr/bin/env bash
# S3 test peer (s3rver, checks SigV4) for scripts/with-services.sh.
#   s3.sh start STATEDIR   start on 127.0.0.1:$HG_TEST_S3_PORT (14569), wait until it answers,
#                          print HG_TEST_S3_* lines; STATEDIR/ctl {stop|start} is for fault tests
#   s3.sh stop STATEDIR    stop it (pidfile)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
port=${HG_TEST_S3_PORT:-14569}
cmd=${1:-}
state=${2:-}
[ -n "$cmd" ] && [ -n "$state" ] || { echo "usage: $0 start|stop STATEDIR" >&2; exit 2; }
mkdir -p "$state/data"
state=$(cd "$state" && pwd)
pidfile=$state/s3.pid

if ! command -v node >/dev/null; then
  echo "s3.sh: node not found (scripts/install-deps.sh test)" >&2
  exit 1
fi

answering() {
  # Any HTTP answer counts (an unsigned GET / lists buckets); curl exits 0 on any status.
  curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/"
}

do_start() {
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    return 0
  fi
  if answering; then
    echo "s3.sh: port $port is already taken by something else" >&2
    exit 1
  fi
  nohup node "$root/test/fakes/s3server.js" "$port" "$state/data" >"$state/s3.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    if answering; then
      return 0
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "s3.sh: server exited; log follows" >&2
      cat "$state/s3.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "s3.sh: server did not answer within 10 s" >&2
  do_stop
  exit 1
}

do_stop() {
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

case "$cmd" in
  start)
    do_start
    ctl=$state/ctl
    printf '#!/bin/sh\n# Stop or restart the S3 test peer (fault tests).\nexec "%s" "$1" "%s" >/dev/null\n' \
      "$here/s3.sh" "$state" >"$ctl"
    chmod +x "$ctl"
    echo "HG_TEST_S3_ENDPOINT=http://127.0.0.1:$port"
    echo "HG_TEST_S3_ACCESS_KEY=S3RVER"
    echo "HG_TEST_S3_SECRET_KEY=S3RVER"
    echo "HG_TEST_S3_CTL=$ctl"
    ;;
  stop) do_stop ;;
  *) echo "usage: $0 start|stop STATEDIR" >&2; exit 2 ;;
esac
