#!/usr/bin/env bash
# Build the benchmark tools into OUTDIR: the one place their compiler command lines live, so
# bench/run.sh and test/e2e/test_bench_harness.py (which builds them into a temp dir) cannot drift.
#
# usage: bench/build.sh OUTDIR [loadgen|amqp_ceiling|fsync_floor ...]   (default: all three)
#
# A tool is rebuilt only when missing or older than its source. Every tool named is attempted;
# the exit status is 1 when any of them failed to build (its name on stderr), else 0.
set -uo pipefail
cd "$(dirname "$0")/.."

out=${1:?usage: bench/build.sh OUTDIR [TOOL...]}
shift
[ $# -gt 0 ] || set -- loadgen amqp_ceiling fsync_floor
mkdir -p "$out" || exit 1

# The flags hookgate itself builds with: a warning in a bench tool is an error too.
WARN=(-Wall -Wextra -Wshadow -Wformat=2 -Wstrict-prototypes -Werror)

# cmd TOOL: the compiler command line of one tool (without -o), one word per line.
cmd() {
  case "$1" in
    loadgen) echo cc -std=gnu11 -O2 -g -D_GNU_SOURCE "${WARN[@]}" bench/loadgen.c -lmbedcrypto ;;
    amqp_ceiling) echo cc -std=gnu11 -O2 -g "${WARN[@]}" bench/amqp_ceiling.c -lrabbitmq ;;
    fsync_floor) echo cc -std=gnu11 -O2 -g "${WARN[@]}" bench/fsync_floor.c -luv ;;
    *) return 1 ;;
  esac
}

rc=0
for tool in "$@"; do
  if ! line=$(cmd "$tool"); then
    echo "bench/build.sh: unknown tool $tool" >&2
    rc=1
    continue
  fi
  bin=$out/$tool
  [ -x "$bin" ] && [ ! "bench/$tool.c" -nt "$bin" ] && continue
  # shellcheck disable=SC2086 # the command line is a list of words without spaces inside any
  if ! $line -o "$bin"; then
    echo "bench/build.sh: cannot build $bin (missing -dev package? scripts/install-deps.sh bench)" >&2
    rm -f "$bin"
    rc=1
  fi
done
exit $rc
