#!/usr/bin/env bash
# Fake WhatsApp Graph API (test/fakes/graph_api.py) for scripts/with-services.sh; it also fakes
# Twilio's media URLs and a storage host they redirect to (on a port of its own choosing).
#   graph.sh start STATEDIR   start on 127.0.0.1:$HG_TEST_GRAPH_PORT (14580), wait until it
#                             answers, print HG_TEST_GRAPH_URL, the tokens it accepts and the
#                             Twilio account (HG_TEST_TWILIO_ACCOUNT_SID, _AUTH_TOKEN)
#   graph.sh stop STATEDIR    stop it (pidfile)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
port=${HG_TEST_GRAPH_PORT:-14580}
token=test-graph-token
token2=test-graph-token-2
# The Graph token the fake tenant service gives tenant svc-alpha (test/fakes/tenant_service.py).
token_svc=alpha-at
# Twilio account whose media URLs the fake serves (Basic auth), and its auth token.
twilio_sid=AC0123456789abcdef0123456789abcdef
twilio_token=twilio-media-auth-token
cmd=${1:-}
state=${2:-}
[ -n "$cmd" ] && [ -n "$state" ] || { echo "usage: $0 start|stop STATEDIR" >&2; exit 2; }
mkdir -p "$state"
state=$(cd "$state" && pwd)
pidfile=$state/graph.pid

answering() {
  curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/_stats"
}

do_start() {
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    return 0
  fi
  if answering; then
    echo "graph.sh: port $port is already taken by something else" >&2
    exit 1
  fi
  TWILIO_ACCOUNT_SID=$twilio_sid TWILIO_AUTH_TOKEN=$twilio_token \
  nohup python3 "$root/test/fakes/graph_api.py" "$port" "$root/test/fixtures/media" \
    "$token" "$token2" "$token_svc" >"$state/graph.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 100); do
    if answering; then
      return 0
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "graph.sh: server exited; log follows" >&2
      cat "$state/graph.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "graph.sh: server did not answer within 10 s" >&2
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
    echo "HG_TEST_GRAPH_URL=http://127.0.0.1:$port"
    echo "HG_TEST_GRAPH_TOKEN=$token"
    echo "HG_TEST_GRAPH_TOKEN2=$token2"
    echo "HG_TEST_GRAPH_TOKEN_SVC=$token_svc"
    echo "HG_TEST_TWILIO_ACCOUNT_SID=$twilio_sid"
    echo "HG_TEST_TWILIO_AUTH_TOKEN=$twilio_token"
    ;;
  stop) do_stop ;;
  *) echo "usage: $0 start|stop STATEDIR" >&2; exit 2 ;;
esac
