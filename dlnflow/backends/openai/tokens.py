"""Token ids of short texts (class verbalizers) for the ``openai`` backend.

Class scoring with ``logit_bias`` (see :mod:`dlnflow.backends.openai.classify`) needs the id of
each verbalizer's token in the *server's* vocabulary. Where they come from, tried in order:

- the OpenAI API: ``tiktoken``'s encoding for the model, when tiktoken is installed and knows the
  model (it is an optional dependency; without it, classification falls back to the plain
  next-token table);
- llama-cpp-python's server: ``POST /extras/tokenize`` with ``{"input": text}``;
- llama.cpp's own server and vLLM: ``POST /tokenize``. One body serves both (llama.cpp reads
  ``content``/``add_special``, vLLM ``prompt``/``model``/``add_special_tokens``; each ignores the
  other's keys).

Servers that add a BOS token to every tokenization (llama-cpp-python does) are handled by
tokenizing the empty text once and removing that prefix. The first route that answers is
remembered; if none does, :meth:`RemoteTokenizer.tokens` returns ``None`` for every text.
Answers are kept in memory (a run has few distinct verbalizers), so tokenizing costs one request
per distinct text per backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

Post = Callable[[str, dict[str, Any]], Awaitable[Any]]
"""``post(url, body)`` -> parsed JSON answer, or raises on any failure."""


def strip_prefix(tokens: list[int], prefix: list[int]) -> list[int]:
    """``tokens`` without ``prefix`` (the BOS a server adds to every tokenization).

    >>> strip_prefix([2, 8438], [2]), strip_prefix([8438], [2]), strip_prefix([5], [])
    ([8438], [8438], [5])
    """
    if prefix and tokens[: len(prefix)] == prefix:
        return tokens[len(prefix):]
    return tokens


def token_list(answer: Any) -> list[int] | None:
    """The ``tokens`` list of a tokenize answer, or None when the answer is not one.

    >>> token_list({"tokens": [2, 5]}), token_list({"choices": []}), token_list({"tokens": ["a"]})
    ([2, 5], None, None)
    """
    if not isinstance(answer, dict):
        return None
    tokens = answer.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
        return None
    return tokens


def server_root(base_url: str) -> str:
    """The server's root URL: ``base_url`` without a trailing ``/v1``.

    >>> server_root("http://127.0.0.1:8000/v1"), server_root("http://h/api")
    ('http://127.0.0.1:8000', 'http://h/api')
    """
    return base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url


class RemoteTokenizer:
    """Token ids of texts in a remote model's vocabulary (see the module docstring)."""

    def __init__(self, base_url: str, model: str, official: bool, post: Post):
        self._root = server_root(base_url)
        self._model = model
        self._official = official
        self._post = post
        self._route: Callable[[str], Awaitable[list[int] | None]] | None = None
        self._prefix: list[int] = []
        self._known: dict[str, list[int] | None] = {}
        self._lock = asyncio.Lock()
        self.available: bool | None = None

    async def tokens(self, text: str) -> list[int] | None:
        """The ids of ``text`` (no BOS), or None when no tokenizer is reachable.

        Concurrent callers wait for one another, so each text is asked for once.
        """
        if text in self._known:
            return self._known[text]
        async with self._lock:
            if text not in self._known:
                self._known[text] = await self._lookup(text)
            return self._known[text]

    async def _lookup(self, text: str) -> list[int] | None:
        if self.available is None:
            await self._discover()
        if not self.available or self._route is None:
            return None
        found = await self._route(text)
        return None if found is None else strip_prefix(found, self._prefix)

    async def _discover(self) -> None:
        """Find the first route that answers; learn the prefix it adds to every text."""
        routes = [self._tiktoken] if self._official else [self._extras, self._plain]
        for route in routes:
            empty = await route("")
            if empty is not None:
                self._route, self._prefix, self.available = route, empty, True
                return
        self.available = False

    async def _extras(self, text: str) -> list[int] | None:
        return await self._ask(f"{self._root}/extras/tokenize", {"input": text, "model": self._model})

    async def _plain(self, text: str) -> list[int] | None:
        body = {"content": text, "add_special": False, "prompt": text, "model": self._model,
                "add_special_tokens": False}
        return await self._ask(f"{self._root}/tokenize", body)

    async def _ask(self, url: str, body: dict[str, Any]) -> list[int] | None:
        try:
            return token_list(await self._post(url, body))
        except (httpx.HTTPError, ValueError):
            return None

    async def _tiktoken(self, text: str) -> list[int] | None:
        try:
            import tiktoken  # optional: only for the OpenAI API's own models

            encoding = tiktoken.encoding_for_model(self._model)
        except Exception:  # noqa: BLE001 - not installed, unknown model, or its files cannot be fetched
            return None
        return list(encoding.encode(text))
