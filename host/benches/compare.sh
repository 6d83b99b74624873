#!/usr/bin/env bash
# Side by side, per core: nginx, HAProxy and Switchyard (round robin, and
# with the Wasm latency-p2c balancer) as reverse proxies in front of the
# same three nginx upstreams, each proxy alone on core 1 with one worker
# (nginx `worker_processes 1` with `keepalive 64` to the upstreams, HAProxy
# `nbthread 1` with `http-reuse always`, Switchyard `worker_threads = 1`),
# wrk and the upstreams on core 0; proxies interleaved within each round;
# prints per scenario the median req/s, p50 and p99 of each proxy and its
# ratio to nginx.
#
# Run: bash host/benches/compare.sh   (from the workspace root)
# Needs: nginx, haproxy, wrk (Debian: apt-get install nginx haproxy wrk), 2+ cores.
# Env: ROUNDS (default 3), DURATION (default 8s), BIN (a switchyard binary;
#      default: build the release one), SCENARIOS (default all, e.g.
#      "0b-c32 1k-c32"): 0b-c32, 0b-c256, 0b-close, 1k-c32, 64k-c32 over
#      plain HTTP; tls-c32 (HTTPS keep-alive, 0 B) and tls-close (a new TLS
#      connection, so a full handshake, per request) on each proxy's TLS
#      listener: the same ECDSA P-256 certificate for all (openssl), TLS 1.3.
set -euo pipefail
cd "$(dirname "$0")/../.."
CONNECTIONS=32
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
SCENARIOS=${SCENARIOS:-0b-c32 0b-c256 0b-close 1k-c32 64k-c32 tls-c32 tls-close}
command -v haproxy >/dev/null || { echo "needs haproxy: apt-get install -y haproxy" >&2; exit 1; }
source host/benches/wrk.sh
taskset -p -c 0 $$ >/dev/null

UP=(19511 19512 19513)
upstreams "${UP[@]}"

PORT=19600
TLS_PORT=19601
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat "$WORK/cert.pem" "$WORK/key.pem" > "$WORK/combined.pem"
servers=""
for port in "${UP[@]}"; do servers+="server 127.0.0.1:$port; "; done
mkdir -p "$WORK/px/logs"
cat > "$WORK/px/nginx.conf" <<NGINX
worker_processes 1; user root; daemon off; pid $WORK/px/nginx.pid; error_log $WORK/px/logs/error.log;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream up { $servers keepalive 64; }
  server { listen 127.0.0.1:$PORT; listen 127.0.0.1:$TLS_PORT ssl;
    ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
NGINX
backends=""
for i in "${!UP[@]}"; do backends+="    server u$i 127.0.0.1:${UP[$i]}"$'\n'; done
cat > "$WORK/haproxy.cfg" <<HAPROXY
global
    nbthread 1
    maxconn 8192
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend in
    bind 127.0.0.1:$PORT
    bind 127.0.0.1:$TLS_PORT ssl crt $WORK/combined.pem
    default_backend up
backend up
    balance roundrobin
    http-reuse always
$backends
HAPROXY
instances=""
for port in "${UP[@]}"; do instances+="{ url = \"http://127.0.0.1:$port\" }, "; done
printf '[runtime]\nworker_threads = 1\n[[listeners]]\nlisten = "127.0.0.1:%s"\n[[listeners]]\nlisten = "127.0.0.1:%s"\ntls = { certificates = [{ cert_file = "%s", key_file = "%s" }] }\n[[routes]]\npool = "p"\n[pools.p]\nstrategy = { kind = "round-robin" }\ninstances = [%s]\n' \
  "$PORT" "$TLS_PORT" "$WORK/cert.pem" "$WORK/key.pem" "$instances" > "$WORK/rr.toml"
p2c=$(ls target/wasm-plugins/wasm32-wasip2/release/latency_p2c.wasm 2>/dev/null || true)
proxies="nginx haproxy switchyard"
if [ -n "$p2c" ]; then
  sed "s|strategy = { kind = \"round-robin\" }|strategy = { kind = \"plugin\", plugin = { path = \"$PWD/$p2c\" } }|" \
    "$WORK/rr.toml" > "$WORK/p2c.toml"
  proxies+=" switchyard-wasm"
fi

# `start PROXY`: starts it alone on core 1; its pid in $proxy_pid.
start() {
  case $1 in
    nginx) taskset -c 1 nginx -p "$WORK/px" -c "$WORK/px/nginx.conf" & ;;
    haproxy) taskset -c 1 haproxy -f "$WORK/haproxy.cfg" -db & ;;
    switchyard) RUST_LOG=warn taskset -c 1 "$BIN" serve --config "$WORK/rr.toml" & ;;
    switchyard-wasm) RUST_LOG=warn taskset -c 1 "$BIN" serve --config "$WORK/p2c.toml" & ;;
  esac
  proxy_pid=$!
  pids+=("$proxy_pid")
  for _ in $(seq 1 200); do curl -fs "http://127.0.0.1:$PORT/0b" >/dev/null && return; sleep 0.05; done
  echo "$1 did not start" >&2; exit 1
}

