"""Pytest plugin: HTTP servers for the ``openai`` backend's tests, all on 127.0.0.1.

- ``llama_server`` (session): the real OpenAI-compatible server of llama-cpp-python
  (``python -m llama_cpp.server``) serving the embedded GGUF on a free port; yields its base URL.
- ``fake_openai`` (function): :class:`FakeOpenAI`, a tiny scripted stand-in that answers the
  completions and chat endpoints in-process and records every request it got.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

SERVER_START_TIMEOUT = 180.0
SERVER_STOP_TIMEOUT = 15.0
SERVER_MODEL = "gemma-3-270m"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the real llama.cpp server -------------------------------------------------------------------
def _tail(path: Path, n: int = 25) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no output)"
    return "\n".join(lines[-n:]) or "(no output)"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server we started (by its PID), then kill it if it lingers."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=SERVER_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=SERVER_STOP_TIMEOUT)


@pytest.fixture(scope="session")
def llama_server(gguf_path: Path) -> Iterator[str]:
    """Base URL (``http://127.0.0.1:PORT/v1``) of a real llama.cpp server with the embedded model."""
    try:
        import llama_cpp.server.app  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"llama-cpp-python's server extra is not installed ({exc}); "
                    "pip install 'llama-cpp-python[server]'")
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path), "--model_alias", SERVER_MODEL,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2",
           "--n_threads_batch", "2"]
    with tempfile.TemporaryDirectory(prefix="dlnflow-llama-server-") as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}/v1"
            deadline = time.monotonic() + SERVER_START_TIMEOUT
            while not _answers(base + "/models"):
                if proc.poll() is not None:
                    pytest.fail(f"llama.cpp server exited with code {proc.returncode} before answering; "
                                f"its output ends with:\n{_tail(log)}")
                if time.monotonic() > deadline:
                    pytest.fail(f"llama.cpp server did not answer {base}/models within "
                                f"{SERVER_START_TIMEOUT:g} s; its output ends with:\n{_tail(log)}")
                time.sleep(0.25)
            yield base
        finally:
            _stop(proc)


# -- the scripted fake ---------------------------------------------------------------------------
@dataclass
class Reply:
    """One scripted answer: HTTP status, JSON body (or ``raw`` bytes), extra headers, a delay before answering."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: bytes | None = None


@dataclass
class Seen:
    """One request the fake received."""

    path: str
    body: dict[str, Any]
    headers: dict[str, str]


def _pieces(text: str) -> list[tuple[int, str]]:
    """Whitespace-led word pieces of ``text`` with their character offsets (the fake's tokenizer)."""
    return [(m.start(), m.group(0)) for m in re.finditer(r"\s*\S+|\s+$", text)]


def default_completion(body: dict[str, Any], top: dict[str, float]) -> dict[str, Any]:
    """A plausible completions answer: echo pieces at -0.5 each, next-token table ``top``, text 'ok'."""
    prompt = str(body.get("prompt", ""))
    n_prompt = len(_pieces(prompt))
    logprobs = None
    text = " ok"
    if body.get("echo"):
        pieces = _pieces(prompt) + [(len(prompt), text)]
        logprobs = {"tokens": [p for _, p in pieces], "text_offset": [o for o, _ in pieces],
                    "token_logprobs": [None] + [-0.5] * (len(pieces) - 1),
                    "top_logprobs": [None] + [{p: -0.5} for _, p in pieces[1:]]}
        text = prompt + text
    elif body.get("logprobs"):
        logprobs = {"tokens": [" ok"], "text_offset": [len(prompt)], "token_logprobs": [-0.1],
                    "top_logprobs": [dict(top)]}
    return {"id": "cmpl-fake", "object": "text_completion", "created": 0, "model": body.get("model", "m"),
            "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": "length"}],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": 1, "total_tokens": n_prompt + 1}}


def default_chat(body: dict[str, Any], top: dict[str, float]) -> dict[str, Any]:
    """A plausible chat answer: content 'ok', first-token alternatives from ``top``."""
    logprobs = None
    if body.get("logprobs"):
        alts = [{"token": k.strip(), "logprob": v, "bytes": None} for k, v in top.items()]
        logprobs = {"content": [{"token": "ok", "logprob": -0.1, "bytes": None, "top_logprobs": alts}]}
    return {"id": "chat-fake", "object": "chat.completion", "created": 0, "model": body.get("model", "m"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                         "logprobs": logprobs, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


class _Server(ThreadingHTTPServer):
    """A listen backlog deep enough for a client that opens dozens of connections at once."""

    request_queue_size = 128


class FakeOpenAI:
    """A scripted OpenAI-compatible server on 127.0.0.1 for unit tests.

    Replies come from ``script`` (a queue of :class:`Reply`, consumed in arrival order), then
    from ``respond(path, body)`` if set, else from :func:`default_completion` / :func:`default_chat`.

    Requests outside ``/v1/`` (tokenize routes) are kept apart in ``side`` and answered 404, unless
    ``vocab`` maps texts to token ids: then ``/extras/tokenize`` answers like llama-cpp-python's
    server (a BOS id 2 first; unknown texts get one id per character from 1000 up).
    """

    def __init__(self) -> None:
        self.script: deque[Reply] = deque()
        self.respond: Callable[[str, dict[str, Any]], Reply] | None = None
        self.top: dict[str, float] = {" Yes": -0.2, " No": -1.8, " maybe": -3.0}
        self.seen: list[Seen] = []
        self.side: list[Seen] = []
        self.vocab: dict[str, int] | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _tokenize(self, body: dict[str, Any]) -> Reply:
        text = str(body.get("input", ""))
        if self.vocab is None:
            return Reply(404, {"detail": "Not Found"})
        ids = [self.vocab[text]] if text in self.vocab else [1000 + ord(c) for c in text]
        return Reply(body={"tokens": [2, *ids]})

    def _next(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        if not path.startswith("/v1/"):
            with self._lock:
                self.side.append(Seen(path, body, headers))
            return self._tokenize(body) if path == "/extras/tokenize" else Reply(404, {"detail": "Not Found"})
        with self._lock:
            self.seen.append(Seen(path, body, headers))
            if self.script:
                return self.script.popleft()
        if self.respond is not None:
            return self.respond(path, body)
        if path.endswith("/chat/completions"):
            return Reply(body=default_chat(body, self.top))
        return Reply(body=default_completion(body, self.top))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are separate writes

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(size) or b"{}")
                reply = fake._next(self.path, body, {k.lower(): v for k, v in self.headers.items()})
                with fake._lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    time.sleep(reply.delay)
                    self._send(reply)
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

            def _send(self, reply: Reply) -> None:
                data = reply.raw if reply.raw is not None else json.dumps(
                    reply.body if reply.body is not None else {}).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        return Handler


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A fresh scripted fake server per test, shut down afterwards."""
    fake = FakeOpenAI()
    yield fake
    fake.close()
