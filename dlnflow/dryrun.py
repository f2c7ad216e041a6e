"""Dry runs: how many calls and tokens a training run will need, without calling a model.

The real training algorithm runs against a *planning* client. Its cache view
(:class:`PlanCache`) answers from the real call cache where it can (those calls are free) and
never writes to it; its backends (:class:`PlanningBackend`) answer every other request with a
placeholder and count it as a new call:

- ``generate``: a text of about ``max_tokens / 2`` tokens, distinct per request (so rewrites
  never collapse into one candidate by accident);
- ``classify``: class probabilities and ``score``: per-token log-probabilities, both drawn
  deterministically from a hash of the request.

Placeholder scores are arbitrary but not constant on purpose: with constant scores the current
prompt would win every comparison and the plan would predict the cheap path (no prompt ever
changes, so later forward passes look cached) instead of the usual one where prompts change.
That cheap path is planned too, as the *steady* scenario (uniform class probabilities, zero
log-probabilities): together the two give a range for the new calls. Placeholder answers are
remembered for the rest of the plan, so a request repeated later in the run counts once, as
the cache would make it.

On a warm cache every answer is real and the plan replays the run exactly: the prediction is
exact (0 new calls when everything is cached). After the first placeholder the run follows
made-up answers, so the numbers are estimates; :meth:`Plan.notes` says what they depend on.

Token counts use the backend's own ``count_tokens``. For the embedded model the dry run
(:func:`light_backend`) reads only the GGUF vocabulary, never the weights.
"""

from __future__ import annotations

import atexit
import hashlib
import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlnflow.backends.base import OPERATIONS, Backend, Request, Result
from dlnflow.backends.llamacpp import LlamaCppBackend
from dlnflow.backends.llamacpp_engine import _silence_llama
from dlnflow.cache import CallCache
from dlnflow.client import Client, Usage
from dlnflow.data import Dataset
from dlnflow.errors import BackendError, ConfigError
from dlnflow.pipeline import Pipeline

_VOCABS: dict[str, Any] = {}
_VOCAB_LOCK = threading.Lock()


@atexit.register
def _close_vocabs() -> None:
    """Free the vocabularies while the interpreter can still run llama.cpp's cleanup."""
    with _VOCAB_LOCK:
        for vocab in _VOCABS.values():
            vocab.close()
        _VOCABS.clear()


# -- backends that know their model without running it ------------------------------------------
class VocabOnlyLlama(LlamaCppBackend):
    """The embedded backend's identity, context size and tokenizer, without its weights.

    Built with :meth:`LlamaCppBackend.from_settings` (same path resolution, same identity); the
    vocabulary is read on the first :meth:`count_tokens` and shared within the process.
    """

    def __init__(self, path: Path, n_ctx: int = 2048, n_threads: int | None = None, n_batch: int = 512):
        from dlnflow.backends.gguf import check_gguf

        self.path = check_gguf(Path(path))
        self.n_threads = n_threads or 1
        self.n_batch = min(n_batch, n_ctx)
        self._n_ctx = n_ctx
        self._engine = None
        self._sha256 = None

    def _vocab(self) -> Any:
        key = str(self.path.resolve())
        with _VOCAB_LOCK:
            if key not in _VOCABS:
                try:
                    import llama_cpp
                except ImportError:
                    raise ConfigError("llama-cpp-python is missing: pip install llama-cpp-python") from None
                _silence_llama(llama_cpp)
                _VOCABS[key] = llama_cpp.Llama(key, vocab_only=True, verbose=False)
            return _VOCABS[key]

    def count_tokens(self, text: str) -> int:
        return len(self._vocab().tokenize(text.encode("utf-8"), add_bos=True, special=False))

    def run(self, requests: list[Request]) -> list[Result]:
        raise BackendError("a vocabulary-only backend cannot run requests (it is for dry runs)")

    def close(self) -> None:
        pass


