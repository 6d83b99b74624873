#!/usr/bin/env python3
"""Several replicas, one configuration: what sharing it through etcd costs.

  propagation  Three release `switchyard` replicas share one etcd (one
               member). WRITES times (default 100), a replica (in turn)
               replaces pool `p`'s instance with the other upstream; from
               the write's acknowledgement, every replica's listener is
               polled (keep-alive GETs, round robin) until all three answer
               from the new upstream. Prints the ack latency and the time
               until all three serve the change: median, p90, max.
  churn        One replica, a pool discovered from etcd (watched)
               of INSTANCES (default 1000) instances, all served by one
               nginx on 127.0.0.0/8 addresses. Switchyard's CPU time
               (utime+stime from /proc) for DURATION s (default 20) without
               changes, then with CHURN (default 100) instances replaced
               every second; the time until a change is in the pool; wrk
               (1 thread, 16 connections) through it, steady and churning.

Run (from the workspace root, release binary built):
  cargo build --release -p switchyard
  python3 host/benches/replicas.py propagation
  python3 host/benches/replicas.py churn
Needs: etcd (Debian: etcd-server); nginx and wrk for `churn`.
"""

import base64
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BIN = os.environ.get("BIN", "target/release/switchyard")
WORK = tempfile.mkdtemp(prefix="switchyard-replicas-")
PROCS = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, check, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out: {what}")


def call(url, method="GET", body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read() or b"null")


