# Helpers sourced by perf/broker-profile.sh, perf/shard-stat.sh and perf/cpu-placement.sh
# (not run on its own): build the release binaries, pick a free port, start the broker
# (`target/release/surgemq`) pinned with taskset and the load runner (`surgemq-bench`) on
# the other CPUs, name the broker's threads, and stop every process started here on exit.
#
# Environment read by the helpers (each script documents its own defaults):
#   SHARDS       broker --shards
#   BROKER_CPUS  CPUs the whole broker process may use (taskset -c list, e.g. "0" or "0,1")
#   SHARD_CPUS   when set and not "none": one CPU per shard, written to the broker's
#                configuration as `cpus = [...]`, which pins each shard thread
#                (glommio Placement::Fixed). Unset or "none": the broker's default
#                (pin_shards: shard i on the i-th CPU of BROKER_CPUS when there are enough).
#   BENCH_CPUS   CPUs for the load runner (default: the online CPUs not in BROKER_CPUS, or
#                the last online CPU when the broker has them all)
#   BENCH_ARGS   extra surgemq-bench arguments, e.g. "--qos 1 --size 256"
#   NO_BUILD=1   skip `cargo build --release`

out_dir=target/perf
broker=target/release/surgemq
bench=target/release/surgemq-bench
broker_pid=""
bench_pid=""
port=""

log() { echo "== $*" >&2; }

build_bins() {
  if [ "${NO_BUILD:-0}" != 1 ]; then
    cargo build --release --bin surgemq --bin surgemq-bench >&2
  fi
  mkdir -p "$out_dir"
}