# `measure SCENARIO`: one wrk run; prints "req/s p50_us p99_us errors".
measure() {
  local path=/0b connections=32 header=() base="http://127.0.0.1:$PORT"
  case $1 in
    0b-c256) connections=256 ;;
    0b-close) header=(-H "Connection: close") ;;
    1k-c32) path=/1k ;;
    64k-c32) path=/64k ;;
    tls-c32) base="https://127.0.0.1:$TLS_PORT" ;;
    tls-close) base="https://127.0.0.1:$TLS_PORT" header=(-H "Connection: close") ;;
  esac
  local out
  out=$(wrk -t1 -c"$connections" -d"$DURATION" --latency "${header[@]}" "$base$path")
  awk '
    function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; if (v ~ /s$/) return v * 1e6; return v }
    /Requests\/sec/ { rps = $2 }
    $1 == "50%" { p50 = us($2) }
    $1 == "99%" { p99 = us($2) }
    /Non-2xx|Socket errors/ { errors = "errors" }
    END { printf "%s %d %d %s\n", rps, p50, p99, (errors ? errors : "none") }' <<<"$out"
}

results="$WORK/results"
: > "$results"
echo "compare.sh: ROUNDS=$ROUNDS DURATION=$DURATION, $(date -u +%F), $(nproc --all) cores; proxies on core 1, wrk and upstreams on core 0"
for round in $(seq 1 "$ROUNDS"); do
  for proxy in $proxies; do
    start "$proxy"
    for scenario in $SCENARIOS; do
      echo "$scenario $proxy $round $(measure "$scenario")" >> "$results"
    done
    kill "$proxy_pid"; wait "$proxy_pid" 2>/dev/null || true
  done
done

# Medians per scenario and proxy, and ratios to nginx's median.
echo
echo "| scenario | proxy | req/s (median) | ÷ nginx | p50 µs | p99 µs | req/s of the rounds | errors |"
echo "|---|---|---|---|---|---|---|---|"
for scenario in $SCENARIOS; do
  base=$(awk -v s="$scenario" '$1 == s && $2 == "nginx" {print $4}' "$results" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  for proxy in $proxies; do
    awk -v s="$scenario" -v p="$proxy" -v base="$base" '
      $1 == s && $2 == p { n++; rps[n] = $4; p50[n] = $5; p99[n] = $6; all = all (all ? " / " : "") int($4); if ($7 != "none") err = "yes" }
      function median(a, n,   i, j, t) {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return a[int((n + 1) / 2)]
      }
      END {
        m = median(rps, n)
        printf "| %s | %s | %d | %.2f× | %d | %d | %s | %s |\n", s, p, m, (base ? m / base : 0), median(p50, n), median(p99, n), all, (err ? err : "none")
      }' "$results"
  done
done
