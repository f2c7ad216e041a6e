"""Learning demonstrations: the first draw, swap proposals, and candidates of (instruction, demonstrations).

A layer that learns demonstrations (:mod:`dlnflow.graph.demos`) is trained on pairs: every
candidate is an instruction together with a set of demonstrations, and the pair is scored as an
instruction rewrite is (the same log-likelihood of the correct outputs on the same batch). An
iteration proposes

- the current pair;
- rewrites of the instruction, each shown with the current demonstrations;
- swaps: the current instruction with 1..k of its demonstrations replaced by other training
  examples, never one of the batch being scored (which would grade a candidate on its own
  answers). Where the layer classifies, every other swap (the 1st, 3rd, ...) replaces a
  demonstration by one of the same class, so a balanced set can stay balanced; the others take
  any class, so an unbalanced set can change its mix;
- remembered instructions (best on dev so far) with the current demonstrations.

Swaps take the slots that example-carrying candidates take for layers without demonstrations,
so a run proposes (and pays for) as many candidates either way. Every random choice comes from
:func:`~dlnflow.optim.common.rng_for`, so candidate ``j`` of an iteration is always the same.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlnflow.core.example import Example
from dlnflow.graph.demos import Demo, example_id
from dlnflow.graph.layers import Graph, Layer
from dlnflow.optim.common import Proposer, Shown, rng_for, unique
from dlnflow.optim.context import TrainContext

SWAP_BASE = 2000
"""Candidate indices of swaps start here (rewrites use 1..n, example candidates 1000+)."""


@dataclass(frozen=True)
class Candidate:
    """One candidate of a layer: an instruction and the demonstrations shown with it."""

    prompt: str
    demos: tuple[Demo, ...] = ()

    def entry(self, score: float, layer: Layer) -> dict[str, Any]:
        """How the candidate appears in a run log's step record."""
        out: dict[str, Any] = {"prompt": self.prompt, "score": score}
        if layer.learns_demos:
            out["demos"] = [d.id for d in self.demos]
        return out


def to_demo(example: Example) -> Demo:
    return Demo(example_id(example.input, example.target), example.input, example.target)


def first_draw(pool: Sequence[Example], k: int, seed: int) -> tuple[Demo, ...]:
    """``k`` distinct training examples, as balanced over the targets as the pool allows.

    Targets take turns (in sorted order) and each gives its examples in a seeded random order;
    the chosen set is then shuffled, so the order of the classes says nothing.
    """
    rng = rng_for(seed, 0, 0, SWAP_BASE - 1)
    by_target: dict[str, list[Demo]] = {}
    seen: set[str] = set()
    for i in rng.permutation(len(pool)):
        demo = to_demo(pool[int(i)])
        if demo.id not in seen:
            seen.add(demo.id)
            by_target.setdefault(demo.target, []).append(demo)
    picked: list[Demo] = []
    while len(picked) < k and any(by_target.values()):
        for target in sorted(by_target):
            if by_target[target] and len(picked) < k:
                picked.append(by_target[target].pop(0))
    order = rng.permutation(len(picked))
    return tuple(picked[int(i)] for i in order)


def ensure_demos(graph: Graph, pool: Sequence[Example], seed: int) -> None:
    """Give every layer that learns demonstrations but holds none its first draw from ``pool``."""
    for layer in graph:
        if layer.learns_demos and not layer.demos and pool:
            layer.demos = first_draw(pool, layer.demo_k, seed if layer.demo_seed is None else layer.demo_seed)


def swap_demos(demos: Sequence[Demo], pool: Sequence[Example], exclude: set[str], rng: np.random.Generator,
               same_target: bool = True) -> tuple[Demo, ...]:
    """``demos`` with 1..k of them (positions chosen at random) replaced by other examples of ``pool``.

    A replacement is never already shown, nor in ``exclude`` (the batch being scored); with
    ``same_target`` it has the replaced demonstration's target when the pool has one left.
    """
    if not demos:
        return tuple(demos)
    taken = {d.id for d in demos} | set(exclude)
    free = [to_demo(e) for e in pool]
    free = [d for d in {d.id: d for d in free}.values() if d.id not in taken]
    n = int(rng.integers(1, len(demos) + 1))
    positions = sorted(int(i) for i in rng.choice(len(demos), size=n, replace=False))
    out = list(demos)
    for pos in positions:
        if not free:
            break
        matching = [i for i, d in enumerate(free) if d.target == out[pos].target] if same_target else []
        choices = matching or list(range(len(free)))
        out[pos] = free.pop(choices[int(rng.integers(len(choices)))])
    return tuple(out)


def demo_candidates(ctx: TrainContext, layer: Layer, layer_index: int, shown: Sequence[Shown], iteration: int,
                    batch: Sequence[Example]) -> list[Candidate]:
    """The candidates of a layer that learns demonstrations (see the module docstring)."""
    t = ctx.train
    n_swaps = min(t.example_candidates, max(t.prompt_candidates - 1, 0))
    n_rewrites = max(t.prompt_candidates - 1 - n_swaps, 0)
    rewrites = Proposer(ctx.client, ctx.backward_model, t).rewrites(layer.prompt, shown, n_rewrites, iteration,
                                                                    layer_index)
    exclude = {example_id(e.input, e.target) for e in batch}
    swaps = [swap_demos(layer.demos, ctx.pool, exclude, rng_for(t.seed, iteration, layer_index + 1, SWAP_BASE + j),
                        same_target=layer.is_classifier and j % 2 == 0) for j in range(n_swaps)]
    current = layer.demos
    return unique([  # the same instruction with the same demonstrations is one candidate
        Candidate(layer.prompt, current),
        *(Candidate(p, current) for p in rewrites),
        *(Candidate(layer.prompt, d) for d in swaps),
        *(Candidate(p, current) for p in ctx.memory.prompts(layer.name)),
    ])


@contextmanager
def showing(layer: Layer, demos: tuple[Demo, ...]) -> Iterator[Layer]:
    """``layer`` rendering ``demos`` for the duration (to score a candidate), then as it was."""
    before = layer.demos
    layer.demos = demos
    try:
        yield layer
    finally:
        layer.demos = before


def apply(layer: Layer, candidate: Candidate) -> None:
    """Make ``candidate`` the layer's instruction and demonstrations."""
    layer.prompt = candidate.prompt
    layer.demos = candidate.demos
