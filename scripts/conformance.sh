#!/usr/bin/env bash
# Runs the official conformance suite (npm @durable-streams/server-conformance-tests, pinned in
# tests/conformance/package-lock.json) against a freshly started release server.
#
#   scripts/conformance.sh [MODE]        MODE defaults to memory
#   DS_HTTP__FRONT_END=axum scripts/conformance.sh memory   through the axum front end
#   scripts/conformance.sh postgres      against a throwaway PostgreSQL cluster (scripts/pg.sh),
#                                        or the database in DS_STORAGE__POSTGRES_URL if set
#
# Installs the pinned npm packages if needed, builds the release binary, starts it on a free
# loopback port with a 1 s long-poll timeout, runs the suite, stops the server by its PID, and
# exits non-zero if any test failed or fewer tests passed than expected (so a test that stops
# running is noticed too). Extra vitest arguments can be passed in VITEST_ARGS.
#
# Scope: every test, the six reserved subscription tests included (the runner asks for them,
# and the server accepts the suite's webhook receiver on 127.0.0.1): 338 in every mode, all
# of which must pass.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
mode=${1:-memory}
EXPECTED_PASSED=${DS_CONFORMANCE_EXPECT_PASSED:-338}

conf="$root/tests/conformance"
if [ ! -d "$conf/node_modules/@durable-streams/server-conformance-tests" ]; then
  echo "==> installing the pinned conformance suite"
  cp "$conf/package-lock.json" "$conf/.package-lock.before"
  # `npm ci` refuses this lock on Linux (a Windows-only optional dependency of vite is
  # missing from it); `npm install --no-save` installs the same versions from the same lock.
  (cd "$conf" && npm install --no-save --no-audit --no-fund --loglevel=error)
  if ! cmp -s "$conf/package-lock.json" "$conf/.package-lock.before"; then
    echo "error: npm changed tests/conformance/package-lock.json" >&2
    mv "$conf/.package-lock.before" "$conf/package-lock.json"
    exit 1
  fi
  rm -f "$conf/.package-lock.before"
fi

cargo build --release --bin ds-server --quiet

work=$(mktemp -d)
log="$work/server.log"
pgdir=""
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$work"
  if [ -n "$pgdir" ]; then "$root/scripts/pg.sh" stop "$pgdir" || true; fi
}
trap cleanup EXIT
if [ "$mode" = postgres ] && [ -z "${DS_STORAGE__POSTGRES_URL:-}" ]; then
  pgdir=$(mktemp -d /tmp/ds-pg.XXXXXX)
  DS_STORAGE__POSTGRES_URL=$("$root/scripts/pg.sh" start "$pgdir")
  export DS_STORAGE__POSTGRES_URL
fi
DS_SERVER__HOST=127.0.0.1 DS_SERVER__PORT=0 DS_SERVER__LONG_POLL_TIMEOUT_MS=1000 \
  DS_SUBSCRIPTIONS__ALLOW_LOCAL_WEBHOOKS=true \
  DS_STORAGE__MODE="$mode" DS_STORAGE__DATA_DIR="$work/data" \
  "$root/target/release/ds-server" 2>"$log" &
pid=$!

addr=""
for _ in $(seq 1 100); do
  addr=$(sed -n 's/.*listening addr=\([0-9.]*:[0-9]*\).*/\1/p' "$log" | head -n 1)
  [ -n "$addr" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "error: ds-server exited during start-up:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$addr" ]; then
  echo "error: ds-server did not report its address" >&2
  cat "$log" >&2
  exit 1
fi

# Ready means recovered and the subscriptions loaded (node's fetch: no curl needed).
for _ in $(seq 1 200); do
  node -e 'fetch(process.argv[1]).then(r => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))' \
    "http://$addr/readyz" && break
  sleep 0.1
done

echo "==> conformance suite against $mode mode (${DS_HTTP__FRONT_END:-fast} front end) at http://$addr"
cd "$conf"
status=0
report="$work/report.json"
DS_CONFORMANCE_URL="http://$addr" npx vitest run --reporter=default --reporter=json --outputFile.json="$report" ${VITEST_ARGS:-} || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- server log (last 50 lines) ---" >&2
  tail -n 50 "$log" >&2
  exit "$status"
fi
passed=$(node -e 'const r = require(process.argv[1]); console.log(r.numPassedTests)' "$report")
failed=$(node -e 'const r = require(process.argv[1]); console.log(r.numFailedTests)' "$report")
echo "==> conformance ($mode): $passed passed, $failed failed (expected $EXPECTED_PASSED passed)"
if [ "$failed" -ne 0 ] || [ "$passed" -lt "$EXPECTED_PASSED" ]; then
  echo "error: conformance suite is not fully green" >&2
  exit 1
fi
