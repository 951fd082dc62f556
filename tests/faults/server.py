"""A fault-injecting HTTP proxy in front of an executor (OpenAI API) or an RM scoring service.

    python tests/faults/server.py --upstream http://127.0.0.1:8000 --api openai --rate 0.3 --seed 0

Tests start it in process (`FaultServer(...).start()`, `stop()`) or as this script (it prints
`listening <port>`; stop it by PID). It binds 127.0.0.1 only. Every request goes to `upstream`, except
that a share `rate` of the POST attempts get one fault instead:

    http_5xx       503 with a JSON error body
    http_429       429 with `Retry-After: <retry_after>`
    hang           no reply until the client gives up (the connection is closed after `hang_s`)
    drop           the connection is closed before any byte of a reply
    truncated      headers announcing the whole body, half of it, then the connection is closed
    malformed      a complete 200 whose body is cut JSON
    error_200      a 200 whose JSON body is an error object
    fewer          the upstream's reply with fewer choices (half, rounded down) / one score less
    more           the upstream's reply with one more choice / score
    missing_value  the upstream's reply with a choice whose text is null / a NaN score

A request is what a client retries: the attempts whose `X-Request-Id` headers agree but for a last
`.<attempt>` field (planlift's clients send `<call>.<index>.<serial>.<attempt>`; each attempt without the
header is a request of its own); a record's `id` is the header without that field. Whether an attempt is faulted, and how, is a function of (seed, request
body, attempt number) only, so a run injects the same faults whatever order concurrent requests arrive
in. `faulty_attempts` replaces the rate: the first k attempts of every request are faulted.

An attempt is *usable* when a client can take answers from it: a clean reply; for the executor also a
reply with extra choices (dropped) or with fewer but at least one (the client asks for the rest). A reply
the client never received is not: when it gave up (its own timeout) while the upstream was answering, the
attempt's kind is `client_gone`. A request that got no usable attempt exhausted its retries: its samples
must be masked.
`GET /faults/stats` returns the counts (requests, attempts, injected faults by kind, exhausted requests by
the kind of their last attempt); `GET /faults/requests` every request: id, body, attempt kinds, usable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import select
import socket
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KINDS = (
    "http_5xx",
    "http_429",
    "hang",
    "drop",
    "truncated",
    "malformed",
    "error_200",
    "fewer",
    "more",
    "missing_value",
)
APIS = ("openai", "rm")
CLEAN = "ok"  # the attempt kind of a forwarded, untouched reply
GONE = "client_gone"  # the kind of a reply the client had stopped waiting for


@dataclass(frozen=True)
class FaultPlan:
    """What to inject. rate: faulted share of attempts; kinds: drawn uniformly; faulty_attempts: if set,
    the first k attempts of every request are faulted instead; hang_s: how long a hang holds the
    connection; retry_after: the 429's header value; ignore_n: strip `n` (a server that ignores it)."""

    rate: float = 0.3
    seed: int = 0
    kinds: tuple[str, ...] = KINDS
    faulty_attempts: int | None = None
    hang_s: float = 10.0
    retry_after: str = "1"
    ignore_n: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"fault kinds must be a non-empty subset of {KINDS}, got {self.kinds}")
        if not 0 <= self.rate <= 1:
            raise ValueError(f"rate must be in [0, 1], got {self.rate}")

    def draw(self, body: bytes, attempt: int) -> str | None:
        """The fault of attempt number `attempt` (0, 1, ...) of a request with this body, or None."""
        digest = hashlib.sha256(f"{self.seed}|{attempt}|".encode() + body).digest()
        if self.faulty_attempts is not None:
            faulted = attempt < self.faulty_attempts
        else:
            faulted = int.from_bytes(digest[:8], "big") / 2**64 < self.rate
        return self.kinds[int.from_bytes(digest[8:16], "big") % len(self.kinds)] if faulted else None


@dataclass
class RequestRecord:
    """One request: its id, the body of its first attempt, the kind, X-Request-Id and usability of each
    attempt, and its order."""

    id: str
    order: int
    body: Any
    attempts: list[str] = field(default_factory=list)
    headers: list[str | None] = field(default_factory=list)
    usable_attempts: list[bool] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return any(self.usable_attempts)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "order": self.order,
            "body": self.body,
            "attempts": list(self.attempts),
            "headers": list(self.headers),
            "usable": self.usable,
        }


