"""A local stand-in for an OpenAI-compatible server: the part of the legacy completions API medtune's ``openai:``
backend uses (``GET /v1/models``, ``POST /v1/completions``, and ``POST /v1/chat/completions`` for chat), on
127.0.0.1 with a free port, in a thread.

What the server answers is the test's business: ``choices_for(body)`` turns a request body into the response's
``choices`` (the tests serve the tiny model in process, or a scripted stand-in for an LLM). Every request body is
kept, so a test can check what medtune sent.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Choices = Callable[[dict[str, Any]], list[dict[str, Any]]]


def prompts_of(body: dict[str, Any]) -> list[str]:
    """The prompts of a completions request (one string or a list)."""
    return body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]


def _handler(choices_for: Choices, model_id: str, requests: list[dict[str, Any]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": model_id, "object": "model"}]})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests.append(body)
            if self.path not in ("/v1/completions", "/v1/chat/completions"):
                self._send(404, {"error": "not found"})
                return
            kind = "chat.completion" if self.path.endswith("chat/completions") else "text_completion"
            self._send(200, {"object": kind, "model": body.get("model"), "choices": choices_for(body)})

        def log_message(self, *args):
            pass

    return Handler


@contextlib.contextmanager
def completions_server(choices_for: Choices, model_id: str) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Serve until the block ends; yields the base URL (``http://127.0.0.1:PORT/v1``) and the request bodies."""
    requests: list[dict[str, Any]] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(choices_for, model_id, requests))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
