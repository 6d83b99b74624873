#!/usr/bin/env bash
# Added latency of an MCP route: `tools/call` of `echo` straight to a
# FastMCP server (the tests' tests/mcp/server.py, session-less, JSON
# answers) and through an `mcp` route of the release binary with one
# target and with two (the call goes to its owner either way), one
# connection at a time (latency, not throughput), then 8 at once.
#
# Run: bash host/benches/mcp.sh             (from the workspace root)
# Needs: wrk, and the tests' MCP virtualenv (target/mcp/venv: run
# `cargo test -p switchyard --test all -- mcp::` once); builds the release binary.
# Env: DURATION (default 10s).
set -euo pipefail
cd "$(dirname "$0")/../.."
CONNECTIONS=${CONNECTIONS:-1}
source host/benches/wrk.sh
PYTHON=target/mcp/venv/bin/python
[ -x "$PYTHON" ] || { echo "no $PYTHON: run cargo test -p switchyard --test all -- mcp:: first" >&2; exit 1; }

for port in 19601 19602; do
  "$PYTHON" tests/mcp/server.py "$port" --name "s$port" --stateless --json >/dev/null 2>&1 & pids+=($!)
done
serve() { # port, targets
  local config="$WORK/$1.toml"
  printf '[[listeners]]\nlisten = "127.0.0.1:%s"\n[[routes]]\nmcp = { targets = %s }\n' "$1" "$2" > "$config"
  printf '[pools.a]\ninstances = [{ url = "http://127.0.0.1:19601" }]\n' >> "$config"
  printf '[pools.b]\ninstances = [{ url = "http://127.0.0.1:19602" }]\n' >> "$config"
  RUST_LOG=error "$BIN" serve --config "$config" & pids+=($!)
}
serve 19611 '["a"]'
serve 19612 '["a", "b"]'
cat > "$WORK/call.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}'
LUA
# Two targets both have `echo`: the federation's name is a__echo.
sed 's/"name":"echo"/"name":"a__echo"/' "$WORK/call.lua" > "$WORK/call-prefixed.lua"
for port in 19601 19602 19611 19612; do
  for _ in $(seq 1 400); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
done
# Each path answers the call (a JSON-RPC error would be a 200 to wrk too).
check() { # url, tool
  curl -s "$1" -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
    -d "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"$2\",\"arguments\":{\"text\":\"hi\"}}}" \
    | grep -q '"text":"s19601: hi"' || { echo "$1 does not answer $2" >&2; exit 1; }
}
check http://127.0.0.1:19601/mcp echo
check http://127.0.0.1:19611/mcp echo
check http://127.0.0.1:19612/mcp a__echo
warm() { wrk -t1 -c1 -d2s -s "$2" "$1" >/dev/null; }
warm http://127.0.0.1:19601/mcp "$WORK/call.lua"
warm http://127.0.0.1:19611/mcp "$WORK/call.lua"
warm http://127.0.0.1:19612/mcp "$WORK/call-prefixed.lua"

echo "wrk -t$THREADS -d$DURATION --latency, tools/call of echo; $(nproc) cores; $(date -u +%F)"
echo
for c in 1 8; do
  CONNECTIONS=$c
  echo "$c connection(s):"
  echo
  echo "| path | req/s | p50 | p99 | errors |"
  echo "|---|---|---|---|---|"
  run "direct to FastMCP" http://127.0.0.1:19601/mcp "$WORK/call.lua"
  run "mcp route, 1 target" http://127.0.0.1:19611/mcp "$WORK/call.lua"
  run "mcp route, 2 targets (a__echo)" http://127.0.0.1:19612/mcp "$WORK/call-prefixed.lua"
  echo
done