class FaultServer:
    """The proxy, served by a thread of this process. `url` is its root (http://127.0.0.1:<port>)."""

    def __init__(self, upstream: str, api: str, plan: FaultPlan | None = None, port: int = 0) -> None:
        if api not in APIS:
            raise ValueError(f"api must be one of {APIS}, got {api!r}")
        self.upstream = upstream.rstrip("/")
        self.api = api
        self.plan = plan or FaultPlan()
        self.closing = threading.Event()  # releases hanging handlers at stop()
        self._lock = threading.Lock()
        self._records: dict[str, RequestRecord] = {}
        self._injected: Counter[str] = Counter()
        self._attempts = 0
        self._httpd = LocalServer(("127.0.0.1", port), _handler(self))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> FaultServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever(0.05)

    def stop(self) -> None:
        self.closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # ---- bookkeeping ------------------------------------------------------------------------------

    def begin(self, header: str | None, raw: bytes) -> tuple[RequestRecord, int, str | None]:
        """Record an attempt (`header`: its X-Request-Id); returns its request, its number there and the
        fault to inject (None: forward it)."""
        with self._lock:
            self._attempts += 1
            request_id = header.rsplit(".", 1)[0] if header else f"anonymous-{self._attempts}"
            record = self._records.get(request_id)
            if record is None:
                record = RequestRecord(request_id, len(self._records), _parse(raw))
                self._records[request_id] = record
            attempt = len(record.attempts)
            fault = self.plan.draw(raw, attempt)
            record.attempts.append(fault or CLEAN)
            record.headers.append(header)
            record.usable_attempts.append(False)
            if fault:
                self._injected[fault] += 1
            return record, attempt, fault

    def settle(self, record: RequestRecord, attempt: int, kind: str, usable: bool) -> None:
        """The outcome of one attempt of the request (a client that gave up may already be on its next):
        its final kind and whether a client can use it."""
        with self._lock:
            record.attempts[attempt] = kind
            record.usable_attempts[attempt] = usable

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.to_json() for r in sorted(self._records.values(), key=lambda r: r.order)]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            exhausted = Counter(r.attempts[-1] for r in self._records.values() if not r.usable)
            return {
                "requests": len(self._records),
                "attempts": self._attempts,
                "injected": dict(self._injected),
                "exhausted": dict(exhausted),
                "exhausted_requests": sum(exhausted.values()),
            }

    # ---- replies ----------------------------------------------------------------------------------

    def distort(self, kind: str, answer: Any) -> tuple[Any, bool]:
        """The upstream's JSON answer changed by an answer-level fault; and whether it stays usable."""
        if self.api == "openai":
            choices = list(answer["choices"])
            if kind == "fewer":
                kept = choices[: len(choices) // 2]
                return {**answer, "choices": kept}, bool(kept)
            if kind == "more":
                return {**answer, "choices": [*choices, dict(choices[-1])]}, True
            first = dict(choices[0])
            if "message" in first:
                first["message"] = {**first["message"], "content": None}
            else:
                first["text"] = None
            return {**answer, "choices": [first, *choices[1:]]}, False
        scores = list(answer["scores"] if isinstance(answer, dict) else answer)
        if kind == "fewer":
            scores = scores[:-1]
        elif kind == "more":
            scores = [*scores, 0.5]
        else:
            scores = [float("nan"), *scores[1:]] if scores else [float("nan")]
        return {"scores": scores}, False


@contextmanager
def fault_servers(upstream: str, api: str) -> Iterator[Callable[..., FaultServer]]:
    """start(**plan) -> a started FaultServer in front of `upstream`, for fast tests (a 5 s hang, no
    Retry-After wait unless the plan says otherwise); every server started is stopped on exit."""
    started: list[FaultServer] = []

    def start(**plan: Any) -> FaultServer:
        server = FaultServer(upstream, api, FaultPlan(**{"hang_s": 5.0, "retry_after": "0", **plan}))
        started.append(server.start())
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


class LocalServer(ThreadingHTTPServer):
    """A threading HTTP server for tests. The default backlog (5) overflows under a client's concurrent
    connects, and a connection dropped from it fails on the client without the server seeing it."""

    request_queue_size = 128
    daemon_threads = True


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _handler(faults: FaultServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: object) -> None:  # quiet
            pass

        def _reply(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def _client_gone(self) -> bool:
            """Has the client closed its end while we waited for the upstream? (It sends nothing more
            while it waits for a reply, so a readable connection with no data is a closed one.)"""
            try:
                readable, _, _ = select.select([self.connection], [], [], 0)
                return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
            except OSError:
                return True

        def _close_reply(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self._reply(code, body, {"Connection": "close", **(headers or {})})
            self.close_connection = True

        def do_GET(self) -> None:
            if self.path == "/faults/stats":
                self._reply(200, json.dumps(faults.stats()).encode())
            elif self.path == "/faults/requests":
                self._reply(200, json.dumps(faults.requests()).encode())
            else:
                self._forward(None)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            record, attempt, fault = faults.begin(self.headers.get("X-Request-Id"), raw)
            plan = faults.plan
            if fault == "http_5xx":
                self._close_reply(503, b'{"error": {"message": "injected: overloaded"}}')
            elif fault == "http_429":
                headers = {"Retry-After": plan.retry_after}
                self._close_reply(429, b'{"error": {"message": "injected: slow down"}}', headers)
            elif fault == "hang":
                faults.closing.wait(plan.hang_s)
                self.close_connection = True
            elif fault == "drop":
                self.close_connection = True
            elif fault == "truncated":
                body = b'{"choices": [{"text": "0", "index": 0}], "scores": [0.5, 0.5, 0.5]}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
            elif fault == "malformed":
                self._close_reply(200, b'{"choices": [{"text": "ans')
            elif fault == "error_200":
                self._close_reply(200, b'{"error": {"message": "injected: engine error", "code": 500}}')
            else:
                self._forward(raw, (record, attempt), fault)

        def _forward(
            self,
            raw: bytes | None,
            attempt: tuple[RequestRecord, int] | None = None,
            fault: str | None = None,
        ) -> None:
            if raw is not None and faults.plan.ignore_n and faults.api == "openai":
                request = json.loads(raw)
                request.pop("n", None)
                raw = json.dumps(request).encode()
            upstream = urllib.request.Request(
                faults.upstream + self.path,
                data=raw,
                headers={"Content-Type": "application/json"},
                method="POST" if raw is not None else "GET",
            )
            try:
                with urllib.request.urlopen(upstream, timeout=300) as response:
                    code, body = response.status, response.read()
            except urllib.error.HTTPError as error:
                code, body = error.code, error.read()
            except OSError as error:
                code, body = 502, json.dumps({"error": {"message": f"upstream: {error}"}}).encode()
            if attempt is None:
                self._reply(code, body)
                return
            if code != 200:
                kind, usable = f"upstream_{code}", False
            elif fault is None:
                kind, usable = CLEAN, True
            else:
                answer, usable = faults.distort(fault, json.loads(body))
                kind, code, body = fault, 200, json.dumps(answer).encode()  # NaN: the bare token NaN
            if self._client_gone():  # it timed out while the upstream answered: nothing reaches it
                faults.settle(*attempt, GONE, usable=False)
                self.close_connection = True
                return
            faults.settle(*attempt, kind, usable)  # before the reply: a client may retry as soon as it has it
            try:
                self._reply(code, body)
            except OSError:  # it gave up between the check and the write
                faults.settle(*attempt, GONE, usable=False)
                self.close_connection = True

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--api", choices=APIS, default="openai")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of the kinds")
    parser.add_argument("--hang-s", type=float, default=10.0)
    parser.add_argument("--retry-after", default="1")
    parser.add_argument("--ignore-n", action="store_true")
    args = parser.parse_args()
    plan = FaultPlan(
        rate=args.rate,
        seed=args.seed,
        kinds=tuple(args.kinds.split(",")),
        hang_s=args.hang_s,
        retry_after=args.retry_after,
        ignore_n=args.ignore_n,
    )
    server = FaultServer(args.upstream, args.api, plan, args.port)
    print(f"listening {server.url.rsplit(':', 1)[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
