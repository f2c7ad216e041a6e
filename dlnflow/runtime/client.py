"""The one door to the models.

Every model call in dlnflow goes through :class:`Client`, which

1. looks the call up in the :class:`~dlnflow.runtime.cache.CallCache` by its content address (the
   local tier, then in one batch the shared remote tier when there is one),
2. de-duplicates identical requests (within a batch and across threads in flight),
3. checks the budget before spending anything,
4. sends what is left to the backend as one batch (the embedded backend batches,
   remote backends fan out with bounded concurrency),
5. stores each successful result as soon as the backend has it (so a failed or interrupted
   batch keeps the calls that finished) and keeps the accounting (real calls vs. saved by cache).

Cache modes: ``"use"`` (read and write), ``"refresh"`` (write only), ``"off"`` (neither).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from dlnflow.core.backend import Backend, Request, Result
from dlnflow.core.errors import BackendError, BudgetExceeded, ConfigError
from dlnflow.runtime.cache import CallCache, canonical_json, key_from_identity_json
from dlnflow.runtime.timing import Timing, counter_delta

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
    """Upper bounds on real (uncached) spending; ``None`` means unbounded.

    ``max_calls`` refuses a batch whose new calls would exceed it. ``max_tokens`` by default
    refuses new calls once the spent tokens reached it; with ``predict_tokens`` it refuses a batch
    whose predicted tokens would cross it (each request's prompt and targets counted with the
    backend's ``count_tokens``, plus ``max_tokens`` for a generation), so spending never passes it.
    """

    max_calls: int | None = None
    max_tokens: int | None = None
    predict_tokens: bool = False


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
    timing: Timing = field(default_factory=Timing)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _inflight: dict[str, Future[Result]] = field(default_factory=dict, repr=False)
    _identities: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    _identity_jsons: dict[str, str] = field(default_factory=dict, repr=False)
    _reserved: int = field(default=0, repr=False)
    _reserved_tokens: dict[str, int] = field(default_factory=dict, repr=False)

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

    def _identity_json(self, model: str) -> str:
        text = self._identity_jsons.get(model)
        if text is None:
            text = self._identity_jsons[model] = canonical_json(self.identity(model))
        return text

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
        """The cache key of ``request`` on ``model`` (equal to :func:`dlnflow.runtime.cache.call_key`)."""
        return key_from_identity_json(self._identity_json(model), request)

    def is_cached(self, model: str, request: Request) -> bool:
        return self.cache is not None and self.mode == "use" and self.key(model, request) in self.cache

    # -- the door ------------------------------------------------------------------------
    def run(self, model: str, requests: Sequence[Request]) -> list[Result]:
        """Answer ``requests`` in order, from the cache where possible.

        Identical requests (in this batch, or in flight on another thread) reach the
        backend once; a backend failure propagates to every caller waiting on it. Calls of
        the batch that finished before the failure stay in the cache (when the backend
        reports answers one by one, see :meth:`_call_backend`).
        """
        if not requests:
            return []
        stats = self.per_model.get(model) or self.per_model.setdefault(model, Usage())
        ident = self._identity_jsons.get(model) or self._identity_json(model)
        cache = self.cache if self.mode == "use" else None
        keys: list[str] = []
        results: dict[str, Result] = {}
        misses: dict[str, Request] = {}
        hits = dups = saved_prompt = saved_completion = 0
        for req in requests:  # the hit path, outside the lock
            key = key_from_identity_json(ident, req)
            keys.append(key)
            if key in results or key in misses:
                dups += 1
                continue
            hit = cache.get(key) if cache is not None else None
            if hit is None:
                misses[key] = req
                continue
            results[key] = hit
            hits += 1
            saved_prompt += int(hit.get("prompt_tokens") or 0)
            saved_completion += int(hit.get("completion_tokens") or 0)
        if misses and getattr(cache, "remote", None) is not None:  # a plan's cache view has no remote
            assert cache is not None
            for key, hit in cache.fetch_remote(misses).items():
                del misses[key]
                results[key] = hit
                hits += 1
                saved_prompt += int(hit.get("prompt_tokens") or 0)
                saved_completion += int(hit.get("completion_tokens") or 0)
        if hits or dups:
            with self._lock:
                for usage in (stats, self.usage):
                    usage.cache_hits += hits
                    usage.deduplicated += dups
                    usage.saved_prompt_tokens += saved_prompt
                    usage.saved_completion_tokens += saved_completion
        if misses:
            predicted = self._predict_tokens(model, misses) if self._predicting else None
            owned, waits = self._claim(misses, results, stats, predicted)
            if owned:
                self._call_backend(model, owned, results, stats)
            for key, fut in waits.items():
                results[key] = fut.result()
        if self.on_progress is not None:
            self.on_progress(self.usage)
        return [results[k] for k in keys]

    @property
    def _predicting(self) -> bool:
        return self.budget.max_tokens is not None and self.budget.predict_tokens

    def _predict_tokens(self, model: str, requests: Mapping[str, Request]) -> dict[str, int]:
        """Per key: an upper estimate of the tokens a request will spend (outside the lock)."""
        return {key: estimate_tokens(self.backend(model), req) for key, req in requests.items()}

    def _claim(self, misses: dict[str, Request], results: dict[str, Result],
               stats: Usage, predicted: dict[str, int] | None = None,
               ) -> tuple[dict[str, Request], dict[str, Future[Result]]]:
        """Under the lock: join calls already in flight, or take ownership of the rest."""
        owned: dict[str, Request] = {}
        waits: dict[str, Future[Result]] = {}
        counts = Counter[str]()
        cache = self.cache if self.mode == "use" else None
        with self._lock:
            for key, req in misses.items():
                fut = self._inflight.get(key)
                if fut is not None:
                    waits[key] = fut
                    counts["deduplicated"] += 1
                    continue
                # another thread may have finished this call since the lookup above
                hit = cache.get(key) if cache is not None else None
                if hit is not None:
                    results[key] = hit
                    _count_hit(counts, hit)
                    continue
                owned[key] = req
            self._add(stats, counts)
            if owned:
                tokens = {k: predicted[k] for k in owned} if predicted is not None else {}
                self._check_budget(owned.values(), sum(tokens.values()))
                self._reserved += len(owned)
                self._reserved_tokens.update(tokens)
                for key in owned:
                    self._inflight[key] = Future()
        return owned, waits

    def _call_backend(
        self, model: str, owned: dict[str, Request], results: dict[str, Result], stats: Usage
    ) -> None:
        """Run the owned requests, store each answer as soon as it arrives, then release anyone waiting.

        A backend that offers ``run_each(requests, on_result)`` hands over every answer the moment
        it has it, so when one call of a batch fails (or the user presses Ctrl-C) the calls that
        finished are already in the cache and a rerun does not pay for them again.
        """
        backend = self.backend(model)
        batch_keys = list(owned)
        store = self.cache is not None and self.mode != "off"
        label = self.label(model) if store else ""
        kept: set[int] = set()

        def keep(index: int, answer: Result) -> None:
            if store and self.cache is not None and 0 <= index < len(batch_keys):
                self.cache.put(batch_keys[index], answer, model=label)
                kept.add(index)

        try:
            answers = self._timed_run(backend, [owned[k] for k in batch_keys], keep)
            if len(answers) != len(batch_keys):
                raise BackendError(f"model {model!r} returned {len(answers)} results for "
                                   f"{len(batch_keys)} requests")
            if store and self.cache is not None:
                rest = [(k, a) for i, (k, a) in enumerate(zip(batch_keys, answers, strict=True)) if i not in kept]
                if rest:
                    self.cache.put_many(rest, model=label)
        except BaseException as exc:
            self._release(batch_keys, exc=exc)
            raise
        try:
            counts = Counter[str]()
            for key, answer in zip(batch_keys, answers, strict=True):
                results[key] = answer
                counts["backend_calls"] += 1
                counts["prompt_tokens"] += int(answer.get("prompt_tokens") or 0)
                counts["completion_tokens"] += int(answer.get("completion_tokens") or 0)
            with self._lock:
                self._add(stats, counts)
                retries = int(getattr(backend, "retries", 0) or 0)
                self._add(stats, {"retries": retries - stats.retries})
        finally:  # whatever happens above, nobody is left waiting
            self._release(batch_keys, answers=answers)

    def _timed_run(self, backend: Backend, requests: list[Request],
                   keep: Callable[[int, Result], None]) -> list[Result]:
        """Run ``requests`` (answer by answer through ``keep`` when the backend offers ``run_each``) with
        the seconds, tokens and the backend's own counters filed in :attr:`timing`."""
        counters = getattr(backend, "counters", None)
        before = counters() if counters is not None else {}
        started = time.perf_counter()
        run_each = getattr(backend, "run_each", None)
        answers = run_each(requests, keep) if callable(run_each) else backend.run(requests)
        seconds = time.perf_counter() - started
        after = counters() if counters is not None else {}
        self.timing.record([r.op for r in requests], seconds,
                           sum(int(a.get("prompt_tokens") or 0) for a in answers),
                           sum(int(a.get("completion_tokens") or 0) for a in answers),
                           counter_delta(before, after))
        return answers

    def timing_summary(self, wall_seconds: float | None = None) -> dict[str, Any]:
        """The ``timing`` block of this client's work (see :mod:`dlnflow.runtime.timing`), remote latencies included."""
        latencies: list[float] = []
        seen: set[int] = set()
        for backend in self.models.values():
            if id(backend) not in seen:
                seen.add(id(backend))
                latencies.extend(getattr(backend, "latencies", None) or [])
        return self.timing.summary(wall_seconds, latencies)

    def _release(self, keys: list[str], answers: list[Result] | None = None,
                 exc: BaseException | None = None) -> None:
        """Resolve the in-flight futures of ``keys`` with their answers or with ``exc``."""
        with self._lock:
            self._reserved -= len(keys)
            for i, key in enumerate(keys):
                self._reserved_tokens.pop(key, None)
                fut = self._inflight.pop(key)
                if answers is not None:
                    fut.set_result(answers[i])
                else:
                    fut.set_exception(exc if exc is not None else BackendError("call failed"))

    def _add(self, stats: Usage, counts: Mapping[str, int]) -> None:
        """Add ``counts`` to the per-model and the total usage (caller holds the lock)."""
        for name, n in counts.items():
            if n:
                setattr(stats, name, getattr(stats, name) + n)
                setattr(self.usage, name, getattr(self.usage, name) + n)

    def _check_budget(self, pending: Any, predicted_tokens: int = 0) -> None:
        pending = list(pending)
        b = self.budget
        spent = self.usage.backend_calls + self._reserved
        if b.max_calls is not None and spent + len(pending) > b.max_calls:
            raise BudgetExceeded(
                f"the next {len(pending)} backend call(s) would exceed train.budget.max_calls="
                f"{b.max_calls} ({spent} spent or in flight); everything so far is cached - "
                "raise the budget (or pass --max-calls) and run the same command again to continue"
            )
        if b.max_tokens is not None and b.predict_tokens:
            spent = (self.usage.prompt_tokens + self.usage.completion_tokens
                     + sum(self._reserved_tokens.values()))
            if spent + predicted_tokens > b.max_tokens:
                raise BudgetExceeded(
                    f"the next {len(pending)} backend call(s) may spend up to {predicted_tokens} tokens, "
                    f"which would exceed train.budget.max_tokens={b.max_tokens} ({spent} spent or in "
                    "flight); everything so far is cached - raise the budget (or pass --max-tokens) and run "
                    "the same command again to continue"
                )
        elif b.max_tokens is not None:
            tokens = self.usage.prompt_tokens + self.usage.completion_tokens
            if tokens >= b.max_tokens:
                raise BudgetExceeded(
                    f"train.budget.max_tokens={b.max_tokens} reached ({tokens} tokens spent); everything so "
                    "far is cached - raise the budget and run the same command again to continue"
                )

    def close(self) -> None:
        for backend in self.models.values():
            backend.close()


def estimate_tokens(backend: Backend, request: Request) -> int:
    """At most how many tokens ``request`` spends: its prompt and targets by the backend's
    ``count_tokens``, plus ``max_tokens`` when it generates.

    >>> class Words:
    ...     def count_tokens(self, text): return len(text.split())
    >>> estimate_tokens(Words(), Request("generate", "one two", max_tokens=5))
    7
    """
    n = backend.count_tokens(request.prompt) + sum(backend.count_tokens(t) for t in request.targets)
    return n + (request.max_tokens if request.op == "generate" else 0)


def _count_hit(counts: Counter[str], hit: Result) -> None:
    counts["cache_hits"] += 1
    counts["saved_prompt_tokens"] += int(hit.get("prompt_tokens") or 0)
    counts["saved_completion_tokens"] += int(hit.get("completion_tokens") or 0)
