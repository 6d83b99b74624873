#!/usr/bin/env bash
# Load benchmark: switchyard (release) vs nginx as a reverse proxy vs direct,
# over the same three upstreams on loopback, in one run.
#
# Run: bash host/benches/load.sh            (from the workspace root)
# Needs: nginx and wrk (Debian: apt-get install nginx wrk); builds the release binary.
# Env: DURATION (default 10s), CONNECTIONS (default 32), THREADS (wrk, default 1).
set -euo pipefail
cd "$(dirname "$0")/../.."
CONNECTIONS=${CONNECTIONS:-32}
source host/benches/wrk.sh

UP=(19101 19102 19103)
# Upstreams: one nginx worker answering a 2-byte body on three ports.
upstreams "${UP[@]}"
mkdir -p "$WORK/px/logs"
# nginx as the reverse proxy: round robin, pooled keep-alive upstream connections.
cat > "$WORK/px/nginx.conf" <<NGINX
worker_processes 2; user root; daemon on; pid $WORK/px/nginx.pid; error_log $WORK/px/logs/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream pool { server 127.0.0.1:${UP[0]}; server 127.0.0.1:${UP[1]}; server 127.0.0.1:${UP[2]}; keepalive 64; }
  server { listen 127.0.0.1:19200;
           location / { proxy_pass http://pool; proxy_http_version 1.1; proxy_set_header Connection "";
                        proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; } } }
NGINX
nginx -p "$WORK/px" -c "$WORK/px/nginx.conf"

instances="[{ url = \"http://127.0.0.1:${UP[0]}\", labels = { track = \"stable\" } }, { url = \"http://127.0.0.1:${UP[1]}\", labels = { track = \"stable\" } }, { url = \"http://127.0.0.1:${UP[2]}\", labels = { track = \"canary\" } }]"
cp target/wasm-plugins/wasm32-wasip2/release/canary_split.wasm "$WORK/"
serve() { # port, then the pool's keys, one per argument
  local config="$WORK/$1.toml"
  printf '[[listeners]]\nlisten = "127.0.0.1:%s"\n[[routes]]\npool = "p"\n[pools.p]\ninstances = %s\n' "$1" "$instances" > "$config"
  shift
  printf '%s\n' "$@" >> "$config"
  RUST_LOG=warn "$BIN" serve --config "$config" & pids+=($!)
}
serve 19300 'strategy = { kind = "round-robin" }'
serve 19301 'strategy = { kind = "plugin", plugin = { path = "canary_split.wasm", config = { percent = 20 } } }'
serve 19302 'strategy = { kind = "round-robin" }' 'retry = { retries = 0 }'
serve 19303 'strategy = { kind = "round-robin" }' \
  'retry = { retries = 2, retry_on = ["connect-failure", "reset", "timeout", "5xx"] }' \
  'breaker = { failure_rate = 0.5, min_requests = 20 }' \
  'bulkhead = { max_concurrent = 1024, max_queue = 256 }' 'outlier = {}'
for port in 19200 19300 19301 19302 19303 "${UP[0]}"; do
  for _ in $(seq 1 200); do curl -fs "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.05; done
done

echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency; $(nproc) cores; $(date -u +%F)"
echo
echo "| target | req/s | p50 | p99 | errors |"
echo "|---|---|---|---|---|"
run "direct to one upstream (nginx, 1 worker)" "http://127.0.0.1:${UP[0]}/"
run "nginx reverse proxy (2 workers, keepalive 64)" "http://127.0.0.1:19200/"
run "switchyard round-robin" "http://127.0.0.1:19300/"
run "switchyard Wasm canary-split plugin" "http://127.0.0.1:19301/"
run "switchyard round-robin, no failover (retries 0)" "http://127.0.0.1:19302/"
run "switchyard round-robin + retries 2, breaker, bulkhead, outlier" "http://127.0.0.1:19303/"
