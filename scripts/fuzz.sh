#!/usr/bin/env bash
# Run every libFuzzer harness in DIR (built by `make SAN=fuzz fuzz-bins`) for SECONDS each, from
# its seeds (the providers' test fixtures), with a corpus of its own under DIR/corpus/. Any crash,
# sanitizer report, leak or abort() of a harness's own check fails the run; the input that did it
# is left in DIR/crash-* for a replay: DIR/<harness> DIR/crash-<hash>.
# Usage: scripts/fuzz.sh DIR SECONDS
set -euo pipefail
dir=${1:?usage: $0 DIR SECONDS}
secs=${2:-15}
cd "$(dirname "$0")/.."
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
seeds_of() {
  case "$1" in
    fuzz_normalize_whatsapp) echo test/fixtures/whatsapp ;;
    fuzz_normalize_genesys) echo test/fixtures/genesys ;;
    fuzz_normalize_twilio) echo test/fixtures/twilio ;;
    fuzz_normalize_pubsub) echo test/fixtures/pubsub ;;
    fuzz_jwt) echo test/fixtures/pubsub ;;
    fuzz_normalize_generic) echo test/fixtures/generic ;;
    fuzz_signatures) echo test/fixtures/twilio test/fixtures/genesys ;;
    fuzz_proxy) echo fuzz/seeds/proxy ;;
  esac
}
fail=0
for bin in "$dir"/fuzz_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin")
  corpus="$dir/corpus/$name"
  mkdir -p "$corpus"
  # shellcheck disable=SC2046
  if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$dir/" "$corpus" $(seeds_of "$name") >"$dir/$name.log" 2>&1; then
    echo "fuzz: $name: $(grep -E '^stat::number_of_executed_units' "$dir/$name.log" | awk '{print $2}') runs, no failure"
  else
    echo "fuzz: $name FAILED; last lines of $dir/$name.log:" >&2
    tail -40 "$dir/$name.log" >&2
    fail=1
  fi
done
exit $fail
