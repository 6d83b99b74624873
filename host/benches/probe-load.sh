#!/usr/bin/env bash
# CPU share of active health checks: 1,000 instances probed every second.
#
# Run: bash host/benches/probe-load.sh          (from the workspace root)
# Needs: nginx (Debian: apt-get install nginx); builds the release binary.
# Env: SECONDS_MEASURED (default 30), INSTANCES (default 1000).
#
# One nginx answers `ok` on port 19600 of every loopback address; switchyard
# gets a pool of INSTANCES instances at 127.0.X.Y:19600 with HTTP checks every
# 1000 ms and no traffic. The script reads switchyard's CPU time from
# /proc/PID/stat before and after the window and prints the share of one core.
set -euo pipefail
cd "$(dirname "$0")/../.."
MEASURED=${SECONDS_MEASURED:-30}
INSTANCES=${INSTANCES:-1000}
command -v nginx >/dev/null || { echo "needs nginx: apt-get install -y nginx" >&2; exit 1; }
cargo build --release -p switchyard >/dev/null 2>&1
WORK=$(mktemp -d)
cleanup() {
  [ -n "${SY:-}" ] && kill "$SY" 2>/dev/null || true
  nginx -p "$WORK" -c "$WORK/nginx.conf" -s stop 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/logs"
cat > "$WORK/nginx.conf" <<NGINX
worker_processes 1; user root; daemon on; pid $WORK/nginx.pid; error_log $WORK/logs/error.log;
events { worker_connections 8192; }
http { access_log off; server { listen 0.0.0.0:19600; location / { return 200 "ok"; } } }
NGINX
nginx -p "$WORK" -c "$WORK/nginx.conf"
{
  echo '[[listeners]]'
  echo 'listen = "127.0.0.1:19601"'
  echo '[pools.p]'
  echo 'health = { path = "/health", interval_ms = 1000, timeout_ms = 500, rise = 2, fall = 3, max_concurrent = 256 }'
  echo 'instances = ['
  for i in $(seq 0 $((INSTANCES - 1))); do
    echo "  { url = \"http://127.0.$((i / 250)).$((i % 250 + 1)):19600\" },"
  done
  echo ']'
} > "$WORK/probe.toml"
RUST_LOG=warn target/release/switchyard serve --config "$WORK/probe.toml" &
SY=$!
sleep 3   # let the first round of probes spread out (start-up, not measured)
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$SY/stat"; }
before=$(cpu)
sleep "$MEASURED"
after=$(cpu)
echo "instances: $INSTANCES, interval 1000 ms, window ${MEASURED} s, $(nproc) cores, $(date -u +%F)"
awk -v b="$before" -v a="$after" -v t="$ticks" -v s="$MEASURED" -v n="$INSTANCES" 'BEGIN {
  cpu = (a - b) / t;
  printf "switchyard CPU: %.2f s in %d s = %.1f%% of one core (%.0f µs per probe)\n", cpu, s, 100 * cpu / s, 1e6 * cpu / (n * s)
}'
