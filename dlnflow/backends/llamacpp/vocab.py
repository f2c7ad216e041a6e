"""The embedded model's tokenizer without its weights: identity, context size and token counts.

Dry runs count tokens with it; it never runs a request.
"""

from __future__ import annotations

import atexit
import threading
from pathlib import Path
from typing import Any

from dlnflow.backends.llamacpp.backend import LlamaCppBackend
from dlnflow.backends.llamacpp.engine import silence_llama
from dlnflow.backends.llamacpp.gguf import check_gguf
from dlnflow.core.backend import Request, Result
from dlnflow.core.errors import BackendError, ConfigError

_VOCABS: dict[str, Any] = {}
_VOCAB_LOCK = threading.Lock()


@atexit.register
def _close_vocabs() -> None:
    """Free the vocabularies while the interpreter can still run llama.cpp's cleanup."""
    with _VOCAB_LOCK:
        for vocab in _VOCABS.values():
            vocab.close()
        _VOCABS.clear()


class VocabOnlyLlama(LlamaCppBackend):
    """The embedded backend's identity, context size and tokenizer, without its weights.

    Built with :meth:`LlamaCppBackend.from_settings` (same path resolution, same identity); the
    vocabulary is read on the first :meth:`count_tokens` and shared within the process.
    """

    def __init__(self, path: Path, n_ctx: int = 2048, n_threads: int | None = None, n_batch: int = 512):
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
                silence_llama(llama_cpp)
                _VOCABS[key] = llama_cpp.Llama(key, vocab_only=True, verbose=False)
            return _VOCABS[key]

    def count_tokens(self, text: str) -> int:
        return len(self._vocab().tokenize(text.encode("utf-8"), add_bos=True, special=False))

    def run(self, requests: list[Request]) -> list[Result]:
        raise BackendError("a vocabulary-only backend cannot run requests (it is for dry runs)")

    def close(self) -> None:
        """Keeps the vocabulary: it is shared within the process and freed at exit (``_close_vocabs``)."""
