#!/usr/bin/env bash
# What observability costs: the same runner against SurgeMQ with `$SYS` and the metrics
# endpoint off (`sys_interval = 0`, the counters alone), and on (`$SYS` every second,
# `/metrics` scraped every second by curl), and optionally an earlier build (`--before
# PATH`, started with --listen / --shards only). Alternating, several rounds; one shard on
# one CPU, the runner on another.
#
#   scripts/compare-observability.sh [--rounds N] [--before PATH] [--broker-cpu N] [--bench-cpu M]
#
# Prints each run, a table of mean msgs/s per shape and variant with on/off, and one JSON
# line.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

rounds=3
before=""
broker_cpu=0
bench_cpu=1
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --before) before=$2; shift 2 ;;
    --broker-cpu) broker_cpu=$2; shift 2 ;;
    --bench-cpu) bench_cpu=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 2; }
build_release
surgemq=target/release/surgemq
bench=target/release/surgemq-bench
out=target/compare
mkdir -p "$out"
runs="$out/observability-runs.txt"
: > "$runs"
variants="off on"
[ -n "$before" ] && variants="before $variants"
pid=""
scraper=""
cleanup() {
  [ -n "$scraper" ] && kill "$scraper" 2>/dev/null || true
  stop_broker
}
trap cleanup EXIT

for round in $(seq "$rounds"); do
  for v in $variants; do
    port=$((30000 + RANDOM % 20000)); mport=$((port + 1))
    case $v in
      before)
        taskset -c "$broker_cpu" "$before" --listen "127.0.0.1:$port" --shards 1 --log-level warn &
        pid=$! ;;
      off)
        printf 'listeners = ["127.0.0.1:%s"]\nshards = 1\nlog_level = "warn"\nsys_interval = 0\n' \
          "$port" > "$out/observability-off.toml"
        taskset -c "$broker_cpu" "$surgemq" --config "$out/observability-off.toml" &
        pid=$! ;;
      on)
        printf 'listeners = ["127.0.0.1:%s"]\nshards = 1\nlog_level = "warn"\nsys_interval = 1\n[metrics]\nlisten = "127.0.0.1:%s"\n' \
          "$port" "$mport" > "$out/observability-on.toml"
        taskset -c "$broker_cpu" "$surgemq" --config "$out/observability-on.toml" &
        pid=$! ;;
    esac
    wait_port
    if [ "$v" = on ]; then
      ( while sleep 1; do curl -s -o /dev/null "http://127.0.0.1:$mport/metrics"; done ) &
      scraper=$!
    fi
    for spec in "one-to-one 0 1000000" "fan-in 0 50000" "fan-out 0 100000" "one-to-one 1 500000"; do
      set -- $spec
      line=$(taskset -c "$bench_cpu" "$bench" "$1" --qos "$2" --count "$3" --port "$port" --pid "$pid" --inflight 256 | grep '^{')
      rate=$(echo "$line" | grep -o '"msgs_per_s":[0-9.]*' | cut -d: -f2)
      echo "$round $v $1-q$2 $rate" | tee -a "$runs"
    done
    if [ -n "$scraper" ]; then kill "$scraper" 2>/dev/null || true; scraper=""; fi
    stop_broker
  done
done

python3 - "$runs" <<'EOF'
import collections, json, sys
d = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r, v, shape, rate = line.split()
    d[(shape, v)].append(float(rate))
shapes = list(dict.fromkeys(k[0] for k in d))
variants = [v for v in ("before", "off", "on") if any(k[1] == v for k in d)]
print("shape".ljust(16) + "".join(v.rjust(12) for v in variants) + "on/off".rjust(8))
result = {}
for s in shapes:
    m = {v: sum(d[(s, v)]) / len(d[(s, v)]) for v in variants}
    print(s.ljust(16) + "".join(f"{m[v]:12,.0f}" for v in variants) + f"{m['on'] / m['off']:8.3f}")
    result[s] = {v: round(m[v]) for v in variants} | {"on_over_off": round(m["on"] / m["off"], 3)}
print(json.dumps({"observability": result}))
EOF
