#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain: rustfmt and clippy, the
# mosquitto command-line clients (interop tests), the mosquitto broker (benchmark peer),
# curl (the metrics endpoint's tests), Python's paho-mqtt and MQTT.js from npm (interop
# tests: node and npm from Debian when missing, then `npm ci` in tests/mqttjs at the versions
# its package-lock.json pins). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
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

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
# MQTT.js 5 and its dependencies need Node.js 18 or later.
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 18 ]; then
  echo "Node.js $(node --version) is too old for MQTT.js 5: 18 or later is needed" >&2
  exit 1
fi
# Installed again when the lock file is newer than the installed tree (a version bump).
if [ ! tests/mqttjs/node_modules/.package-lock.json -nt tests/mqttjs/package-lock.json ]; then
  (cd tests/mqttjs && npm ci --no-audit --no-fund --loglevel=error)
fi
