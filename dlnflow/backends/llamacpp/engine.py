"""The llama.cpp engine under the embedded backend: one loaded model, its KV cache, evaluation.

It speaks tokens and positions; :mod:`dlnflow.backends.llamacpp.backend` speaks requests. Everything
goes through llama.cpp's batch API with per-token ``logits`` flags, so logits exist only at the
positions asked for (never a row of the 262k-entry vocabulary for every prompt position).

Reproducible numbers. llama.cpp's CPU kernels round differently for different batch shapes
(here up to ~0.1 nats on a token's log-probability), so a prefix evaluated in one batch and the
same prefix evaluated in two would give different scores. :meth:`Engine.evaluate` therefore
always cuts a sequence into blocks aligned to multiples of :data:`BLOCK` positions and keeps
only complete blocks for reuse: the numbers for a token sequence are the same whatever was
evaluated before, and a shared prefix is still evaluated only once (up to its last full block).
The sliding-window layers of Gemma 3 need ``swa_full`` for the cache to be truncatable.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlnflow.core.errors import BackendError, ConfigError, ContextOverflow

log = logging.getLogger("dlnflow.llamacpp")

BLOCK = 32
"""Prompts are evaluated in batches aligned to multiples of this many positions."""

Picks = Mapping[int, Sequence[int]]
"""Position -> token ids whose log-probability is wanted right after that position."""

_LOG_CALLBACK: Any = None


def silence_llama(llama_cpp: Any) -> None:
    """Route llama.cpp's log lines away from stderr (once per process)."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return

    @llama_cpp.llama_log_callback
    def _on_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level == 3:  # GGML_LOG_LEVEL_ERROR
            log.debug("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())

    _LOG_CALLBACK = _on_log
    llama_cpp.llama_log_set(_on_log, ctypes.c_void_p(0))


class Engine:
    """One loaded model and context; tracks the tokens held in the KV cache of sequence 0.

    Not thread-safe by itself: callers hold :attr:`lock`.
    """

    def __init__(self, path: Path, n_ctx: int, n_batch: int, n_threads: int):
        try:
            import llama_cpp
        except ImportError:
            raise ConfigError("llama-cpp-python is not installed; `pip install llama-cpp-python`") from None
        silence_llama(llama_cpp)
        self.lib = llama_cpp
        self.lock = threading.RLock()
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.block = min(BLOCK, n_batch)
        try:
            self.llm = llama_cpp.Llama(
                str(path), n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, n_threads=n_threads,
                n_threads_batch=n_threads, logits_all=False, verbose=False,
                swa_full=True,  # keep the whole sliding-window cache so a prefix can be truncated
            )
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(f"llama.cpp could not load {path}: {exc}; is it a whole GGUF file?") from None
        self.ctx = self.llm.ctx
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.n_vocab = self.llm.n_vocab()
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.kv: list[int] = []
        self.evaluated = 0
        self.reused = 0

    def close(self) -> None:
        if self.batch is not None:
            self.lib.llama_batch_free(self.batch)
            self.batch = None
        self.llm.close()

    # -- tokens --------------------------------------------------------------------------
    def tokenize(self, text: str, bos: bool) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=bos, special=False))

    def piece(self, tokens: Sequence[int]) -> bytes:
        return bytes(self.llm.detokenize(list(tokens)))

    def is_eog(self, token: int) -> bool:
        return bool(self.lib.llama_vocab_is_eog(self.vocab, token))

    # -- evaluation ----------------------------------------------------------------------
    def reset(self) -> None:
        self.lib.llama_memory_clear(self.memory, True)
        self.kv = []

    def _decode(self, tokens: Sequence[int], pos0: int, outputs: set[int]) -> None:
        b = self.batch
        b.n_tokens = len(tokens)
        for i, tok in enumerate(tokens):
            b.token[i] = tok
            b.pos[i] = pos0 + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = (pos0 + i) in outputs
        rc = self.lib.llama_decode(self.ctx, b)
        if rc != 0:
            self.reset()
            raise BackendError(f"llama.cpp failed to evaluate {len(tokens)} tokens (llama_decode: {rc})")

    def logits_row(self, index: int) -> np.ndarray:
        """The logits of output ``index`` of the last decode (a view, valid until the next decode)."""
        ptr = self.lib.llama_get_logits_ith(self.ctx, index)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def logprobs_of(self, index: int, picks: Sequence[int]) -> list[float]:
        """Log-softmax of output ``index`` at the tokens ``picks``."""
        row = self.logits_row(index).astype(np.float64)
        top = row.max()
        lse = top + np.log(np.exp(row - top).sum())
        return [float(row[t] - lse) for t in picks]

    def evaluate(self, tokens: Sequence[int], picks: Picks) -> dict[int, list[float]]:
        """Make the KV cache hold ``tokens``; return log p of ``picks[pos]`` after position ``pos``.

        Evaluation resumes at the last complete block shared with the cache (see the module
        docstring); logits are computed only at the picked positions and at the last one (kept
        for sampling).
        """
        if len(tokens) > self.n_ctx:
            raise ContextOverflow(len(tokens), self.n_ctx)
        last = len(tokens) - 1
        common = 0
        for a, b in zip(self.kv, tokens, strict=False):
            if a != b:
                break
            common += 1
        start = min([common, last, *picks]) // self.block * self.block
        if not self.lib.llama_memory_seq_rm(self.memory, 0, start, -1):
            self.reset()
            start = 0
        self.kv = list(tokens[:start])
        self.reused += start
        found: dict[int, list[float]] = {}
        while start < len(tokens):
            end = min(len(tokens), (start // self.block + 1) * self.block)
            found.update(self._decode_picks(tokens[start:end], start, picks, {last}))
            start = end
        self.kv = list(tokens[: len(tokens) // self.block * self.block])
        return found

    def continue_at(self, pos: int, tokens: Sequence[int], picks: Picks) -> dict[int, list[float]]:
        """Evaluate ``tokens`` at positions ``pos...`` after the first ``pos`` cached tokens.

        Anything cached after ``pos`` (an earlier continuation) is dropped first. Used for the
        verbalizers of ``classify`` (each after the same context) and for generated tokens; these
        continuations are never kept for reuse by :meth:`evaluate`.
        """
        if pos + len(tokens) > self.n_ctx:
            raise ContextOverflow(pos + len(tokens), self.n_ctx)
        self.lib.llama_memory_seq_rm(self.memory, 0, pos, -1)
        found: dict[int, list[float]] = {}
        last = {pos + len(tokens) - 1}
        for s in range(0, len(tokens), self.n_batch):
            found.update(self._decode_picks(tokens[s : s + self.n_batch], pos + s, picks, last))
        return found

    def _decode_picks(
        self, chunk: Sequence[int], pos0: int, picks: Picks, extra: set[int]
    ) -> dict[int, list[float]]:
        self._decode(chunk, pos0, set(picks) | extra)
        self.evaluated += len(chunk)
        wanted = sorted(p for p in picks if pos0 <= p < pos0 + len(chunk))
        return {p: self.logprobs_of(p - pos0, picks[p]) for p in wanted}

    def sampler(self, temperature: float, top_p: float, seed: int) -> Any:
        """A llama.cpp sampler chain: temperature, nucleus (when ``top_p < 1``), seeded draw.

        The caller frees it with ``llama_sampler_free``.
        """
        lib = self.lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(temperature))
        if top_p < 1.0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(top_p, 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed))
        return chain

    def next_token(self, chain: Any) -> tuple[int, float]:
        """Pick the next token from the last output (argmax when ``chain`` is None) and its log p."""
        if chain is None:
            tok = int(np.argmax(self.logits_row(-1)))
        else:
            tok = int(self.lib.llama_sampler_sample(chain, self.ctx, -1))
        return tok, self.logprobs_of(-1, [tok])[0]