def light_backend(settings: dict[str, Any], base_dir: Path | None) -> Backend:
    """A backend for planning: the embedded model reads only its vocabulary; others are built as
    usual (building an OpenAI-compatible backend sends nothing)."""
    if settings.get("backend", "llamacpp") == "llamacpp":
        return VocabOnlyLlama.from_settings(settings, base_dir)
    from dlnflow import network

    return network.make_backend(settings, base_dir)


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


class PlanningBackend:
    """Wraps a backend: its identity, context and tokenizer, but placeholder answers and no model call."""

    def __init__(self, inner: Backend, probe: bool = True, steady: bool = False):
        self.inner = inner
        self.steady = steady
        self.capabilities = _assumed_capabilities(inner, probe)
        self.completion_max = 0
        self.overflows = 0
        self._bos: int | None = None

    def identity(self) -> dict[str, Any]:
        return self.inner.identity()

    @property
    def n_ctx(self) -> int:
        return self.inner.n_ctx

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def close(self) -> None:
        pass

    def _target_tokens(self, text: str) -> int:
        """Tokens of a target read after a context (no start-of-text token)."""
        if self._bos is None:
            self._bos = self.inner.count_tokens("")
        return max(self.inner.count_tokens(text) - self._bos, 1)

    def run(self, requests: list[Request]) -> list[Result]:
        return [self._placeholder(r) for r in requests]

    def _placeholder(self, r: Request) -> Result:
        n_prompt = self.inner.count_tokens(r.prompt)
        if n_prompt > self.n_ctx:
            self.overflows += 1
        tag = r.canonical_json()
        if r.op == "generate":
            k = max(1, math.ceil(r.max_tokens / 2))
            self.completion_max += r.max_tokens
            mark = hashlib.sha256(tag.encode()).hexdigest()[:6]
            text = " ".join([f"draft{mark}"] + ["text"] * (k - 1))
            return {"text": text, "logprobs": None, "prompt_tokens": n_prompt, "completion_tokens": k}
        if r.op == "score":
            n = self._target_tokens(r.targets[0])
            lps = [0.0] * n if self.steady else [-(0.1 + 2.0 * u) for u in _units(tag, n)]
            return {"logprobs": lps, "prompt_tokens": n_prompt + n, "completion_tokens": 0}
        raw = [0.0] * len(r.targets) if self.steady else [-3.0 * u for u in _units(tag, len(r.targets))]
        top = max(raw)
        weights = [math.exp(v - top) for v in raw]
        total = sum(weights)
        return {"probs": [w / total for w in weights], "logprobs": raw,
                "prompt_tokens": n_prompt + sum(self._target_tokens(t) for t in r.targets),
                "completion_tokens": 0}


class PlanCache:
    """A read-only view of the call cache plus the plan's own placeholder answers (in memory).

    ``remember=False`` plans a run that does not use the cache (``--no-cache``, ``--refresh``):
    then a repeated request is a new call again.
    """

    def __init__(self, store: CallCache | None, remember: bool = True):
        self.store = store
        self.remember = remember
        self.memory: dict[str, Result] = {}
        self.real: set[str] = set()
        self.real_prompt_tokens = 0
        self.real_completion_tokens = 0

    def get(self, key: str) -> Result | None:
        found = self.memory.get(key)
        if found is not None:
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


# -- planning one run -------------------------------------------------------------------------------
@dataclass
class RunPlan:
    """The predicted work of one run. ``new_*``: calls that would reach a model; ``cached_*``:
    distinct calls answered by the cache as it is now; ``cache_hits``: lookups the run's client
    will count as hits (cached calls plus repeats of calls made earlier in the run)."""

    label: str
    new_calls: int = 0
    new_prompt_tokens: int = 0
    new_completion_tokens: int = 0
    completion_tokens_max: int = 0
    cached_calls: int = 0
    cached_tokens: int = 0
    cache_hits: int = 0
    overflows: int = 0
    skipped: bool = False
    steady_calls: int | None = None
    per_model: dict[str, Usage] = field(default_factory=dict)
    completion_max_per_model: dict[str, int] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        return self.new_calls == 0

    def predicted(self) -> dict[str, Any]:
        """The numbers a finished run reports, as predicted (stored in its summary)."""
        return {"backend_calls": self.new_calls, "cache_hits": self.cache_hits,
                "prompt_tokens": self.new_prompt_tokens, "completion_tokens": self.new_completion_tokens,
                "completion_tokens_max": self.completion_tokens_max, "exact": self.exact}

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "skipped": self.skipped, "exact": self.exact,
                "new": {"calls": self.new_calls, "prompt_tokens": self.new_prompt_tokens,
                        "completion_tokens": self.new_completion_tokens,
                        "completion_tokens_max": self.completion_tokens_max},
                "cached": {"calls": self.cached_calls, "tokens": self.cached_tokens},
                "cache_hits": self.cache_hits, "context_overflows": self.overflows,
                "steady_calls": self.steady_calls}


