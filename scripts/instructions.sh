#!/usr/bin/env bash
# User-space instructions per request of the release server, counted by callgrind: unlike
# times on this shared two-core machine, the count is the same from run to run, so it shows
# what a change to the request path costs or saves. Not part of CI.
#
#   scripts/instructions.sh            100-byte appends on 4 connections, memory mode
#
# Runs the server under callgrind twice (400 and 2,400 appends) and prints the difference
# per request, so start-up and shutdown cancel out. Installs valgrind if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || apt-get install -y valgrind >/dev/null
cargo build --release --bin ds-server --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

count() {
  DS_SERVER__PORT=$port DS_SERVER__HOST=127.0.0.1 DS_LOG=warn \
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" target/release/ds-server \
    >/dev/null 2>"$work/valgrind.log" &
  local pid=$!
  for _ in $(seq 1 150); do
    sleep 0.2
    curl -s -o /dev/null -m 2 "http://127.0.0.1:$port/healthz" && break
  done
  python3 - "$1" "$port" <<'PY'
import socket, sys, threading
n, port = int(sys.argv[1]), int(sys.argv[2])
def conn(k):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    def response():
        nonlocal buf
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        head, _, rest = buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        while len(rest) < length:
            rest += s.recv(65536)
        buf = rest[length:]
    s.sendall(f"PUT /v1/stream/s{k} HTTP/1.1\r\nhost: x\r\ncontent-type: application/octet-stream\r\ncontent-length: 0\r\n\r\n".encode())
    response()
    req = f"POST /v1/stream/s{k} HTTP/1.1\r\nhost: x\r\ncontent-type: application/octet-stream\r\ncontent-length: 100\r\n\r\n".encode() + b"x" * 100
    for _ in range(n // 4):
        s.sendall(req)
        response()
threads = [threading.Thread(target=conn, args=(k,)) for k in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
PY
  kill -TERM "$pid"
  wait "$pid" || true
  callgrind_annotate "$work/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
}

small=$(count 400)
large=$(count 2400)
echo "instructions per append: $(( (large - small) / 2000 ))"
