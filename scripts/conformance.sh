#!/usr/bin/env bash
# Runs the official conformance suite (npm @durable-streams/server-conformance-tests, pinned in
# tests/conformance/package-lock.json) against a freshly started release server.
#
#   scripts/conformance.sh [MODE]        MODE defaults to memory
#   DS_HTTP__FRONT_END=axum scripts/conformance.sh memory   through the axum front end
#   scripts/conformance.sh postgres      against a throwaway PostgreSQL cluster (scripts/pg.sh),
#                                        or the database in DS_STORAGE__POSTGRES_URL if set
#   DS_CONFORMANCE_TLS=1 scripts/conformance.sh file-durable
#                                        over HTTPS: a certificate made here with openssl (a CA
#                                        the suite's Node.js trusts through NODE_EXTRA_CA_CERTS)
#   DS_CONFORMANCE_NODES=2 scripts/conformance.sh postgres
#                                        two nodes on one database behind nginx (round-robin,
#                                        installed with apt-get if missing), so consecutive
#                                        requests of a test reach different nodes
#
# Installs the pinned npm packages if needed, builds the release binary, starts it on a free
# loopback port with a 1 s long-poll timeout, runs the suite, stops the server by its PID, and
# exits non-zero if any test failed or fewer tests passed than expected (so a test that stops
# running is noticed too). Extra vitest arguments can be passed in VITEST_ARGS.
#
# Scope: every test, the six reserved subscription tests included (the runner asks for them,
# and the server accepts the suite's webhook receiver on 127.0.0.1): 338 in every mode and
# over several nodes, all of which must pass. DS_CONFORMANCE_SUBSCRIPTIONS=false leaves the
# six out (332).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
mode=${1:-memory}
NODES=${DS_CONFORMANCE_NODES:-1}
if [ "${DS_CONFORMANCE_SUBSCRIPTIONS:-true}" = false ]; then
  EXPECTED_PASSED=${DS_CONFORMANCE_EXPECT_PASSED:-332}
else
  EXPECTED_PASSED=${DS_CONFORMANCE_EXPECT_PASSED:-338}
fi

source "$root/scripts/lib.sh"
conf="$root/tests/conformance"
npm_pinned "$conf" @durable-streams/server-conformance-tests "the pinned conformance suite"

cargo build --release --bin ds-server --quiet

work=$(mktemp -d)
pgdir=""
pids=()
nginx_pid=""
cleanup() {
  for p in "${pids[@]}" $nginx_pid; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}" $nginx_pid; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
  if [ -n "$pgdir" ]; then "$root/scripts/pg.sh" stop "$pgdir" || true; fi
}
trap cleanup EXIT
if [ "$mode" = postgres ] && [ -z "${DS_STORAGE__POSTGRES_URL:-}" ]; then
  pgdir=$(mktemp -d /tmp/ds-pg.XXXXXX)
  DS_STORAGE__POSTGRES_URL=$("$root/scripts/pg.sh" start "$pgdir")
  export DS_STORAGE__POSTGRES_URL
fi
if [ "$NODES" -gt 1 ] && [ "$mode" != postgres ]; then
  echo "error: several nodes share a store only in the postgres mode" >&2
  exit 2
fi

scheme=http
if [ -n "${DS_CONFORMANCE_TLS:-}" ]; then
  if [ "$NODES" -gt 1 ]; then
    echo "error: HTTPS is tried on one node" >&2
    exit 2
  fi
  # A CA, and a certificate for 127.0.0.1 it signs; Node.js trusts the CA.
  test_certificate "$work" conformance
  export DS_SERVER__TLS_CERT_FILE="$work/cert.pem" DS_SERVER__TLS_KEY_FILE="$work/key.pem"
  export NODE_EXTRA_CA_CERTS="$work/ca.pem"
  scheme=https
fi

# Starts node $1 (its log is $work/server-$1.log) and sets $addr to the address it reports.
start_node() {
  local log="$work/server-$1.log"
  DS_SERVER__HOST=127.0.0.1 DS_SERVER__PORT=0 DS_SERVER__LONG_POLL_TIMEOUT_MS=1000 \
    DS_SUBSCRIPTIONS__ALLOW_LOCAL_WEBHOOKS=true \
    DS_STORAGE__MODE="$mode" DS_STORAGE__DATA_DIR="$work/data-$1" \
    "$root/target/release/ds-server" 2>"$log" &
  local pid=$!
  pids+=("$pid")
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
}

