"""A tiny deterministic stand-in model for fast unit tests of logic.

It is not a language model and never poses as one: it answers by rules the test gives it
(or by hashing, when none are given), so expected values can be computed by hand.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from dlnflow.core.backend import Request, Result


def _h(*parts: object) -> int:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)


class StandIn:
    """Rule-driven backend.

    - ``gen(request) -> str`` for generate (default: a word picked by hashing prompt, seed, sample);
    - ``score(prompt, target) -> list[float]`` per whitespace token (default: -0.1 * len(word));
    - ``cls(prompt, verbalizers) -> list[float]`` unnormalised log-probabilities (default: hash).
    """

    def __init__(
        self,
        gen: Callable[[Request], str] | None = None,
        score: Callable[[str, str], list[float]] | None = None,
        cls: Callable[[str, tuple[str, ...]], list[float]] | None = None,
        capabilities: frozenset[str] = frozenset({"generate", "score", "classify"}),
        name: str = "standin",
        n_ctx: int = 100_000,
    ):
        self.gen = gen
        self.score_fn = score
        self.cls = cls
        self.capabilities = capabilities
        self.name = name
        self._n_ctx = n_ctx
        self.calls: Counter[str] = Counter()
        self.log: list[Request] = []
        self.retries = 0

    def identity(self) -> dict[str, Any]:
        return {"backend": "standin", "model": self.name}

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        pass

    def run(self, requests: list[Request]) -> list[Result]:
        return [self._one(r) for r in requests]

    def _one(self, r: Request) -> Result:
        self.calls[r.op] += 1
        self.log.append(r)
        n_prompt = self.count_tokens(r.prompt)
        if r.op == "generate":
            if self.gen is not None:
                text = self.gen(r)
            else:
                words = ["alpha", "beta", "gamma", "delta", "epsilon"]
                text = words[_h(r.prompt, r.seed, r.sample, r.temperature) % len(words)]
            return {"text": text, "logprobs": None, "prompt_tokens": n_prompt,
                    "completion_tokens": len(text.split())}
        if r.op == "score":
            target = r.targets[0]
            lps = (self.score_fn(r.prompt, target) if self.score_fn
                   else [-0.1 * len(w) for w in target.split()] or [0.0])
            return {"logprobs": lps, "prompt_tokens": n_prompt + len(lps), "completion_tokens": 0}
        raw = (self.cls(r.prompt, r.targets) if self.cls
               else [-(_h(r.prompt, v) % 1000) / 250.0 for v in r.targets])
        m = max(raw)
        z = sum(math.exp(v - m) for v in raw)
        probs = [math.exp(v - m) / z for v in raw]
        return {"probs": probs, "logprobs": raw, "prompt_tokens": n_prompt + 1, "completion_tokens": 0}