@dataclass
class _PlanNet:
    """What the trainer needs from a network, with the planning client in place of the real one."""

    pipeline: Pipeline
    client: Client
    dataset: Dataset


def plan_pipeline(label: str, pipeline: Pipeline, dataset: Dataset, models: Mapping[str, Backend],
                  cache: PlanCache, probe: bool = True, steady: bool = False) -> RunPlan:
    """Run training on ``pipeline`` against placeholders; the graph's prompts are restored afterwards."""
    from dlnflow.trainer import Trainer

    planners = {name: PlanningBackend(b, probe, steady) for name, b in models.items()}
    client = Client(dict(planners), cache, "use")  # type: ignore[arg-type]
    state = pipeline.graph.state()
    real_before = len(cache.real)
    tokens_before = cache.real_prompt_tokens + cache.real_completion_tokens
    try:
        Trainer(_PlanNet(pipeline, client, dataset), write_lock=False, record=False).fit()  # type: ignore[arg-type]
    finally:
        pipeline.graph.load_state(state)
    u = client.usage
    return RunPlan(
        label=label, new_calls=u.backend_calls, new_prompt_tokens=u.prompt_tokens,
        new_completion_tokens=u.completion_tokens,
        completion_tokens_max=sum(p.completion_max for p in planners.values()),
        cached_calls=len(cache.real) - real_before,
        cached_tokens=cache.real_prompt_tokens + cache.real_completion_tokens - tokens_before,
        cache_hits=u.cache_hits, overflows=sum(p.overflows for p in planners.values()),
        per_model=dict(client.per_model),
        completion_max_per_model={name: p.completion_max for name, p in planners.items()},
    )


def plan_network(net: Any, label: str = "run") -> RunPlan:
    """Plan ``net``'s training with its own (loaded) backends and cache, just before training it."""
    client = net.client
    use = net.cache_mode == "use"
    return plan_pipeline(label, net.pipeline, net.dataset, client.models,
                         PlanCache(client.cache if use else None, remember=use))


# -- a whole plan ---------------------------------------------------------------------------------
def _cost(tokens: Mapping[str, tuple[int, int]], prices: Mapping[str, Mapping[str, float]]) -> float | None:
    """Money for ``{model: (prompt tokens, completion tokens)}`` at ``prices`` (``None`` without prices)."""
    used = {m: t for m, t in tokens.items() if t != (0, 0)}
    if not used or any(m not in prices for m in used):
        return None
    return sum(p / 1000 * float(prices[m].get("prompt_per_1k", 0.0))
               + c / 1000 * float(prices[m].get("completion_per_1k", 0.0)) for m, (p, c) in used.items())


