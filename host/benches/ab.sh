#!/usr/bin/env bash
# A/B of two switchyard builds on the data path, per core: each build alone
# on core 1 (one Tokio worker), three nginx upstreams and wrk on core 0,
# round robin over the three, rounds interleaved (A, B, A, B, ...).
#
# Run: bash host/benches/ab.sh BIN_A BIN_B   (from the workspace root)
# Needs: nginx and wrk (Debian: apt-get install nginx wrk), 2+ cores.
# Env: ROUNDS (default 3), DURATION (default 8s), CONNECTIONS (default 32);
# CONFIG_A, CONFIG_B: a config file for that side instead of the default
# (its listener on 127.0.0.1:19310, its pool over 127.0.0.1:19111-19113),
# e.g. the same build without and with a route's filters; REQUEST_PATH
# (default /): the path wrk asks for, REQUEST_PATH_A/_B that side's;
# WRK_SCRIPT: a wrk Lua script for both sides (e.g. one that sets a header).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -eq 2 ] || { echo "usage: $0 BIN_A BIN_B" >&2; exit 2; }
CONNECTIONS=${CONNECTIONS:-32}
DURATION=${DURATION:-8s}
ROUNDS=${ROUNDS:-3}
BIN=$1 # wrk.sh builds nothing when BIN is set
source host/benches/wrk.sh
# This shell and what it starts (the upstream nginx, wrk, curl) run on
# core 0; each switchyard is started on core 1.
taskset -p -c 0 $$ >/dev/null

UP=(19111 19112 19113)
upstreams "${UP[@]}"
config="$WORK/ab.toml"
printf '[[listeners]]\nlisten = "127.0.0.1:19310"\n[[routes]]\npool = "p"\n[pools.p]\nstrategy = { kind = "round-robin" }\ninstances = [{ url = "http://127.0.0.1:%s" }, { url = "http://127.0.0.1:%s" }, { url = "http://127.0.0.1:%s" }]\n' \
  "${UP[@]}" > "$config"

echo "wrk -t1 -c$CONNECTIONS -d$DURATION --latency on core 0 with the upstreams; switchyard alone on core 1; $(date -u +%F)"
echo
echo "| round | build | req/s | p50 | p99 | errors |"
echo "|---|---|---|---|---|---|"
REQUEST_PATH=${REQUEST_PATH:-/}
for round in $(seq 1 "$ROUNDS"); do
  for side in A B; do
    if [ "$side" = A ]; then
      bin=$1 side_config=${CONFIG_A:-$config} path=${REQUEST_PATH_A:-$REQUEST_PATH}
    else
      bin=$2 side_config=${CONFIG_B:-$config} path=${REQUEST_PATH_B:-$REQUEST_PATH}
    fi
    RUST_LOG=warn taskset -c 1 "$bin" serve --config "$side_config" & pid=$!
    pids+=("$pid")
    for _ in $(seq 1 200); do curl -fs "http://127.0.0.1:19310$path" >/dev/null && break; sleep 0.05; done
    run "$round | $side" "http://127.0.0.1:19310$path" "${WRK_SCRIPT:-}"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
