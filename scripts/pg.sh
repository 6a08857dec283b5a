#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback for tests: initdb in a directory, a free
# 127.0.0.1 port picked here, trust authentication for user postgres, nothing shared with any
# system cluster. Installs PostgreSQL with apt-get if no /usr/lib/postgresql/*/bin/initdb is
# found (Debian 12 gives 15); always uses the highest version there, never PATH.
#
#   url=$(scripts/pg.sh start DIR)       init and start; prints postgres://postgres@127.0.0.1:PORT/postgres
#   scripts/pg.sh createdb DIR NAME      create database NAME; prints its URL
#   scripts/pg.sh psql DIR [ARGS...]     psql against the cluster (database postgres unless ARGS name one)
#   scripts/pg.sh stop DIR               stop (fast, else kill) and remove DIR; fine if already stopped
#   url=$(scripts/pg.sh standby PRIMARY_DIR DIR)  streaming standby of PRIMARY_DIR's running cluster; prints its URL
#   scripts/pg.sh sync PRIMARY_DIR       make the primary's commits wait for a standby (synchronous_standby_names = '*')
#   scripts/pg.sh crash DIR              immediate stop, no checkpoint; keeps DIR; fine if already stopped
#   scripts/pg.sh promote DIR            promote a standby; returns once it accepts writes
#   scripts/pg.sh port DIR               print the cluster's port (for multi-host URLs)
#
# Only URLs and ports go to stdout; everything else goes to stderr. DIR holds data/ (the
# cluster), log (the server log), port, pid (the postmaster's) and the Unix socket. A standby's
# DIR is the same: pg_basebackup -R of the primary over 127.0.0.1 (initdb's pg_hba.conf trusts
# replication connections from there), started with start's options on a port of its own;
# `sync` then waits until pg_stat_replication shows it as sync. As root, DIR is chowned to
# postgres and the server binaries run as postgres (runuser); otherwise they run as the caller.
# postgres must be able to reach DIR: parents this script creates are made traversable
# (chmod o+x), an existing parent must already be (`mktemp -d` gives 0700, so use
# `d=$(mktemp -d)` itself as DIR, not a subdirectory of it). DIR's path must be short enough
# for a Unix socket (92 characters at most). If start or standby fails, DIR is left for a look
# at DIR/log (or DIR/initdb.log, DIR/basebackup.log); stop removes it.
set -euo pipefail

usage() {
  sed -n '1,/^set /s/^#   /usage: /p' "$0" >&2
  exit 2
}

die() {
  echo "pg.sh: error: $*" >&2
  exit 1
}

