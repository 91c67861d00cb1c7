#!/usr/bin/env bash
# What durability costs: QoS 1 throughput of SurgeMQ with `persistence.mode` off, sync and
# periodic, against mosquitto with `persistence true`, in the same run (1 shard on one CPU,
# surgemq-bench on another, 1 KiB payloads, every client with a persistent session so the
# messages really go through the log); then how long SurgeMQ takes to restart with one
# million messages queued for an offline persistent session.
#
#   scripts/compare-durability.sh [--quick] [--broker-cpu N] [--bench-cpu M] [--queued N]
#                                 [--restart-only]
#
# mosquitto keeps its persistent state in memory and writes all of it to one file every
# `autosave_interval` seconds (1800 by default) and at shutdown: its numbers are what a
# broker that syncs nothing per message does, and a crash loses up to that interval.
# SurgeMQ "sync" acknowledges only what is on disk (fdatasync, group commit per shard).
#
# Prints a table and one JSON line per run; results in target/compare/durability.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
broker_cpu=0
bench_cpu=1
queued=1000000
restart_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --broker-cpu) broker_cpu=$2; shift ;;
    --bench-cpu) bench_cpu=$2; shift ;;
    --queued) queued=$2; shift ;;
    --restart-only) restart_only=1 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if [ "$quick" = 1 ]; then n1=20000; nmany=2000; queued=${queued/1000000/100000}; else n1=100000; nmany=10000; fi

. scripts/lib.sh
ensure_mosquitto
build_release
bench=target/release/surgemq-bench
out=target/compare
mkdir -p "$out"
: > "$out/durability.jsonl"
data=$(mktemp -d /var/tmp/surgemq-durability.XXXXXX)
# mosquitto started as root runs as user mosquitto: its directory must be reachable.
chmod 755 "$data"
port=$((20000 + RANDOM % 20000))
pid=""
trap 'stop_broker; rm -rf "$data"' EXIT

start_surgemq() { # mode
  port=$((port + 1))
  rm -rf "$data/surgemq"
  cat > "$out/surgemq-durable.toml" <<EOF
listeners = ["127.0.0.1:$port"]
shards = 1
log_level = "info"
[limits]
max_queued_messages = 2000000
max_queued_bytes = 4294967296
[persistence]
mode = "$1"
dir = "$data/surgemq"
EOF
  taskset -c "$broker_cpu" target/release/surgemq --config "$out/surgemq-durable.toml" > "$out/surgemq-durable.log" 2>&1 &
  pid=$!
  wait_port
}

start_mosquitto() {
  port=$((port + 1))
  rm -rf "$data/mosquitto"; mkdir -p "$data/mosquitto"; chmod 777 "$data/mosquitto"
  cat > "$out/mosquitto-durable.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence true
persistence_location $data/mosquitto/
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 0
log_type error
EOF
  taskset -c "$broker_cpu" mosquitto -c "$out/mosquitto-durable.conf" &
  pid=$!
  wait_port
}

run() { # broker-label shape args...
  local label=$1; shift
  local line
  if line=$(taskset -c "$bench_cpu" "$bench" "$@" --port "$port" --pid "$pid" --inflight 256 --persistent | grep '^{'); then
    echo "{\"broker\":\"$label\",${line#\{}" >> "$out/durability.jsonl"
  else
    echo "{\"broker\":\"$label\",\"shape\":\"$1\",\"failed\":true}" >> "$out/durability.jsonl"
  fi
}

brokers="surgemq-off surgemq-sync surgemq-periodic mosquitto-persist"
[ "$restart_only" = 1 ] && brokers=""
for b in $brokers; do
  for shape in one-to-one fan-in; do
    case "$b" in
      surgemq-*) start_surgemq "${b#surgemq-}" ;;
      mosquitto-persist) start_mosquitto ;;
    esac
    if [ "$shape" = one-to-one ]; then count=$n1; else count=$nmany; fi
    run "$b" "$shape" --qos 1 --count "$count"
    stop_broker
  done
done

