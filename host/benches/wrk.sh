# Shared by the wrk load scripts (sourced from the workspace root, after
# `set -euo pipefail` and with CONNECTIONS' default set): checks for nginx and
# wrk, builds the release binary ($BIN; set BIN to compare another build,
# e.g. BIN=/tmp/switchyard-before, and nothing is built), makes a work dir ($WORK) that is
# removed on exit with every nginx configured under it and every process in
# `pids`, defines `upstreams PORT...` (nginx answering `ok` at `/`, and
# bodies of 0 B, 1 KiB and 64 KiB at `/0b`, `/1k`, `/64k`) and
# `run NAME URL [SCRIPT]`, which drives wrk at $THREADS,
# $CONNECTIONS and $DURATION (with the wrk Lua SCRIPT when given) and
# prints one Markdown row:
# | NAME | req/s | p50 | p99 | errors |
DURATION=${DURATION:-10s}
THREADS=${THREADS:-1}
command -v nginx >/dev/null && command -v wrk >/dev/null || {
  echo "needs nginx and wrk: apt-get install -y nginx wrk" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then
  cargo build --release -p switchyard >/dev/null
  BIN=target/release/switchyard
fi
WORK=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for conf in "$WORK"/*/nginx.conf; do
    [ -e "$conf" ] && nginx -p "$(dirname "$conf")" -c "$conf" -s stop 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# `upstreams PORT...`: one nginx (1 worker) on every PORT of 127.0.0.1,
# answering `ok` at `/` and the files `/0b` (empty), `/1k`, `/64k` (all
# `x`) and `/64k-text` (decimal numbers, one a line: compresses about 3×),
# configured under $WORK/up.
upstreams() {
  local listen=""
  for port in "$@"; do listen+="listen 127.0.0.1:$port; "; done
  mkdir -p "$WORK/up/logs" "$WORK/up/www"
  mkdir -p "$WORK/up/www/v1"
  : > "$WORK/up/www/0b"
  : > "$WORK/up/www/v1/0b"
  head -c 1024 /dev/zero | tr '\0' x > "$WORK/up/www/1k"
  head -c 65536 /dev/zero | tr '\0' x > "$WORK/up/www/64k"
  seq 20000 > "$WORK/up/www/64k-text" && truncate -s 65536 "$WORK/up/www/64k-text"
  cat > "$WORK/up/nginx.conf" <<NGINX
worker_processes 1; user root; daemon on; pid $WORK/up/nginx.pid; error_log $WORK/up/logs/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { $listen location = / { return 200 "ok"; } location / { root $WORK/up/www; } } }
NGINX
  nginx -p "$WORK/up" -c "$WORK/up/nginx.conf"
}

run() {
  local out rps p50 p99 errors
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency ${3:+-s "$3"} "$2")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  printf '| %s | %s | %s | %s | %s |\n' "$1" "$rps" "$p50" "$p99" "${errors:-none}"
}
