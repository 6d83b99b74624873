#!/usr/bin/env bash
# Memory of a loaded Switchyard: 1,000 instances in 10 pools of 100 and four
# plugins (the latency-p2c balancer on six pools, the json-health check on
# one, the retry-schedule failover policy on one, the mcp-federation
# resolver on a fan-out route over two pools), every instance a real
# nginx port on 127.0.0.1. Prints VmRSS after start, after load (wrk on
# every route, so that each worker has built its plugin instances) and
# the peak (VmHWM), in MiB.
#
# Run: bash host/benches/memory.sh   (from the workspace root)
# Needs: nginx and wrk (Debian: apt-get install nginx wrk), the example
#      plugins built (`cargo build` builds them under target/wasm-plugins).
# Env: BIN (a switchyard binary; default: build the release one),
#      WORKERS (Switchyard's worker_threads; default: the cores it may use).
set -euo pipefail
cd "$(dirname "$0")/../.."
CONNECTIONS=16
DURATION=${DURATION:-2s}
source host/benches/wrk.sh
PLUGINS=target/wasm-plugins/wasm32-wasip2/release
for p in latency_p2c json_health retry_schedule mcp_federation; do
  [ -f "$PLUGINS/$p.wasm" ] || { echo "needs $PLUGINS/$p.wasm: run cargo build first" >&2; exit 1; }
done
FIRST=21000
ports=$(seq "$FIRST" $((FIRST + 999)))
upstreams $ports
# Every route answers 200: `/pN` an empty file, `/mcp` a tools/list result.
for p in $(seq 0 9); do : > "$WORK/up/www/p$p"; done
echo '{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"search"}]}}' > "$WORK/up/www/mcp"
echo '{"status":"ok","load":0.2}' > "$WORK/up/www/health"

config="$WORK/memory.toml"
{
  [ -n "${WORKERS:-}" ] && printf '[runtime]\nworker_threads = %s\n' "$WORKERS"
  printf '[[listeners]]\nlisten = "127.0.0.1:19950"\n'
  for p in $(seq 0 9); do
    printf '[[routes]]\nmatch = { path_prefix = "/p%s" }\npool = "p%s"\n' "$p" "$p"
  done
  printf '[[routes]]\nmatch = { path_prefix = "/mcp" }\n[routes.fan_out]\nsources = [{ pool = "p7" }, { pool = "p8" }]\n'
  printf 'resolver = { kind = "plugin", plugin = { path = "%s" } }\n' "$PWD/$PLUGINS/mcp_federation.wasm"
  for p in $(seq 0 9); do
    printf '[pools.p%s]\n' "$p"
    if [ "$p" -lt 6 ]; then
      printf 'strategy = { kind = "plugin", plugin = { path = "%s" } }\n' "$PWD/$PLUGINS/latency_p2c.wasm"
    fi
    if [ "$p" = 6 ]; then
      printf 'failover = { kind = "plugin", plugin = { path = "%s", config = { statuses = [503], delays_ms = [0] } } }\n' "$PWD/$PLUGINS/retry_schedule.wasm"
    fi
    if [ "$p" = 9 ]; then
      printf 'health = { kind = "plugin", interval_ms = 1000, timeout_ms = 500, plugin = { path = "%s", config = { path = "/health" } } }\n' "$PWD/$PLUGINS/json_health.wasm"
    fi
    printf 'instances = ['
    for i in $(seq 0 99); do printf '{ url = "http://127.0.0.1:%s" }, ' $((FIRST + p * 100 + i)); done
    printf ']\n'
  done
} > "$config"

RUST_LOG=warn "$BIN" serve --config "$config" 2>"$WORK/switchyard.log" & pid=$!
pids+=("$pid")
for _ in $(seq 1 400); do curl -fs "http://127.0.0.1:19950/p0" >/dev/null && break; sleep 0.05; done
rss() { awk -v k="$1:" '$1==k {printf "%.1f", $2/1024}' "/proc/$pid/status"; }
echo "switchyard $("$BIN" --version 2>/dev/null || echo build) — 1,000 instances, 10 pools, 4 plugins; workers: ${WORKERS:-default}; $(date -u +%F)"
echo
echo "| when | VmRSS MiB |"
echo "|---|---|"
echo "| started, before traffic | $(rss VmRSS) |"
for p in $(seq 0 9); do wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "http://127.0.0.1:19950/p$p" >/dev/null; done
wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "http://127.0.0.1:19950/mcp" >/dev/null
echo "| after $DURATION of wrk -c$CONNECTIONS on each of the 11 routes | $(rss VmRSS) |"
echo "| peak (VmHWM) | $(rss VmHWM) |"
echo
echo "open file descriptors after the load (pooled upstream connections, mostly): $(ls "/proc/$pid/fd" | wc -l)"
echo
echo "warnings and errors logged: $(grep -c . "$WORK/switchyard.log" || true)"
head -3 "$WORK/switchyard.log"
