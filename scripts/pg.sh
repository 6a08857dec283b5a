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
#
# Only URLs go to stdout; everything else goes to stderr. DIR holds data/ (the cluster), log
# (the server log), port, pid (the postmaster's) and the Unix socket. As root, DIR is chowned to
# postgres and the server binaries run as postgres (runuser); otherwise they run as the caller.
# postgres must be able to reach DIR: parents this script creates are made traversable
# (chmod o+x), an existing parent must already be (`mktemp -d` gives 0700, so use
# `d=$(mktemp -d)` itself as DIR, not a subdirectory of it). DIR's path must be short enough
# for a Unix socket (92 characters at most). If start fails, DIR is left for a look at DIR/log;
# stop removes it.
set -euo pipefail

usage() {
  sed -n '7,10s/^#   /usage: /p' "$0" >&2
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

# The bin dir: the version the cluster in DIR was made with if there is one, otherwise the
# highest installed.
bin_dir() {
  if [ -f "$dir/data/PG_VERSION" ]; then
    local v
    v=$(cat "$dir/data/PG_VERSION")
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
  [ -s "$dir/port" ] || die "no cluster in $dir (no $dir/port): run \`$0 start $dir\` first"
  cat "$dir/port"
}

# Client tools connect over TCP as the caller (so `psql -f` reads the caller's files).
client_env() {
  export PGHOST=127.0.0.1 PGPORT PGUSER=postgres PGDATABASE=postgres
  PGPORT=$(read_port)
  unset PGPASSWORD PGSERVICE PGSERVICEFILE PGSSLMODE PGOPTIONS
}

start() {
  case "$dir" in
    *[!A-Za-z0-9_./-]*) die "DIR must be a plain path (letters, digits, _ . / -): $dir" ;;
  esac
  # The socket is DIR/.s.PGSQL.PORT, and sun_path holds 107 bytes.
  [ "${#dir}" -le 92 ] || die "DIR path is too long for a Unix socket (${#dir} > 92 characters): $dir"
  [ ! -e "$dir/data" ] || die "$dir/data exists: a cluster is already there (\`$0 stop $dir\` first)"

  # Everything but the URL to stderr.
  exec 3>&1 1>&2

  local bin
  bin=$(bin_dir) || {
    install_postgres 3>&- # nothing it starts may hold our stdout
    bin=$(bin_dir) || die "PostgreSQL installed, yet no /usr/lib/postgresql/*/bin/initdb"
  }

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

  echo "==> initdb $dir/data ($bin)"
  if ! as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log"
    die "initdb failed"
  fi

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
    die "$dir was not made by $0 start (no $dir/.pg.sh): not stopping or removing it"

  local bin stopped=""
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