# Waits until $1/readyz answers 200 (recovered, subscriptions loaded, database reachable);
# node's fetch, so no curl is needed.
wait_ready() {
  for _ in $(seq 1 200); do
    node -e 'fetch(process.argv[1]).then(r => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))' \
      "$1/readyz" && return 0
    sleep 0.1
  done
  echo "error: $1 never became ready" >&2
  exit 1
}

addrs=()
for n in $(seq 1 "$NODES"); do
  start_node "$n"
  addrs+=("$addr")
  wait_ready "$scheme://$addr"
done

if [ "$NODES" -gt 1 ]; then
  nginx=$(command -v nginx || true)
  [ -z "$nginx" ] && [ -x /usr/sbin/nginx ] && nginx=/usr/sbin/nginx
  if [ -z "$nginx" ]; then
    echo "==> installing nginx"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >&2 </dev/null \
      || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >&2 </dev/null
    nginx=/usr/sbin/nginx
  fi
  port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
  mkdir -p "$work/nginx"
  {
    [ "$(id -u)" -eq 0 ] && echo "user root;"
    echo "worker_processes 1; daemon off; pid $work/nginx/nginx.pid; error_log $work/nginx/error.log warn;"
    echo "events { worker_connections 1024; }"
    echo "http {"
    echo "  log_format upstream '\$upstream_addr \$status';"
    echo "  access_log $work/nginx/access.log upstream;"
    for t in client_body proxy fastcgi uwsgi scgi; do echo "  ${t}_temp_path $work/nginx/$t;"; done
    echo "  upstream ds {"
    for a in "${addrs[@]}"; do echo "    server $a;"; done
    echo "  }"
    echo "  server {"
    echo "    listen 127.0.0.1:$port;"
    echo "    client_max_body_size 0;"
    echo "    location / {"
    echo "      proxy_pass http://ds;"
    echo "      proxy_http_version 1.1;"
    echo "      proxy_set_header Connection \"\";"
    echo "      proxy_set_header Host \$http_host;"
    echo "      proxy_buffering off;"
    echo "      proxy_request_buffering off;"
    echo "      proxy_read_timeout 90s;"
    echo "    }"
    echo "  }"
    echo "}"
  } > "$work/nginx/nginx.conf"
  "$nginx" -c "$work/nginx/nginx.conf" -p "$work/nginx" 2>"$work/nginx/start.log" &
  nginx_pid=$!
  addr="127.0.0.1:$port"
  wait_ready "http://$addr"
  echo "==> nginx on $addr, round-robin over ${addrs[*]}"
fi

echo "==> conformance suite against $mode mode, $NODES node(s) (${DS_HTTP__FRONT_END:-fast} front end) at $scheme://$addr"
cd "$conf"
status=0
report="$work/report.json"
DS_CONFORMANCE_URL="$scheme://$addr" npx vitest run --reporter=default --reporter=json --outputFile.json="$report" ${VITEST_ARGS:-} || status=$?
if [ "$status" -ne 0 ]; then
  for n in $(seq 1 "$NODES"); do
    echo "--- server $n log (last 50 lines) ---" >&2
    tail -n 50 "$work/server-$n.log" >&2
  done
  exit "$status"
fi
if [ "$NODES" -gt 1 ]; then
  # Round-robin really spread the suite: every node answered a share of the requests.
  for a in "${addrs[@]}"; do
    n=$(grep -c "^$a " "$work/nginx/access.log" || true)
    echo "==> node $a answered $n requests"
    if [ "$n" -lt 100 ]; then
      echo "error: node $a answered too few requests; the load balancer did not spread them" >&2
      exit 1
    fi
  done
fi
passed=$(node -e 'const r = require(process.argv[1]); console.log(r.numPassedTests)' "$report")
failed=$(node -e 'const r = require(process.argv[1]); console.log(r.numFailedTests)' "$report")
echo "==> conformance ($mode): $passed passed, $failed failed (expected $EXPECTED_PASSED passed)"
if [ "$failed" -ne 0 ] || [ "$passed" -lt "$EXPECTED_PASSED" ]; then
  echo "error: conformance suite is not fully green" >&2
  exit 1
fi