@dataclass
class Plan:
    """The plans of every run of a command, with what their numbers depend on."""

    runs: list[RunPlan]
    prices: dict[str, dict[str, float]] = field(default_factory=dict)
    backends: set[str] = field(default_factory=set)
    early_stopping: bool = False

    def total(self, name: str) -> int:
        return sum(int(getattr(r, name) or 0) for r in self.runs)

    @property
    def steady_calls(self) -> int | None:
        """New calls in the steady scenario, where placeholder scores never favour a new prompt
        (``None`` when that scenario was not planned)."""
        if all(r.skipped or r.exact or r.steady_calls is not None for r in self.runs):
            return sum(r.steady_calls if r.steady_calls is not None else r.new_calls for r in self.runs)
        return None

    def cost(self) -> dict[str, float | None]:
        new: dict[str, tuple[int, int]] = {}
        worst: dict[str, tuple[int, int]] = {}
        for r in self.runs:
            for m, u in r.per_model.items():
                p, c = new.get(m, (0, 0))
                new[m] = (p + u.prompt_tokens, c + u.completion_tokens)
                p, c = worst.get(m, (0, 0))
                worst[m] = (p + u.prompt_tokens, c + r.completion_max_per_model.get(m, 0))
        return {"new": _cost(new, self.prices), "new_max": _cost(worst, self.prices)}

    @property
    def exact(self) -> bool:
        return self.total("new_calls") == 0

    def notes(self) -> list[str]:
        out: list[str] = []
        if self.exact:
            out.append("every call the training needs is already cached: it replays for free (exact)")
        else:
            depends = "which candidate prompt wins, when the dev score improves"
            if self.early_stopping:
                depends += ", when early stopping (patience) ends training"
            out.append(
                "estimate: from the first uncached call on, the run is followed with placeholder answers, so "
                f"the counts depend on what the model would answer ({depends}); rewrites that come out "
                "identical or empty are scored once, so the real run may need fewer calls")
            out.append("generated texts are counted at half their max_tokens; at most "
                       f"{self.total('completion_tokens_max')} completion tokens")
        if "llamacpp" in self.backends:
            out.append("the embedded model was not loaded: tokens were counted with its vocabulary only")
        if "openai" in self.backends:
            out.append("tokens of remote models are estimated from text length; the server was not asked "
                       "whether it can score (assumed yes, except for chat endpoints)")
        if self.total("overflows"):
            out.append(f"{self.total('overflows')} request(s) would not fit the model's context window")
        if not self.prices and not self.exact:
            out.append("no models.<name>.price in the spec: no cost computed")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": True, "exact": self.exact,
            "new": {"calls": self.total("new_calls"), "calls_if_steady": self.steady_calls,
                    "prompt_tokens": self.total("new_prompt_tokens"),
                    "completion_tokens": self.total("new_completion_tokens"),
                    "completion_tokens_max": self.total("completion_tokens_max")},
            "cached": {"calls": self.total("cached_calls"), "tokens": self.total("cached_tokens")},
            "cache_hits": self.total("cache_hits"), "cost": self.cost(),
            "runs": [r.as_dict() for r in self.runs], "notes": self.notes(),
        }

    def text(self) -> str:
        d = self.as_dict()
        new, cached = d["new"], d["cached"]
        lines = [f"dry run ({len(self.runs)} run{'s' if len(self.runs) != 1 else ''}; no model was called):"]
        if len(self.runs) > 1:
            for r in self.runs:
                what = "finished, skipped" if r.skipped else f"{r.new_calls} new, {r.cached_calls} cached"
                lines.append(f"  {r.label}: {what}")
        steady = new["calls_if_steady"]
        alt = ""
        if steady is not None and steady != new["calls"]:
            alt = f" ({steady} if placeholder scores never favoured a new prompt)"
        lines += [
            f"backend calls: {new['calls']} new{alt}, {cached['calls']} already cached (free)",
            f"new tokens: {new['prompt_tokens']} prompt + {new['completion_tokens']} completion "
            f"(completion at most {new['completion_tokens_max']})",
            f"cached tokens (free): {cached['tokens']}",
        ]
        cost = d["cost"]
        if cost["new"] is not None:
            lines.append(f"cost of new calls: {cost['new']:.4f} (at most {cost['new_max']:.4f})")
        lines += [f"note: {n}" for n in d["notes"]]
        return "\n".join(lines)


def pipeline_facts(pipeline: Pipeline) -> tuple[dict[str, dict[str, float]], set[str]]:
    """The spec's price table and backend kinds."""
    models = pipeline.models
    prices = {name: dict(m["price"]) for name, m in models.items() if isinstance(m.get("price"), dict)}
    return prices, {str(m.get("backend", "llamacpp")) for m in pipeline.models.values()}
