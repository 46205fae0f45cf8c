#!/usr/bin/env bash
# Start every test peer in scripts/services/*.sh on loopback ports of its own, run the given
# command with their addresses in the environment, then stop them all (also on failure).
#
# Contract of a service script: `X.sh start STATEDIR` starts the peer in the background, waits
# until it answers, and prints KEY=VALUE lines (e.g. HG_TEST_REDIS_URL=redis://127.0.0.1:16379/0)
# on stdout; `X.sh stop STATEDIR` stops it. STATEDIR is the script's own scratch directory.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)/build/services
mkdir -p "$root"
started=()
stop_all() {
  for s in "${started[@]}"; do
    "scripts/services/$s.sh" stop "$root/$s" >/dev/null 2>&1 || true
  done
}
trap stop_all EXIT
for f in scripts/services/*.sh; do
  [ -e "$f" ] || continue
  name=$(basename "$f" .sh)
  mkdir -p "$root/$name"
  echo "with-services: starting $name" >&2
  out=$("$f" start "$root/$name")
  started+=("$name")
  while IFS= read -r line; do
    [ -n "$line" ] && export "${line?}"
  done <<<"$out"
done
"$@"
