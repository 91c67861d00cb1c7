#!/usr/bin/env bash
# Profiles the broker under load: `perf record` with call graphs on the running broker while
# surgemq-bench drives it, then the hottest symbols and a flame graph.
#
#   perf/broker-profile.sh [SHAPE] [SECONDS]      (default: fan-in 10)
#
# SHAPE is any surgemq-bench shape (one-to-one, fan-in, fan-out, mesh, custom, connections).
# Environment: SHARDS (default 1), BROKER_CPUS (taskset list for the broker, default 0),
# BENCH_CPUS (default: the other CPUs), SHARD_CPUS (pin shards via the `cpus` setting,
# default unset), BENCH_ARGS (extra runner arguments, e.g. "--qos 1"), FREQ (sampling Hz,
# default 499), CALL_GRAPH (default dwarf,8192), PROFILER=callgrind (force the fallback),
# CG_RATE (messages/s per publisher under callgrind, default 50), NO_BUILD=1,
# BROKER_CONFIG (a configuration file for the broker).
#
# Builds the release binaries, starts `surgemq --shards N` pinned with taskset, starts the
# load, skips the first second (connection set-up) and samples the broker's threads on the
# CPU clock (`-e cpu-clock`: this VM has no hardware cycle counter) for the rest of the run.
# Prints the top 25 symbols by self time and writes, under target/perf/:
#   broker-SHAPE.data         perf.data (open with `perf report -i ...`)
#   broker-SHAPE.report.txt   self-time and inclusive (children) tables, and call graphs
#   broker-SHAPE.folded       collapsed stacks (inferno-collapse-perf)
#   broker-SHAPE.svg          flame graph (inferno-flamegraph; `cargo install inferno
#                             --locked` is run when the binaries are missing)
#   bench.out                 the load runner's output (its last line is the JSON result)
#
# Fallback: where `perf record` is not permitted (perf missing, perf_event_paranoid too
# high, no CAP_PERFMON) or records nothing, runs the broker under `valgrind
# --tool=callgrind` with a short, rate-limited load (at most 5 s, CG_RATE msgs/s per
# publisher), and prints the top of `callgrind_annotate` (instruction counts, whole run
# including start-up) instead; the output says so. Files: broker-SHAPE.callgrind and
# broker-SHAPE.report.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/broker-common.sh

shape=${1:-fan-in}
secs=${2:-10}
SHARDS=${SHARDS:-1}
BROKER_CPUS=${BROKER_CPUS:-0}
BENCH_CPUS=${BENCH_CPUS:-$(other_cpus "$BROKER_CPUS")}
FREQ=${FREQ:-499}
# Call graphs: Rust release builds omit frame pointers, so `--call-graph fp` stops at the
# leaf: measured on this broker (fan-in, 2 s), 0 of 567 fp stacks reached the thread's
# start (user frames ended in `[unknown]` right after the sampled function), against 533
# of 538 with dwarf unwinding and 8 KiB of stack copied per sample (16 KiB: 493 of 493, at
# twice the data). So dwarf, 8 KiB.
CALL_GRAPH=${CALL_GRAPH:-dwarf,8192}
base=$out_dir/broker-$shape

cleanup_on_exit
build_bins

perf_permitted() {
  [ "${PROFILER:-perf}" != callgrind ] || return 1
  command -v perf >/dev/null || return 1
  perf record -e cpu-clock -o /dev/null -- true >/dev/null 2>&1
}

ensure_inferno() {
  export PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
  if ! command -v inferno-flamegraph >/dev/null || ! command -v inferno-collapse-perf >/dev/null; then
    log "installing inferno (cargo install inferno --locked) for the flame graph"
    cargo install inferno --locked >&2 || return 1
  fi
}

