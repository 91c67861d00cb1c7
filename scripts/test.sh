#!/usr/bin/env bash
# The whole test suite: formatting, lints, a short smoke run of the codec benchmark (which
# checks both codecs accept the benchmark streams), then unit / integration / property /
# interop / doc tests. Installs what it needs (scripts/install-test-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash scripts/install-test-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== the library without the runner's and the command line's dependencies"
cargo clippy --lib --no-default-features -- -D warnings
echo "== codec bench (smoke)"
CODEC_BENCH_QUICK=1 cargo bench --bench codec
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test 2>&1 | tee "$log"
# One closing line for the whole suite.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f; exit (f > 0 || p == 0) }' "$log"
