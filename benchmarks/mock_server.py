"""A mock OpenAI-compatible server with a fixed latency, for measuring client concurrency.

Every ``POST .../completions`` (or ``.../chat/completions``) waits ``--latency`` seconds and then
answers a small fixed completion, so a client's throughput can be compared with the ideal
``concurrency / latency``. ``GET /stats`` reports how many requests arrived and the most that were
in flight at once; ``GET /reset`` zeroes both. It listens on 127.0.0.1 only, serves each
connection on its own thread (keep-alive, a deep listen backlog) and stops after ``--lifetime``
seconds at the latest.

Run: ``python benchmarks/mock_server.py --latency 0.2`` prints ``PORT <n>`` once it listens.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Stats:
    """Thread-safe counters of the requests served."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def enter(self) -> None:
        with self.lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def snapshot(self, reset: bool = False) -> dict[str, int]:
        with self.lock:
            snap = {"requests": self.requests, "max_in_flight": self.max_in_flight}
            if reset:
                self.requests = self.max_in_flight = 0
            return snap


def completion_body(model: str, chat: bool) -> dict[str, Any]:
    """The fixed answer: one short completion with token usage."""
    usage = {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10}
    if chat:
        return {"id": "mock", "object": "chat.completion", "created": 0, "model": model, "usage": usage,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "mock answer"}}]}
    return {"id": "mock", "object": "text_completion", "created": 0, "model": model, "usage": usage,
            "choices": [{"index": 0, "text": " mock answer", "logprobs": None, "finish_reason": "length"}]}


class MockServer(ThreadingHTTPServer):
    """Threaded HTTP server with a listen backlog deep enough for bursts of connections."""

    daemon_threads = True
    request_queue_size = 512

    def __init__(self, port: int, latency: float) -> None:
        self.latency = latency
        self.stats = Stats()
        super().__init__(("127.0.0.1", port), Handler)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server: MockServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a line per request on stderr would be timed along with the server."""

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": "mock", "object": "model"}]})
        elif self.path in ("/stats", "/reset"):
            self._json(200, self.server.stats.snapshot(reset=self.path == "/reset"))
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        size = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(size) or b"{}")
        if not self.path.endswith("completions"):
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        self.server.stats.enter()
        try:
            time.sleep(self.server.latency)
            self._json(200, completion_body(str(body.get("model", "mock")), "chat" in self.path))
        finally:
            self.server.stats.leave()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds before each answer")
    parser.add_argument("--lifetime", type=float, default=600.0, help="stop after this many seconds")
    args = parser.parse_args(argv)
    server = MockServer(args.port, args.latency)
    timer = threading.Timer(args.lifetime, server.shutdown)
    timer.daemon = True
    timer.start()
    print(f"PORT {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