profile_with_perf() {
  local warm=0 rec
  [ "$secs" -ge 3 ] && warm=1
  rec=$((secs - warm))
  rm -f "$base.data" "$base.data.old"
  start_broker || exit 2 # (set -e does not apply here: this runs as an `if` condition)
  start_bench "$shape" "$secs"
  sleep "$warm"
  log "perf record -F $FREQ -e cpu-clock --call-graph $CALL_GRAPH -p $broker_pid -- sleep $rec"
  if ! perf record -F "$FREQ" -e cpu-clock --call-graph "$CALL_GRAPH" -p "$broker_pid" \
      -o "$base.data" -- sleep "$rec" 2> "$base.record.log"; then
    cat "$base.record.log" >&2
    return 1
  fi
  grep -h 'Captured and wrote' "$base.record.log" | sed 's/^/== /' >&2 || true
  wait_bench
  stop_broker

  local nsamples
  nsamples=$(sed -n 's/.*Captured and wrote.*(\([0-9]*\) samples).*/\1/p' "$base.record.log" | head -1)
  if [ -z "$nsamples" ] || [ "$nsamples" = 0 ]; then
    echo "perf record captured no samples" >&2
    return 1
  fi

  {
    echo "# surgemq broker, shape $shape, $SHARDS shard(s) on CPUs $BROKER_CPUS, load on CPUs $BENCH_CPUS"
    echo "# perf record -F $FREQ -e cpu-clock --call-graph $CALL_GRAPH, ${rec}s after ${warm}s warm-up"
    echo "# load result: $(grep '^{' "$out_dir/bench.out" | tail -1 || true)"
    echo
    echo "######## self time (where the CPU was when sampled)"
    perf report -i "$base.data" --stdio --no-children -g none --percent-limit 0.3 \
      --sort comm,dso,sym 2>/dev/null | grep -E '^ +[0-9]'
    echo
    echo "######## inclusive time of the broker's own functions (children: the function and"
    echo "######## everything it called; wrappers from std, glommio and futures left out)"
    perf report -i "$base.data" --stdio --children -g none --percent-limit 2 \
      --sort sym 2>/dev/null | grep -E '^ +[0-9]' | grep 'surgemq::' || true
    echo
    echo "######## call graphs of the hottest symbols (callers under each)"
    perf report -i "$base.data" --stdio --no-children --percent-limit 2 2>/dev/null
  } > "$base.report.txt"

  echo "Top symbols by self time (perf record, cpu-clock; $nsamples samples; broker $SHARDS shard(s) on CPUs $BROKER_CPUS, shape $shape):"
  echo "  overhead  thread  object  symbol"
  sed -n '/^######## self time/,/^$/p' "$base.report.txt" | grep -E '^ +[0-9]' | head -25 | cut -c1-160

  # Flame graph. Also checks that the call graphs are usable: the share of samples whose
  # stack unwinds to the thread's start.
  local script_out=$base.script.tmp
  perf script -i "$base.data" 2>/dev/null > "$script_out"
  awk 'BEGIN { RS = "" } { n++; if ($0 ~ /thread_start|start_thread|clone3/) r++ }
       END { printf "== stacks unwound to the thread start: %d of %d samples (%.0f%%)\n", r, n, n ? 100 * r / n : 0 }' \
    "$script_out" >&2
  if ensure_inferno; then
    inferno-collapse-perf < "$script_out" > "$base.folded"
    inferno-flamegraph --countname ns --title "surgemq broker: $shape, $SHARDS shard(s), cpu-clock ${FREQ} Hz" \
      --subtitle "$(date +%F), load: $(grep -o '"msgs_per_s":[0-9]*' "$out_dir/bench.out" | tail -1 | sed 's/"msgs_per_s":/msgs\/s /')" \
      < "$base.folded" > "$base.svg"
  else
    echo "inferno is not available: no flame graph (collapsed stacks need it too)" >&2
  fi
  rm -f "$script_out"
  echo
  echo "Wrote $base.data, $base.report.txt$( [ -f "$base.svg" ] && echo ", $base.folded, $base.svg")"
}

profile_with_callgrind() {
  local cg_secs=$((secs < 5 ? secs : 5))
  echo "perf record is not permitted here (or PROFILER=callgrind): using valgrind --tool=callgrind" \
    "on the broker with a smaller load (${cg_secs}s, ${CG_RATE:-50} msgs/s per publisher)."
  echo "Counts are instructions (Ir) over the broker's whole run, start-up included."
  start_broker valgrind --tool=callgrind --callgrind-out-file="$base.callgrind" --log-file="$base.valgrind.log"
  start_bench "$shape" "$cg_secs" --rate "${CG_RATE:-50}"
  wait_bench
  stop_broker # SIGTERM: the broker shuts down cleanly and callgrind writes its file
  callgrind_annotate "$base.callgrind" > "$base.report.txt" 2>/dev/null
  echo "Top functions by instructions executed (self; callgrind_annotate):"
  grep -m1 'PROGRAM TOTALS' "$base.report.txt"
  sed -n '/file:function/,$p' "$base.report.txt" | grep -E '^ *[0-9,]+ +\(' | head -25 | cut -c1-200
  echo
  echo "Wrote $base.callgrind, $base.report.txt (open the first with kcachegrind for call graphs)"
}

if perf_permitted; then
  if ! profile_with_perf; then
    cleanup
    echo "perf record failed on the broker; falling back to callgrind" >&2
    profile_with_callgrind
  fi
else
  profile_with_callgrind
fi
