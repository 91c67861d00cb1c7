#!/usr/bin/env bash
# Memory per idle connection, the way the README quotes it: a SurgeMQ with one shard,
# (VmRSS holding N idle connections minus VmRSS empty) / N, read 8 s after the burst.
#
#   scripts/idle-memory.sh [--connections N] [--bin DIR] [--websockets]
#
# DIR holds `surgemq` and `surgemq-bench` (default target/release, built if missing).
# --websockets: the connections are WebSocket ones (a `[[listener]]` with protocol
# "websockets"), made by raw python3 clients that upgrade, send CONNECT, get CONNACK and
# stay quiet; N then defaults to 5,000 (the clients are one process, under the 20,000 open
# files limit). Prints one line and one JSON line.
set -euo pipefail
cd "$(dirname "$0")/.."
n=""
bin=target/release
ws=0
while [ $# -gt 0 ]; do
  case "$1" in
    --connections) n=$2; shift ;;
    --bin) bin=$2; shift ;;
    --websockets) ws=1 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$n" ]; then
  if [ $ws = 1 ]; then n=5000; else n=10000; fi
fi
if [ ! -x "$bin/surgemq" ] || [ ! -x "$bin/surgemq-bench" ]; then
  cargo build --release --bin surgemq --bin surgemq-bench >&2
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
port=$((20000 + RANDOM % 20000))
cfg=$(mktemp)
trap 'rm -f "$cfg"; [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true' EXIT
if [ $ws = 1 ]; then
  printf 'listeners = []\nshards = 1\nlog_level = "warn"\n[limits]\nmax_connections = %s\n[[listener]]\naddress = "127.0.0.1:%s"\nprotocol = "websockets"\nhttp_path = "/mqtt"\n' \
    $((n + 10)) "$port" > "$cfg"
else
  printf 'listeners = ["127.0.0.1:%s"]\nshards = 1\nlog_level = "warn"\n[limits]\nmax_connections = %s\n' "$port" $((n + 10)) > "$cfg"
fi
taskset -c 0 "$bin/surgemq" --config "$cfg" & pid=$!
sleep 1
rss() { awk '/VmRSS/ { print $2 }' "/proc/$pid/status"; }
if [ $ws = 1 ]; then
  taskset -c 1 python3 - "$port" "$n" "$pid" <<'PY'
import base64, os, socket, struct, sys, time
port, n, pid = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
def frame(payload):
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x82, 0x80 | len(payload)]) + mask + masked
def recv(s, i):
    data = s.recv(4096)
    if not data:
        sys.exit(f"connection {i} was closed by the broker")
    return data
def connect(cid):
    cid = cid.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x00" + struct.pack(">H", len(cid)) + cid
    return bytes([0x10, len(body)]) + body
empty = rss()
held = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               f"Sec-WebSocket-Protocol: mqtt\r\n\r\n").encode())
    resp = b""
    while b"\r\n\r\n" not in resp:
        resp += recv(s, i)
    rest = resp.split(b"\r\n\r\n", 1)[1]
    s.sendall(frame(connect(f"ws-idle-{i}")))
    while len(rest) < 6:
        rest += recv(s, i)
    assert rest[2] == 0x20, f"no CONNACK: {rest!r}"
    held.append(s)
time.sleep(8)
full = rss()
per = (full - empty) * 1024 // n
print(f"idle WebSocket connections: {n}, VmRSS empty {empty} KiB, holding {full} KiB: {per} bytes per connection")
print(f'{{"idle_websocket_connections":{n},"rss_empty_kb":{empty},"rss_held_kb":{full},"bytes_per_connection":{per}}}')
PY
  exit 0
fi
empty=$(rss)
taskset -c 1 "$bin/surgemq-bench" connections --port "$port" --connections "$n" --duration 12 >/dev/null &
bench=$!
sleep 9
held=$(rss)
wait "$bench" || true
per=$(( (held - empty) * 1024 / n ))
echo "idle connections: $n, VmRSS empty ${empty} KiB, holding ${held} KiB: ${per} bytes per connection"
echo "{\"idle_connections\":$n,\"rss_empty_kb\":$empty,\"rss_held_kb\":$held,\"bytes_per_connection\":$per}"
