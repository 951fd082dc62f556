"""A fault-injecting HTTP proxy in front of an OpenAI-compatible server (for the executor's tests).

    python tests/executors/fault_proxy.py --upstream http://127.0.0.1:8000 --fail-rate 0.3 --seed 0

Forwards POSTs to the upstream; a seeded `fail_rate` share of them instead gets one of: a 500 reply,
no reply for `hang_s` (the client times out), or a 200 reply whose JSON body is cut short. `--ignore-n`
strips `n` from requests (a server that ignores n). Prints `listening <port>` once ready; GET
/proxy/stats returns the counts of forwarded requests and injected faults by kind. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("http_500", "timeout", "malformed")


def make_handler(args: argparse.Namespace) -> type[BaseHTTPRequestHandler]:
    rng = random.Random(args.seed)
    lock = threading.Lock()
    stats: Counter[str] = Counter()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: object) -> None:  # quiet
            pass

        def _reply(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/proxy/stats":
                with lock:
                    self._reply(200, json.dumps(dict(stats)).encode())
                return
            self._forward(None)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                fault = rng.choice(FAULTS) if rng.random() < args.fail_rate else None
                stats["requests"] += 1
                if fault:
                    stats[fault] += 1
            if fault == "http_500":
                self._reply(500, b'{"error": "injected"}')
            elif fault == "timeout":
                time.sleep(args.hang_s)
                self.close_connection = True
            elif fault == "malformed":
                self._reply(200, b'{"id": "x", "choices": [{"text": "ans')
            else:
                if args.ignore_n and body:
                    request = json.loads(body)
                    request.pop("n", None)
                    body = json.dumps(request).encode()
                self._forward(body)

        def _forward(self, body: bytes | None) -> None:
            request = urllib.request.Request(
                args.upstream + self.path,
                data=body,
                headers={"Content-Type": "application/json"},
                method="POST" if body is not None else "GET",
            )
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    self._reply(response.status, response.read())
            except urllib.error.HTTPError as error:
                self._reply(error.code, error.read())

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fail-rate", type=float, default=0.3)
    parser.add_argument("--hang-s", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ignore-n", action="store_true")
    args = parser.parse_args()
    args.upstream = args.upstream.rstrip("/")
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(args))
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
