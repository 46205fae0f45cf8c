#!/usr/bin/env bash
# Install what hookgate needs from Debian (and npm for the S3 test server). Idempotent: quiet and
# fast when everything is present. Usage: scripts/install-deps.sh build|test|bench
set -euo pipefail
what=${1:-build}
cd "$(dirname "$0")/.."

# tzdata: the zone files of [rules.<id>] timezone (/usr/share/zoneinfo), read at config load.
# libssl-dev: OpenSSL, which rabbitmq-c's amqps:// socket is built on (the sink sets it up itself).
# libsqlite3-dev: the embedded outbound store ([outbound] store_path; pulls in libsqlite3-0 to run).
build_pkgs="build-essential pkg-config libuv1-dev node-llhttp libhiredis-dev librabbitmq-dev
  libcurl4-openssl-dev libmbedtls-dev libjansson-dev libinih-dev libssl-dev libsqlite3-dev tzdata"
# stunnel4: the Redis TLS sidecar of docs/backend-tls.md, tested in test_redis_tls_sidecar.py.
test_pkgs="libcmocka-dev redis-server rabbitmq-server stunnel4 python3 python3-pytest
  python3-requests python3-redis python3-pika python3-boto3 python3-jsonschema python3-twilio python3-jwt valgrind clang openssl curl"
bench_pkgs="nginx-light wrk valgrind strace"

pkgs=$build_pkgs
case "$what" in
  build) ;;
  test) pkgs="$pkgs $test_pkgs" ;;
  bench) pkgs="$pkgs $test_pkgs $bench_pkgs" ;;
  *) echo "usage: $0 build|test|bench" >&2; exit 2 ;;
esac

missing=()
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# The machine image may carry its own Node.js (with npm); Debian's is the fallback.
if [ "$what" != build ] && ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # Debian's rabbitmq-server and redis-server try to start themselves; the tests start their own.
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$what" != build ]; then
  # The S3 test server (checks SigV4) lives in build/npm, outside the repo.
  if [ ! -f build/npm/node_modules/@20minutes/s3rver/lib/s3rver.js ]; then
    echo "install-deps: installing @20minutes/s3rver (npm)"
    mkdir -p build/npm
    npm install --silent --no-audit --no-fund --prefix build/npm @20minutes/s3rver >/dev/null
  fi
  # The Standard Webhooks reference signer, for test/e2e/test_generic.py.
  if [ ! -f build/npm/node_modules/standardwebhooks/package.json ]; then
    echo "install-deps: installing standardwebhooks (npm)"
    mkdir -p build/npm
    npm install --silent --no-audit --no-fund --prefix build/npm standardwebhooks >/dev/null
  fi
fi
