"""The backend protocol: what a model must offer, as plain values.

A :class:`Request` is a frozen value with a canonical JSON form; the cache key is built
from it (see :mod:`dlnflow.runtime.cache`). A backend answers a list of requests with a list of
:class:`Result` dictionaries, in order.

Operations:

- ``generate``: sample a continuation of ``prompt``. Result: ``text`` and, when the backend
  has them, ``logprobs`` (one float per sampled token).
- ``score``: ``log p(target | prompt)`` token by token. ``targets`` holds exactly one string.
  Result: ``logprobs`` (one float per target token).
- ``classify``: a probability per verbalizer in ``targets`` (normalised to sum to 1) given
  ``prompt``. Result: ``probs`` and ``logprobs`` (unnormalised total log p of each verbalizer).

Every result also carries ``prompt_tokens`` and ``completion_tokens`` for accounting.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Op = Literal["generate", "score", "classify"]
Result = dict[str, Any]

OPERATIONS: tuple[Op, ...] = ("generate", "score", "classify")


@dataclass(frozen=True)
class Request:
    """One model call, fully specified.

    ``seed`` and ``sample`` only matter when ``temperature > 0``: they select which of the
    possible samples this is, so sample ``k`` of a run is the same bytes on every rerun.

    >>> r = Request("generate", "Say hi:", max_tokens=8)
    >>> r.canonical()["seed"] is None   # greedy calls ignore seed and sample
    True
    >>> Request("classify", "Q: 2+2? A:", targets=(" 4", " 5")).op
    'classify'
    """

    op: Op
    prompt: str
    targets: tuple[str, ...] = ()
    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    sample: int = 0
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.op not in OPERATIONS:
            raise ValueError(f"unknown operation {self.op!r}")
        if self.op == "score" and len(self.targets) != 1:
            raise ValueError("score takes exactly one target")
        if self.op == "classify" and len(self.targets) < 2:
            raise ValueError("classify needs at least two verbalizers")

    @property
    def sampled(self) -> bool:
        return self.op == "generate" and self.temperature > 0

    def canonical(self) -> dict[str, Any]:
        """Every field that changes the answer, with defaults filled in; nothing else."""
        d = asdict(self)
        d.pop("meta")
        d["targets"] = list(self.targets)
        d["stop"] = list(self.stop)
        if self.op != "generate":
            for k in ("max_tokens", "temperature", "top_p", "stop"):
                d.pop(k)
        if not self.sampled:
            d["seed"] = None
            d["sample"] = 0
        return d

    def canonical_json(self) -> str:
        return json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@runtime_checkable
class Backend(Protocol):
    """What every backend offers.

    ``capabilities`` is a subset of ``{"generate", "score", "classify"}``. ``identity()``
    returns what distinguishes its answers from another backend's (backend kind, model name,
    endpoint, model file hash) - never secrets. ``run`` answers requests in order and raises
    :class:`dlnflow.core.errors.BackendError` (or ``ContextOverflow``) on failure.
    """

    capabilities: frozenset[str]

    def identity(self) -> dict[str, Any]: ...

    def run(self, requests: list[Request]) -> list[Result]: ...

    def count_tokens(self, text: str) -> int: ...

    @property
    def n_ctx(self) -> int: ...

    def close(self) -> None: ...


def shares_prefix(verbalizers: tuple[str, ...]) -> bool:
    """True when all verbalizers start with the same visible text, so they surely share a first token.

    >>> shares_prefix((" (A)", " (B)")), shares_prefix((" Yes", " No"))
    (True, False)
    """
    return bool(os.path.commonprefix(list(verbalizers)).strip())
