"""A fault-injecting HTTP proxy for tests of the ``openai`` backend (stdlib only, 127.0.0.1 only).

It sits in front of a real OpenAI-compatible server and, for POSTs to the model endpoints,
injects faults with a seeded random generator:

- ``rate_limit``: HTTP 429 with a ``Retry-After`` header;
- ``server_error``: HTTP 500; ``unavailable``: HTTP 503 (both with a JSON error body);
- ``reset``: the TCP connection is reset before any answer;
- ``slow``: the request is held longer than the client's timeout, then the connection closes;
- ``cut``: the server's real answer announced in full (``Content-Length``), but the connection
  drops half-way through its body;
- ``truncated``: a complete HTTP answer whose JSON body is the first half of the server's;
- ``garbled``: a complete HTTP answer whose JSON body has its quotes and colons turned to junk.

Only ``cut``, ``truncated`` and ``garbled`` reach the server (they need its answer); the other faults are
answered by the proxy alone. Every other request passes through untouched. Each request is
faulted with probability ``rate``; the kind is drawn from a shuffled deck holding every kind
``weights[kind]`` times (refilled when empty), so over a run the mix follows the weights and a
handful of faults already covers every kind. ``clean_first`` lets that many eligible requests
through before faults start (to let a run earn some results first); ``limit`` caps the number of
faults injected in all.

The server is threaded and bounded: at most ``max_workers`` requests are handled at once (one
connection per request: the proxy answers ``Connection: close``), further ones wait in the
listen queue.

``isolate=True`` makes a llama.cpp server's answers independent of the requests before them.
That server reuses the longest prompt prefix it still holds from its previous request, and its
numbers depend slightly on that reuse (measured: the same request after different ones differed
by up to 0.025 nats, enough to flip a class probability sitting at 0.50 or a sampled token);
retries reorder requests, so without this a faulted run and a clean one could drift apart for
reasons of the server's own. Isolated, the proxy forwards one request at a time and sends the
server a one-token request (``"#"``) just before each, so every prompt is evaluated after the
same prefix.

>>> plan = FaultPlan(rate=1.0, kinds=("server_error", "reset"), seed=1)
>>> draw = plan.drawer()
>>> sorted(draw() for _ in range(4))
['reset', 'reset', 'server_error', 'server_error']
>>> FaultPlan(rate=0.0).drawer()()
>>> once = FaultPlan(rate=1.0, kinds=("slow",), limit=1).drawer()
>>> [once(), once()]
['slow', None]
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

FAULTS: tuple[str, ...] = ("rate_limit", "server_error", "unavailable", "reset", "slow", "cut", "truncated",
                           "garbled")
FAULTED_PATHS: tuple[str, ...] = ("/completions", "/chat/completions")
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                         "proxy-authorization", "proxy-authenticate", "host", "content-length"})
_STATUS = {"rate_limit": 429, "server_error": 500, "unavailable": 503}


@dataclass(frozen=True)
class FaultPlan:
    """Which faults to inject, how often, and with what timing.

    ``rate``: probability that an eligible request is faulted; ``kinds`` and ``weights`` the mix;
    ``retry_after`` the seconds a 429 asks for; ``slow_seconds`` how long a ``slow`` fault holds
    the request (set it above the client's timeout); ``clean_first`` eligible requests pass before
    any fault; ``limit`` the most faults injected (``None``: no cap).
    """

    rate: float = 0.2
    kinds: tuple[str, ...] = FAULTS
    weights: Mapping[str, int] = field(default_factory=dict)
    seed: int = 0
    retry_after: float = 0.7
    slow_seconds: float = 3.0
    clean_first: int = 0
    limit: int | None = None

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULTS)}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], got {self.rate}")

    def drawer(self) -> Callable[[], str | None]:
        """A function giving, per eligible request, the fault kind to inject or ``None``."""
        rng = random.Random(self.seed)
        deck: list[str] = []
        seen = injected = 0

        def draw() -> str | None:
            nonlocal seen, injected
            seen += 1
            if seen <= self.clean_first or (self.limit is not None and injected >= self.limit):
                return None
            if not self.kinds or rng.random() >= self.rate:
                return None
            if not deck:
                deck.extend(k for k in self.kinds for _ in range(max(0, self.weights.get(k, 1))))
                rng.shuffle(deck)
            if not deck:
                return None
            injected += 1
            return deck.pop()

        return draw


@dataclass(frozen=True)
class Event:
    """One request the proxy handled: when, where to, its body and ``Authorization`` header, and
    the fault injected (``None``: passed through)."""

    at: float
    path: str
    fault: str | None
    body: bytes
    authorization: str = ""


class _BoundedServer(ThreadingHTTPServer):
    """A threading server that handles at most ``limit`` requests at a time."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], limit: int):
        self._slots = threading.BoundedSemaphore(limit)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self._slots.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class FaultProxy:
    """The proxy: ``FaultProxy(upstream_base_url, plan)``; use :attr:`base_url` as the client's base URL.

    ``counts`` holds faults injected per kind; ``forwarded`` requests sent to the server;
    ``resets_sent`` the prefix resets of ``isolate`` mode (one per ``isolated`` model request; other
    routes, such as tokenize, pass unisolated); ``events`` one :class:`Event` per
    request; ``max_active`` the most requests handled at once. :meth:`set_plan` swaps the plan
    (and restarts its random sequence) while running.
    """

    def __init__(self, upstream: str, plan: FaultPlan | None = None, max_workers: int = 8,
                 upstream_timeout: float = 600.0, isolate: bool = False):
        parts = urlsplit(upstream)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream must look like http://127.0.0.1:PORT/v1, got {upstream!r}")
        self.upstream_host, self.upstream_port = parts.hostname, parts.port
        self.prefix = parts.path.rstrip("/")
        self.upstream_timeout = upstream_timeout
        self.isolate = isolate
        self.counts: Counter[str] = Counter()
        self.forwarded = 0
        self.resets_sent = 0
        self.isolated = 0
        self.active = 0
        self.max_active = 0
        self._upstream_lock = threading.Lock()
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self.set_plan(plan or FaultPlan(rate=0.0))
        self._httpd = _BoundedServer(("127.0.0.1", 0), self._handler(), max_workers)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="faultproxy", daemon=True)
        self._thread.start()

    # -- public ------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{self.prefix}"

    def set_plan(self, plan: FaultPlan) -> None:
        with self._lock:
            self.plan = plan
            self._draw = plan.drawer()

    @property
    def injected(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """One line: faults per kind, total requests and requests forwarded to the server."""
        kinds = ", ".join(f"{k} {self.counts[k]}" for k in FAULTS if self.counts[k]) or "none"
        return (f"faults injected: {kinds} (total {self.injected}); requests {len(self.events)}, "
                f"forwarded {self.forwarded}")

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------
    def _decide(self, path: str, body: bytes, eligible: bool, authorization: str) -> str | None:
        with self._lock:
            fault = self._draw() if eligible else None
            if fault is not None:
                self.counts[fault] += 1
            self.events.append(Event(time.monotonic(), path, fault, body, authorization))
            return fault

    def _forward(self, method: str, path: str, headers: Mapping[str, str], body: bytes
                 ) -> tuple[int, list[tuple[str, str]], bytes]:
        sent = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
        if not (self.isolate and method == "POST" and path.endswith(FAULTED_PATHS)):
            return self._upstream(method, path, sent, body)
        with self._upstream_lock:
            self._reset_prefix(sent, body)
            with self._lock:
                self.isolated += 1
            return self._upstream(method, path, sent, body)

    def _upstream(self, method: str, path: str, headers: Mapping[str, str], body: bytes
                  ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port,
                                          timeout=self.upstream_timeout)
        try:
            conn.request(method, path, body=body if method != "GET" else None, headers=dict(headers))
            resp = conn.getresponse()
            data = resp.read()
            kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
            with self._lock:
                self.forwarded += 1
            return resp.status, kept, data
        finally:
            conn.close()

    def _reset_prefix(self, headers: Mapping[str, str], body: bytes) -> None:
        """One tiny completion, so that the next prompt shares (almost) no prefix with earlier ones."""
        try:
            model = json.loads(body).get("model", "")
        except ValueError:
            model = ""
        reset = json.dumps({"model": model, "prompt": "#", "max_tokens": 1, "temperature": 0.0}).encode()
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port,
                                          timeout=self.upstream_timeout)
        try:
            conn.request("POST", f"{self.prefix}/completions", body=reset,
                         headers={**headers, "Content-Type": "application/json"})
            conn.getresponse().read()
            with self._lock:
                self.resets_sent += 1
        finally:
            conn.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: a slot is freed by each answer
            timeout = 60.0

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def _serve(self, method: str) -> None:
                with proxy._lock:
                    proxy.active += 1
                    proxy.max_active = max(proxy.max_active, proxy.active)
                try:
                    self._handle(method)
                finally:
                    with proxy._lock:
                        proxy.active -= 1

            def _handle(self, method: str) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size) if size else b""
                eligible = method == "POST" and self.path.endswith(FAULTED_PATHS)
                fault = proxy._decide(self.path, body, eligible, self.headers.get("Authorization", ""))
                if fault == "reset":
                    self._reset()
                    return
                if fault == "slow":
                    time.sleep(proxy.plan.slow_seconds)
                    self.close_connection = True
                    return
                if fault in _STATUS:
                    self._error(fault)
                    return
                try:
                    status, headers, data = proxy._forward(method, self.path, dict(self.headers), body)
                except OSError as exc:
                    self._send(502, [("Content-Type", "application/json")],
                               json.dumps({"error": {"message": f"upstream failed: {exc}"}}).encode())
                    return
                if fault == "cut":
                    self._send(status, headers, data[: len(data) // 2], declared=len(data))
                    self._reset()
                    return
                if fault == "truncated":
                    data = data[: max(1, len(data) // 2)]
                elif fault == "garbled":
                    data = garble(data)
                self._send(status, headers, data)

            def _error(self, fault: str) -> None:
                status = _STATUS[fault]
                headers = [("Content-Type", "application/json")]
                if fault == "rate_limit":
                    headers.append(("Retry-After", f"{proxy.plan.retry_after:g}"))
                message = {"error": {"message": f"injected fault: {fault}", "type": fault, "code": status}}
                self._send(status, headers, json.dumps(message).encode())

            def _reset(self) -> None:
                """Close the socket with SO_LINGER 0: the client sees a reset, not an answer."""
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            def _send(self, status: int, headers: list[tuple[str, str]], data: bytes,
                      declared: int | None = None) -> None:
                try:
                    self.send_response(status)
                    for key, value in headers:
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data) if declared is None else declared))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up

        return Handler


def garble(data: bytes) -> bytes:
    """``data`` with double quotes turned to single ones and colons to ``=`` (no longer JSON).

    >>> garble(b'{"a": 1, "b": "x"}')
    b"{'a'= 1, 'b'= 'x'}"
    """
    return data.replace(b'"', b"'").replace(b":", b"=") or b"="
