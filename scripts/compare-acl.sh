#!/usr/bin/env bash
# What an ACL costs: SurgeMQ without an ACL file and with a 1,000-rule one, in the same run
# (1 shard on one CPU, surgemq-bench on another, 1 KiB payloads, the shapes of compare.sh at
# QoS 0 and 1), run twice alternately; mosquitto with the same ACL file for reference.
#
#   scripts/compare-acl.sh [--quick] [--broker-cpu N] [--bench-cpu M] [--surgemq PATH]
#
# The ACL file (written to target/compare/acl-1000): 990 anonymous `topic read` rules on
# other topics (fleet/N/+/status: SurgeMQ keeps them in a trie per user, so their number
# should not matter), 9 `pattern` lines (matched one by one for each check), and the rule
# that lets the runner's anonymous clients work (`topic readwrite +/+`). Every PUBLISH and
# every delivery is checked against it.
#
# Prints a table and one JSON line per run; results in target/compare/acl.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
broker_cpu=0
bench_cpu=1
surgemq_bin=target/release/surgemq
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --broker-cpu) broker_cpu=$2; shift ;;
    --bench-cpu) bench_cpu=$2; shift ;;
    --surgemq) surgemq_bin=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if [ "$quick" = 1 ]; then n1=20000; nmany=2000; nmesh=500; else n1=200000; nmany=20000; nmesh=5000; fi

. scripts/lib.sh
ensure_mosquitto
build_release
bench=target/release/surgemq-bench
out=target/compare
mkdir -p "$out"
: > "$out/acl.jsonl"

acl="$out/acl-1000"
{
  echo "# 1,000 rules: see scripts/compare-acl.sh"
  for i in $(seq 990); do echo "topic read fleet/$i/+/status"; done
  for i in $(seq 9); do echo "pattern readwrite devices/%c/p$i/#"; done
  echo "topic readwrite +/+"
} > "$acl"
chmod 644 "$acl"

port=$((20000 + RANDOM % 20000))
pid=""
trap stop_broker EXIT

start_broker() { # surgemq-none | surgemq-acl | mosquitto-acl
  port=$((port + 1))
  case "$1" in
    surgemq-*)
      {
        echo "listeners = [\"127.0.0.1:$port\"]"
        echo "shards = 1"
        echo "log_level = \"warn\""
        [ "$1" = surgemq-acl ] && echo "acl_file = \"$PWD/$acl\""
      } > "$out/surgemq-acl.toml"
      taskset -c "$broker_cpu" "$surgemq_bin" --config "$out/surgemq-acl.toml" &
      pid=$! ;;
    mosquitto-acl)
      cat > "$out/mosquitto-acl.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
acl_file $PWD/$acl
persistence false
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 0
log_type error
CONF
      taskset -c "$broker_cpu" mosquitto -c "$out/mosquitto-acl.conf" &
      pid=$! ;;
  esac
  wait_port
}

run() { # broker round shape args...
  local broker=$1 round=$2; shift 2
  local line
  if line=$(taskset -c "$bench_cpu" "$bench" "$@" --port "$port" --pid "$pid" --inflight 256 | grep '^{'); then
    echo "{\"broker\":\"$broker\",\"round\":$round,${line#\{}" >> "$out/acl.jsonl"
  else
    echo "{\"broker\":\"$broker\",\"round\":$round,\"shape\":\"$1\",\"failed\":true}" >> "$out/acl.jsonl"
  fi
}

for round in 1 2; do
  for broker in surgemq-none surgemq-acl mosquitto-acl; do
    [ "$broker" = mosquitto-acl ] && [ "$round" = 2 ] && continue
    for qos in 0 1; do
      start_broker "$broker"
      run "$broker" "$round" one-to-one --qos $qos --count $n1
      run "$broker" "$round" fan-in --qos $qos --count $nmany
      run "$broker" "$round" fan-out --qos $qos --count $nmany
      run "$broker" "$round" mesh --qos $qos --count $nmesh
      stop_broker
    done
  done
done

python3 - "$out/acl.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    by.setdefault((r.get("shape"), r.get("qos")), {})[(r["broker"], r["round"])] = r
def rate(v, b, n):
    r = v.get((b, n), {})
    return None if not r or r.get("failed") else r["msgs_per_s"]
print(f"{'shape':<11}{'QoS':>4}{'none #1':>11}{'acl #1':>11}{'none #2':>11}{'acl #2':>11}{'acl/none':>10}{'mosq+acl':>11}{'acl/mosq':>10}")
for (shape, qos), v in by.items():
    cells = [rate(v, b, n) for b, n in [("surgemq-none", 1), ("surgemq-acl", 1), ("surgemq-none", 2), ("surgemq-acl", 2)]]
    m = rate(v, "mosquitto-acl", 1)
    fmt = lambda x: "failed" if x is None else f"{x:.0f}"
    try:
        ratio = f"{(cells[1] + cells[3]) / (cells[0] + cells[2]):.3f}"
    except TypeError:
        ratio = "-"
    try:
        vs = f"{(cells[1] + cells[3]) / 2 / m:.2f}"
    except TypeError:
        vs = "-"
    print(f"{shape:<11}{qos:>4}" + "".join(f"{fmt(c):>11}" for c in cells) + f"{ratio:>10}{fmt(m):>11}{vs:>10}")
PY