[ $# -ge 2 ] || usage
cmd=$1
# Absolute, so the server (started from /) and later calls agree on it.
dir=$(realpath -m -- "$2")
shift 2

is_root() { [ "$(id -u)" -eq 0 ]; }

# A server-side binary, as postgres when we are root (from /: root's cwd may be unreadable
# to postgres), in the C locale so the log reads the same everywhere. Without fd 3 (start's
# stdout): a postmaster holding it would keep `url=$(scripts/pg.sh start DIR)` waiting.
as_pg() {
  if is_root; then
    (cd / && LC_ALL=C runuser -u postgres -- "$@") 3>&-
  else
    LC_ALL=C "$@" 3>&-
  fi
}

# The bin dir: the version the cluster in DIR (or in $1) was made with if there is one,
# otherwise the highest installed.
bin_dir() {
  local d=${1:-$dir}
  if [ -f "$d/data/PG_VERSION" ]; then
    local v
    v=$(cat "$d/data/PG_VERSION")
    if [ -x "/usr/lib/postgresql/$v/bin/pg_ctl" ]; then
      echo "/usr/lib/postgresql/$v/bin"
      return
    fi
  fi
  local initdbs=(/usr/lib/postgresql/*/bin/initdb)
  [ -x "${initdbs[0]}" ] || return 1
  dirname "$(printf '%s\n' "${initdbs[@]}" | sort -V | tail -n 1)"
}

install_postgres() {
  is_root || die "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb) and we are not root to install it"
  # One installer at a time (concurrent starts would fight over the dpkg lock); the loser
  # finds it installed.
  exec 9>/var/lock/ds-pg-sh-install.lock
  flock 9
  if ! bin_dir >/dev/null; then
    echo "==> installing PostgreSQL (apt-get)"
    apt-get update -qq
    # postgresql-common first, so the package's own "main" cluster is not created and started
    # on port 5432 (the same step as the official postgres Docker image).
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-common
    if [ -f /etc/postgresql-common/createcluster.conf ]; then
      sed -ri 's/^#?\s*(create_main_cluster)\s*=.*$/\1 = false/' /etc/postgresql-common/createcluster.conf
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
  fi
  flock -u 9
  exec 9>&-
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
    node -e 'const s=require("net").createServer(); s.listen(0,"127.0.0.1",()=>{console.log(s.address().port); s.close()})' 2>/dev/null ||
    echo $((20000 + RANDOM % 30000)) # a bind clash is retried below anyway
}

read_port() {
  local d=${1:-$dir}
  [ -s "$d/port" ] || die "no cluster in $d (no $d/port): run \`$0 start $d\` first"
  cat "$d/port"
}

# Client tools connect over TCP as the caller (so `psql -f` reads the caller's files).
client_env() {
  export PGHOST=127.0.0.1 PGPORT PGUSER=postgres PGDATABASE=postgres
  PGPORT=$(read_port)
  unset PGPASSWORD PGSERVICE PGSERVICEFILE PGSSLMODE PGOPTIONS
}

# Polls the one-value query $1 (via client_env's connection) until it prints $2, for up to
# $3 seconds. False on timeout.
wait_for_value() {
  local query=$1 want=$2 deadline=$((SECONDS + $3))
  while :; do
    [ "$("$bin/psql" -XAtq -c "$query" 2>/dev/null)" != "$want" ] || return 0
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# Checks DIR, creates it (parents traversable), marks it as ours and, as root, hands it to
# postgres: ready for a cluster in DIR/data.
prepare_dir() {
  case "$dir" in
    *[!A-Za-z0-9_./-]*) die "DIR must be a plain path (letters, digits, _ . / -): $dir" ;;
  esac
  # The socket is DIR/.s.PGSQL.PORT, and sun_path holds 107 bytes.
  [ "${#dir}" -le 92 ] || die "DIR path is too long for a Unix socket (${#dir} > 92 characters): $dir"
  [ ! -e "$dir/data" ] || die "$dir/data exists: a cluster is already there (\`$0 stop $dir\` first)"

  # The topmost directory mkdir -p will create, if any: those it creates get o+x.
  local first_new="" d=$dir
  while [ ! -e "$d" ]; do
    first_new=$d
    d=$(dirname "$d")
  done
  mkdir -p "$dir"
  : >"$dir/.pg.sh" # marks DIR as ours for stop's rm -rf
  if is_root; then
    id postgres >/dev/null 2>&1 || die "no postgres user (is PostgreSQL installed from Debian packages?)"
    if [ -n "$first_new" ]; then
      d=$(dirname "$dir")
      while [ "${#d}" -ge "${#first_new}" ]; do
        chmod o+x "$d"
        d=$(dirname "$d")
      done
    fi
    chown postgres:postgres "$dir"
    runuser -u postgres -- test -w "$dir" -a -x "$dir" ||
      die "user postgres cannot reach $dir: make each of its parents traversable (chmod o+x)"
  fi
}

# Starts the cluster in DIR/data (a primary or a standby: same options) on a free loopback
# port, records DIR/port and DIR/pid, and prints the URL on fd 3.
launch() {
  local port attempt before
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    before=0
    [ -f "$dir/log" ] && before=$(wc -c <"$dir/log")
    echo "==> starting PostgreSQL on 127.0.0.1:$port"
    if as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir -c fsync=on -c synchronous_commit=on -c max_connections=300 -c shared_buffers=256MB" \
      start; then
      break
    fi
    # Someone took the port between the pick and the bind: pick another.
    if [ "$attempt" -lt 5 ] && tail -c +"$((before + 1))" "$dir/log" 2>/dev/null |
      grep -q 'could not bind\|Address already in use\|could not create any TCP/IP sockets'; then
      echo "==> port $port was taken, retrying"
      continue
    fi
    echo "--- $dir/log (last 30 lines) ---"
    tail -n 30 "$dir/log" 2>/dev/null || true
    die "PostgreSQL did not start"
  done

  echo "$port" >"$dir/port"
  head -n 1 "$dir/data/postmaster.pid" >"$dir/pid"
  echo "==> PostgreSQL $(cat "$dir/data/PG_VERSION") running, pid $(cat "$dir/pid"), log $dir/log"
  echo "postgres://postgres@127.0.0.1:$port/postgres" >&3
}

start() {
  # Everything but the URL to stderr.
  exec 3>&1 1>&2

  bin=$(bin_dir) || {
    install_postgres 3>&- # nothing it starts may hold our stdout
    bin=$(bin_dir) || die "PostgreSQL installed, yet no /usr/lib/postgresql/*/bin/initdb"
  }
  prepare_dir

  echo "==> initdb $dir/data ($bin)"
  if ! as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log"
    die "initdb failed"
  fi
  launch
}

# DIR becomes a streaming standby of the running cluster in $1 (an absolute PRIMARY_DIR).
standby() {
  local primary=$1 pport
  exec 3>&1 1>&2
  [ "$primary" != "$dir" ] || die "PRIMARY_DIR and DIR are the same: $dir"
  pport=$(read_port "$primary")
  # The primary's binaries: pg_basebackup wants the same major version.
  bin=$(bin_dir "$primary") || die "PostgreSQL is not installed"
  "$bin/pg_isready" -q -h 127.0.0.1 -p "$pport" -t 10 ||
    die "the primary in $primary is not accepting connections on 127.0.0.1:$pport"
  prepare_dir

  echo "==> pg_basebackup of 127.0.0.1:$pport into $dir/data ($bin)"
  unset PGPASSWORD PGSERVICE PGSERVICEFILE PGSSLMODE PGOPTIONS
  if ! as_pg "$bin/pg_basebackup" -h 127.0.0.1 -p "$pport" -U postgres -D "$dir/data" -R -X stream -c fast \
    >"$dir/basebackup.log" 2>&1; then
    cat "$dir/basebackup.log"
    die "pg_basebackup failed"
  fi
  # postgresql.auto.conf comes along: a `sync` already run on the primary would make this
  # server, once promoted, wait for a standby of its own on every commit. Not here.
  as_pg sed -i '/^[[:space:]]*synchronous_standby_names[[:space:]]*=/d' "$dir/data/postgresql.auto.conf"
  launch
}

# Commits on the primary in DIR wait for a standby (any: '*') to have flushed them.
sync_standby() {
  exec 1>&2
  bin=$(bin_dir) || die "PostgreSQL is not installed"
  client_env
  echo "==> synchronous_standby_names = '*' on 127.0.0.1:$PGPORT"
  "$bin/psql" -XAtq -v ON_ERROR_STOP=1 -c "ALTER SYSTEM SET synchronous_standby_names = '*'" \
    -c "SELECT pg_reload_conf()" >/dev/null
  if ! wait_for_value "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'" 1 30; then
    echo "--- pg_stat_replication ---"
    "$bin/psql" -X -c "SELECT application_name, client_addr, state, sync_state FROM pg_stat_replication" || true
    # Left on, every later commit on the primary would hang.
    "$bin/psql" -XAtq -c "ALTER SYSTEM RESET synchronous_standby_names" -c "SELECT pg_reload_conf()" >/dev/null || true
    die "no synchronous standby on 127.0.0.1:$PGPORT after 30 s (synchronous_standby_names reset)"
  fi
  echo "==> a standby is synchronous"
}

# The server dies without a checkpoint (pg_ctl -m immediate: recovery on the next start); DIR
# stays.
crash() {
  exec 1>&2
  [ -d "$dir/data" ] || die "no cluster in $dir (no $dir/data)"
  bin=$(bin_dir) || die "PostgreSQL is not installed"
  # pg_ctl status: 0 if running, 3 if not (no postmaster.pid, or a stale one).
  if ! as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    echo "==> PostgreSQL in $dir is not running: nothing to crash"
    return 0
  fi
  echo "==> immediate stop (crash) of PostgreSQL in $dir"
  as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 60 stop ||
    ! as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1 || # it died meanwhile
    die "immediate stop failed"
}

promote() {
  exec 1>&2
  [ -d "$dir/data" ] || die "no cluster in $dir (no $dir/data)"
  bin=$(bin_dir) || die "PostgreSQL is not installed"
  echo "==> promoting the standby in $dir"
  as_pg "$bin/pg_ctl" -D "$dir/data" -w -t 60 promote
  client_env
  wait_for_value "SELECT pg_is_in_recovery()" f 30 ||
    die "127.0.0.1:$PGPORT is still in recovery 30 s after the promotion"
  echo "==> 127.0.0.1:$PGPORT is a primary"
}

# True if PID is the postmaster of DIR's cluster (not a reused PID).
is_our_postmaster() {
  local pid=$1
  [ -r "/proc/$pid/cmdline" ] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = postgres ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir/data"
}

stop() {
  exec 1>&2
  if [ ! -d "$dir" ]; then
    echo "==> $dir does not exist: nothing to stop"
    return 0
  fi
  [ -e "$dir/.pg.sh" ] || [ -z "$(ls -A "$dir")" ] ||
    die "$dir was not made by $0 start or standby (no $dir/.pg.sh): not stopping or removing it"

  local stopped=""
  if [ -f "$dir/data/postmaster.pid" ] && bin=$(bin_dir); then
    echo "==> stopping PostgreSQL in $dir"
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop && stopped=1
  fi
  if [ -z "$stopped" ] && [ -s "$dir/pid" ]; then
    local pid i
    pid=$(cat "$dir/pid")
    if is_our_postmaster "$pid"; then
      # SIGQUIT: immediate shutdown (the postmaster takes its children down), then SIGKILL.
      echo "==> no clean stop: killing postmaster $pid"
      kill -QUIT "$pid" 2>/dev/null || true
      for i in $(seq 1 100); do
        is_our_postmaster "$pid" || break
        [ "$i" -eq 50 ] && kill -KILL "$pid" 2>/dev/null || true
        sleep 0.1
      done
      ! is_our_postmaster "$pid" || die "postmaster $pid did not exit"
    fi
  fi
  rm -rf -- "$dir"
}

case "$cmd" in
  start)
    [ $# -eq 0 ] || usage
    start
    ;;
  stop)
    [ $# -eq 0 ] || usage
    stop
    ;;
  standby)
    [ $# -eq 1 ] || usage
    primary=$dir
    dir=$(realpath -m -- "$1")
    standby "$primary"
    ;;
  sync)
    [ $# -eq 0 ] || usage
    sync_standby
    ;;
  crash)
    [ $# -eq 0 ] || usage
    crash
    ;;
  promote)
    [ $# -eq 0 ] || usage
    promote
    ;;
  port)
    [ $# -eq 0 ] || usage
    read_port
    ;;
  createdb)
    [ $# -eq 1 ] || usage
    name=$1
    [[ $name =~ ^[A-Za-z0-9_][A-Za-z0-9_-]*$ ]] || die "database name must be letters, digits, _ and -: $name"
    bin=$(bin_dir) || die "PostgreSQL is not installed"
    client_env
    "$bin/createdb" -- "$name" >&2
    echo "postgres://postgres@127.0.0.1:$PGPORT/$name"
    ;;
  psql)
    bin=$(bin_dir) || die "PostgreSQL is not installed"
    client_env
    exec "$bin/psql" -X "$@"
    ;;
  *) usage ;;
esac
