#!/usr/bin/env bash
# Memory a rate limit holds for its keys: a limit keyed by a header, and a
# flood of requests each with a key never seen before (wrk, random
# `x-client` values), for DURATION; prints VmRSS before and after and the
# requests sent, for each MAX_KEYS given (default: 100000 1000000).
#
# Run: bash host/benches/rate-limit-memory.sh   (from the workspace root)
# Needs: nginx and wrk (Debian: apt-get install nginx wrk).
# Env: BIN (a switchyard binary; default: build the release one),
#      DURATION (default 30s), MAX_KEYS (default "100000 1000000").
set -euo pipefail
cd "$(dirname "$0")/../.."
CONNECTIONS=32
DURATION=${DURATION:-30s}
source host/benches/wrk.sh
upstreams 19411
cat > "$WORK/keys.lua" <<'LUA'
-- Each request a new client: a random x-client header.
math.randomseed(os.time())
request = function()
  return wrk.format(nil, nil, { ["x-client"] = tostring(math.random(1, 2^31 - 1)) .. tostring(math.random(1, 2^31 - 1)) })
end
LUA
rss() { awk '/VmRSS/ { printf "%.1f MiB", $2 / 1024 }' "/proc/$1/status"; }
echo "| max_keys | RSS at start | RSS after the flood | requests (distinct keys) |"
echo "|---|---|---|---|"
for max in ${MAX_KEYS:-100000 1000000}; do
  config="$WORK/limit-$max.toml"
  printf '[runtime]\nworker_threads = 1\n[[listeners]]\nlisten = "127.0.0.1:19412"\n[filters.limits]\nkind = "rate-limit"\nmax_keys = %s\nlimits = [{ name = "per-client", key = ["header:x-client"], rate = 1, period_ms = 60000 }]\n[[routes]]\npool = "p"\nfilters = ["limits"]\n[pools.p]\ninstances = [{ url = "http://127.0.0.1:19411" }]\n' "$max" > "$config"
  RUST_LOG=warn "$BIN" serve --config "$config" 2>"$WORK/switchyard-$max.log" & pid=$!
  pids+=("$pid")
  for _ in $(seq 1 400); do curl -fs "http://127.0.0.1:19412/0b" >/dev/null && break; sleep 0.05; done
  before=$(rss "$pid")
  sent=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -s "$WORK/keys.lua" "http://127.0.0.1:19412/0b" | awk '/requests in/ { print $1 }')
  after=$(rss "$pid")
  echo "| $max | $before | $after | $sent |"
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