def start_etcd():
    client, peer = free_port(), free_port()
    c, p = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    PROCS.append(subprocess.Popen(
        ["etcd", "--name", "b", "--data-dir", f"{WORK}/etcd",
         "--listen-client-urls", c, "--advertise-client-urls", c,
         "--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
         "--initial-cluster", f"b={p}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    key = base64.b64encode(b"x").decode()
    wait_until("etcd", lambda: call(f"{c}/v3/kv/range", "POST", {"key": key})[0] == 200)
    return c


def etcd_txn(etcd, puts=(), deletes=()):
    ops = [{"request_put": {"key": base64.b64encode(k.encode()).decode(),
                            "value": base64.b64encode(v.encode()).decode()}} for k, v in puts]
    ops += [{"request_delete_range": {"key": base64.b64encode(k.encode()).decode()}}
            for k in deletes]
    call(f"{etcd}/v3/kv/txn", "POST", {"success": ops})


class Named(BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.server.name.encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def upstream(name):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Named)
    server.name = name
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def replica(i, etcd, pool_toml):
    listen, admin = free_port(), free_port()
    d = f"{WORK}/r{i}"
    os.makedirs(d)
    with open(f"{d}/config.toml", "w") as f:
        f.write(f'[[listeners]]\nlisten = "127.0.0.1:{listen}"\n'
                f'[admin]\nlisten = "127.0.0.1:{admin}"\n'
                f'[store]\nkind = "etcd"\nendpoints = ["{etcd}"]\n'
                f'[[routes]]\npool = "p"\n{pool_toml}')
    PROCS.append(subprocess.Popen([BIN, "serve", "--config", f"{d}/config.toml"],
                                  env={**os.environ, "RUST_LOG": "error"}))
    api = f"http://127.0.0.1:{admin}"
    wait_until(f"replica {i}", lambda: call(f"{api}/ready")[1]["store"]["in_sync"])
    return listen, api, PROCS[-1]


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def propagation():
    writes = int(os.environ.get("WRITES", "100"))
    etcd = start_etcd()
    ups = {"a": upstream("a"), "b": upstream("b")}
    pool = f'[pools.p]\ninstances = [{{ url = "{ups["a"]}" }}]\n'
    replicas = [replica(i, etcd, pool) for i in range(3)]
    conns = [http.client.HTTPConnection("127.0.0.1", port) for port, _, _ in replicas]

    def served(i):
        conns[i].request("GET", "/")
        return conns[i].getresponse().read().decode()

    acks, all_served = [], []
    for n in range(writes):
        target = "b" if n % 2 == 0 else "a"
        api = replicas[n % 3][1]
        start = time.perf_counter()
        status, _ = call(f"{api}/v1/pools/p", "PUT", {"instances": [{"url": ups[target]}]})
        acked = time.perf_counter()
        assert status == 200, status
        pending = {0, 1, 2}
        while pending:
            for i in list(pending):
                if served(i) == target:
                    pending.discard(i)
        done = time.perf_counter()
        acks.append((acked - start) * 1000)
        all_served.append((done - acked) * 1000)
    print(f"| writes | ack p50 | ack max | all 3 serve it: p50 | p90 | max |")
    print(f"|---|---|---|---|---|---|")
    print(f"| {writes} | {statistics.median(acks):.2f} ms | {max(acks):.2f} ms "
          f"| {statistics.median(all_served):.2f} ms | {percentile(all_served, 0.9):.2f} ms "
          f"| {max(all_served):.2f} ms |")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def churn():
    instances = int(os.environ.get("INSTANCES", "1000"))
    per_second = int(os.environ.get("CHURN", "100"))
    duration = float(os.environ.get("DURATION", "20"))
    etcd = start_etcd()
    # One nginx answers on every 127.0.0.0/8 address of its ports.
    ports = [free_port() for _ in range(4)]
    ngx = f"{WORK}/nginx"
    os.makedirs(f"{ngx}/logs")
    with open(f"{ngx}/nginx.conf", "w") as f:
        listen = "".join(f"listen {p}; " for p in ports)
        f.write("worker_processes 1; error_log logs/error.log; pid logs/nginx.pid;\n"
                "events {} http { access_log off; server { " + listen +
                "location / { return 200 ok; } } }\n")
    subprocess.run(["nginx", "-p", ngx, "-c", f"{ngx}/nginx.conf"], check=True)
    try:
        urls = [f"http://127.0.{1 + i // 250}.{1 + i % 250}:{ports[i % 4]}"
                for i in range(instances * 2)]
        live = {f"/svc/{i}": urls[i] for i in range(instances)}
        for chunk in range(0, instances, 100):
            etcd_txn(etcd, puts=list(live.items())[chunk:chunk + 100])
        pool = ('[pools.p]\ndiscovery = { kind = "etcd", endpoints = ["' + etcd +
                '"], prefix = "/svc/" }\n')
        port, api, proc = replica(0, etcd, pool)

        def pool_urls():
            status = call(f"{api}/v1/pools/p/instances")[1]
            return {i["url"] for i in status}

        wait_until("all instances discovered", lambda: len(pool_urls()) == instances)
        keys = list(live)
        next_id = [instances]

        def churn_once():
            # The oldest leave, as many new ones join (URLs of 2N cycle:
            # never one that is live); two transactions: etcd allows 128
            # operations in one.
            nonlocal keys
            gone, keys = keys[:per_second], keys[per_second:]
            start_id = next_id[0]
            new = [(f"/svc/{n}", urls[n % len(urls)]) for n in range(start_id, start_id + len(gone))]
            next_id[0] += len(gone)
            etcd_txn(etcd, deletes=gone)
            etcd_txn(etcd, puts=new)
            keys += [k for k, _ in new]
            return {u for _, u in new}

        def churning(seconds, stop=None):
            t0, rounds = time.monotonic(), 0
            while time.monotonic() - t0 < seconds and not (stop and stop.is_set()):
                churn_once()
                rounds += 1
                time.sleep(max(0.0, t0 + rounds - time.monotonic()))
            return rounds

        def cpu_share(action):
            t0, c0 = time.monotonic(), cpu_seconds(proc.pid)
            result = action()
            return (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0), result

        idle, _ = cpu_share(lambda: time.sleep(duration))
        busy, rounds = cpu_share(lambda: churning(duration))
        wait_until("the last churn applied", lambda: pool_urls() == {live_url for live_url in
                   (urls[int(k.rsplit("/", 1)[1]) % len(urls)] for k in keys)})
        # The time until a change is in the pool (polled every 5 ms; the
        # GET of 1,000 instances itself takes ~1 ms).
        seen = []
        for _ in range(10):
            want = churn_once()
            start = time.monotonic()
            while not want <= pool_urls():
                assert time.monotonic() - start < 30, "the churn was not applied"
                time.sleep(0.005)
            seen.append(time.monotonic() - start)
            time.sleep(0.5)

        def wrk():
            out = subprocess.run(["wrk", "-t1", "-c16", f"-d{int(duration)}s", "--latency",
                                  f"http://127.0.0.1:{port}/"], capture_output=True, text=True,
                                 check=True).stdout
            rps = float(out.split("Requests/sec:")[1].split()[0])
            p99 = out.split(" 99%")[1].split()[0]
            return rps, p99

        steady = wrk()
        stop = threading.Event()
        background = threading.Thread(target=churning, args=(duration + 5, stop))
        background.start()
        moving = wrk()
        stop.set()
        background.join()
        print("| instances | churn | Switchyard CPU, no changes | while churning | change in the pool after: p50 / max | wrk -c16 steady | while churning |")
        print("|---|---|---|---|---|---|---|")
        print(f"| {instances} | {per_second} replaced/s ({rounds} rounds) | {idle * 100:.1f}% of a core "
              f"| {busy * 100:.1f}% of a core | {statistics.median(seen) * 1000:.0f} / {max(seen) * 1000:.0f} ms "
              f"| {steady[0]:.0f} req/s, p99 {steady[1]} | {moving[0]:.0f} req/s, p99 {moving[1]} |")
    finally:
        subprocess.run(["nginx", "-p", ngx, "-c", f"{ngx}/nginx.conf", "-s", "stop"],
                       stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    try:
        {"propagation": propagation, "churn": churn}[sys.argv[1] if len(sys.argv) > 1 else "propagation"]()
    finally:
        for p in PROCS:
            p.kill()
            p.wait()
        shutil.rmtree(WORK, ignore_errors=True)
