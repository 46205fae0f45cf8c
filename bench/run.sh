#!/usr/bin/env bash
# hookgate benchmarks (issue 4): HTTP ceiling (nginx), ingest, full pipeline, latency, idle
# connections, instructions per webhook. Usage: bench/run.sh [--quick]
#
# Everything runs on 127.0.0.1 ports of its own, under build/bench/, each step bounded in time;
# everything started here is stopped on exit. Prints one table and writes bench/results/<date>.md
# (quick runs: <date>-quick.md). --quick shortens every step (whole run < 2 min) and only checks
# that the harness works; no run asserts timing. --only 2,5,6 runs just those figures (the ratio
# needs 1 too); a partial run writes <date>-partial.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=0
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --only) ONLY=",${2:?--only needs a list like 2,5,6},"; shift ;;
    *) echo "usage: $0 [--quick] [--only 1,2,3,4,5,6]" >&2; exit 2 ;;
  esac
  shift
done
# want N: is figure N part of this run?
want() { [ -z "$ONLY" ] || [[ $ONLY == *",$1,"* ]]; }

B=$ROOT/build/bench
HG=${HOOKGATE_BIN:-$ROOT/build/hookgate}  # HOOKGATE_BIN: measure another build (e.g. a baseline)
LG=$B/loadgen
RES=$B/results.ndjson
SECRET=demo-app-secret
FIXED_TS=1749416383

if [ $QUICK = 1 ]; then
  DUR=1; WARM=0.3; LAT500=2; LAT5000=2; IDLE_N=1000; CG_WARM=50; CG_N=200; DRAIN_MAX=20; LADDER="1000 2000"; LADDER_S3="500 1000"
  CEIL_CONNS="16"; INGEST_CONNS="16 64"
else
  DUR=5; WARM=1; LAT500=15; LAT5000=10; IDLE_N=10000; CG_WARM=200; CG_N=2000; DRAIN_MAX=120
  LADDER="1000 1500 2000 2500 3000 3500 4000 4500 5000 5500 6000 6500 7000"
  LADDER_S3="250 500 750 1000 1500 2000 2500 3000 3500 4000"
  CEIL_CONNS="16 64"; INGEST_CONNS="16 64 256"
fi

log() { printf 'bench: %s\n' "$*" >&2; }

# ---- build what the benches need ----
mkdir -p "$B"
if [ ! -x "$HG" ]; then
  make -s all
fi
CEIL=$B/amqp_ceiling
FLOOR=$B/fsync_floor
# bench/build.sh holds the tools' compiler command lines (the e2e test builds them the same way).
bench/build.sh "$B" amqp_ceiling fsync_floor || log "figures 3 and 4 go without the broker ceiling or the fsync floor (see above)"
bench/build.sh "$B" loadgen || { log "cannot build $LG"; exit 1; }
for tool in nginx curl python3; do
  command -v $tool >/dev/null || { echo "bench: $tool is missing (scripts/install-deps.sh bench)" >&2; exit 1; }
done

# 10,000 idle connections need as many descriptors in loadgen and in hookgate.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE_N + 200)) ]; then
  IDLE_N=$(( $(ulimit -n) - 200 ))
  log "ulimit -n is $(ulimit -n): idle connection test lowered to $IDLE_N"
fi

# ---- process bookkeeping: every pid started here is stopped on exit ----
PIDS=()
stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port below the ephemeral range (so no client socket of ours can take it meanwhile), in no
# socket of any state.
free_port() {
  local p lo
  lo=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  [ "$lo" -gt 12000 ] || lo=32768
  for p in $(shuf -i 10000-$((lo - 1)) -n 100); do
    if [ -z "$(ss -Htan "sport = :$p" 2>/dev/null)" ]; then echo "$p"; return 0; fi
  done
  echo "bench: no free port" >&2; return 1
}

