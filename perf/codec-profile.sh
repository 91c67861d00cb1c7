#!/usr/bin/env bash
# Profiles one codec benchmark case with `perf record` (call graphs) and prints the hottest
# symbols. Usage: perf/codec-profile.sh [CASE_SUBSTRING]   (default: decode_publish_256)
# Where `perf` is not permitted, falls back to callgrind (instruction counts).
set -euo pipefail
cd "$(dirname "$0")/.."
case=${1:-decode_publish_256}
cargo bench --bench codec --no-run 2>/dev/null
bin=$(ls -t target/release/deps/codec-* | grep -v '\.d$' | head -1)
out=${TMPDIR:-/tmp}/surgemq-codec.perf
if perf record -F 20000 -g -o "$out" -- env CODEC_BENCH_FILTER="$case" "$bin"; then
  perf report -i "$out" --no-children --percent-limit 1 --stdio -g none | grep -E '^ +[0-9]'
else
  echo "perf not permitted here; using valgrind --tool=callgrind" >&2
  valgrind --tool=callgrind --callgrind-out-file="$out.callgrind" \
    env CODEC_BENCH_FILTER="$case" CODEC_BENCH_QUICK=1 "$bin"
  callgrind_annotate "$out.callgrind" | head -40
fi
