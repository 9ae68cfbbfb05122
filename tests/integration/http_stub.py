"""A local HTTP server for tests that play an OpenAI-compatible endpoint."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def reply_json(
    handler: BaseHTTPRequestHandler, status: int, body: dict | str, headers: dict | None = None
) -> None:
    """Send ``body`` (a dict as JSON, or a raw string) with ``status`` and extra ``headers``."""
    data = (body if isinstance(body, str) else json.dumps(body)).encode()
    handler.send_response(status)
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that timed out
        handler.wfile.write(data)


def chat_reply(text: str) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


def start(handler_class: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    """Serve on a free local port in a daemon thread; returns the server and its /v1 URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"
