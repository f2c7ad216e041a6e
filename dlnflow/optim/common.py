"""Pieces every optimizer shares: batches, prompt proposals, candidate scoring, prompt memory.

Randomness: every random choice draws from a numpy Generator seeded by a tuple of
``(run seed, iteration, layer index, candidate index)``. Nothing depends on a global RNG,
and candidate ``i`` of an iteration is the same whatever the number of candidates, so raising
``prompt_candidates`` only adds new calls.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from dlnflow.core.backend import Request
from dlnflow.core.example import Example
from dlnflow.graph import calibration as calib
from dlnflow.graph.layers import Layer
from dlnflow.graph.losses import get_loss
from dlnflow.graph.templates import REWRITE_INSTRUCTIONS, backward, backward_stops
from dlnflow.runtime.client import Client
from dlnflow.spec.settings import TrainSettings

LOG_FLOOR = math.log(1e-12)


def rng_for(*parts: int) -> np.random.Generator:
    """A generator determined by ``parts`` alone (e.g. seed, iteration, layer, candidate)."""
    return np.random.default_rng([int(p) & 0xFFFFFFFF for p in parts])


def sample_batch(pool: Sequence[Example], size: int, seed: int, iteration: int) -> list[Example]:
    """``size`` distinct examples of ``pool`` for this iteration (all of it when smaller)."""
    if size >= len(pool):
        return list(pool)
    idx = rng_for(seed, iteration, 0).choice(len(pool), size=size, replace=False)
    return [pool[int(i)] for i in sorted(idx)]


def is_correct(loss: str, prediction: str, target: str) -> bool:
    return bool(get_loss(loss)(prediction, target))


# -- scoring ------------------------------------------------------------------------------------
def class_index(layer: Layer, target: str) -> int:
    """Position of ``target`` among the layer's classes (case and space tolerant)."""
    assert layer.classes is not None
    norm = [c.strip().casefold() for c in layer.classes]
    return norm.index(target.strip().casefold())


def loglik(
    client: Client, layer: Layer, values: Sequence[dict[str, str]], targets: Sequence[str], prompt: str
) -> np.ndarray:
    """Per example: how well ``prompt`` makes ``layer`` produce ``targets``.

    - classifier: log of the class probability (normalised over the verbalizers), calibrated as
      the layer says, with the prior of ``prompt`` itself: the mean over these examples
      (``batch``) or over the content-free inputs under ``prompt`` (``content_free``);
    - free text with a scoring backend: mean per-token log-probability of the target;
    - otherwise: accuracy of greedy generation (1.0 or 0.0), for backends that cannot score.
    """
    contexts = [layer.render(v, prompt) for v in values]
    if layer.is_classifier and client.can(layer.model, "classify"):
        answers = client.run(layer.model, [layer.classify_request(c) for c in contexts])
        rows = [list(a["probs"]) for a in answers]
        prior = calib.prior_for(client, layer, rows, prompt, use_fixed=False)
        out = [math.log(max(calib.calibrate(row, prior)[class_index(layer, t)], 1e-12))
               for row, t in zip(rows, targets, strict=True)]
        return np.array(out, dtype=float)
    if client.can(layer.model, "score"):
        answers = client.run(layer.model, [layer.score_request(c, t) for c, t in zip(contexts, targets, strict=True)])
        return np.array([mean_logprob(a["logprobs"]) for a in answers], dtype=float)
    answers = client.run(layer.model, [layer.generate_request(c) for c in contexts])
    return np.array([float(a["text"].strip() == t.strip()) for a, t in zip(answers, targets, strict=True)], dtype=float)


def mean_logprob(logprobs: Sequence[float]) -> float:
    """Length-normalised log-probability (mean over tokens); floor for empty or -inf."""
    if not logprobs:
        return LOG_FLOOR
    return max(float(np.mean(logprobs)), LOG_FLOOR)


# -- proposals ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shown:
    """One worked example shown to the backward model."""

    input: str
    output: str
    target: str
    correct: bool
    better: str = ""


def pick_shown(shown: Sequence[Shown], k: int, rng: np.random.Generator) -> list[Shown]:
    """Up to ``k`` examples, errors first (half at least when there are errors), in random order."""
    errors = [s for s in shown if not s.correct]
    rights = [s for s in shown if s.correct]
    rng.shuffle(errors)  # type: ignore[arg-type]
    rng.shuffle(rights)  # type: ignore[arg-type]
    n_err = min(len(errors), max(k - len(rights), math.ceil(k / 2)))
    chosen = errors[:n_err] + rights[: k - n_err]
    rng.shuffle(chosen)  # type: ignore[arg-type]
    return chosen


