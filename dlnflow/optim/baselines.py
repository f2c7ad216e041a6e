"""Baselines in the same harness as DLN-1 and DLN-2.

- ``none``: 0-shot, the prompts as written in the spec.
- ``fewshot``: the output prompt followed by ``few_shot`` train examples (chosen with the seed).
- ``ape``: candidate instructions induced once from train examples by the backward model
  (APE-style), each scored on a train batch like a DLN-1 candidate; the best is kept.

None of them iterates: ``prepare()`` sets the prompt and ``step`` is never called.
"""

from __future__ import annotations

from typing import Any

from dlnflow.optim.common import (
    Proposer,
    Shown,
    clean_proposal,
    loglik,
    pick_best,
    rng_for,
    sample_batch,
    unique,
    with_examples,
)
from dlnflow.optim.context import TrainContext


class Baseline:
    """A method that sets its prompt once in :meth:`prepare` and never iterates."""

    iterative = False

    def __init__(self, ctx: TrainContext):
        self.ctx = ctx

    def prepare(self) -> dict[str, Any]:
        raise NotImplementedError

    def step(self, iteration: int) -> dict[str, Any]:  # pragma: no cover - never iterates
        raise RuntimeError("baselines do not iterate")


class ZeroShot(Baseline):
    """The initial prompts as written in the spec (``method: none``)."""

    def prepare(self) -> dict[str, Any]:
        return {"method": "none"}


class FewShot(Baseline):
    def prepare(self) -> dict[str, Any]:
        ctx = self.ctx
        layer = ctx.graph.output
        shown = [Shown(e.input, "", e.target, False) for e in ctx.pool]
        layer.prompt = with_examples(layer.prompt, layer, shown, ctx.train.few_shot, rng_for(ctx.train.seed, 0, 7))
        return {"method": "fewshot", "examples": ctx.train.few_shot}


class APE(Baseline):
    def prepare(self) -> dict[str, Any]:
        ctx, t = self.ctx, self.ctx.train
        layer = ctx.graph.output
        proposer = Proposer(ctx.client, ctx.backward_model, t)
        requests = []
        for i in range(1, t.prompt_candidates + 1):
            rng = rng_for(t.seed, 0, 9, i)
            idx = rng.choice(len(ctx.pool), size=min(t.rewrite_examples, len(ctx.pool)), replace=False)
            examples = [Shown(ctx.pool[int(k)].input, "", ctx.pool[int(k)].target, True) for k in idx]
            req = proposer.request("induce", {"examples": examples}, i)
            if req is not None:
                requests.append(req)
        answers = ctx.client.run(ctx.backward_model, requests)
        cands = unique([layer.prompt, *[p for p in (clean_proposal(a["text"]) for a in answers) if p]])
        batch = sample_batch(ctx.pool, t.batch_size, t.seed, 0)
        fwd = ctx.graph.forward(ctx.client, [e.input for e in batch])
        targets = [e.target for e in batch]
        scores = [float(loglik(ctx.client, layer, fwd.values, targets, c).mean()) for c in cands]
        best = pick_best(cands, scores)
        layer.prompt = cands[best]
        scored = [{"prompt": c, "score": s} for c, s in zip(cands, scores, strict=True)]
        return {
            "method": "ape",
            "layers": {layer.name: {"candidates": scored, "chosen": best, "objective": scores[best]}},
        }
