"""The backends and the cache view a dry run plans with: nothing here ever calls a model.

- :func:`light_backend` (with :class:`~dlnflow.backends.llamacpp.vocab.VocabOnlyLlama`): a model's
  identity, context size and tokenizer
  (for the embedded model only its GGUF vocabulary is read, never the weights);
- :class:`PlanningBackend`: wraps such a backend and answers every request with a placeholder:

  - ``generate``: a text of about ``max_tokens / 2`` tokens, distinct per request (so samples
    never collapse into one by accident), except for a stated share of *rewrite* requests (see
    below), which come back empty;
  - ``classify``: class probabilities and ``score``: per-token log-probabilities, both drawn
    deterministically from a hash of the request (arbitrary but not constant, so candidates
    differ and the planned run has a winner to follow);

- :class:`PlanCache`: a read-only view of the real call cache plus the placeholders of the plan.

Rewrites that add no candidate. A backward model asked to improve an instruction it is shown
often writes it out again unchanged (or writes nothing usable); the optimizer then drops the
answer (duplicates are scored once, empty ones not at all), so the run scores fewer candidates
than it asked for. ``lost_rewrites`` is the share of rewrite requests the placeholder answers
with an empty text: the ``k``-th rewrite of the plan is lost when ``floor(k * share)`` steps up,
so with ``1/3`` the 3rd, 6th, 9th... are (spread evenly over the run, deterministic).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dlnflow.backends.llamacpp.vocab import VocabOnlyLlama
from dlnflow._util.numeric import softmax
from dlnflow.core.backend import OPERATIONS, Backend, Request, Result
from dlnflow.graph.templates import BACKWARD_LIBRARY
from dlnflow.runtime.cache import CallCache
from dlnflow.training import network


def light_backend(settings: dict[str, Any], base_dir: Path | None) -> Backend:
    """A backend for planning: the embedded model reads only its vocabulary; others are built as
    usual (building an OpenAI-compatible backend sends nothing)."""
    if settings.get("backend", "llamacpp") == "llamacpp":
        return VocabOnlyLlama.from_settings(settings, base_dir)
    return network.make_backend(settings, base_dir)  # looked up here so a test may replace it


def _assumed_capabilities(inner: Backend, probe: bool) -> frozenset[str]:
    """The backend's operations; a remote backend is not probed in a dry run (assumed able to score
    unless it is a chat endpoint)."""
    if probe or inner.identity().get("backend") != "openai":
        return frozenset(inner.capabilities)
    chat = bool(getattr(getattr(inner, "settings", None), "chat", False))
    return frozenset(op for op in OPERATIONS if not (chat and op == "score"))


# -- placeholders --------------------------------------------------------------------------------
def _units(text: str, n: int) -> list[float]:
    """``n`` numbers in [0, 1) determined by ``text``."""
    out: list[float] = []
    i = 0
    while len(out) < n:
        digest = hashlib.sha256(f"{i}:{text}".encode()).digest()
        out += [int.from_bytes(digest[j : j + 4], "little") / 2**32 for j in range(0, 32, 4)]
        i += 1
    return out[:n]


def _static_prefix(template: str) -> str:
    """The text a template always starts with (up to its first variable or tag)."""
    return template.split("{", 1)[0]


REWRITE_PREFIXES = tuple(_static_prefix(BACKWARD_LIBRARY[name]) for name in ("rewrite", "hidden_rewrite"))


def is_rewrite(request: Request) -> bool:
    """Whether ``request`` asks the backward model to rewrite an instruction it is shown."""
    return request.op == "generate" and request.prompt.startswith(REWRITE_PREFIXES)


def lost_at(k: int, share: float) -> bool:
    """Whether the ``k``-th rewrite (from 1) is one of the ``share`` that add no candidate.

    >>> [k for k in range(1, 10) if lost_at(k, 1 / 3)]
    [3, 6, 9]
    >>> [k for k in range(1, 5) if lost_at(k, 0.0)]
    []
    """
    return math.floor(k * share + 1e-9) > math.floor((k - 1) * share + 1e-9)


class PlanningBackend:
    """Wraps a backend: its identity, context and tokenizer, but placeholder answers and no model call.

    ``answered`` counts placeholder answers; ``rewrites`` and ``lost`` count rewrite requests and
    the ones answered empty (``lost_rewrites`` of them, see the module docstring).
    """

    def __init__(self, inner: Backend, probe: bool = True, lost_rewrites: float = 0.0):
        self.inner = inner
        self.lost_rewrites = lost_rewrites
        self.capabilities = _assumed_capabilities(inner, probe)
        self.completion_max = 0
        self.overflows = 0
        self.answered = 0
        self.rewrites = 0
        self.lost = 0
        self._bos: int | None = None

    def identity(self) -> dict[str, Any]:
        return self.inner.identity()

    @property
    def n_ctx(self) -> int:
        return self.inner.n_ctx

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def close(self) -> None:
        """Leaves the wrapped backend open: it belongs to whoever made it."""

    def _target_tokens(self, text: str) -> int:
        """Tokens of a target read after a context (no start-of-text token)."""
        if self._bos is None:
            self._bos = self.inner.count_tokens("")
        return max(self.inner.count_tokens(text) - self._bos, 1)

    def run(self, requests: list[Request]) -> list[Result]:
        self.answered += len(requests)
        return [self._placeholder(r) for r in requests]

    def _lose(self, r: Request) -> bool:
        if not is_rewrite(r):
            return False
        self.rewrites += 1
        lost = lost_at(self.rewrites, self.lost_rewrites)
        self.lost += lost
        return lost

    def _placeholder(self, r: Request) -> Result:
        n_prompt = self.inner.count_tokens(r.prompt)
        if n_prompt > self.n_ctx:
            self.overflows += 1
        tag = r.canonical_json()
        if r.op == "generate":
            k = max(1, math.ceil(r.max_tokens / 2))
            self.completion_max += r.max_tokens
            mark = hashlib.sha256(tag.encode()).hexdigest()[:6]
            text = "" if self._lose(r) else " ".join([f"draft{mark}"] + ["text"] * (k - 1))
            return {"text": text, "logprobs": None, "prompt_tokens": n_prompt, "completion_tokens": k}
        if r.op == "score":
            n = self._target_tokens(r.targets[0])
            lps = [-(0.1 + 2.0 * u) for u in _units(tag, n)]
            return {"logprobs": lps, "prompt_tokens": n_prompt + n, "completion_tokens": 0}
        raw = [-3.0 * u for u in _units(tag, len(r.targets))]
        return {"probs": softmax(raw), "logprobs": raw,
                "prompt_tokens": n_prompt + sum(self._target_tokens(t) for t in r.targets),
                "completion_tokens": 0}


class PlanCache:
    """A read-only view of the call cache plus the plan's own placeholder answers (in memory).

    ``remember=False`` plans a run that does not use the cache (``--no-cache``, ``--refresh``):
    then a repeated request is a new call again. ``made_up`` counts lookups answered with a
    placeholder remembered earlier in the plan (not with a real cached answer).
    """

    def __init__(self, store: CallCache | None, remember: bool = True):
        self.store = store
        self.remember = remember
        self.memory: dict[str, Result] = {}
        self.real: set[str] = set()
        self.real_prompt_tokens = 0
        self.real_completion_tokens = 0
        self.made_up = 0

    def get(self, key: str) -> Result | None:
        found = self.memory.get(key)
        if found is not None:
            self.made_up += key not in self.real
            return dict(found)
        hit = self.store.get(key) if self.store is not None else None
        if hit is not None:
            self.memory[key] = hit
            self.real.add(key)
            self.real_prompt_tokens += int(hit.get("prompt_tokens") or 0)
            self.real_completion_tokens += int(hit.get("completion_tokens") or 0)
            return dict(hit)
        return None

    def __contains__(self, key: str) -> bool:
        return key in self.memory or (self.store is not None and key in self.store)

    def put(self, key: str, result: Result, model: str = "") -> None:
        if self.remember:
            self.memory[key] = dict(result)

    def put_many(self, items: Iterable[tuple[str, Result]], model: str = "") -> None:
        for key, result in items:
            self.put(key, result, model)

    def close(self) -> None:
        """The store belongs to whoever opened it; nothing to do."""
