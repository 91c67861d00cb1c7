#!/usr/bin/env bash
# The persistence crash test, longer than CI runs it: the broker (release build) is killed
# with SIGKILL ROUNDS times under QoS 1/2 load and restarted on the same directory; every
# message acknowledged to the publisher must reach both persistent subscribers, QoS 2
# exactly once (see tests/persistence_crash.rs).
#
#   bash scripts/crash-test.sh [ROUNDS] [REPEATS]     (defaults: 100 rounds, 3 repeats)
#   SURGEMQ_CRASH_SEED=N bash scripts/crash-test.sh   replays one run
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-100}"
repeats="${2:-3}"
for i in $(seq 1 "$repeats"); do
  echo "== run $i of $repeats: $rounds rounds"
  SURGEMQ_CRASH_ROUNDS="$rounds" cargo test --release --test persistence_crash -- --nocapture 2>&1 \
    | grep -E "crash test|subscriber|panicked|test result|never delivered|twice"
done