# wait_http URL SECONDS: until URL answers 200.
wait_http() {
  local url=$1 secs=$2 i
  for i in $(seq 1 $((secs * 10))); do
    curl -sf -o /dev/null "$url" && return 0
    sleep 0.1
  done
  return 1
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# record JSON: append one result line (already JSON) to the run's results.
record() { printf '%s\n' "$1" >>"$RES"; }

# lg BENCH LABEL LOADGEN-ARGS...: run loadgen, keep its JSON line tagged with the bench number.
lg() {
  local bench=$1 label=$2; shift 2
  local out
  out=$("$LG" -l "$label" -s "$SECRET" "$@" 2>>"$B/loadgen.log") || true
  if [ -z "$out" ]; then
    log "$label: loadgen produced no result (see $B/loadgen.log)"
    record "{\"bench\":$bench,\"label\":\"$label\",\"failed\":true}"
    return 0
  fi
  record "{\"bench\":$bench,${out#\{}"
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("bench: %-28s %9.0f req/s  p50 %.3f  p99 %.3f  p99.9 %.3f ms  errors %d" % (r["label"], r["rps"], r["p50_ms"], r["p99_ms"], r["p999_ms"], r["errors"]))' "$out" >&2
}

# ---- nginx: the HTTP ceiling ----
NGINX_PID=""
start_nginx() {
  local d=$B/nginx
  rm -rf "$d"; mkdir -p "$d"
  NGINX_PORT=$(free_port)
  sed -e "s|@DIR@|$d|g" -e "s|@PORT@|$NGINX_PORT|g" bench/nginx.conf.in >"$d/nginx.conf"
  nginx -c "$d/nginx.conf" -p "$d" -e "$d/error.log" >"$d/stdout.log" 2>&1 &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
  wait_http "http://127.0.0.1:$NGINX_PORT/webhooks/whatsapp" 10 || { log "nginx did not start"; cat "$d/error.log" >&2; return 1; }
}

# ---- hookgate, embedded spool + ndjson, one worker ----
HG_PID=""
# start_hookgate NAME [PREFIX-COMMAND...]: fresh spool and out dirs under build/bench/NAME.
start_hookgate() {
  local name=$1; shift
  local d=$B/$name
  rm -rf "$d"; mkdir -p "$d"
  HG_PORT=$(free_port)
  HG_ADMIN_PORT=$(free_port)
  while [ "$HG_ADMIN_PORT" = "$HG_PORT" ]; do HG_ADMIN_PORT=$(free_port); done
  cat >"$d/hookgate.conf" <<EOF
; generated by bench/run.sh
[admin]
listen = 127.0.0.1:$HG_ADMIN_PORT
[server]
listen = 127.0.0.1:$HG_PORT
workers = 1
max_connections = 20000
keepalive_timeout = 300s
[log]
level = warn
[whatsapp]
app_secret = $SECRET
verify_token = bench-verify-token
[spool]
dir = $d/spool
[ndjson]
dir = $d/out
${HG_EXTRA_CONF:-}
EOF
  "$@" "$HG" -c "$d/hookgate.conf" >"$d/hookgate.log" 2>&1 &
  HG_PID=$!
  PIDS+=("$HG_PID")
  local secs=15
  [ $# -gt 0 ] && secs=90 # under valgrind
  wait_http "http://127.0.0.1:$HG_ADMIN_PORT/ready" $secs || { log "hookgate did not become ready"; tail -5 "$d/hookgate.log" >&2; return 1; }
}

metric() { awk -v m="$1" '$1 == m {print $2}' "$2"; }
# msum REGEX FILE: sum of the /metrics samples whose name{labels} matches (0 when none).
msum() { awk -v re="$1" '$1 ~ re {s += $2} END {printf "%d", s}' "$2" 2>/dev/null || echo 0; }

# ---- machine description ----
: >"$RES"
: >"$B/loadgen.log"
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$B/machine.json" <<EOF
import json, subprocess, sys
def sh(c):
    try: return subprocess.run(c, shell=True, capture_output=True, text=True, timeout=10).stdout.strip() or subprocess.run(c, shell=True, capture_output=True, text=True, timeout=10).stderr.strip()
    except Exception as e: return "?"
m = {
  "date": sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
  "nproc": sh("nproc"),
  "cpu": sh("lscpu | sed -n 's/^Model name: *//p' | head -1"),
  "mem": sh("awk '/MemTotal/ {printf \"%.1f GiB\", \$2/1048576}' /proc/meminfo"),
  "kernel": sh("uname -sr"),
  "os": sh(". /etc/os-release && echo \$PRETTY_NAME"),
  "fs": sh("df -hT $B | awk 'NR==2 {print \$2\" on \"\$1}'"),
  "cc": sh("cc --version | head -1"),
  "nginx": sh("nginx -v 2>&1"),
  "hookgate": sh("$HG -v") + (" (binary ${HOOKGATE_BIN:-})" if "${HOOKGATE_BIN:-}" else " (git " + sh("git rev-parse --short HEAD") + ")"),
  "libuv": sh("pkg-config --modversion libuv"),
  "jansson": sh("pkg-config --modversion jansson"),
  "mbedtls": sh("grep -h 'define MBEDTLS_VERSION_STRING ' /usr/include/mbedtls/version.h | cut -d'\"' -f2"),
  "valgrind": sh("valgrind --version"),
  "perf_counters": sh("perf stat -e instructions true 2>&1 | grep -q 'not supported' && echo 'not available (virtualised)' || (command -v perf >/dev/null && echo available || echo 'perf not installed')"),
  "load_start": "$START_LOAD",
  "quick": $QUICK == 1,
}
json.dump(m, open(sys.argv[1], "w"))
EOF

# idle_rss LABEL PID PORT: RSS per idle keep-alive connection (figure 5).
idle_rss() { # idle_rss LABEL PID PORT
  local label=$1 pid=$2 port=$3 ready=$B/idle.ready before after lgpid i n
  rm -f "$ready"
  # The idle run sends one webhook per connection (so each is a used keep-alive connection). Send
  # as many over 16 connections first, so the allocator and the spool are already warm when the
  # baseline is taken and the difference is what the connections themselves hold.
  "$LG" -p "$port" -s "$SECRET" -c 16 -n "$IDLE_N" -d 60 >/dev/null 2>>"$B/loadgen.log" || true
  sleep 1.5
  before=$(rss_kib "$pid")
  "$LG" -p "$port" -s "$SECRET" --idle "$IDLE_N" -d 120 --ready-file "$ready" -l "$label" \
     >"$B/idle.json" 2>>"$B/loadgen.log" &
  lgpid=$!
  PIDS+=("$lgpid")
  for i in $(seq 1 900); do [ -s "$ready" ] && break; kill -0 $lgpid 2>/dev/null || break; sleep 0.1; done
  if [ ! -s "$ready" ]; then
    log "$label: idle connections never all answered"
    record "{\"bench\":5,\"label\":\"$label\",\"failed\":true}"
    stop_pid $lgpid
    return 0
  fi
  n=$(cat "$ready")
  # hookgate trims its heap after a quiet second (up to 2 s after the last answer): measure after.
  sleep 2.5
  after=$(rss_kib "$pid")
  stop_pid $lgpid
  record "{\"bench\":5,\"label\":\"$label\",\"conns\":$n,\"rss_before_kib\":$before,\"rss_with_kib\":$after}"
  log "$(printf '%-28s RSS %s KiB -> %s KiB with %s idle connections: %s KiB/conn' "$label" "$before" "$after" "$n" \
        "$(python3 -c "print('%.2f' % (($after - $before) / $n))")")"
}

# syscall_run LABEL: syscalls per webhook of the running hookgate (HG_PID, HG_PORT) at 500 req/s,
# counted by strace -f -c over the whole process (loop, threadpool). strace slows every syscall,
# so this is a count, not a time: like the instruction count it does not move with machine noise.
syscall_run() {
  local label=$1 st=$B/strace-$$.txt out secs=$((DUR + 1)) spid
  command -v strace >/dev/null || { record "{\"bench\":6,\"kind\":\"syscalls\",\"label\":\"$label\",\"skipped\":\"strace not installed\"}"; return 0; }
  rm -f "$st"
  strace -f -c -qq -o "$st" -p "$HG_PID" 2>>"$B/loadgen.log" &
  spid=$!
  sleep 0.5
  out=$("$LG" -l "$label" -s "$SECRET" -p "$HG_PORT" -c 32 -R 500 -d "$secs" 2>>"$B/loadgen.log") || true
  sleep 0.5 # the drain finishes the last records (publish, dedup done) inside the count
  kill -INT "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
  record "$(python3 - "$label" "$st" "$out" <<'PY'
import json, re, sys
label, path, out = sys.argv[1:4]
try:
    ok = json.loads(out)["ok"]
except Exception:
    ok = 0
calls = {}
try:
    for l in open(path):
        m = re.match(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", l)
        if m and m.group(2) != "total":
            calls[m.group(2)] = int(m.group(1))
except OSError:
    pass
if ok and calls:
    print(json.dumps({"bench": 6, "kind": "syscalls", "label": label, "requests": ok, "calls": calls}))
else:
    print(json.dumps({"bench": 6, "kind": "syscalls", "label": label, "failed": True}))
PY
)"
  rm -f "$st"
}

# ---- (1) HTTP ceiling: nginx ----
if want 1 || want 4 || want 5; then
log "(1) HTTP ceiling: nginx, 1 worker"
start_nginx
if want 1; then
  for c in $CEIL_CONNS; do
    lg 1 "nginx c=$c" -p "$NGINX_PORT" -c "$c" -d "$DUR" -w "$WARM"
  done
fi

# ---- (4, reference) latency floor of the loopback + client: nginx open loop ----
if want 4; then
  lg 4 "nginx @500/s" -p "$NGINX_PORT" -c 32 -R 500 -d "$DUR"
  lg 4 "nginx @5000/s" -p "$NGINX_PORT" -c 64 -R 5000 -d "$DUR"
fi

# ---- (5, reference) nginx worker RSS per idle connection ----
NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -1 || true)
if want 5 && [ -n "$NGINX_WORKER" ]; then
  idle_rss "nginx worker idle" "$NGINX_WORKER" "$NGINX_PORT"
fi
stop_pid "$NGINX_PID"
fi

# ---- (2) ingest: hookgate 1 worker, embedded spool + ndjson, signatures on ----
if want 2; then
log "(2) ingest: hookgate, 1 worker, spool + ndjson, signature verification on"
for c in $INGEST_CONNS; do
  start_hookgate hg-ingest
  lg 2 "hookgate c=$c" -p "$HG_PORT" -c "$c" -d "$DUR" -w "$WARM"
  curl -sf "http://127.0.0.1:$HG_ADMIN_PORT/metrics" >"$B/metrics-c$c.txt" || true
  fs_n=$(metric spool_fsync_duration_seconds_count "$B/metrics-c$c.txt"); fs_s=$(metric spool_fsync_duration_seconds_sum "$B/metrics-c$c.txt")
  req_n=$(awk '$1 ~ /^http_requests_total\{code="200"\}/ {print $2}' "$B/metrics-c$c.txt")
  record "{\"bench\":2,\"kind\":\"metrics\",\"label\":\"hookgate c=$c\",\"fsyncs\":${fs_n:-0},\"fsync_seconds\":${fs_s:-0},\"requests_200\":${req_n:-0}}"
  stop_pid "$HG_PID"
  rm -rf "$B/hg-ingest"
done
start_hookgate hg-ingest
lg 2 "hookgate c=64 mix" -p "$HG_PORT" -c 64 -d "$DUR" -w "$WARM" -b mix
stop_pid "$HG_PID"
fi

# ---- (4) latency, open loop, hookgate ingest ----
if want 4; then
log "(4) latency, open loop (latency from the scheduled send time)"
start_hookgate hg-latency
lg 4 "hookgate @500/s" -p "$HG_PORT" -c 32 -R 500 -d "$LAT500" -w 1
lg 4 "hookgate @5000/s" -p "$HG_PORT" -c 128 -R 5000 -d "$LAT5000" -w 1
stop_pid "$HG_PID"
rm -rf "$B/hg-latency"
start_hookgate hg-latency
syscall_run "ingest @500/s"
stop_pid "$HG_PID"
rm -rf "$B/hg-ingest" "$B/hg-latency"
# The machine's floor under the @500/s figure: a lone commit's threadpool round trip, empty and
# with pwrite + fdatasync into a zero-filled file on the spool's disk (see bench/fsync_floor.c).
if [ -x "$FLOOR" ]; then
  for mode in empty fdatasync; do
    out=$("$FLOOR" "$mode" 500 "$LAT500" "$B/fsync-floor.dat" 2>>"$B/loadgen.log" || true)
    if [ -n "$out" ]; then
      record "{\"bench\":4,\"kind\":\"floor\",${out#\{}"
      log "floor @500/s, $mode job: $(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("p50 %.3f / p99 %.3f / p99.9 %.3f ms" % (r["p50_ms"], r["p99_ms"], r["p999_ms"]))' "$out")"
    fi
  done
fi
fi

# ---- (3) full pipeline: Redis + RabbitMQ + S3 ----
if want 3; then
log "(3) full pipeline"
if ! nm "$HG" 2>/dev/null | grep ' T hg_amqp_' >/dev/null; then
  record '{"bench":3,"label":"full pipeline","skipped":"full pipeline not available yet: build/hookgate has no AMQP client (no hg_amqp_* symbols), HOOKGATE_AMQP_URL is accepted by the config but nothing publishes"}'
  log "skipped: full pipeline not available yet (no hg_amqp_* in build/hookgate)"
elif ! ls scripts/services/rabbitmq.sh scripts/services/redis.sh >/dev/null 2>&1; then
  record '{"bench":3,"label":"full pipeline","skipped":"full pipeline not available yet: scripts/services/{rabbitmq,redis}.sh missing, cannot start the peers"}'
  log "skipped: no scripts/services to start the peers"
else
  # The peers come from scripts/services (KEY=VALUE lines, ports from HG_TEST_*_PORT when set),
  # with fresh state; hookgate gets them as config sections.
  SVC=$B/services; rm -rf "$SVC"; mkdir -p "$SVC"; STARTED_SVC=()
  stop_services() { local s; for s in "${STARTED_SVC[@]}"; do "scripts/services/$s.sh" stop "$SVC/$s" >/dev/null 2>&1 || true; done; }
  trap 'stop_services; cleanup' EXIT
  ok=1
  for s in redis rabbitmq s3; do
    [ -x "scripts/services/$s.sh" ] || { ok=0; continue; }
    mkdir -p "$SVC/$s"
    if out=$("scripts/services/$s.sh" start "$SVC/$s" 2>>"$B/services.log"); then
      STARTED_SVC+=("$s")
      while IFS= read -r line; do [ -n "$line" ] && export "${line?}"; done <<<"$out"
    else ok=0; log "could not start $s (see $B/services.log)"; fi
  done
  BROKER_CONF="[amqp]
url = ${HG_TEST_AMQP_URL:-}
[redis]
url = ${HG_TEST_REDIS_URL:-}
[ratelimit]
default = 1000000000"
  S3_CONF="[s3]
endpoint = ${HG_TEST_S3_ENDPOINT:-}
access_key = ${HG_TEST_S3_ACCESS_KEY:-}
secret_key = ${HG_TEST_S3_SECRET_KEY:-}
bucket = hookgate-bench"
  # pipeline_run LABEL: closed loop c=64 against the running hookgate. Acked is what loadgen
  # sees; published is what the broker confirmed, counted from the run's start until the drain
  # has caught up (or stalled for 5 s), so a backlog left behind is charged to the run.
  pipeline_run() {
    local label=$1 m0=$B/metrics-full-0.txt m1=$B/metrics-full-1.txt t0 t1 i acc conf last=-1 still=0 left
    curl -sf "http://127.0.0.1:$HG_ADMIN_PORT/metrics" >"$m0" || true
    t0=$(date +%s.%N)
    lg 3 "$label" -p "$HG_PORT" -c 64 -d "$DUR" -w "$WARM"
    # Where the load stopped: from here on the drain catches up with the intake idle, and its rate
    # is the drain's (and the broker's) alone.
    local te c_end
    te=$(date +%s.%N)
    curl -sf "http://127.0.0.1:$HG_ADMIN_PORT/metrics" >"$m1" || true
    c_end=$(( $(msum '^rabbitmq_publish_total.*status="confirmed"' "$m1") - $(msum '^rabbitmq_publish_total.*status="confirmed"' "$m0") ))
    for i in $(seq 1 $((DRAIN_MAX * 5))); do
      curl -sf "http://127.0.0.1:$HG_ADMIN_PORT/metrics" >"$m1" || true
      acc=$(( $(msum '^webhook_received_total.*type="webhook",status="accepted"' "$m1") - $(msum '^webhook_received_total.*type="webhook",status="accepted"' "$m0") ))
      conf=$(( $(msum '^rabbitmq_publish_total.*status="confirmed"' "$m1") - $(msum '^rabbitmq_publish_total.*status="confirmed"' "$m0") ))
      [ "$conf" -ge "$acc" ] && break
      if [ "$conf" = "$last" ]; then still=$((still + 1)); [ $still -ge 25 ] && break; else still=0; fi
      last=$conf
      sleep 0.2
    done
    t1=$(date +%s.%N)
    left=$(msum '^spool_records' "$m1")
    record "$(python3 -c 'import json,sys
l=sys.argv[1]; t0,t1,a,c,s,te,ce=map(float,sys.argv[2:9])
r={"bench":3,"kind":"published","label":l,"accepted":int(a),"confirmed":int(c),"spool_records_left":int(s),"seconds":round(t1-t0,3),"published_rps":round(c/(t1-t0),1)}
# The catch-up alone, when it lasted long enough to be a rate (1 s).
if t1-te >= 1.0 and c > ce: r.update(catchup_events=int(c-ce), catchup_seconds=round(t1-te,3), catchup_rps=round((c-ce)/(t1-te),1))
print(json.dumps(r))' "$label" "$t0" "$t1" "$acc" "$conf" "${left:-0}" "$te" "$c_end")"
    log "$label: $acc webhooks accepted, $conf events confirmed by the broker in $(python3 -c "print('%.1f' % ($t1 - $t0))") s"
  }
  # pipeline_ladder LABEL RATES...: the sustained rate. The closed loop above overdrives the intake
  # (it accepts far faster than the broker confirms, and that intake's CPU is taken from the broker
  # on these 2 cores); here open-loop runs at rising rates, each DUR s, until one is not kept up
  # with: kept up = the loadgen reached the rate, no error, and within 1 s of the run's end the
  # broker had confirmed every accepted event and (with S3) the spool was empty again, every
  # record archived. The sustained rate is the highest kept up with.
  pipeline_ladder() {
    local label=$1 r m0=$B/metrics-lad-0.txt m1=$B/metrics-lad-1.txt out acc conf i t_end lag ok left
    shift
    local tries
    for r in "$@"; do
     # A step not kept up is tried once more before the ladder stops: on this shared machine a
     # neighbour's burst can cost one 5 s step its last second (both tries are recorded).
     for tries in 1 2; do
      wait_spool_empty >/dev/null 2>&1
      curl -sf "http://127.0.0.1:$HG_ADMIN_PORT/metrics" >"$m0" || true
      out=$("$LG" -l "$label @$r/s" -s "$SECRET" -p "$HG_PORT" -c 64 -R "$r" -d "$DUR" 2>>"$B/loadgen.log") || true
      t_end=$(date +%s.%N)
      for i in $(seq 1 50); do
        curl -sf "http://127.0.0.1:$HG_ADMIN_PORT/metrics" >"$m1" || true
        acc=$(( $(msum '^webhook_received_total.*type="webhook",status="accepted"' "$m1") - $(msum '^webhook_received_total.*type="webhook",status="accepted"' "$m0") ))
        conf=$(( $(msum '^rabbitmq_publish_total.*status="confirmed"' "$m1") - $(msum '^rabbitmq_publish_total.*status="confirmed"' "$m0") ))
        left=$(msum '^spool_records' "$m1")
        [ "$conf" -ge "$acc" ] && [ "${left:-0}" = 0 ] && break
        sleep 0.1
      done
      lag=$(python3 -c "import time; print('%.2f' % (time.time() - $t_end))")
      ok=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]) if sys.argv[1] else {}; print(1 if r and r["errors"] == 0 and r["rps"] >= 0.98 * float(sys.argv[2]) and int(sys.argv[3]) >= int(sys.argv[4]) and float(sys.argv[5]) <= 1.0 else 0)' "$out" "$r" "$conf" "$acc" "$lag")
      record "{\"bench\":3,\"kind\":\"ladder\",\"label\":\"$label\",\"rate\":$r,\"accepted\":$acc,\"confirmed\":$conf,\"catch_up_s\":$lag,\"kept_up\":$([ "$ok" = 1 ] && echo true || echo false)}"
      log "$label @$r/s: $acc accepted, $conf confirmed, caught up ${lag} s after the run: $([ "$ok" = 1 ] && echo kept up || echo NOT kept up)"
      [ "$ok" = 1 ] && break
     done
      [ "$ok" = 1 ] || break
    done
  }
  # cpu_ticks PID: user + system CPU of a process, in clock ticks (0 when it is gone).
  cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
  # wait_spool_empty: until every accepted record is done (published *and* archived), at most
  # DRAIN_MAX s. The closed-loop run leaves an archive backlog when S3 is slower than the intake;
  # a latency run started on top of it would measure that backlog, not its own rate.
  wait_spool_empty() {
    local i left t0
    t0=$(date +%s.%N)
    for i in $(seq 1 $((DRAIN_MAX * 5))); do
      left=$(curl -sf "http://127.0.0.1:$HG_ADMIN_PORT/metrics" | awk '$1 == "spool_records" {print $2}')
      [ "${left:-1}" = 0 ] && break
      sleep 0.2
    done
    log "archive backlog: spool empty after $(python3 -c "print('%.1f' % ($(date +%s.%N) - $t0))") s (records left: ${left:-?})"
  }
  # pipeline_lat LABEL LOADGEN-ARGS...: an open-loop latency run plus where its time went:
  # hookgate's own time per request (request start → answer, /metrics), spool fsyncs, S3 uploads
  # finished during the run, and the CPU hookgate and the S3 fake used meanwhile.
  pipeline_lat() {
    local label=$1 m0=$B/metrics-lat-0.txt m1=$B/metrics-lat-1.txt s3pid hg0 hg1 s30 s31 t0 t1
    shift
    s3pid=$(cat "$SVC/s3/s3.pid" 2>/dev/null || echo 0)
    curl -sf "http://127.0.0.1:$HG_ADMIN_PORT/metrics" >"$m0" || true
    hg0=$(cpu_ticks "$HG_PID"); s30=$(cpu_ticks "$s3pid"); t0=$(date +%s.%N)
    lg 4 "$label" "$@"
    hg1=$(cpu_ticks "$HG_PID"); s31=$(cpu_ticks "$s3pid"); t1=$(date +%s.%N)
    curl -sf "http://127.0.0.1:$HG_ADMIN_PORT/metrics" >"$m1" || true
    record "$(python3 - "$label" "$m0" "$m1" "$hg0" "$hg1" "$s30" "$s31" "$t0" "$t1" "$(getconf CLK_TCK)" <<'PY'
import json, re, sys
label, f0, f1 = sys.argv[1:4]
hg0, hg1, s30, s31 = (int(float(x)) for x in sys.argv[4:8])
t0, t1, tck = float(sys.argv[8]), float(sys.argv[9]), float(sys.argv[10])
def read(f):
    m = {}
    for l in open(f):
        x = re.match(r'^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$', l.strip())
        if x:
            m[x.group(1) + (x.group(2) or "")] = m.get(x.group(1) + (x.group(2) or ""), 0) + float(x.group(3))
    return m
a, b = read(f0), read(f1)
d = lambda k: b.get(k, 0) - a.get(k, 0)
def dsum(prefix):
    return sum(v - a.get(k, 0) for k, v in b.items() if k.startswith(prefix))
def quantile(name, q):
    """Upper bound of the histogram bucket holding quantile q of this run's observations."""
    buckets = sorted((float(re.search(r'le="([^"]+)"', k).group(1).replace("+Inf", "inf")), v - a.get(k, 0))
                     for k, v in b.items() if k.startswith(name + "_bucket"))
    n = buckets[-1][1] if buckets else 0
    return next((le for le, c in buckets if c >= q * n), None) if n else None
n = d("webhook_processing_duration_seconds_count")
up_n = dsum("minio_upload_duration_seconds_count")
fs_n = d("spool_fsync_duration_seconds_count")
p99 = quantile("webhook_processing_duration_seconds", 0.99)
secs = t1 - t0
print(json.dumps({"bench": 4, "kind": "breakdown", "label": label, "seconds": round(secs, 2),
    "hookgate_mean_ms": round(1000 * d("webhook_processing_duration_seconds_sum") / n, 3) if n else None,
    "hookgate_p99_le_ms": round(1000 * p99, 1) if p99 not in (None, float("inf")) else None,
    "fsyncs": int(fs_n), "fsync_mean_ms": round(1000 * d("spool_fsync_duration_seconds_sum") / fs_n, 3) if fs_n else None,
    "s3_uploads": int(up_n), "s3_upload_mean_ms": round(1000 * dsum("minio_upload_duration_seconds_sum") / up_n, 1) if up_n else None,
    "hookgate_cpu": round((hg1 - hg0) / tck / secs, 3), "s3_fake_cpu": round((s31 - s30) / tck / secs, 3),
    "spool_records_after": int(b.get("spool_records", 0))}))
PY
)"
  }
  if [ $ok = 1 ]; then
    # Redis + RabbitMQ only: hookgate against the broker it is meant to be limited by.
    HG_EXTRA_CONF=$BROKER_CONF
    if start_hookgate hg-full && curl -sf "http://127.0.0.1:$HG_ADMIN_PORT/ready" | grep -q '"rabbitmq":"ok"'; then
      pipeline_run "pipeline redis+amqp c=64"
      pipeline_ladder "pipeline redis+amqp" $LADDER
      # The same latency run as with S3 below, without it: what the S3 fake's CPU costs the tail.
      wait_spool_empty
      pipeline_lat "pipeline redis+amqp @500/s" -p "$HG_PORT" -c 32 -R 500 -d "$LAT500" -w 1
      syscall_run "pipeline redis+amqp @500/s"
    else
      record '{"bench":3,"label":"pipeline redis+amqp","skipped":"hookgate did not report rabbitmq ok on /ready"}'
    fi
    stop_pid "$HG_PID"; HG_PID=""
  fi
  HG_EXTRA_CONF="$BROKER_CONF
