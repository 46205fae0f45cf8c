#!/usr/bin/env bash
# Run the end-to-end suite (test/e2e) against one hookgate binary: scripts/run-e2e.sh BINARY
# [pytest args...]; with test file arguments (test/e2e/test_x.py) only those run.
# Uses Debian's interpreter (/usr/bin/python3) because the python3 first on PATH may lack pytest.
# HG_TEST_* variables (peer addresses from scripts/with-services.sh) pass through unchanged.
# Exit code is pytest's.
set -uo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 BINARY [pytest args...]" >&2
  exit 2
fi
bin=$1
shift
if [ ! -x "$bin" ]; then
  echo "run-e2e: $bin is not an executable file" >&2
  exit 2
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
cd "$(dirname "$0")/.."
export HOOKGATE_BIN="$bin"
# Sanitizer builds: fail on leaks, keep reports on stderr (captured by the fixture).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
echo "run-e2e: $HOOKGATE_BIN" >&2
# Test files or directories among the arguments run alone; otherwise the whole of test/e2e.
for a in "$@"; do
  case "$a" in
    test/*) exec /usr/bin/python3 -m pytest -q -p no:cacheprovider "$@" ;;
  esac
done
exec /usr/bin/python3 -m pytest -q -p no:cacheprovider test/e2e "$@"
