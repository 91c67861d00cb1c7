#!/usr/bin/env bash
# Per-shard counters of the broker under load: `perf stat --per-thread` on the broker's
# threads while surgemq-bench drives it, one row per thread, labelled with its shard.
#
#   perf/shard-stat.sh [SHAPE] [SECONDS]      (default: fan-in 10)
#
# Environment: SHARDS (default 2), BROKER_CPUS (taskset list for the broker, default: all
# online CPUs), SHARD_CPUS (e.g. "0,1": pin shard i to the i-th CPU through the broker's
# `cpus` setting; default unset = the broker's default placement, pin_shards), BENCH_CPUS
# (default: the CPUs not given to the broker, else the last CPU), BENCH_ARGS, STAT=proc
# (force the /proc fallback), NO_BUILD=1.
#
# Counts over the load minus its first second (connection set-up): task-clock (CPU time),
# CPU utilisation, context-switches, cpu-migrations and page-faults, plus cycles,
# instructions and IPC where the CPU exposes hardware counters (not on this VM: `perf stat`
# prints "not supported" for them, and they are left out). Threads:
#   shard-N-executor        the glommio executor thread of shard N ("surgemq-shard-N")
#   shard-N-blocking-pool   glommio's helper for blocking syscalls of that shard (same
#                           name, higher tid; normally idle: "not counted")
#   main(signals)           the process's first thread, waiting for SIGINT/SIGTERM
# "last CPU" is the CPU each thread ran on last (/proc/TID/stat field 39).
# Prints the table and writes it to target/perf/shard-stat-SHAPE.txt.
#
# Fallback, where `perf stat` is missing or not permitted: the same window from
# /proc/PID/task/*/stat (utime, stime, minor faults) and /proc/PID/task/*/status
# (voluntary and nonvoluntary context switches), read before and after; per-thread deltas.
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/broker-common.sh

shape=${1:-fan-in}
secs=${2:-10}
SHARDS=${SHARDS:-2}
BROKER_CPUS=${BROKER_CPUS:-$(join_commas $(online_cpus))}
BENCH_CPUS=${BENCH_CPUS:-$(other_cpus "$BROKER_CPUS")}
report=$out_dir/shard-stat-$shape.txt

cleanup_on_exit
build_bins

events=task-clock,context-switches,cpu-migrations,page-faults
use_perf=0
if [ "${STAT:-perf}" != proc ] && command -v perf >/dev/null \
    && perf stat -e task-clock -o /dev/null -- true >/dev/null 2>&1; then
  use_perf=1
  if ! perf stat -x, -e cycles,instructions -- true 2>&1 >/dev/null | grep -q 'not supported'; then
    events=$events,cycles,instructions
  fi
fi

warm=0
[ "$secs" -ge 3 ] && warm=1
rec=$((secs - warm))
start_broker
start_bench "$shape" "$secs"
sleep "$warm"
roles=$(thread_roles "$broker_pid")
before=$(proc_snapshot "$broker_pid")
perf_ok=0
if [ "$use_perf" = 1 ]; then
  log "perf stat --per-thread -e $events -p $broker_pid -- sleep $rec"
  if perf stat --per-thread -x, -e "$events" -p "$broker_pid" -o "$out_dir/shard-stat.csv" -- sleep "$rec"; then
    perf_ok=1
  else
    echo "perf stat failed on the broker; using /proc instead" >&2
  fi
else
  log "perf stat unavailable (or STAT=proc): reading /proc/$broker_pid/task/* before and after ${rec}s"
fi
[ "$perf_ok" = 1 ] || sleep "$rec"
after=$(proc_snapshot "$broker_pid")
roles=$(printf '%s\n%s\n' "$roles" "$(thread_roles "$broker_pid")" | sort -u -k1,1n)
pid=$broker_pid
wait_bench
stop_broker

