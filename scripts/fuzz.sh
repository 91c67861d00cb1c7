#!/usr/bin/env bash
# Runs the decoder fuzz target for SECONDS (default 600). Installs cargo-fuzz if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
cd fuzz
RUSTC_BOOTSTRAP=1 cargo fuzz run decode -- -max_total_time="$secs" -print_final_stats=1