_LEAD = re.compile(r"^(new instruction|instruction)\s*:\s*", re.IGNORECASE)


def clean_proposal(text: str, limit: int = 800) -> str | None:
    """The instruction in a backward model's answer, or ``None`` when there is none."""
    text = _LEAD.sub("", text.strip()).strip().strip('"').strip("'").strip()
    text = text[:limit].strip()
    return text or None


@dataclass
class Proposer:
    """Asks the backward model for new prompts, shortening what it shows until the request fits."""

    client: Client
    model: str
    train: TrainSettings

    def request(self, template: str, variables: dict[str, Any], sample: int) -> Request | None:
        """The sampled request for one proposal; drops shown examples one at a time to fit the context."""
        t = backward(template)
        examples = list(variables.get("examples", []))
        budget = self.client.n_ctx(self.model) - self.train.rewrite_max_tokens
        while True:
            text = t.render(**{**variables, "examples": examples})
            if self.client.count_tokens(self.model, text) <= budget:
                break
            if not examples:
                return None
            examples.pop()
        return Request(
            "generate",
            text,
            max_tokens=self.train.rewrite_max_tokens,
            temperature=self.train.rewrite_temperature,
            stop=backward_stops(template),
            seed=self.train.seed,
            sample=sample,
        )

    def rewrites(
        self, prompt: str, shown: Sequence[Shown], n: int, iteration: int, layer_index: int,
        template: str = "rewrite",
    ) -> list[str]:
        """Up to ``n`` rewrites of ``prompt`` (candidate indices 1..n), each from its own random view."""
        requests: list[Request] = []
        for i in range(1, n + 1):
            rng = rng_for(self.train.seed, iteration, layer_index + 1, i)
            instruction = REWRITE_INSTRUCTIONS[int(rng.integers(len(REWRITE_INSTRUCTIONS)))]
            chosen = pick_shown(shown, self.train.rewrite_examples, rng)
            req = self.request(template, {"prompt": prompt, "examples": chosen, "instruction": instruction}, i)
            if req is not None:
                requests.append(req)
        answers = self.client.run(self.model, requests)
        return [p for p in (clean_proposal(a["text"]) for a in answers) if p]


def with_examples(prompt: str, layer: Layer, shown: Sequence[Shown], count: int,
                  rng: np.random.Generator) -> str:
    """``prompt`` followed by ``count`` worked examples, written as the layer's own answer format.

    Examples cover as many different targets as possible (one per target in turn), and within
    a target errors come before successes, so a candidate shows the contrast the model missed.
    """
    by_target: dict[str, list[Shown]] = {}
    order = rng.permutation(len(shown)) if shown else []
    for i in order:
        s = shown[int(i)]
        if f"Input: {s.input}\n" not in prompt:  # never repeat an example the prompt already has
            by_target.setdefault(s.target, []).append(s)
    for group in by_target.values():
        group.sort(key=lambda s: s.correct)  # stable: errors first, random order within
    picked: list[Shown] = []
    while len(picked) < count and any(by_target.values()):
        for target in sorted(by_target):
            if by_target[target] and len(picked) < count:
                picked.append(by_target[target].pop(0))
    if not picked:
        return prompt
    rng.shuffle(picked)  # type: ignore[arg-type]
    lines = [f"Input: {s.input}\nAnswer: {s.target}" for s in picked]
    return (prompt.rstrip() + "\n\n" + "\n\n".join(lines)).strip()


@dataclass
class PromptMemory:
    """The best prompts seen at validation time, per layer (kept as extra candidates)."""

    size: int
    items: dict[str, list[tuple[float, str]]] = field(default_factory=dict)

    def add(self, layer: str, score: float, prompt: str) -> None:
        kept = [(s, p) for s, p in self.items.get(layer, []) if p != prompt]
        kept.append((score, prompt))
        kept.sort(key=lambda sp: -sp[0])
        self.items[layer] = kept[: self.size]

    def prompts(self, layer: str) -> list[str]:
        return [p for _, p in self.items.get(layer, [])]


H = TypeVar("H", bound=Hashable)


def unique(items: Sequence[H]) -> list[H]:
    """Order-preserving de-duplication (prompts, or instruction-and-demonstrations candidates)."""
    return list(dict.fromkeys(items))


def pick_best(candidates: Sequence[str], scores: Sequence[float]) -> int:
    """Index of the highest score; ties go to the earliest candidate (the current prompt comes first)."""
    best = 0
    for i, s in enumerate(scores):
        if s > scores[best] + 1e-12:
            best = i
    return best
