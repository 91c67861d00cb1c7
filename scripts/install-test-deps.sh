#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain: rustfmt and clippy, the
# mosquitto command-line clients (interop tests), the mosquitto broker (benchmark peer),
# curl (the metrics endpoint's tests) and Python's paho-mqtt (interop tests). Safe to run
# again.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"

if command -v rustup >/dev/null; then
  rustup component add rustfmt clippy
fi

if ! command -v mosquitto_pub >/dev/null || ! command -v mosquitto >/dev/null \
  || ! command -v curl >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq mosquitto mosquitto-clients curl >/dev/null
fi

if ! python3 -c 'import paho.mqtt' 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check 'paho-mqtt>=2,<3'
fi
