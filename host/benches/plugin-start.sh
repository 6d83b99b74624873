#!/usr/bin/env bash
# Plugin start-up, call and memory costs per language (BENCHMARKS.md
# "Plugins by language"): `bash host/benches/plugin-start.sh`.
#
# Needs hyperfine (apt-get install -y hyperfine) and the three example
# balancers built: the Rust one by the test build, the Python and JavaScript
# ones by `cargo test --test all polyglot` (into target/polyglot/).
# For each plugin it prints:
# - start: `switchyard check` on a one-pool config (compile or cache load,
#   instantiate, configure), without the cache and with a warm cache;
# - call: `switchyard plugin bench` percentiles of one pick over 8 instances;
# - memory: RSS of `switchyard serve` with 21 pools loading the plugin minus
#   RSS with 1, over 20: what one more loaded instance costs.
set -euo pipefail
command -v hyperfine >/dev/null || { echo "needs hyperfine: apt-get install -y hyperfine" >&2; exit 1; }
cargo build --release -p switchyard >/dev/null 2>&1
BIN=$PWD/target/release/switchyard
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
declare -A PLUGINS=(
  [rust]="target/wasm-plugins/wasm32-wasip2/release/canary_split.wasm"
  [python]="target/polyglot/py_weighted_rr.wasm"
  [javascript]="target/polyglot/js_session_hash.wasm"
)
config() { # config FILE PLUGIN POOLS CACHE
  local file=$1 plugin=$2 pools=$3 cache=$4
  {
    echo "[plugin_cache]"
    if [ "$cache" = on ]; then echo "dir = \"$WORK/cache\""; else echo "enabled = false"; fi
    echo "[[listeners]]"; echo 'listen = "127.0.0.1:0"'
    echo "[[routes]]"; echo 'pool = "p0"'
    for i in $(seq 0 $((pools - 1))); do
      echo "[pools.p$i]"
      echo "strategy = { kind = \"plugin\", plugin = { path = \"$PWD/$plugin\", capabilities = [\"random\"], call_deadline_ms = 1000 } }"
      echo "instances = [{ url = \"http://127.0.0.1:9\" }, { url = \"http://127.0.0.1:10\" }]"
    done
  } > "$file"
}
rss_kib() { # rss_kib CONFIG: RSS of a serving process once its plugins are loaded
  local log=$WORK/serve.log
  "$BIN" serve --config "$1" > "$log" 2>&1 &
  local pid=$!
  for _ in $(seq 600); do grep -q "listening" "$log" && break; sleep 0.1; done
  awk '/VmRSS/ { print $2 }' "/proc/$pid/status"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
echo "| plugin | size | start, no cache | start, warm cache | pick p50 / p99 | RSS per loaded instance |"
echo "|---|---|---|---|---|---|"
for lang in rust python javascript; do
  plugin=${PLUGINS[$lang]}
  [ -f "$plugin" ] || { echo "missing $plugin (see the header of this script)" >&2; exit 1; }
  config "$WORK/off.toml" "$plugin" 1 off
  config "$WORK/on.toml" "$plugin" 1 on
  "$BIN" check --config "$WORK/on.toml" > /dev/null 2>&1   # prime the cache
  mean() { hyperfine -N --warmup 1 --runs "$2" --export-json "$WORK/h.json" "$BIN check --config $1" > /dev/null 2>&1
           python3 -c "import json; r=json.load(open('$WORK/h.json'))['results'][0]; print(f\"{r['mean']*1000:.0f} ms ± {r['stddev']*1000:.0f}\")"; }
  cold=$(mean "$WORK/off.toml" 5)
  warm=$(mean "$WORK/on.toml" 10)
  call=$("$BIN" plugin bench "$plugin" --iterations 20000 2>/dev/null | awk '/p50/ { print $6 " / " $10 }')
  config "$WORK/one.toml" "$plugin" 1 on
  config "$WORK/many.toml" "$plugin" 21 on
  one=$(rss_kib "$WORK/one.toml"); many=$(rss_kib "$WORK/many.toml")
  per=$(( (many - one) / 20 ))
  size=$(du -h "$plugin" | cut -f1)
  echo "| $lang | $size | $cold | $warm | $call | $((per / 1024)) MiB ($per KiB) |"
done
