#!/usr/bin/env bash
# The side-by-side load benchmark (benches/load.rs): installs the official Rust server
# (crate durable-streams 0.1.5) into target/tools if needed, then runs ds-server and it in the
# same run with hyper's HTTP client. Not part of CI (it takes minutes and wants a quiet
# machine); results go in benches/README.md.
#
#   scripts/bench.sh                          memory mode against official --durability memory
#   DS_BENCH_MODE=all scripts/bench.sh        also file-durable and acid against --durability wal
#   DS_BENCH_MODE=postgres scripts/bench.sh   postgres mode (one node, a throwaway local cluster)
#   DS_BENCH_MODE=postgres DS_BENCH_STANDBY=sync scripts/bench.sh
#                                             the same with a synchronous streaming standby (on
#                                             this machine too: its CPU and disk are shared)
#   scripts/bench.sh append-64 sse-1000       some scenarios
#   DS_BENCH_SECS=5 DS_BENCH_RUNS=5 scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$(pwd)/target/tools"
if [ ! -x "$tools/bin/durable-streams-server" ]; then
  echo "==> installing the official server (durable-streams 0.1.5) into target/tools"
  cargo install durable-streams --version 0.1.5 --locked --root "$tools" --quiet
fi
if [ "${DS_BENCH_MODE:-}" = postgres ]; then
  # A throwaway cluster (synchronous_commit=on, fsync=on); each run gets a fresh database.
  DS_BENCH_PGDIR=$(mktemp -d /tmp/ds-bench-pg.XXXXXX)
  export DS_BENCH_PGDIR
  standby=""
  trap 'scripts/pg.sh stop "$DS_BENCH_PGDIR" >/dev/null 2>&1 || true
        [ -z "$standby" ] || scripts/pg.sh stop "$standby" >/dev/null 2>&1 || true' EXIT
  scripts/pg.sh start "$DS_BENCH_PGDIR" >/dev/null
  if [ "${DS_BENCH_STANDBY:-}" = sync ]; then
    # Every commit waits until the standby has flushed it (synchronous_commit=on).
    standby=$(mktemp -d /tmp/ds-bench-sb.XXXXXX)
    scripts/pg.sh standby "$DS_BENCH_PGDIR" "$standby" >/dev/null
    scripts/pg.sh sync "$DS_BENCH_PGDIR"
  fi
  cargo bench --bench load -- "$@"
else
  exec cargo bench --bench load -- "$@"
fi
