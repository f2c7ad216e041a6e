"""The embedded backend: a GGUF model run in-process by llama.cpp (llama-cpp-python).

Speed comes from evaluating only what is needed (the engine is in
:mod:`dlnflow.backends.llamacpp.engine`):

- logits are requested only at the positions that are scored, never for every position;
- ``classify`` evaluates its context once: with single-token, distinct verbalizers the one
  position's logits answer everything; otherwise each verbalizer's tokens are evaluated as one
  short batch after the cached context (verbalizers sharing a first token, like " (A)" and
  " (B)", take this path);
- consecutive requests of a batch that share a prompt prefix (the same instruction, the same
  few-shot examples) reuse its KV cache, in the order given (nothing is reordered).

Tokenization at the context/target boundary: the context is tokenized with a BOS token and the
target (or verbalizer) separately without one, and the two are joined. A target therefore
always has the same tokens whatever context precedes it, which keeps the scores of different
candidate prompts comparable; a target's leading space belongs to the target (``" yes"``).

Sampling: ``generate`` is a pure function of (prompt, temperature, top_p, seed, sample index):
greedy (argmax) at temperature 0, otherwise temperature, then nucleus (top_p) filtering, then a
draw seeded by a hash of (seed, sample). Its ``logprobs`` are the model's own log-probabilities
(temperature 1) of the tokens kept in ``text``.

The loaded model is shared by all backends of a process with the same file and settings (a
small pool with reference counts) and guarded by a lock, so threads may share a backend.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlnflow.backends.llamacpp.engine import Engine
from dlnflow.backends.llamacpp.gguf import check_gguf, embedded_model_path, file_sha256
from dlnflow.core.backend import OPERATIONS, Request, Result
from dlnflow.core.errors import BackendError, ConfigError, ContextOverflow, InputError

__all__ = ["LlamaCppBackend", "embedded_model_path", "sampler_seed"]

DEFAULT_N_CTX = 2048
DEFAULT_N_BATCH = 512
_POOL: dict[tuple[str, int, int, int], tuple[Engine, int]] = {}
_POOL_LOCK = threading.Lock()


def sampler_seed(seed: int | None, sample: int) -> int:
    """The 32-bit sampler seed of sample ``sample`` of a run seeded ``seed``.

    >>> sampler_seed(1, 0) == sampler_seed(1, 0) != sampler_seed(1, 1)
    True
    """
    digest = hashlib.sha256(f"dlnflow-sample:{seed}:{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _acquire(path: Path, n_ctx: int, n_batch: int, n_threads: int) -> Engine:
    key = (str(path.resolve()), n_ctx, n_batch, n_threads)
    with _POOL_LOCK:
        engine, refs = _POOL.get(key, (None, 0))
        if engine is None:
            engine = Engine(path, n_ctx, n_batch, n_threads)
        _POOL[key] = (engine, refs + 1)
        return engine


def _release(engine: Engine) -> None:
    with _POOL_LOCK:
        for key, (held, refs) in list(_POOL.items()):
            if held is engine:
                if refs > 1:
                    _POOL[key] = (held, refs - 1)
                else:
                    del _POOL[key]
                    with engine.lock:
                        engine.close()
                return


def _int_setting(settings: Mapping[str, Any], name: str, default: int, low: int) -> int:
    value = settings.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"models.<name>.{name} must be an integer >= {low}, got {value!r}")
    return value


THREADS_ENV_VAR = "DLNFLOW_THREADS"


def default_threads() -> int:
    """CPU threads when the spec sets no ``n_threads``: ``$DLNFLOW_THREADS``, else every core this
    process may run on. A parallel sweep sets the variable in its workers to their share of the cores,
    so two runs never fight over the same cores with twice the threads.

    >>> import os
    >>> os.environ[THREADS_ENV_VAR] = "1"; default_threads()
    1
    >>> del os.environ[THREADS_ENV_VAR]; default_threads() == len(os.sched_getaffinity(0))
    True
    """
    chosen = threads_from_env()
    return len(os.sched_getaffinity(0)) if chosen is None else chosen


def threads_from_env() -> int | None:
    """``$DLNFLOW_THREADS`` as a number of threads, None when it is unset or empty; any other value
    is a ConfigError."""
    raw = os.environ.get(THREADS_ENV_VAR, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"${THREADS_ENV_VAR} must be a whole number of threads >= 1, got {raw!r}; "
                          "unset it to use every core")
    return int(raw)


class LlamaCppBackend:
    """The embedded llama.cpp backend (generate, score, classify)."""

    capabilities: frozenset[str] = frozenset(OPERATIONS)

    def __init__(self, path: Path, n_ctx: int = DEFAULT_N_CTX, n_threads: int | None = None,
                 n_batch: int = DEFAULT_N_BATCH):
        self.path = check_gguf(Path(path))
        self.n_threads = n_threads or default_threads()
        self.n_batch = min(n_batch, n_ctx)
        self._n_ctx = n_ctx
        self._engine: Engine | None = _acquire(self.path, n_ctx, self.n_batch, self.n_threads)
        self._sha256: str | None = None
        self._evaluated = 0
        self._reused = 0

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], base_dir: Path | None) -> LlamaCppBackend:
        """Build from a spec's ``models.<name>`` mapping; ``path`` is relative to ``base_dir``."""
        raw = settings.get("path")
        if raw is None:
            path = embedded_model_path()
        else:
            if not isinstance(raw, str | os.PathLike) or not str(raw):
                raise ConfigError(f"models.<name>.path must be a file path, got {raw!r}")
            path = Path(raw).expanduser()
            if not path.is_absolute():
                path = (base_dir or Path.cwd()) / path
        n_ctx = _int_setting(settings, "n_ctx", DEFAULT_N_CTX, 16)
        threads = settings.get("n_threads")
        n_threads = None if threads is None else _int_setting(settings, "n_threads", 1, 1)
        n_batch = _int_setting(settings, "n_batch", DEFAULT_N_BATCH, 1)
        return cls(path, n_ctx=n_ctx, n_threads=n_threads, n_batch=n_batch)

    # -- protocol ------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        if self._sha256 is None:
            self._sha256 = file_sha256(self.path)
        return {"backend": "llamacpp", "model": self.path.name, "sha256": self._sha256}

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise BackendError("this llamacpp backend is closed")
        return self._engine

    def count_tokens(self, text: str) -> int:
        """Tokens the model reads for ``text`` as a prompt (BOS included)."""
        with self.engine.lock:
            return len(self.engine.tokenize(text, bos=True))

    def counters(self) -> dict[str, int]:
        """Running totals of prompt tokens this backend had evaluated vs. reused from the KV cache
        (generated tokens are not counted here; see :mod:`dlnflow.runtime.timing`)."""
        return {"prompt_evaluated": self._evaluated, "prompt_reused": self._reused}

    def close(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            _release(engine)

    def run(self, requests: list[Request]) -> list[Result]:
        """Answer ``requests`` in order; consecutive ones reuse the KV cache of shared prefixes."""
        return self.run_each(requests, lambda index, result: None)

    def run_each(self, requests: list[Request], on_result: Callable[[int, Result], None]) -> list[Result]:
        """:meth:`run`, handing each answer to ``on_result(index, result)`` as soon as it is computed."""
        engine = self.engine
        out: list[Result] = []
        with engine.lock:
            for index, request in enumerate(requests):
                out.append(self._one(engine, request))
                on_result(index, out[-1])
        return out

    def _one(self, engine: Engine, r: Request) -> Result:
        if r.op == "generate":
            return self._generate(engine, r)
        evaluated, reused = engine.evaluated, engine.reused
        try:
            if r.op == "score":
                return self._score(engine, r.prompt, r.targets[0])
            return self._classify(engine, r.prompt, r.targets)
        finally:
            self._count(engine, evaluated, reused)

    def _count(self, engine: Engine, evaluated: int, reused: int) -> None:
        self._evaluated += engine.evaluated - evaluated
        self._reused += engine.reused - reused

    # -- operations ----------------------------------------------------------------------
    def _score(self, engine: Engine, context: str, target: str) -> Result:
        ctx = engine.tokenize(context, bos=True)
        tgt = engine.tokenize(target, bos=False)
        ids = ctx + tgt
        if len(ids) > self._n_ctx:
            raise ContextOverflow(len(ids), self._n_ctx, "context plus target")
        if not tgt:
            return {"logprobs": [], "prompt_tokens": len(ids), "completion_tokens": 0}
        n = len(ctx)
        picks = {n - 1 + j: [tok] for j, tok in enumerate(tgt)}
        found = engine.evaluate(ids[:-1], picks)
        logprobs = [found[n - 1 + j][0] for j in range(len(tgt))]
        return {"logprobs": logprobs, "prompt_tokens": len(ids), "completion_tokens": 0}

    def _classify(self, engine: Engine, context: str, verbalizers: Sequence[str]) -> Result:
        ctx = engine.tokenize(context, bos=True)
        verbs = [engine.tokenize(v, bos=False) for v in verbalizers]
        for text, toks in zip(verbalizers, verbs, strict=True):
            if not toks:
                raise InputError(f"verbalizer {text!r} has no tokens; class labels must be non-empty text")
        n = len(ctx)
        longest = n + max(len(v) for v in verbs)
        if longest > self._n_ctx:
            raise ContextOverflow(longest, self._n_ctx, "context plus the longest verbalizer")
        firsts = [v[0] for v in verbs]
        first = engine.evaluate(ctx, {n - 1: firsts})[n - 1]
        totals = list(first)
        single = all(len(v) == 1 for v in verbs) and len(set(firsts)) == len(firsts)
        if not single:
            totals = self._full_verbalizers(engine, ctx, verbs, totals)
        arr = np.asarray(totals, dtype=np.float64)
        probs = np.exp(arr - arr.max())
        probs /= probs.sum()
        return {
            "probs": [float(p) for p in probs],
            "logprobs": [float(t) for t in totals],
            "prompt_tokens": n + sum(len(v) for v in verbs),
            "completion_tokens": 0,
        }

    def _full_verbalizers(
        self, engine: Engine, ctx: list[int], verbs: list[list[int]], firsts: list[float]
    ) -> list[float]:
        """Total log p of each verbalizer: its tokens evaluated as one batch after the cached context."""
        n = len(ctx)
        totals = []
        for verb, first in zip(verbs, firsts, strict=True):
            rest = 0.0
            if len(verb) > 1:
                picks = {n + j: [verb[j + 1]] for j in range(len(verb) - 1)}
                found = engine.continue_at(n, verb[:-1], picks)
                rest = sum(found[p][0] for p in picks)
            totals.append(first + rest)
        return totals

    def _generate(self, engine: Engine, r: Request) -> Result:
        prompt = engine.tokenize(r.prompt, bos=True)
        if len(prompt) >= self._n_ctx:
            raise ContextOverflow(len(prompt), self._n_ctx, "no room left to generate")
        evaluated, reused = engine.evaluated, engine.reused
        engine.evaluate(prompt, {})
        self._count(engine, evaluated, reused)
        seed = sampler_seed(r.seed, r.sample)
        chain = engine.sampler(r.temperature, r.top_p, seed) if r.temperature > 0 else None
        try:
            text, logprobs, n_sampled = self._sample_loop(engine, r, len(prompt), chain)
        finally:
            if chain is not None:
                engine.lib.llama_sampler_free(chain)
        return {"text": text, "logprobs": logprobs, "prompt_tokens": len(prompt),
                "completion_tokens": n_sampled}

    def _sample_loop(self, engine: Engine, r: Request, pos: int, chain: Any) -> tuple[str, list[float], int]:
        """Sample up to ``max_tokens`` tokens after position ``pos``; cut the text at a stop string."""
        logprobs: list[float] = []
        starts: list[int] = []
        text = b""
        n_sampled = 0
        for _ in range(r.max_tokens):
            tok, lp = engine.next_token(chain)
            n_sampled += 1
            if engine.is_eog(tok):
                break
            logprobs.append(lp)
            starts.append(len(text))
            text += engine.piece([tok])
            if _stop_at(text, r.stop) is not None or pos >= self._n_ctx:
                break
            engine.continue_at(pos, [tok], {})
            pos += 1
        cut = _stop_at(text, r.stop)
        if cut is not None:
            text, logprobs = text[:cut], logprobs[: sum(1 for s in starts if s < cut)]
        return text.decode("utf-8", "ignore"), logprobs, n_sampled


def _stop_at(text: bytes, stops: Sequence[str]) -> int | None:
    """Byte offset of the earliest stop string in ``text``, or None.

    >>> _stop_at(b"yes\\nno", ("\\n",))
    3
    >>> _stop_at(b"yes", ()) is None
    True
    """
    hits = [i for s in stops if s and (i := text.find(s.encode("utf-8"))) >= 0]
    return min(hits) if hits else None
