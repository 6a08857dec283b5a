#!/usr/bin/env bash
# A real browser against ds-server (issue 11): headless Chromium (Debian's, installed with
# apt-get if missing) opens 12 EventSource streams on one page, over HTTPS with HTTP/2 and
# over plain HTTP/1.1. Over HTTP/2 every stream receives its event; over HTTP/1.1 at most
# six do (the browser's connection limit per origin). tests/browser/sse.mjs checks both.
#
# Builds the release binary, makes a CA and a certificate for 127.0.0.1 with openssl,
# starts two memory-mode servers on free loopback ports (one HTTPS, one plain), and stops
# them by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
  echo "==> installing Chromium"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2 </dev/null
fi

source "$root/scripts/lib.sh"
dir="$root/tests/browser"
npm_pinned "$dir" playwright-core "the pinned browser driver (playwright-core)"

cargo build --release --bin ds-server --quiet

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

test_certificate "$work" "browser test"

# Starts a server (log $work/$1.log, further settings in the environment) and sets $addr.
start() {
  local log="$work/$1.log"
  DS_SERVER__HOST=127.0.0.1 DS_SERVER__PORT=0 "$root/target/release/ds-server" 2>"$log" &
  pids+=("$!")
  addr=""
  for _ in $(seq 1 100); do
    addr=$(sed -n 's/.*listening addr=\([0-9.]*:[0-9]*\).*/\1/p' "$log" | head -n 1)
    [ -n "$addr" ] && return 0
    sleep 0.1
  done
  echo "error: ds-server ($1) did not start:" >&2
  cat "$log" >&2
  exit 1
}

DS_SERVER__TLS_CERT_FILE="$work/cert.pem" DS_SERVER__TLS_KEY_FILE="$work/key.pem" start https
https_addr=$addr
start http
http_addr=$addr

cd "$dir"
CHROMIUM="$chromium" NODE_EXTRA_CA_CERTS="$work/ca.pem" \
  node sse.mjs "https://$https_addr" "http://$http_addr"