# "0-2,5" -> "0 1 2 5"
expand_cpus() {
  local part a b out=() parts
  IFS=, read -ra parts <<< "$1"
  for part in "${parts[@]}"; do
    if [[ $part == *-* ]]; then
      a=${part%-*}; b=${part#*-}
      out+=($(seq "$a" "$b"))
    elif [ -n "$part" ]; then
      out+=("$part")
    fi
  done
  echo "${out[*]}"
}

online_cpus() { expand_cpus "$(cat /sys/devices/system/cpu/online 2>/dev/null || echo "0-$(($(nproc) - 1))")"; }

join_commas() { local IFS=,; echo "$*"; }

# The online CPUs not in $1 (a list), comma separated; the last online CPU when none is left.
other_cpus() {
  local taken=" $(expand_cpus "$1") " c rest=() all
  all=($(online_cpus))
  for c in "${all[@]}"; do
    [[ $taken == *" $c "* ]] || rest+=("$c")
  done
  [ ${#rest[@]} -gt 0 ] || rest=("${all[-1]}")
  join_commas "${rest[@]}"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null && return
  # No python3: a random high port that nothing answers on.
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  return 1
}

# start_broker [WRAPPER...]: starts the broker on a free port, pinned to $BROKER_CPUS, with
# $SHARDS shards (and `cpus = [$SHARD_CPUS]` when set), optionally under a wrapper such as
# valgrind. Sets broker_pid and port; waits until the port accepts connections.
start_broker() {
  local args=(--shards "$SHARDS" --log-level warn) timeout=10
  port=$(free_port)
  if [ -n "${SHARD_CPUS:-}" ] && [ "$SHARD_CPUS" != none ]; then
    printf 'cpus = [%s]\n' "$(expand_cpus "$SHARD_CPUS" | sed 's/ /, /g')" > "$out_dir/broker-cpus.toml"
    args+=(--config "$out_dir/broker-cpus.toml")
  fi
  # BROKER_CONFIG: a configuration file for the broker (e.g. with an acl_file); not with
  # SHARD_CPUS, which writes its own.
  if [ -n "${BROKER_CONFIG:-}" ]; then args+=(--config "$BROKER_CONFIG"); fi
  [ $# -gt 0 ] && timeout=60
  log "broker: taskset -c $BROKER_CPUS $* $broker --listen 127.0.0.1:$port ${args[*]}"
  taskset -c "$BROKER_CPUS" "$@" "$broker" --listen "127.0.0.1:$port" "${args[@]}" &
  broker_pid=$!
  local i
  for i in $(seq $((timeout * 10))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    kill -0 "$broker_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "broker did not start (pid $broker_pid, port $port)" >&2
  return 1
}

# start_bench SHAPE SECONDS [EXTRA ARGS...]: the load runner in the background, pinned to
# $BENCH_CPUS; its output goes to $out_dir/bench.out. Sets bench_pid.
start_bench() {
  local shape=$1 secs=$2; shift 2
  local cmd=("$bench" "$shape" --port "$port" --duration "$secs" --cpus "$BENCH_CPUS" --pid "$broker_pid")
  # shellcheck disable=SC2206
  cmd+=(${BENCH_ARGS:-} "$@")
  log "load:   taskset -c $BENCH_CPUS ${cmd[*]}"
  taskset -c "$BENCH_CPUS" "${cmd[@]}" > "$out_dir/bench.out" 2>&1 &
  bench_pid=$!
}

# wait_bench: waits for the runner and prints its result line (msgs/s etc.) to stderr.
wait_bench() {
  local rc=0
  wait "$bench_pid" || rc=$?
  bench_pid=""
  if [ "$rc" != 0 ]; then
    echo "surgemq-bench exited with status $rc:" >&2
    tail -5 "$out_dir/bench.out" >&2
  fi
  grep '^{' "$out_dir/bench.out" | tail -1 | sed 's/^/== load result: /' >&2 || true
}

stop_broker() {
  if [ -n "$broker_pid" ]; then
    kill -TERM "$broker_pid" 2>/dev/null || true
    local i
    for i in $(seq 100); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=""
  fi
}

# Stops what this script started (by pid only): the load runner, then the broker.
cleanup() {
  if [ -n "$bench_pid" ]; then
    kill -TERM "$bench_pid" 2>/dev/null || true
    wait "$bench_pid" 2>/dev/null || true
    bench_pid=""
  fi
  stop_broker
}

# Run cleanup on every exit, also on SIGINT/SIGTERM (which otherwise skip the EXIT trap).
cleanup_on_exit() {
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# thread_roles PID: one line per thread, "TID NAME ROLE".
# The broker names each shard's thread "surgemq-shard-N" (src/server.rs). glommio then
# starts one blocking-pool helper thread per executor (sys/blocking.rs, unnamed, so it
# inherits the same name); it is created after the executor, so for each name the lowest
# tid is the executor. The main thread only waits for SIGINT/SIGTERM.
thread_roles() {
  local pid=$1 t
  for t in /proc/"$pid"/task/*; do
    [ -r "$t/comm" ] && echo "${t##*/} $(cat "$t/comm" 2>/dev/null)"
  done | sort -n | awk -v pid="$pid" '
    $1 == pid { print $1, $2, "main(signals)"; next }
    $2 ~ /^surgemq-shard-[0-9]+$/ {
      n = substr($2, 15)
      if (!(n in seen)) { seen[n] = 1; print $1, $2, "shard-" n "-executor" }
      else print $1, $2, "shard-" n "-blocking-pool"
      next
    }
    { print $1, $2, "other" }'
}

# proc_snapshot PID: one line per thread from /proc, "TID UTIME STIME MINFLT MAJFLT CPU
# VOLUNTARY NONVOLUNTARY": utime/stime in clock ticks (stat fields 14, 15), minor/major
# faults (10, 12), the CPU it last ran on (39), context switches from status.
proc_snapshot() {
  local pid=$1 t st rest f vol nonvol
  for t in /proc/"$pid"/task/*; do
    st=$(cat "$t/stat" 2>/dev/null) || continue
    rest=${st##*) }           # the name may hold spaces and parentheses: skip past it
    read -ra f <<< "$rest"    # f[0] is field 3, so field k is f[k-3]
    vol=$(awk '/^voluntary_ctxt_switches/ { print $2 }' "$t/status" 2>/dev/null)
    nonvol=$(awk '/^nonvoluntary_ctxt_switches/ { print $2 }' "$t/status" 2>/dev/null)
    echo "${t##*/} ${f[11]} ${f[12]} ${f[7]} ${f[9]} ${f[36]} ${vol:-0} ${nonvol:-0}"
  done
}
