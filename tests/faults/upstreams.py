"""What the fault server proxies to in tests: stub executor and RM services (fast tier, no model), and
the bootstrap executor served over the OpenAI completions API with Hugging Face `generate` (slow tier:
the main venv has no vLLM for `planlift.executors.serve`)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.faults.server import LocalServer

Answer = Callable[[str, Any, bytes], tuple[int, Any]]  # (path, JSON body, raw body) -> (status, JSON answer)


class JsonServer:
    """A JSON-over-HTTP server on 127.0.0.1 in a thread of this process: POSTs are answered by `answer`,
    every GET by {"status": "ok"} (a health check)."""

    def __init__(self, answer: Answer) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: object) -> None:  # quiet
                pass

            def _reply(self, code: int, payload: Any) -> None:
                body = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._reply(200, {"status": "ok"})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._reply(*answer(self.path, json.loads(raw), raw))

        self._httpd = LocalServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> JsonServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> JsonServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def stub_completions(path: str, body: Any, raw: bytes) -> tuple[int, Any]:
    """An OpenAI completions/chat server that answers choice i with the text "<i>"."""
    chat = path.endswith("chat/completions")
    choices = [
        {"index": i, "message": {"role": "assistant", "content": str(i)}}
        if chat
        else {"index": i, "text": str(i)}
        for i in range(body.get("n", 1))
    ]
    return 200, {"object": "text_completion", "choices": choices}


def stub_score(problem: str) -> float:
    """The stub RM's score of an item: a function of its problem text, in {0, 0.25, ..., 1}."""
    return sum(map(ord, problem)) % 5 / 4


def stub_scores(path: str, body: Any, raw: bytes) -> tuple[int, Any]:
    """An RM service on the authors' contract that scores each item by `stub_score`."""
    return 200, {"scores": [stub_score(item["problem"]) for item in body["items"]]}


class ModelCompletions:
    """`/v1/completions` from a causal LM checkpoint (one request at a time). Sampling is seeded by the
    request body, so the same request gets the same answer whatever order concurrent requests arrive in."""

    def __init__(self, checkpoint: str) -> None:
        from planlift.models.loading import load_model_and_tokenizer

        self.model, self.tokenizer = load_model_and_tokenizer(checkpoint, "executor checkpoint")
        self.model.eval()
        self._lock = threading.Lock()

    def __call__(self, path: str, body: Any, raw: bytes) -> tuple[int, Any]:
        import torch

        from planlift.generation import generate

        if not path.endswith("/completions") or path.endswith("chat/completions"):
            return 404, {"error": {"message": f"no route {path}"}}
        n, temperature = int(body.get("n", 1)), float(body.get("temperature", 1.0))
        with self._lock:
            torch.manual_seed(int.from_bytes(hashlib.sha256(raw).digest()[:8], "big") % 2**63)
            out = generate(
                self.model,
                self.tokenizer,
                [body["prompt"]],
                n,
                do_sample=temperature > 0,
                temperature=temperature,
                top_p=float(body.get("top_p", 1.0)),
                max_new_tokens=int(body.get("max_tokens", 16)),
                stop=list(body.get("stop") or ()),
            )
        choices = [{"index": i, "text": text, "finish_reason": "stop"} for i, text in enumerate(out.texts)]
        return 200, {"object": "text_completion", "model": body.get("model"), "choices": choices}
