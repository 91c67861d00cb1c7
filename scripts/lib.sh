# Shared by the comparison scripts (sourced, not run): installing the peer, building the
# binaries, and starting / stopping one broker at a time. Callers set `port` and `pid`.

# mosquitto and its clients from apt, when missing.
ensure_mosquitto() {
  if ! command -v mosquitto >/dev/null; then
    echo "installing mosquitto" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
  fi
}

# The release binaries this tree compares.
build_release() {
  export PATH="$HOME/.cargo/bin:$PATH"
  cargo build --release --bin surgemq --bin surgemq-bench >&2
}

# Stops the broker started last (`pid`), if any.
stop_broker() {
  if [ -n "${pid:-}" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; fi
}

# Waits (up to 10 s) until 127.0.0.1:$port accepts connections.
wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "broker did not start" >&2
  return 1
}