python3 - "$out/durability.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    by.setdefault(r.get("shape"), {})[r["broker"]] = r
cols = ["surgemq-off", "surgemq-sync", "surgemq-periodic", "mosquitto-persist"]
print(f"{'shape (QoS 1)':<14}" + "".join(f"{c + ' msg/s':>24}{'p99 us':>9}" for c in cols) + f"{'sync/off':>10}{'sync/mosq':>11}")
for shape, v in by.items():
    line = f"{shape:<14}"
    for c in cols:
        r = v.get(c, {})
        if not r or r.get("failed"):
            line += f"{'failed':>24}{'-':>9}"
        else:
            lost = "" if r.get("lost", 0) == 0 else f" (lost {r['lost']})"
            line += f"{r['msgs_per_s']:.0f}{lost}".rjust(24) + f"{r['p99_us']:>9}"
    def ratio(a, b):
        try:
            return f"{v[a]['msgs_per_s'] / v[b]['msgs_per_s']:.2f}"
        except (KeyError, ZeroDivisionError, TypeError):
            return "-"
    line += f"{ratio('surgemq-sync', 'surgemq-off'):>10}{ratio('surgemq-sync', 'mosquitto-persist'):>11}"
    print(line)
EOF

# Restart time with $queued messages queued for an offline persistent session: the
# runner's fan-in (20 publishers, 1 KiB QoS 1) fills the queue of a session subscribed to
# '#' that is offline the whole time; then the broker is killed (SIGKILL) and restarted.
echo "== restart with $queued queued messages (mode sync)"
start_surgemq sync
mosquitto_sub -p "$port" -i durability-offline -c -q 1 -t '#' -W 1 >/dev/null 2>&1 || true
t0=$(date +%s.%N)
taskset -c "$bench_cpu" "$bench" fan-in --port "$port" --qos 1 --count $((queued / 20)) --inflight 256 | grep '^{' > /dev/null
t1=$(date +%s.%N)
# A crash, not a shutdown: what was acknowledged must all be there.
kill -9 "$pid"; wait "$pid" 2>/dev/null || true; pid=""
# The dead process's listening sockets go with its io_uring, a moment later.
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break; sleep 0.05; done
du -sh "$data/surgemq" | sed 's/^/log on disk: /'
t2=$(date +%s.%N)
taskset -c "$broker_cpu" target/release/surgemq --config "$out/surgemq-durable.toml" > "$out/restart.log" 2>&1 &
pid=$!
# Listeners are bound before recovery: serving starts at the "started" line.
for _ in $(seq 6000); do grep -q "surgemq started" "$out/restart.log" && break; sleep 0.01; done
t3=$(date +%s.%N)
plain=$(sed 's/\x1b\[[0-9;]*m//g' "$out/restart.log")
recovered=$(echo "$plain" | grep -o 'messages_held=[0-9]*' | head -1 || true)
ms=$(echo "$plain" | grep 'persistent state recovered' | grep -o ' ms=[0-9]*' | head -1 | tr -d ' ' || true)
rss=$(grep VmRSS "/proc/$pid/status" | awk '{print $2 " kB"}')
t4=$(date +%s.%N)
got=$( (mosquitto_sub -p "$port" -i durability-offline -c -q 1 -t '#' -F %t -W 120 -C "$queued" 2>/dev/null || true) | wc -l)
t5=$(date +%s.%N)
stop_broker
python3 - "$queued" "$t0" "$t1" "$t2" "$t3" "$recovered" "$ms" "$got" "$t4" "$t5" "$rss" <<'PY'
import json, sys
n, t0, t1, t2, t3, rec, ms, got, t4, t5, rss = sys.argv[1:]
r = {"case": "restart", "queued": int(n), "publish_s": round(float(t1) - float(t0), 2),
     "restart_to_serving_s": round(float(t3) - float(t2), 2), "recovery": rec,
     "recovery_log": ms, "rss_after_restart": rss, "delivered_after_restart": int(got),
     "drain_s": round(float(t5) - float(t4), 2)}
print(f"queued {n} QoS 1 in {r['publish_s']} s; kill -9; restart until serving {r['restart_to_serving_s']} s "
      f"({rec}, {ms}, RSS {rss}); delivered after restart: {got} in {r['drain_s']} s")
print(json.dumps(r))
PY
