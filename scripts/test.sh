#!/usr/bin/env bash
# The whole test suite: formatting, lints, a short smoke run of the codec benchmark (which
# checks both codecs accept the benchmark streams), then unit / integration / property /
# interop / doc tests. Installs the Rust components it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if command -v rustup >/dev/null; then
  rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== codec bench (smoke)"
CODEC_BENCH_QUICK=1 cargo bench --bench codec
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test 2>&1 | tee "$log"
# One closing line for the whole suite.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f; exit (f > 0 || p == 0) }' "$log"
