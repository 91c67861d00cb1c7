#!/usr/bin/env bash
# Side-by-side benchmark: SurgeMQ against mosquitto (and rumqttd when installed), one
# broker at a time on the same CPU, the same load from surgemq-bench on another CPU.
#
#   scripts/compare.sh [--quick] [--no-rumqttd] [--broker-cpu N] [--bench-cpu M]
#                      [--surgemq PATH] [--tls]
#
# --tls: every client connects over TLS (a CA and a certificate for localhost made with
# openssl under target/compare/tls); SurgeMQ gets a `[[listener]]` with certfile / keyfile,
# mosquitto a listener with the same files; rumqttd is left out. Results go to
# target/compare/results-tls.jsonl. The connections rows then measure TLS handshakes per
# second and memory per idle TLS connection. SurgeMQ over plain TCP runs too (column
# surgemq-tcp; its ratio is TLS / plain), so the cost of TLS comes from the same run.
#
# --surgemq PATH runs that SurgeMQ binary instead of building this tree's (to measure an
# earlier build against the peers in the same session: before and after a change).
#
# Shapes: one-to-one, fan-in (20:1), fan-out (1:20), mesh (20 clients), each at QoS 0 and
# QoS 1 with 1 KiB payloads, plus 10,000 idle connections (twice: cold and warm broker)
# for connection setup rate and memory. Prints one table
# (msgs/s received, p99 latency, broker peak RSS, ratio SurgeMQ / peer) and writes every
# run's JSON line to target/compare/results.jsonl, and a bar chart of msgs/s per shape per
# broker to target/compare/throughput.svg.
#
# Installs what it compares: mosquitto from apt, rumqttd with `cargo install rumqttd` (a few
# minutes the first time; --no-rumqttd skips it). Not `--locked`: rumqttd 0.20.0's lock file
# pins metrics 0.22.1, which no longer compiles with current Rust.
#
# Peers get configurations that lift their queue limits (mosquitto: unlimited in-flight and
# queued messages), as their users would for a throughput test; SurgeMQ runs with its
# defaults. Quote ratios, not absolute numbers: the machine is shared and noisy.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
tls=0
with_rumqttd=1
broker_cpu=0
bench_cpu=1
surgemq_bin=target/release/surgemq
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --no-rumqttd) with_rumqttd=0 ;;
    --broker-cpu) broker_cpu=$2; shift ;;
    --bench-cpu) bench_cpu=$2; shift ;;
    --surgemq) surgemq_bin=$2; shift ;;
    --tls) tls=1 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

. scripts/lib.sh
ensure_mosquitto
if [ "$with_rumqttd" = 1 ] && ! command -v rumqttd >/dev/null; then
  echo "installing rumqttd (cargo install rumqttd)" >&2
  cargo install rumqttd >&2 || echo "rumqttd did not install; comparing without it" >&2
