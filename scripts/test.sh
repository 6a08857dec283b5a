#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this). Installs what it needs: Rust crates
# through cargo, the pinned npm conformance suite through npm.
#
#   scripts/test.sh            everything
#   SKIP_LINT=1 scripts/test.sh   skip fmt and clippy
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
started=$(date +%s)

if [ -z "${SKIP_LINT:-}" ]; then
  step "cargo fmt --check"
  cargo fmt --all -- --check
  step "cargo clippy (all targets, warnings are errors)"
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi

step "a throwaway PostgreSQL cluster for the postgres mode (scripts/pg.sh; installs it if missing)"
pgdir=$(mktemp -d /tmp/ds-pg.XXXXXX)
trap 'scripts/pg.sh stop "$pgdir" >/dev/null 2>&1 || true' EXIT
DS_TEST_POSTGRES_URL=$(scripts/pg.sh start "$pgdir")
# The postgres tests fail rather than skip when the cluster is missing.
export DS_TEST_POSTGRES_URL DS_REQUIRE_POSTGRES=1

step "the Prometheus project's parser, which the metrics test checks /metrics with"
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
  python3 -m pip install --quiet prometheus_client 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages prometheus_client 2>/dev/null \
    || { apt-get update -qq && apt-get install -y -qq python3-prometheus-client; }
fi

step "openssl and curl, which the HTTPS and HTTP/2 tests make certificates and requests with"
for tool in openssl curl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" </dev/null
  fi
done

step "unit, property and integration tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked
  step "doc tests"
  cargo test --workspace --doc --locked
else
  cargo test --workspace --locked
fi

for mode in memory file-fast file-durable acid; do
  step "official conformance suite, $mode mode (fast front end)"
  scripts/conformance.sh "$mode"
done
step "official conformance suite, postgres mode (one node)"
DS_STORAGE__POSTGRES_URL=$(scripts/pg.sh createdb "$pgdir" conformance) scripts/conformance.sh postgres
step "official conformance suite, postgres mode, two nodes behind nginx (round-robin)"
DS_CONFORMANCE_NODES=2 DS_STORAGE__POSTGRES_URL=$(scripts/pg.sh createdb "$pgdir" twonodes) \
  scripts/conformance.sh postgres
step "official conformance suite, memory mode (axum front end)"
DS_HTTP__FRONT_END=axum scripts/conformance.sh memory
step "official conformance suite over HTTPS, file-durable mode (fast front end)"
DS_CONFORMANCE_TLS=1 scripts/conformance.sh file-durable

step "a real browser: headless Chromium, 12 EventSource streams over HTTP/2 (HTTPS) and HTTP/1.1"
scripts/browser.sh

step "crash test: SIGKILL the release server mid-stream (file-fast, file-durable, acid, postgres)"
cargo test --release --locked --test crash_kill

step "failover drill: postgres primary + synchronous standby, primary killed under load"
cargo test --release --locked --test failover

step "fuzzing: each target briefly, from the committed corpus"
scripts/fuzz.sh

printf '\n==> all green in %ss\n' "$(( $(date +%s) - started ))"