$S3_CONF"
  if [ $ok = 1 ] && start_hookgate hg-full && curl -sf "http://127.0.0.1:$HG_ADMIN_PORT/ready" | grep -q '"rabbitmq":"ok"'; then
    pipeline_run "pipeline c=64"
    wait_spool_empty
    pipeline_ladder "full pipeline" $LADDER_S3
    wait_spool_empty # the rate not kept up with leaves a backlog the latency run must not measure
    pipeline_lat "pipeline @500/s" -p "$HG_PORT" -c 32 -R 500 -d "$LAT500" -w 1
    wait_spool_empty
    pipeline_lat "pipeline @5000/s" -p "$HG_PORT" -c 128 -R 5000 -d "$LAT5000" -w 1
    stop_pid "$HG_PID"; HG_PID=""
    # The ceiling publishes messages of the size hookgate published (mean over its queues).
    ctl=${HG_TEST_RABBITMQ_CTL:-}
    size=$("$ctl" -q list_queues name messages message_bytes 2>/dev/null |
           awk '$1 !~ /^hookgate\.bench/ && $1 !~ /dlq$/ {n += $2; b += $3} END {if (n > 0) printf "%d", b / n}')
    size=${size:-1400}
    for q in $("$ctl" -q list_queues name 2>/dev/null || true); do "$ctl" -q purge_queue "$q" >/dev/null 2>&1 || true; done
    # Two ceilings: a plain queue and plain messages, and the work hookgate asks of the broker
    # (its queue arguments: x-max-priority 10 and a DLX; its message properties and headers).
    for topo in plain hookgate; do
      for w in 64 256 1024; do
        lbl="broker w=$w"; [ $topo = hookgate ] && lbl="broker, hookgate's queues w=$w"
        out=$("$CEIL" -u "$HG_TEST_AMQP_URL" -s "$size" -d "$DUR" -w "$w" -t $topo -l "$lbl" 2>>"$B/services.log" || true)
        if [ -n "$out" ]; then record "{\"bench\":3,\"kind\":\"ceiling\",${out#\{}"; log "broker ceiling ($topo, rabbitmq-c, confirms, $size B, window $w): $(python3 -c 'import json,sys; print("%.0f msg/s" % json.loads(sys.argv[1])["rps"])' "$out")"
        else log "broker ceiling $topo window $w failed (see $B/services.log)"; fi
      done
    done
  else
    record '{"bench":3,"label":"full pipeline","skipped":"full pipeline not available: the peers did not start or hookgate did not report rabbitmq ok on /ready"}'
  fi
  [ -n "$HG_PID" ] && stop_pid "$HG_PID"
  unset HG_EXTRA_CONF
  stop_services; STARTED_SVC=()
