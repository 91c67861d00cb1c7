#!/usr/bin/env bash
# Checks that every shard thread of the broker stays on its own CPU under load.
#
#   perf/cpu-placement.sh [SHAPE] [SECONDS]      (default: fan-in 10)
#
# How the broker places shards (src/server.rs): shard i runs on its own thread
# ("surgemq-shard-i") with a glommio executor built with Placement::Fixed(cpu): cpus[i] when
# the `cpus` setting lists CPUs, else (pin_shards = true, the default) the i-th CPU of the
# process's affinity mask when it has at least as many CPUs as shards; otherwise
# Placement::Unbound. Fixed pins the executor thread, and glommio's blocking-pool helper
# thread of that executor, to that one CPU. By default this script checks the default
# configuration (no `cpus`; expected CPU of shard i = i-th CPU of BROKER_CPUS);
# SHARD_CPUS=0,1 checks an explicit `cpus = [0, 1]` instead.
#
# Environment: SHARDS (default 2), SHARD_CPUS (default "none" = no `cpus` setting),
# BROKER_CPUS (taskset list for the whole broker process, default all online
# CPUs, so that taskset does not do the pinning for the broker), BENCH_CPUS (default the
# last CPU), BENCH_ARGS, SAMPLES (default 20, spread over the run), NO_BUILD=1.
#
# During the load it samples every thread SAMPLES times: the CPU it last ran on
# (/proc/PID/task/TID/stat field 39) and its affinity (`taskset -cp TID`). Prints one row
# per thread: tid, name, role, allowed CPUs, CPUs seen, expected CPU, verdict; writes it to
# target/perf/cpu-placement.txt. Exit status 1 when a shard thread (executor or its
# blocking-pool helper) ran on more than one CPU, is allowed more than one CPU, or is not on
# the CPU its `cpus` entry names; 0 when all stay put; 2 when the broker cannot be run.
# The main thread (it only waits for signals) is listed but not checked.
# Needs no perf: /proc and taskset only.
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/broker-common.sh

shape=${1:-fan-in}
secs=${2:-10}
SHARDS=${SHARDS:-2}
all_cpus=($(online_cpus))
SHARD_CPUS=${SHARD_CPUS:-none}
BROKER_CPUS=${BROKER_CPUS:-$(join_commas "${all_cpus[@]}")}
BENCH_CPUS=${BENCH_CPUS:-$(other_cpus "$BROKER_CPUS")}
SAMPLES=${SAMPLES:-20}
report=$out_dir/cpu-placement.txt

cleanup_on_exit
build_bins
start_broker || exit 2
pid=$broker_pid
start_bench "$shape" "$secs"

declare -A seen allowed names roles
interval=$(awk -v s="$secs" -v n="$SAMPLES" 'BEGIN { printf "%.3f", s / n }')
log "sampling /proc/$pid/task/*/stat field 39 and taskset -cp, $SAMPLES times every ${interval}s"
for _ in $(seq "$SAMPLES"); do
  while read -r tid name role; do
    names[$tid]=$name
    roles[$tid]=$role
    st=$(cat "/proc/$pid/task/$tid/stat" 2>/dev/null) || continue
    rest=${st##*) }
    read -ra f <<< "$rest"
    cpu=${f[36]}                     # field 39: processor last executed on
    aff=$(taskset -cp "$tid" 2>/dev/null | sed 's/.*: //') || continue
    [[ " ${seen[$tid]:-} " == *" $cpu "* ]] || seen[$tid]="${seen[$tid]:-} $cpu"
    [[ " ${allowed[$tid]:-} " == *" $aff "* ]] || allowed[$tid]="${allowed[$tid]:-} $aff"
  done < <(thread_roles "$pid")
  sleep "$interval"
done
wait_bench
stop_broker

pinned=1
if [ "$SHARD_CPUS" != none ]; then
  shard_cpu=($(expand_cpus "$SHARD_CPUS"))
else
  # Default placement: shard i on the i-th CPU the broker process may use.
  shard_cpu=($(expand_cpus "$BROKER_CPUS"))
  if [ "${#shard_cpu[@]}" -lt "$SHARDS" ]; then pinned=0; shard_cpu=(); fi
fi
fail=0
{
  if [ "$pinned" = 1 ]; then
    echo "cpu-placement: $SHARDS shards, cpus = [$SHARD_CPUS] (none: default pin_shards placement), broker process on CPUs $BROKER_CPUS, load ($shape) on CPUs $BENCH_CPUS, $SAMPLES samples over ${secs}s"
  else
    echo "cpu-placement: $SHARDS shards on fewer CPUs than shards (shards unpinned), broker process on CPUs $BROKER_CPUS, load ($shape) on CPUs $BENCH_CPUS, $SAMPLES samples over ${secs}s"
  fi
  printf '%-8s %-16s %-22s %-10s %-10s %-9s %s\n' tid name role allowed seen expected verdict
  for tid in $(printf '%s\n' "${!names[@]}" | sort -n); do
    role=${roles[$tid]}
    al=$(echo ${allowed[$tid]:-} | tr ' ' '/')
    sn=$(echo ${seen[$tid]:-} | tr ' ' '\n' | sort -n | paste -sd, -)
    expected=-
    verdict=-
    if [[ $role == shard-* ]]; then
      n=${role#shard-}; n=${n%%-*}
      [ "$pinned" = 1 ] && expected=${shard_cpu[$n]:-?}
      problems=()
      n_allowed=$(for a in ${allowed[$tid]:-}; do expand_cpus "$a"; done | wc -w)
      [ "$n_allowed" -le 1 ] || problems+=("allowed >1 CPU")
      [ "$(echo ${seen[$tid]:-} | wc -w)" -le 1 ] || problems+=("ran on >1 CPU")
      if [ "$expected" != - ] && [ "$sn" != "$expected" ]; then problems+=("not on CPU $expected"); fi
      if [ ${#problems[@]} = 0 ]; then verdict=ok; else verdict="FAIL: $(IFS=';'; echo "${problems[*]}")"; fail=1; fi
    fi
    printf '%-8s %-16s %-22s %-10s %-10s %-9s %s\n' "$tid" "${names[$tid]}" "$role" "$al" "$sn" "$expected" "$verdict"
  done
  if [ "$fail" = 0 ]; then
    echo "all shard threads stayed on their CPU"
  elif [ "$pinned" = 0 ]; then
    echo "shard threads are not pinned: expected with more shards than CPUs (src/server.rs"
    echo "uses Placement::Unbound then)"
  else
    echo "PLACEMENT CHECK FAILED: a shard thread left its CPU or may run on several"
  fi
} > "$report"
cat "$report"
echo "Wrote $report"
exit "$fail"
