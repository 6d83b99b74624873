"""An HTTP server for the managed-upstream tests (started by Switchyard as
a pool's process): answers `GET /` with its name and `/healthz` with 200.

    server.py PORT NAME [--crash-after N] [--ignore-term] [--unhealthy]
                        [--unhealthy-if FILE]

--crash-after N: exits abruptly (status 3) after answering N requests;
--ignore-term: ignores SIGTERM (only SIGKILL stops it);
--unhealthy: answers /healthz with 503 (it never becomes ready);
--unhealthy-if FILE: answers /healthz with 503 while FILE exists.
"""

import argparse
import os
import signal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("port", type=int)
parser.add_argument("name")
parser.add_argument("--crash-after", type=int, default=0)
parser.add_argument("--ignore-term", action="store_true")
parser.add_argument("--unhealthy", action="store_true")
parser.add_argument("--unhealthy-if", default="")
args = parser.parse_args()
if args.ignore_term:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
served = {"n": 0}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        status, body = 200, args.name.encode()
        failing = args.unhealthy or (args.unhealthy_if and os.path.exists(args.unhealthy_if))
        if self.path == "/healthz" and failing:
            status = 503
        elif self.path != "/healthz":
            served["n"] += 1
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if args.crash_after and served["n"] >= args.crash_after:
            os._exit(3)

    def log_message(self, *_):
        pass


print(f"{args.name} listening on {args.port}", flush=True)
ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
