#!/usr/bin/env bash
# Admin API benchmark: latency of admin requests on a pool of 10,000
# instances, and data-path throughput while the config changes once a second.
#
# Run: bash host/benches/admin.sh           (from the workspace root)
# Needs: nginx, wrk and curl (Debian: apt-get install nginx wrk curl); builds the release binary.
# Env: DURATION (default 20s), CONNECTIONS (default 32), THREADS (wrk, default 1),
#      REPEAT (admin requests per measurement, default 30), INSTANCES (default 10000).
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-32}
REPEAT=${REPEAT:-30}
INSTANCES=${INSTANCES:-10000}
source host/benches/wrk.sh

UP=(19801 19802 19803)
upstreams "${UP[@]}"

# A: three real upstreams, admin on 19811. B: 10,000 instances (never sent
# traffic), admin on 19812.
printf '[[listeners]]\nlisten = "127.0.0.1:19810"\n[admin]\nlisten = "127.0.0.1:19811"\n[[routes]]\npool = "p"\n[pools.p]\ninstances = [{ url = "http://127.0.0.1:%s" }, { url = "http://127.0.0.1:%s" }, { url = "http://127.0.0.1:%s" }]\n' \
  "${UP[@]}" > "$WORK/a.toml"
python3 - "$WORK/b.toml" "$INSTANCES" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
items = ", ".join(f'{{ url = "http://10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}:8080" }}' for i in range(n))
open(path, "w").write(f'[[listeners]]\nlisten = "127.0.0.1:19820"\n[admin]\nlisten = "127.0.0.1:19812"\n[[routes]]\npool = "big"\n[pools.big]\ninstances = [{items}]\n')
PY
RUST_LOG=warn "$BIN" serve --config "$WORK/a.toml" & pids+=($!)
RUST_LOG=warn "$BIN" serve --config "$WORK/b.toml" & pids+=($!)
for url in "http://127.0.0.1:19810/" "http://127.0.0.1:19811/ready" "http://127.0.0.1:19812/ready"; do
  for _ in $(seq 1 400); do curl -fs "$url" >/dev/null && break; sleep 0.05; done
done

# time_total of REPEAT requests: p50 and p99 (ms).
measure() { # name method url [body]
  local times
  times=$(for i in $(seq 1 "$REPEAT"); do
    curl -s -o /dev/null -w '%{time_total}\n' -X "$2" ${4:+-H 'content-type: application/json' -d "$4"} "$3"
  done | sort -n)
  local p50 p99
  p50=$(awk -v n="$REPEAT" 'NR == int((n + 1) / 2) {printf "%.1f", $1 * 1000}' <<<"$times")
  p99=$(awk -v n="$REPEAT" 'NR == int(n * 0.99 + 0.999) {printf "%.1f", $1 * 1000}' <<<"$times")
  printf '| %s | %s ms | %s ms |\n' "$1" "$p50" "$p99"
}
B=http://127.0.0.1:19812/v1/pools/big
echo "$INSTANCES instances; curl x$REPEAT per row; $(nproc) cores; $(date -u +%F)"
echo
echo "| admin request (pool of $INSTANCES instances) | p50 | p99 |"
echo "|---|---|---|"
measure "GET /v1/pools/big/instances (list)" GET "$B/instances"
measure "GET /v1/status" GET "http://127.0.0.1:19812/v1/status"
measure "POST …/instances/{i}/drain (pool reused, flag set)" POST "$B/instances/10.0.0.7:8080/drain"
measure "PATCH …/instances/{i} weight (pool rebuilt)" PATCH "$B/instances/10.0.0.7:8080" '{"weight": 2}'
echo
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency"
echo
echo "| data path | req/s | p50 | p99 | errors |"
echo "|---|---|---|---|---|"
run "no config changes" "http://127.0.0.1:19810/"
# One change a second, alternating a rebuild (weight) and an in-place drain flip.
( w=1; while true; do
    w=$((3 - w))
    curl -s -o /dev/null -X PATCH -H 'content-type: application/json' -d "{\"weight\": $w}" \
      "http://127.0.0.1:19811/v1/pools/p/instances/127.0.0.1:${UP[1]}"
    sleep 1
  done ) & changer=$!
pids+=($changer)
run "one config change per second" "http://127.0.0.1:19810/"
kill "$changer" 2>/dev/null || true
