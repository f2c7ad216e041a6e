"""The one door to the models.

Every model call in dlnflow goes through :class:`Client`, which

1. looks the call up in the :class:`~dlnflow.cache.CallCache` by its content address,
2. de-duplicates identical requests (within a batch and across threads in flight),
3. checks the budget before spending anything,
4. sends what is left to the backend as one batch (the embedded backend batches,
   remote backends fan out with bounded concurrency),
5. stores successful results and keeps the accounting (real calls vs. saved by cache).

Cache modes: ``"use"`` (read and write), ``"refresh"`` (write only), ``"off"`` (neither).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from dlnflow.backends.base import Backend, Request, Result
from dlnflow.cache import CallCache, call_key
from dlnflow.errors import BudgetExceeded, ConfigError

CacheMode = Literal["use", "refresh", "off"]

CAPABILITY_ADVICE = {
    "score": "use the embedded 'llamacpp' backend or an OpenAI-compatible server whose completions "
    "endpoint accepts echo=True with logprobs (llama.cpp server, vLLM)",
    "classify": "use a backend that returns logprobs (llamacpp, or a completions endpoint with logprobs)",
    "generate": "every backend should generate; check the model settings",
}


@dataclass
class Usage:
    """Counters of one client's work. ``saved_*`` are tokens a cache hit did not spend."""

    backend_calls: int = 0
    cache_hits: int = 0
    deduplicated: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    saved_prompt_tokens: int = 0
    saved_completion_tokens: int = 0
    retries: int = 0

    @property
    def requests(self) -> int:
        return self.backend_calls + self.cache_hits

    @property
    def hit_rate(self) -> float:
        return self.cache_hits / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hit_rate"] = round(self.hit_rate, 4)
        return d


@dataclass(frozen=True)
class Budget:
    """Upper bounds on real (uncached) spending; ``None`` means unbounded."""

    max_calls: int | None = None
    max_tokens: int | None = None


@dataclass
class Client:
    """Routes requests to named models through the cache.

    ``models`` maps a spec's model name to a backend instance.
    """

    models: dict[str, Backend]
    cache: CallCache | None = None
    mode: CacheMode = "use"
    budget: Budget = field(default_factory=Budget)
    on_progress: Callable[[Usage], None] | None = None
    usage: Usage = field(default_factory=Usage)
    per_model: dict[str, Usage] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _inflight: dict[str, Future[Result]] = field(default_factory=dict, repr=False)
    _identities: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    # -- helpers -------------------------------------------------------------------------
    def backend(self, model: str) -> Backend:
        try:
            return self.models[model]
        except KeyError:
            raise ConfigError(f"no model named {model!r}; known: {', '.join(sorted(self.models))}") from None

    def identity(self, model: str) -> dict[str, Any]:
        if model not in self._identities:
            self._identities[model] = self.backend(model).identity()
        return self._identities[model]

    def label(self, model: str) -> str:
        ident = self.identity(model)
        return f"{ident.get('backend', '?')}:{ident.get('model', '?')}"

    def require(self, model: str, ops: Sequence[str], why: str) -> None:
        """Fail before spending anything if ``model`` lacks an operation ``why`` needs."""
        have = self.backend(model).capabilities
        for op in ops:
            if op not in have:
                raise ConfigError(
                    f"model {model!r} ({self.label(model)}) cannot '{op}', which {why} needs; "
                    + CAPABILITY_ADVICE.get(op, "")
                )

    def can(self, model: str, op: str) -> bool:
        return op in self.backend(model).capabilities

    def count_tokens(self, model: str, text: str) -> int:
        return self.backend(model).count_tokens(text)

    def n_ctx(self, model: str) -> int:
        return self.backend(model).n_ctx

    def key(self, model: str, request: Request) -> str:
        return call_key(self.identity(model), request)

    def is_cached(self, model: str, request: Request) -> bool:
        return self.cache is not None and self.mode == "use" and self.key(model, request) in self.cache

    # -- the door ------------------------------------------------------------------------
    def run(self, model: str, requests: Sequence[Request]) -> list[Result]:
        """Answer ``requests`` in order, from the cache where possible."""
        if not requests:
            return []
        keys = [self.key(model, r) for r in requests]
        results: dict[str, Result] = {}
        owned: dict[str, Request] = {}
        waits: dict[str, Future[Result]] = {}
        stats = self.per_model.setdefault(model, Usage())
        with self._lock:
            for key, req in zip(keys, requests, strict=True):
                if key in results or key in owned or key in waits:
                    self._count(stats, "deduplicated", 1)
                    continue
                if self.cache is not None and self.mode == "use":
                    hit = self.cache.get(key)
                    if hit is not None:
                        results[key] = hit
                        self._count(stats, "cache_hits", 1)
                        self._count(stats, "saved_prompt_tokens", int(hit.get("prompt_tokens", 0)))
                        self._count(stats, "saved_completion_tokens", int(hit.get("completion_tokens", 0)))
                        continue
                if key in self._inflight:
                    waits[key] = self._inflight[key]
                    self._count(stats, "deduplicated", 1)
                    continue
                owned[key] = req
            if owned:
                self._check_budget(owned.values())
                for key in owned:
                    self._inflight[key] = Future()
        if owned:
            self._call_backend(model, owned, results, stats)
        for key, fut in waits.items():
            results[key] = fut.result()
        if self.on_progress is not None:
            self.on_progress(self.usage)
        return [results[k] for k in keys]

    def _call_backend(
        self, model: str, owned: dict[str, Request], results: dict[str, Result], stats: Usage
    ) -> None:
        backend = self.backend(model)
        batch_keys = list(owned)
        try:
            answers = backend.run([owned[k] for k in batch_keys])
        except BaseException as exc:
            with self._lock:
                for key in batch_keys:
                    self._inflight.pop(key).set_exception(exc)
            raise
        label = self.label(model)
        with self._lock:
            for key, answer in zip(batch_keys, answers, strict=True):
                results[key] = answer
                if self.cache is not None and self.mode != "off":
                    self.cache.put(key, answer, model=label)
                self._count(stats, "backend_calls", 1)
                self._count(stats, "prompt_tokens", int(answer.get("prompt_tokens", 0)))
                self._count(stats, "completion_tokens", int(answer.get("completion_tokens", 0)))
                self._inflight.pop(key).set_result(answer)
            retries = int(getattr(backend, "retries", 0))
            self._count(stats, "retries", retries - stats.retries)

    def _count(self, stats: Usage, name: str, n: int) -> None:
        setattr(stats, name, getattr(stats, name) + n)
        setattr(self.usage, name, getattr(self.usage, name) + n)

    def _check_budget(self, pending: Any) -> None:
        pending = list(pending)
        b = self.budget
        if b.max_calls is not None and self.usage.backend_calls + len(pending) > b.max_calls:
            raise BudgetExceeded(
                f"the next {len(pending)} backend call(s) would exceed train.budget.max_calls="
                f"{b.max_calls} ({self.usage.backend_calls} spent); everything so far is cached - "
                "raise the budget (or pass --max-calls) and run the same command again to continue"
            )
        if b.max_tokens is not None:
            spent = self.usage.prompt_tokens + self.usage.completion_tokens
            if spent >= b.max_tokens:
                raise BudgetExceeded(
                    f"train.budget.max_tokens={b.max_tokens} reached ({spent} tokens spent); everything so "
                    "far is cached - raise the budget and run the same command again to continue"
                )

    def close(self) -> None:
        for backend in self.models.values():
            backend.close()
