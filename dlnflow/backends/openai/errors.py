"""Turning openai client exceptions into dlnflow errors that say what to check, without secrets.

The server's own message is kept (it often names the real problem) but passed through
:func:`dlnflow.backends.openai.retry.redact`, because some servers echo part of the key back.

>>> context_overflow("This model's maximum context length is 2048 tokens, however you requested "
...                  "2100 tokens (2099 in your prompt; 1 for the completion).", 4096).n_ctx
2048
>>> context_overflow("Requested tokens (3000) exceed context window of 2048", 4096).n_tokens
3000
>>> context_overflow("model not found", 4096) is None
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import openai

from dlnflow.backends.openai.retry import redact
from dlnflow.core.errors import BackendError, ContextOverflow

_CTX_LIMIT = re.compile(r"(?:maximum context length is|context window of|context length of)\s*(\d+)",
                        re.IGNORECASE)
_CTX_ASKED = re.compile(r"(?:you requested|requested tokens \(|resulted in)\s*(\d+)", re.IGNORECASE)
_CTX_WORDS = ("context length", "context window", "context_length_exceeded", "too many tokens")


class HTTPBackendError(BackendError):
    """A remote call failed with an HTTP status (kept in :attr:`status`)."""

    def __init__(self, message: str, status: int):
        self.status = status
        super().__init__(message)


class MissingLogprobs(BackendError):
    """The server answered, but without the log-probability of a token even with ``logit_bias`` on it."""


@dataclass(frozen=True)
class ErrorContext:
    """What an error message may name: endpoint, model, the key's variable (never the key)."""

    endpoint: str
    model: str
    key_env: str
    timeout: float
    secrets: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"ErrorContext(endpoint={self.endpoint!r}, model={self.model!r})"


def server_message(body: Any, fallback: str) -> str:
    """The human part of an error body: ``error.message``, ``message``, ``detail`` or the fallback."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            for key in ("message", "detail", "msg"):
                if isinstance(inner.get(key), str):
                    return inner[key]
        if isinstance(inner, str):
            return inner
        if isinstance(body.get("detail"), str):
            return body["detail"]
    if isinstance(body, str) and body.strip():
        return body.strip()
    return fallback


def context_overflow(message: str, n_ctx: int) -> ContextOverflow | None:
    """A :class:`ContextOverflow` when ``message`` says the prompt is too long, else None."""
    lowered = message.lower()
    limit = _CTX_LIMIT.search(message)
    if limit is None and not any(word in lowered for word in _CTX_WORDS):
        return None
    asked = _CTX_ASKED.search(message)
    n_limit = int(limit.group(1)) if limit else n_ctx
    n_asked = int(asked.group(1)) if asked else n_limit + 1
    return ContextOverflow(n_asked, n_limit, "reported by the server")


def _hint(ctx: ErrorContext, status: int) -> str:
    if status in (401, 403):
        return f"check the API key in the environment variable {ctx.key_env} and its permissions"
    if status == 404:
        return (f"check base_url ({ctx.endpoint}) and that the server knows model {ctx.model!r}; "
                "chat-only models need chat: true")
    if status == 429:
        return "the server keeps rate-limiting: lower models.<name>.concurrency or try again later"
    if status >= 500:
        return "the server keeps failing: check its logs, or try again later"
    return "check the model settings and the request the server rejected"


def status_error(ctx: ErrorContext, exc: openai.APIStatusError, endpoint: str, attempts: int,
                 n_ctx: int = 4096) -> BackendError:
    """The error to raise after an HTTP failure that will not be retried (again)."""
    message = redact(server_message(exc.body, exc.message), ctx.secrets)
    if exc.status_code in (400, 413, 422):
        overflow = context_overflow(message, n_ctx)
        if overflow is not None:
            return overflow
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    text = (f"{endpoint} request to {ctx.endpoint} (model {ctx.model!r}) failed with HTTP "
            f"{exc.status_code}{tries}: {message.strip()[:500]}; {_hint(ctx, exc.status_code)}")
    return HTTPBackendError(text, exc.status_code)


def connection_error(ctx: ErrorContext, exc: openai.APIConnectionError, endpoint: str,
                     attempts: int) -> BackendError:
    """The error to raise after timeouts or refused connections outlasted the retries."""
    tries = f"{attempts} attempt" + ("s" if attempts != 1 else "")
    if isinstance(exc, openai.APITimeoutError):
        return BackendError(
            f"{endpoint} request to {ctx.endpoint} (model {ctx.model!r}) timed out after "
            f"{ctx.timeout:g} s ({tries}); raise models.<name>.timeout, lower concurrency, "
            "or check that the server is not overloaded"
        )
    return BackendError(
        f"the server at {ctx.endpoint} is unreachable{_cause(ctx, exc)} after {tries}; check that it is "
        "running and that models.<name>.base_url is right"
    )


def _cause(ctx: ErrorContext, exc: BaseException) -> str:
    """`` (Kind: message)`` of the deepest cause with a message; a bare name when none has one
    (a connection reset by the server often carries no text)."""
    causes: list[BaseException] = []
    cause = exc.__cause__
    while cause is not None and len(causes) < 8:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    if not causes:
        return ""
    for c in reversed(causes):
        if str(c).strip():
            return f" ({redact(type(c).__name__ + ': ' + str(c).strip(), ctx.secrets)})"
    names = " <- ".join(dict.fromkeys(type(c).__name__ for c in causes))
    return f" ({names}: the connection was closed or reset without a reply)"
