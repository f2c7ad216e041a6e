"""DLN-1: prompt optimisation of the output layer.

Forward rule: run the graph greedily on a batch and compare outputs with the targets.
Update rule: ask the backward model for rewrites of the output prompt (each shown a random
mix of errors and successes and one style of change), add candidates that carry worked
examples, the current prompt and the best prompts from memory; score every candidate by how
likely it makes the correct outputs on the batch; keep the best. A layer that learns
demonstrations has swaps of its demonstrations in place of the example-carrying candidates, and
its instruction and demonstrations are kept together (:mod:`dlnflow.optim.demos`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dlnflow.core.errors import ConfigError
from dlnflow.core.example import Example
from dlnflow.graph.layers import Layer
from dlnflow.optim.common import (
    Proposer,
    Shown,
    is_correct,
    loglik,
    pick_best,
    rng_for,
    sample_batch,
    unique,
    with_examples,
)
from dlnflow.optim.context import TrainContext
from dlnflow.optim.demos import Candidate, apply, demo_candidates, showing


def output_candidates(
    ctx: TrainContext, layer: Layer, layer_index: int, shown: Sequence[Shown], iteration: int
) -> list[str]:
    """Current prompt first, then rewrites, example-carrying candidates and remembered prompts."""
    t = ctx.train
    n_examples = min(t.example_candidates, max(t.prompt_candidates - 1, 0))
    n_rewrites = max(t.prompt_candidates - 1 - n_examples, 0)
    proposer = Proposer(ctx.client, ctx.backward_model, t)
    rewrites = proposer.rewrites(layer.prompt, shown, n_rewrites, iteration, layer_index)
    demos = [
        with_examples(layer.prompt, layer, shown, 2, rng_for(t.seed, iteration, layer_index + 1, 1000 + j))
        for j in range(n_examples)
    ]
    return unique([layer.prompt, *rewrites, *demos, *ctx.memory.prompts(layer.name)])


def layer_candidates(
    ctx: TrainContext, layer: Layer, layer_index: int, shown: Sequence[Shown], iteration: int,
    batch: Sequence[Example],
) -> list[Candidate]:
    """The output layer's candidates: instructions alone, or (instruction, demonstrations) pairs
    when the layer learns demonstrations (:mod:`dlnflow.optim.demos`)."""
    if layer.learns_demos:
        return demo_candidates(ctx, layer, layer_index, shown, iteration, batch)
    return [Candidate(p, layer.demos) for p in output_candidates(ctx, layer, layer_index, shown, iteration)]


class DLN1:
    """Trains the output layer's prompt; other layers stay as they are."""

    iterative = True

    def __init__(self, ctx: TrainContext):
        self.ctx = ctx
        layer = ctx.graph.output
        if not layer.trainable:
            raise ConfigError(f"method dln1 trains the output layer {layer.name!r}, which is trainable: false")
        ctx.client.require(ctx.backward_model, ["generate"], "writing prompt candidates")

    def prepare(self) -> dict[str, Any]:
        return {}

    def step(self, iteration: int) -> dict[str, Any]:
        ctx, t = self.ctx, self.ctx.train
        graph = ctx.graph
        layer, index = graph.output, len(graph) - 1
        batch = sample_batch(ctx.pool, t.batch_size, t.seed, iteration)
        fwd = graph.forward(ctx.client, [e.input for e in batch])
        targets = [e.target for e in batch]
        outputs = fwd.outputs()
        shown = [
            Shown(e.input, o, e.target, is_correct(ctx.loss, o, e.target))
            for e, o in zip(batch, outputs, strict=True)
        ]
        candidates = layer_candidates(ctx, layer, index, shown, iteration, batch)
        scores = []
        for c in candidates:
            with showing(layer, c.demos):
                scores.append(float(loglik(ctx.client, layer, fwd.values, targets, c.prompt).mean()))
        best = pick_best([c.prompt for c in candidates], scores)
        apply(layer, candidates[best])
        return {
            "batch_accuracy": sum(s.correct for s in shown) / len(shown),
            "layers": {
                layer.name: {
                    "candidates": [c.entry(s, layer) for c, s in zip(candidates, scores, strict=True)],
                    "chosen": best,
                    "objective": scores[best],
                }
            },
        }