fi
fi

# ---- (5) connections: hookgate RSS with N idle keep-alive connections ----
if want 5; then
log "(5) idle keep-alive connections: $IDLE_N"
start_hookgate hg-idle
idle_rss "hookgate idle" "$HG_PID" "$HG_PORT"
stop_pid "$HG_PID"
rm -rf "$B/hg-idle"
fi

# ---- (6) instructions per webhook: callgrind on a fixed input set ----
if want 6; then
log "(6) instructions per webhook (callgrind, $CG_N fixed requests, 1 connection)"
if command -v valgrind >/dev/null && command -v callgrind_control >/dev/null; then
  rm -f "$B"/callgrind.out*
  if start_hookgate hg-callgrind valgrind --tool=callgrind --callgrind-out-file="$B/callgrind.out"; then
    # Warm-up (lazy binding, first segment, first ndjson file) is excluded by zeroing afterwards.
    "$LG" -p "$HG_PORT" -s "$SECRET" -c 1 -n "$CG_WARM" -d 60 --seed 1 --timestamp $FIXED_TS >/dev/null 2>>"$B/loadgen.log" || true
    sleep 0.5
    if callgrind_control -z "$HG_PID" >/dev/null 2>&1; then
      cg=$("$LG" -p "$HG_PORT" -s "$SECRET" -c 1 -n "$CG_N" -d 120 --seed 2 --timestamp $FIXED_TS -l callgrind 2>>"$B/loadgen.log" || true)
      sleep 1 # let the drain normalize and write the last events
      callgrind_control -d "$HG_PID" >/dev/null 2>&1 || true
      sleep 0.5
      dump=$(ls "$B"/callgrind.out.* 2>/dev/null | head -1 || true)
      okn=0
      [ -n "$cg" ] && okn=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ok"])' "$cg" 2>/dev/null || echo 0)
      if [ -n "$dump" ] && [ "$okn" -gt 0 ]; then
        total=$(awk '/^totals:/ {print $2}' "$dump")
        record "{\"bench\":6,\"label\":\"instructions/webhook\",\"requests\":$okn,\"instructions\":$total}"
        callgrind_annotate --threshold=100 --inclusive=yes "$dump" 2>/dev/null >"$B/callgrind-inclusive.txt" || true
        callgrind_annotate --threshold=100 --inclusive=no "$dump" 2>/dev/null >"$B/callgrind-self.txt" || true
        log "$(printf 'instructions per webhook: %s (%s Ir / %s requests)' $((total / okn)) "$total" "$okn")"
      else
        record '{"bench":6,"label":"instructions/webhook","failed":true}'
      fi
    else
      record '{"bench":6,"label":"instructions/webhook","skipped":"callgrind_control could not reach the process"}'
    fi
  fi
  stop_pid "$HG_PID"
  rm -rf "$B/hg-callgrind"
else
  record '{"bench":6,"label":"instructions/webhook","skipped":"valgrind not installed"}'
fi
fi

# ---- report ----
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
mkdir -p bench/results
name=$(date +%F)
[ $QUICK = 1 ] && name="$name-quick"
[ -n "$ONLY" ] && name="$name-partial"
out=bench/results/$name.md
n=2
while [ -e "$out" ]; do out=bench/results/$name-$n.md; n=$((n + 1)); done
python3 bench/report.py "$B/machine.json" "$RES" "$out" "$END_LOAD" "$B"
log "results written to $out"