pinning="default placement: no \`cpus\` setting"
if [ -n "${SHARD_CPUS:-}" ] && [ "$SHARD_CPUS" != none ]; then pinning="shards pinned: cpus = [$SHARD_CPUS]"; fi
{
  echo "shard-stat: shape $shape, $SHARDS shards, broker on CPUs $BROKER_CPUS ($pinning), load on CPUs $BENCH_CPUS, ${rec}s window"
  if [ "$perf_ok" = 1 ]; then
    echo "source: perf stat --per-thread -e $events"
    # CSV lines: "comm-tid,value,unit,event,..."; "<not counted>" = the thread did not run.
    awk -F, -v secs="$rec" -v roles="$roles" -v after="$after" '
      BEGIN {
        n = split(roles, r, "\n"); for (i = 1; i <= n; i++) { split(r[i], a, " "); role[a[1]] = a[3]; name[a[1]] = a[2] }
        n = split(after, r, "\n"); for (i = 1; i <= n; i++) { split(r[i], a, " "); last[a[1]] = a[6] }
      }
      /^#/ || NF < 4 { next }
      {
        tid = $1; sub(/.*-/, "", tid)
        if (!(tid in seen)) { seen[tid] = 1; order[++m] = tid }
        v[tid, $4] = $2; evs[$4] = 1
      }
      END {
        hw = ("cycles" in evs)
        printf "!\t%-8s %-16s %-22s %9s %6s %9s %6s %9s %5s", "tid", "name", "role", "cpu ms", "cpu%", "ctx-sw", "migr", "faults", "last"
        if (hw) printf " %14s %14s %5s", "cycles", "instructions", "IPC"
        printf "\n"
        for (i = 1; i <= m; i++) {
          t = order[i]; tc = v[t, "task-clock"]
          printf "%s\t", sortkey(role[t])
          if (tc ~ /not/) {
            printf "%-8s %-16s %-22s %s\n", t, name[t], role[t], "not counted (did not run in the window)"
            continue
          }
          printf "%-8s %-16s %-22s %9.1f %5.1f%% %9d %6d %9d %5s", t, name[t], role[t], tc, tc / 10 / secs,
            v[t, "context-switches"], v[t, "cpu-migrations"], v[t, "page-faults"], last[t]
          if (hw) {
            c = v[t, "cycles"]; ins = v[t, "instructions"]
            printf " %14s %14s %5s", c, ins, (c ~ /^[0-9.]+$/ && ins ~ /^[0-9.]+$/ && c > 0) ? sprintf("%.2f", ins / c) : "-"
          }
          printf "\n"
        }
      }
      function sortkey(r) { return (r ~ /executor/ ? 0 : r ~ /blocking/ ? 1 : 2) r }' "$out_dir/shard-stat.csv" \
      | LC_ALL=C sort -t "$(printf '\t')" -k1,1 | cut -f2-
    [[ $events == *cycles* ]] || echo "(cycles, instructions: not supported on this machine, left out)"
  else
    echo "source: /proc/$pid/task/*/{stat,status} before and after (perf stat not available)"
    awk -v secs="$rec" -v hz="$(getconf CLK_TCK)" -v roles="$roles" -v before="$before" '
      BEGIN {
        n = split(roles, r, "\n"); for (i = 1; i <= n; i++) { split(r[i], a, " "); role[a[1]] = a[3]; name[a[1]] = a[2] }
        n = split(before, r, "\n"); for (i = 1; i <= n; i++) { split(r[i], a, " "); for (j = 2; j <= 8; j++) b[a[1], j] = a[j] }
        printf "!\t%-8s %-16s %-22s %8s %8s %6s %8s %8s %9s %5s\n", "tid", "name", "role", "user ms", "sys ms", "cpu%", "vol-cs", "invol-cs", "minflt", "last"
      }
      NF >= 8 {
        t = $1; for (j = 2; j <= 8; j++) if (!((t, j) in b)) b[t, j] = 0
        u = ($2 - b[t, 2]) * 1000 / hz; s = ($3 - b[t, 3]) * 1000 / hz
        printf "%s\t%-8s %-16s %-22s %8.0f %8.0f %5.1f%% %8d %8d %9d %5s\n", sortkey(role[t]), t, name[t], role[t], u, s, (u + s) / 10 / secs,
          $7 - b[t, 7], $8 - b[t, 8], $4 - b[t, 4], $6
      }
      function sortkey(r) { return (r ~ /executor/ ? 0 : r ~ /blocking/ ? 1 : 2) r }' <<< "$after" \
      | LC_ALL=C sort -t "$(printf '\t')" -k1,1 | cut -f2-
    echo "(utime/stime have clock-tick resolution: 1000/$(getconf CLK_TCK) ms)"
  fi
} | tee "$report"
echo "Wrote $report"
