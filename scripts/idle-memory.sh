#!/usr/bin/env bash
# Memory per idle connection, the way the README quotes it: a SurgeMQ with one shard,
# (VmRSS holding N idle connections minus VmRSS empty) / N, read 8 s after the burst.
#
#   scripts/idle-memory.sh [--connections N] [--bin DIR]
#
# DIR holds `surgemq` and `surgemq-bench` (default target/release, built if missing).
# Prints one line and one JSON line.
set -euo pipefail
cd "$(dirname "$0")/.."
n=10000
bin=target/release
while [ $# -gt 0 ]; do
  case "$1" in
    --connections) n=$2; shift ;;
    --bin) bin=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if [ ! -x "$bin/surgemq" ] || [ ! -x "$bin/surgemq-bench" ]; then
  cargo build --release --bin surgemq --bin surgemq-bench >&2
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
port=$((20000 + RANDOM % 20000))
cfg=$(mktemp)
trap 'rm -f "$cfg"; [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true' EXIT
printf 'listeners = ["127.0.0.1:%s"]\nshards = 1\nlog_level = "warn"\n[limits]\nmax_connections = %s\n' "$port" $((n + 10)) > "$cfg"
taskset -c 0 "$bin/surgemq" --config "$cfg" & pid=$!
sleep 1
rss() { awk '/VmRSS/ { print $2 }' "/proc/$pid/status"; }
empty=$(rss)
taskset -c 1 "$bin/surgemq-bench" connections --port "$port" --connections "$n" --duration 12 >/dev/null &
bench=$!
# The burst takes about a second; read 8 s after it.
sleep 9
held=$(rss)
wait "$bench" || true
per=$(( (held - empty) * 1024 / n ))
echo "idle connections: $n, VmRSS empty ${empty} KiB, holding ${held} KiB: ${per} bytes per connection"
echo "{\"idle_connections\":$n,\"rss_empty_kb\":$empty,\"rss_held_kb\":$held,\"bytes_per_connection\":$per}"
