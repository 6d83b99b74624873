#!/usr/bin/env bash
# A CPU profile of Switchyard's data path on one core: one worker
# (`worker_threads = 1`) alone on core 1, three nginx upstreams and
# `wrk -t1 -c32` on core 0, round robin (or the Wasm balancer at PLUGIN);
# `perf record -g` for 10 s in the middle of a 16 s run, then the wrk
# figures and `perf report` by shared object and by symbol.
#
# Run: bash host/benches/profile.sh   (from the workspace root)
# Needs: nginx, wrk, perf (Debian: apt-get install nginx wrk linux-perf), 2+ cores.
# Env: BIN (a switchyard binary; default: build the release one), PLUGIN
#      (a balancer `.wasm`; default: round robin), OUT (perf data; default
#      target/perf.data).
set -euo pipefail
cd "$(dirname "$0")/../.."
CONNECTIONS=32
OUT=${OUT:-target/perf.data}
command -v perf >/dev/null || { echo "needs perf: apt-get install -y linux-perf" >&2; exit 1; }
source host/benches/wrk.sh
taskset -p -c 0 $$ >/dev/null

UP=(19211 19212 19213)
upstreams "${UP[@]}"
strategy='{ kind = "round-robin" }'
[ -n "${PLUGIN:-}" ] && strategy="{ kind = \"plugin\", plugin = { path = \"$(realpath "$PLUGIN")\" } }"
instances=""
for port in "${UP[@]}"; do instances+="{ url = \"http://127.0.0.1:$port\" }, "; done
printf '[runtime]\nworker_threads = 1\n[[listeners]]\nlisten = "127.0.0.1:19410"\n[[routes]]\npool = "p"\n[pools.p]\nstrategy = %s\ninstances = [%s]\n' \
  "$strategy" "$instances" > "$WORK/p.toml"
RUST_LOG=warn taskset -c 1 "$BIN" serve --config "$WORK/p.toml" & pid=$!
pids+=("$pid")
for _ in $(seq 1 200); do curl -fs "http://127.0.0.1:19410/" >/dev/null && break; sleep 0.05; done
wrk -t1 -c"$CONNECTIONS" -d16s --latency http://127.0.0.1:19410/ > "$WORK/wrk.txt" &
wrk_pid=$!
sleep 3
perf record -F 999 -g -p "$pid" -o "$OUT" -- sleep 10 >/dev/null 2>&1
wait "$wrk_pid"
grep -E "Requests/sec|50%|99%" "$WORK/wrk.txt"
perf report -i "$OUT" --no-children --sort dso --stdio -g none 2>/dev/null | grep '%' | head -6
perf report -i "$OUT" --no-children --sort symbol --stdio -g none 2>/dev/null | grep '%' | head -30
