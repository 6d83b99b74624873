#!/usr/bin/env bash
# Fusion overhead: a fan-out route over 3 and 10 sources vs a plain pool route,
# 1 KB and 100 KB JSON answers, `majority` resolver comparing canonical JSON
# (every answer parsed and hashed) or body hashes, against the release binary.
#
# Run: bash host/benches/fusion.sh          (from the workspace root)
# Needs: nginx and wrk (Debian: apt-get install nginx wrk); builds the release binary.
# Env: DURATION (default 10s), CONNECTIONS (default 16), THREADS (wrk, default 1).
set -euo pipefail
cd "$(dirname "$0")/../.."
CONNECTIONS=${CONNECTIONS:-16}
source host/benches/wrk.sh

# Ten upstream ports served by one nginx (1 worker): the same static JSON answers.
mkdir -p "$WORK/up/logs" "$WORK/up/www"
python3 - "$WORK/up/www" <<'PY'
import json, sys
for name, size in (("1k.json", 1024), ("100k.json", 100 * 1024)):
    items, text = [], "[]"
    while len(text) < size:
        i = len(items)
        items.append({"id": i, "name": f"item-{i}", "price": round(i * 1.25, 2), "tags": ["a", "b"]})
        text = json.dumps({"items": items})
    open(f"{sys.argv[1]}/{name}", "w").write(text)
PY
listen=""
for i in $(seq 0 9); do listen+="listen 127.0.0.1:$((19400 + i)); "; done
cat > "$WORK/up/nginx.conf" <<NGINX
worker_processes 1; user root; daemon on; pid $WORK/up/nginx.pid; error_log $WORK/up/logs/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { $listen root $WORK/up/www; default_type application/json; } }
NGINX
nginx -p "$WORK/up" -c "$WORK/up/nginx.conf"

serve() { # port, number of sources (0 = a plain pool route to s0), compare
  local config="$WORK/$1.toml"
  printf '[[listeners]]\nlisten = "127.0.0.1:%s"\n[[routes]]\n' "$1" > "$config"
  if [ "$2" = 0 ]; then
    printf 'pool = "s0"\n' >> "$config"
  else
    local list=""
    for i in $(seq 0 $(($2 - 1))); do list+="{ pool = \"s$i\" }, "; done
    printf '[routes.fan_out]\nsources = [%s]\nresolver = { kind = "majority", compare = "%s" }\n' "$list" "$3" >> "$config"
  fi
  for i in $(seq 0 9); do
    printf '[pools.s%s]\ninstances = [{ url = "http://127.0.0.1:%s" }]\n' "$i" $((19400 + i)) >> "$config"
  done
  RUST_LOG=warn "$BIN" serve --config "$config" & pids+=($!)
}
serve 19500 0
serve 19503 3 json
serve 19510 10 json
serve 19513 3 body
for port in 19400 19500 19503 19510 19513; do
  for _ in $(seq 1 200); do curl -fs "http://127.0.0.1:$port/1k.json" >/dev/null && break; sleep 0.05; done
done

echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency; $(nproc) cores; $(date -u +%F)"
echo
echo "| route | req/s | p50 | p99 | errors |"
echo "|---|---|---|---|---|"
for size in 1k 100k; do
  run "$size: pool route (1 upstream request)" "http://127.0.0.1:19500/$size.json"
  run "$size: fan-out, 3 sources, majority (json)" "http://127.0.0.1:19503/$size.json"
  run "$size: fan-out, 10 sources, majority (json)" "http://127.0.0.1:19510/$size.json"
  run "$size: fan-out, 3 sources, majority (body)" "http://127.0.0.1:19513/$size.json"
done