fi
build_release
bench=target/release/surgemq-bench
out=target/compare
mkdir -p "$out"
results="$out/results.jsonl"
tls_args=()
if [ "$tls" = 1 ]; then
  with_rumqttd=0
  results="$out/results-tls.jsonl"
  pki="$PWD/$out/tls"
  mkdir -p "$pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$pki/ca.key" -out "$pki/ca.pem" -subj "/CN=surgemq compare CA" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$pki/server.key" -out "$pki/server.csr" -subj "/CN=localhost" 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$pki/ext"
  openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -out "$pki/server.pem" -extfile "$pki/ext" 2>/dev/null
  # mosquitto started as root runs as user mosquitto: it must read the files.
  chmod 755 "$pki"; chmod 644 "$pki"/*
  tls_args=(--tls-ca "$pki/ca.pem" --tls-name localhost)
fi
: > "$results"

if [ "$quick" = 1 ]; then n1=20000; nmany=2000; nmesh=500; conns=2000; else n1=200000; nmany=20000; nmesh=5000; conns=10000; fi

# 10,000 idle connections need more descriptors than the usual soft limit of 1024; every
# broker gets the same limit (SurgeMQ raises its own; rumqttd does not).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

port=$((20000 + RANDOM % 20000))
pid=""
trap stop_broker EXIT

start_broker() {
  local name=$1
  port=$((port + 1))
  case "$name" in
    surgemq-tcp)
      # --tls: the same SurgeMQ over plain TCP, in the same run, for the cost of TLS.
      taskset -c "$broker_cpu" "$surgemq_bin" --listen "127.0.0.1:$port" --shards 1 --log-level warn &
      pid=$! ;;
    surgemq)
      if [ "$tls" = 1 ]; then
        printf 'listeners = []\nshards = 1\nlog_level = "warn"\n[[listener]]\naddress = "127.0.0.1:%s"\ncertfile = "%s"\nkeyfile = "%s"\n' \
          "$port" "$pki/server.pem" "$pki/server.key" > "$out/surgemq-tls.toml"
        taskset -c "$broker_cpu" "$surgemq_bin" --config "$out/surgemq-tls.toml" &
      else
        taskset -c "$broker_cpu" "$surgemq_bin" --listen "127.0.0.1:$port" --shards 1 --log-level warn &
      fi
      pid=$! ;;
    mosquitto)
      cat > "$out/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 0
log_type error
EOF
      if [ "$tls" = 1 ]; then
        printf 'certfile %s\nkeyfile %s\n' "$pki/server.pem" "$pki/server.key" >> "$out/mosquitto.conf"
      fi
      taskset -c "$broker_cpu" mosquitto -c "$out/mosquitto.conf" &
      pid=$! ;;
    rumqttd)
      cat > "$out/rumqttd.toml" <<EOF
id = 0
[router]
id = 0
max_connections = 20010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10
[v4.1]
name = "v4-1"
listen = "127.0.0.1:$port"
next_connection_delay_ms = 0
[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 20480
max_inflight_count = 500
dynamic_filters = true
EOF
      taskset -c "$broker_cpu" rumqttd --config "$out/rumqttd.toml" -q &
      pid=$! ;;
  esac
  wait_port || { echo "$name did not start" >&2; return 1; }
}

run() {
  local broker=$1 label=$2; shift 2
  local line
  local extra=("${tls_args[@]}")
  [ "$broker" = surgemq-tcp ] && extra=()
  if line=$(taskset -c "$bench_cpu" "$bench" "$@" "${extra[@]}" --port "$port" --pid "$pid" --inflight 256 | grep '^{'); then
    echo "{\"broker\":\"$broker\",\"label\":\"$label\",${line#\{}" >> "$results"
  else
    echo "{\"broker\":\"$broker\",\"label\":\"$label\",\"shape\":\"$1\",\"failed\":true}" >> "$results"
  fi
}

brokers="surgemq mosquitto"
[ "$tls" = 1 ] && brokers="surgemq surgemq-tcp mosquitto"
[ "$with_rumqttd" = 1 ] && command -v rumqttd >/dev/null && brokers="$brokers rumqttd"
for broker in $brokers; do
  for qos in 0 1; do
    start_broker "$broker"
    run "$broker" one-to-one one-to-one --qos $qos --count $n1
    run "$broker" fan-in fan-in --qos $qos --count $nmany
    run "$broker" fan-out fan-out --qos $qos --count $nmany
    run "$broker" mesh mesh --qos $qos --count $nmesh
    stop_broker
  done
  # Two rounds on one broker process: the first also measures a cold start (memory and
  # tables growing), the second a warm broker. Connection setup varies a lot run to run.
  start_broker "$broker"
  run "$broker" connect-cold connections --connections $conns --duration 2
  run "$broker" connect-warm connections --connections $conns --duration 2
  stop_broker
done

python3 - "$results" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def key(r): return (r.get("label", r.get("shape")), r.get("qos", 0))
by = {}
for r in rows:
    by.setdefault(key(r), {})[r["broker"]] = r
peers = [b for b in ("surgemq-tcp", "mosquitto", "rumqttd") if any(b in v for v in by.values())]
hdr = f"{'shape':<12}{'qos':>4}{'surgemq msg/s':>15}{'p99 us':>9}{'rss MiB':>9}"
for p in peers:
    hdr += f"{p + ' msg/s':>18}{'p99 us':>9}{'rss MiB':>9}{'ratio':>7}"
print(hdr)
for k, v in by.items():
    s = v.get("surgemq", {})
    conn = k[0].startswith("connect")
    def cell(r):
        if not r or r.get("failed"):
            return "failed", "-", "-"
        rate = r["connects_per_s"] if conn else r["msgs_per_s"]
        lost = "" if conn or r.get("lost", 0) == 0 else f" (lost {r['lost']})"
        rss = r.get("broker_rss_peak_kb") or 0
        return f"{rate:.0f}{lost}", ("-" if conn else str(r["p99_us"])), f"{rss / 1024:.1f}"
    a, b, c = cell(s)
    line = f"{k[0]:<12}{('-' if conn else k[1]):>4}{a:>15}{b:>9}{c:>9}"
    for p in peers:
        r = v.get(p, {})
        x, y, z = cell(r)
        try:
            if conn:
                ratio = (r["broker_rss_peak_kb"] / max(s["broker_rss_peak_kb"], 1))
                ratio = f"{1/ratio:.2f}m" if ratio else "-"
            else:
                ratio = f"{s['msgs_per_s'] / r['msgs_per_s']:.2f}"
        except (KeyError, ZeroDivisionError, TypeError):
            ratio = "-"
        line += f"{x:>18}{y:>9}{z:>9}{ratio:>7}"
    print(line)
print("ratio: SurgeMQ msgs/s / peer msgs/s; for connections, SurgeMQ RSS / peer RSS (m = memory)")
EOF

chart="$out/throughput.svg"; [ "$tls" = 1 ] && chart="$out/throughput-tls.svg"
if "$bench" chart "$results" "$chart"; then
  echo "chart: $chart"
fi
