#!/usr/bin/env bash
# Run every libFuzzer harness in DIR (built by `make SAN=fuzz fuzz-bins`): first replay its
# regression inputs (fuzz/regressions/<harness>/: crashers found before, fixed, kept so they stay
# fixed), then fuzz it for SECONDS from its seeds (fuzz/seeds/<harness>/ and the providers' test
# fixtures), with a corpus of its own under DIR/corpus/. Any crash, sanitizer report, leak, hang or
# abort() of a harness's own check fails the run; the input that did it is left in DIR/crash-*
# (or leak-*, timeout-*) for a replay: DIR/<harness> DIR/crash-<hash>.
# Usage: scripts/fuzz.sh DIR SECONDS [HARNESS...]
#   FUZZ_RUNS=N   stop each harness after N executions instead (SECONDS then only bounds the time;
#                 0 = unbounded), e.g. FUZZ_RUNS=10000000 scripts/fuzz.sh build/fuzz/fuzz 0 fuzz_json
# Runs from the repository root (fuzz_conf's seeds name fixtures by relative path).
set -euo pipefail
dir=${1:?usage: $0 DIR SECONDS [HARNESS...]}
secs=${2:-15}
shift 2 || shift $#
cd "$(dirname "$0")/.."
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
seeds_of() {
  local s=fuzz/seeds/$1
  [ -d "$s" ] && echo "$s"
  case "$1" in
    fuzz_normalize_whatsapp) echo test/fixtures/whatsapp ;;
    fuzz_normalize_genesys) echo test/fixtures/genesys ;;
    fuzz_normalize_twilio) echo test/fixtures/twilio ;;
    fuzz_normalize_pubsub) echo test/fixtures/pubsub ;;
    fuzz_jwt) echo test/fixtures/pubsub test/fixtures/generic ;;
    fuzz_normalize_generic) echo test/fixtures/generic ;;
    fuzz_signatures) echo test/fixtures/twilio test/fixtures/genesys ;;
    fuzz_proxy) echo fuzz/seeds/proxy ;;
    fuzz_json) echo test/fixtures/whatsapp test/fixtures/genesys test/fixtures/pubsub test/fixtures/generic ;;
    fuzz_form) ;;  # fuzz/seeds/fuzz_form: the Twilio fixtures behind a flags byte
    fuzz_conf) echo conf ;;
    fuzz_http) ;;  # fuzz/seeds/fuzz_http, written by fuzz/seeds/make_http_seeds.py
  esac
  return 0
}
if [ $# -gt 0 ]; then
  bins=(); for n in "$@"; do bins+=("$dir/$n"); done
else
  bins=("$dir"/fuzz_*)
fi
limit=(-max_total_time="$secs")
[ -n "${FUZZ_RUNS:-}" ] && limit=(-runs="$FUZZ_RUNS" -max_total_time="$secs")
fail=0
for bin in "${bins[@]}"; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin")
  reg=fuzz/regressions/$name
  if [ -d "$reg" ] && [ -n "$(ls -A "$reg")" ]; then
    if ! "$bin" -timeout=10 -rss_limit_mb=2048 "$reg"/* >"$dir/$name.regressions.log" 2>&1; then
      echo "fuzz: $name: a regression input fails again; last lines of $dir/$name.regressions.log:" >&2
      tail -40 "$dir/$name.regressions.log" >&2
      fail=1
      continue
    fi
  fi
  corpus="$dir/corpus/$name"
  mkdir -p "$corpus"
  start=$(date +%s)
  # shellcheck disable=SC2046
  if "$bin" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$dir/" "$corpus" $(seeds_of "$name") >"$dir/$name.log" 2>&1; then
    runs=$(grep -E '^stat::number_of_executed_units' "$dir/$name.log" | awk '{print $2}')
    echo "fuzz: $name: $runs runs in $(( $(date +%s) - start )) s, no failure"
  else
    echo "fuzz: $name FAILED; last lines of $dir/$name.log:" >&2
    tail -40 "$dir/$name.log" >&2
    fail=1
  fi
done
exit $fail
