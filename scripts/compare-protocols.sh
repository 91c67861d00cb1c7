#!/usr/bin/env bash
# MQTT 5.0 against 3.1.1 on SurgeMQ, side by side: the same broker process, the same load
# from surgemq-bench, every shape at QoS 0 and 1 with 1 KiB payloads, the two protocol
# versions alternated run by run (3.1.1, 5, 3.1.1, 5, ...) so that the machine's noise
# falls on both alike.
#
#   scripts/compare-protocols.sh [--quick] [--rounds N] [--broker-cpu N] [--bench-cpu M]
#                                [--surgemq PATH]
#
# Prints a table of msgs/s received per version (mean over the rounds) and the ratio
# 5.0 / 3.1.1, and writes every run's JSON line to target/compare/protocols.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
rounds=2
broker_cpu=0
bench_cpu=1
surgemq_bin=target/release/surgemq
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --rounds) rounds=$2; shift ;;
    --broker-cpu) broker_cpu=$2; shift ;;
    --bench-cpu) bench_cpu=$2; shift ;;
    --surgemq) surgemq_bin=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

. scripts/lib.sh
build_release
bench=target/release/surgemq-bench
out=target/compare
mkdir -p "$out"
results="$out/protocols.jsonl"
: > "$results"

if [ "$quick" = 1 ]; then n1=20000; nmany=2000; nmesh=500; else n1=200000; nmany=20000; nmesh=5000; fi

port=$((20000 + RANDOM % 20000))
pid=""
trap stop_broker EXIT

taskset -c "$broker_cpu" "$surgemq_bin" --listen "127.0.0.1:$port" --shards 1 --log-level warn &
pid=$!
wait_port

run() {
  local protocol=$1 label=$2; shift 2
  local line
  if line=$(taskset -c "$bench_cpu" "$bench" "$@" --protocol "$protocol" --port "$port" --inflight 256 | grep '^{'); then
    echo "{\"label\":\"$label\",${line#\{}" >> "$results"
  else
    echo "{\"label\":\"$label\",\"protocol\":\"$protocol\",\"failed\":true}" >> "$results"
  fi
}

for round in $(seq "$rounds"); do
  for qos in 0 1; do
    for shape in one-to-one fan-in fan-out mesh; do
      case "$shape" in
        one-to-one) n=$n1 ;;
        mesh) n=$nmesh ;;
        *) n=$nmany ;;
      esac
      for protocol in 3.1.1 5; do
        run "$protocol" "$shape" "$shape" --qos "$qos" --count "$n"
      done
    done
  done
  echo "round $round of $rounds done" >&2
done

python3 - "$results" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    if r.get("failed"):
        by.setdefault((r["label"], r.get("qos", "?")), {}).setdefault(r["protocol"], []).append(None)
        continue
    by.setdefault((r["label"], r["qos"]), {}).setdefault(r["protocol"], []).append(r)
print(f"{'shape':<12}{'qos':>4}{'3.1.1 msg/s':>14}{'5.0 msg/s':>14}{'5.0/3.1.1':>11}{'lost':>6}  runs (msgs/s)")
for (shape, qos), v in by.items():
    def mean(rs):
        ok = [r["msgs_per_s"] for r in rs if r]
        return sum(ok) / len(ok) if ok else None
    a, b = mean(v.get("3.1.1", [])), mean(v.get("5.0", [])) 
    lost = sum(r.get("lost", 0) for rs in v.values() for r in rs if r)
    ratio = f"{b / a:.3f}" if a and b else "-"
    runs = " ".join(f"{p}:{r['msgs_per_s']:.0f}" if r else f"{p}:failed" for p, rs in v.items() for r in rs)
    print(f"{shape:<12}{qos:>4}{a or 0:>14.0f}{b or 0:>14.0f}{ratio:>11}{lost:>6}  {runs}")
print("ratio: mean 5.0 msgs/s / mean 3.1.1 msgs/s, same broker process, runs alternated")
EOF
