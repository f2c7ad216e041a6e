"""Variational inference over hidden texts: DLN-2, and chains of any depth.

A chain is layers ``1..n`` where layer ``j`` reads ``x`` and (for ``j > 1``) layer ``j-1``;
layer ``n`` is the output. One iteration:

Forward rule: run the chain greedily on a batch: hidden texts ``h_1..h_{n-1}`` and the output.

Posterior rule (top down): for hidden level ``j`` the *target above* is the correct output
``y`` when ``j = n-1``, else the best posterior text of level ``j+1``. For each example the
backward model writes ``K`` posterior texts ``h~`` shown ``x``, the forward ``h_j``, the prompt of
layer ``j+1`` and the target above; the forward ``h_j`` is kept as one more candidate (sample 0).
Each text gets the log-weight

    log w = (log p(target above | x, h~, p_{j+1}) + log p(h~ | x, h_{j-1}, p_j)) / T

normalised per example (``T``: ``posterior_temperature``). The first term is the class log-prob
when layer ``j+1`` is the output classifier, else a per-token mean log-prob; the second is the
per-token mean log-prob of ``h~`` (length-normalised so long texts are not crushed).

Update rules (all candidates scored with the other layers' current prompts, then applied together):

- output layer ``n``: candidates as in DLN-1 (with demonstration swaps when it learns
  demonstrations, :mod:`dlnflow.optim.demos`), each scored by
  ``mean_i sum_k w_ik log p(y_i | x_i, h~_ik, candidate)`` minus the trust penalty;
- hidden layer ``j``: candidates written from ``(x, h_j, best h~_j)``, each scored by
  ``mean_i sum_k w_ik log p(h~_ik | x_i, h_{j-1,i}, candidate)``.

With ``n = 2`` this is exactly DLN-2; there is one code path for every depth.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlnflow.core.backend import Request
from dlnflow.core.errors import ConfigError
from dlnflow.graph.layers import INPUT, Graph, Layer
from dlnflow.graph.templates import backward, backward_stops
from dlnflow.optim.common import (
    Proposer,
    Shown,
    is_correct,
    loglik,
    pick_best,
    rng_for,
    sample_batch,
    unique,
)
from dlnflow.optim.context import TrainContext
from dlnflow.optim.dln1 import layer_candidates
from dlnflow.optim.demos import Candidate, apply, showing


def check_chain(graph: Graph) -> None:
    """Method vi needs a chain: layer j reads only x and layer j-1."""
    if len(graph) < 2:
        raise ConfigError("method vi needs at least two layers (a hidden layer and the output layer)")
    for j, layer in enumerate(graph.layers):
        allowed = {INPUT} | ({graph.layers[j - 1].name} if j else set())
        extra = set(layer.inputs) - allowed
        if extra or (j and graph.layers[j - 1].name not in layer.inputs):
            raise ConfigError(
                f"method vi needs a chain: layer {layer.name!r} must read the layer before it "
                f"(and optionally x), but reads {list(layer.inputs)}"
            )
        if j < len(graph) - 1 and layer.is_classifier:
            raise ConfigError(f"hidden layer {layer.name!r} cannot have output classes")


def softmax_rows(logw: list[np.ndarray]) -> list[np.ndarray]:
    """Normalise each example's log-weights into weights that sum to 1."""
    out = []
    for row in logw:
        z = row - row.max()
        e = np.exp(z)
        out.append(e / e.sum())
    return out


def trust_penalty(current: str, candidate: str, strength: float) -> float:
    """``strength`` times how far the candidate moved from the current prompt (0 = same, 1 = unrelated)."""
    if strength == 0 or candidate == current:
        return 0.0
    return strength * (1.0 - difflib.SequenceMatcher(None, current, candidate).ratio())


@dataclass
class Level:
    """Posterior texts and their weights for one hidden layer over the batch."""

    layer: Layer
    samples: list[list[str]]  # per example: [forward h, h~_1, ..., h~_K]
    weights: list[np.ndarray]  # per example, sums to 1
    targets_above: list[str]

    def best(self) -> list[str]:
        return [s[int(np.argmax(w))] for s, w in zip(self.samples, self.weights, strict=True)]


class VariationalChain:
    """DLN-2 (two layers) and deeper chains, trained jointly."""

    iterative = True

    def __init__(self, ctx: TrainContext):
        self.ctx = ctx
        check_chain(ctx.graph)
        for layer in ctx.graph.layers[:-1]:
            ctx.client.require(layer.model, ["score"], f"method vi (scoring hidden texts of layer {layer.name!r})")
        ctx.client.require(ctx.backward_model, ["generate"], "writing posterior texts and prompt candidates")

    def prepare(self) -> dict[str, Any]:
        return {}

    # -- posterior -------------------------------------------------------------------------
    def posterior_texts(
        self, layer: Layer, above: Layer, values: list[dict[str, str]], targets: list[str], skip: list[bool]
    ) -> list[list[str]]:
        """Forward text plus K sampled posterior texts per example (only the forward one where skipped)."""
        t = self.ctx.train
        tpl = backward("posterior")
        requests: list[Request] = []
        owners: list[int] = []
        for i, (v, y) in enumerate(zip(values, targets, strict=True)):
            if skip[i]:
                continue
            text = tpl.render(prompt=layer.prompt, x=v[INPUT], h=v[layer.name], next_prompt=above.prompt, y=y)
            for k in range(1, t.hidden_samples + 1):
                requests.append(
                    Request("generate", text, max_tokens=layer.decoding.max_tokens,
                            temperature=t.rewrite_temperature,
                            stop=backward_stops("posterior", layer.decoding.stop),
                            seed=t.seed, sample=k)
                )
                owners.append(i)
        answers = self.ctx.client.run(self.ctx.backward_model, requests)
        samples = [[v[layer.name]] for v in values]
        for i, a in zip(owners, answers, strict=True):
            text = a["text"].strip()
            if text and text not in samples[i]:
                samples[i].append(text)
        return samples

    def weigh(
        self, layer: Layer, above: Layer, values: list[dict[str, str]], samples: list[list[str]],
        targets: list[str],
    ) -> list[np.ndarray]:
        """Per example, normalised weights of its texts (see the module docstring)."""
        flat_above: list[dict[str, str]] = []
        flat_values: list[dict[str, str]] = []
        flat_h: list[str] = []
        flat_t: list[str] = []
        for v, ss, y in zip(values, samples, targets, strict=True):
            for s in ss:
                flat_above.append({**v, layer.name: s})
                flat_values.append(v)
                flat_h.append(s)
                flat_t.append(y)
        client = self.ctx.client
        like = loglik(client, above, flat_above, flat_t, above.prompt)
        prior = loglik(client, layer, flat_values, flat_h, layer.prompt)
        logw = (like + prior) / self.ctx.train.posterior_temperature
        rows, start = [], 0
        for ss in samples:
            rows.append(logw[start : start + len(ss)])
            start += len(ss)
        return softmax_rows(rows)

    def infer(self, values: list[dict[str, str]], ys: list[str], correct: list[bool]) -> list[Level]:
        """Posterior texts and weights for every hidden layer, from the top down."""
        layers = self.ctx.graph.layers
        skip = [c and self.ctx.train.resample_wrong_only for c in correct]
        levels: list[Level] = []
        targets = ys
        for j in range(len(layers) - 2, -1, -1):
            layer, above = layers[j], layers[j + 1]
            samples = self.posterior_texts(layer, above, values, targets, skip)
            weights = self.weigh(layer, above, values, samples, targets)
            level = Level(layer, samples, weights, targets)
            levels.insert(0, level)
            targets = level.best()
        return levels

    # -- updates ---------------------------------------------------------------------------
    def weighted_score(
        self, layer: Layer, values: list[dict[str, str]], level: Level, targets_of: str, prompt: str,
        sample_layer: str,
    ) -> float:
        """``mean_i sum_k w_ik * loglik`` with the sampled texts either as input or as target."""
        flat_v, flat_t, flat_w = [], [], []
        for i, (v, ss, w) in enumerate(zip(values, level.samples, level.weights, strict=True)):
            for s, wk in zip(ss, w, strict=True):
                if targets_of == "samples":
                    flat_v.append(v)
                    flat_t.append(s)
                else:
                    flat_v.append({**v, sample_layer: s})
                    flat_t.append(level.targets_above[i])
                flat_w.append(wk)
        ll = loglik(self.ctx.client, layer, flat_v, flat_t, prompt)
        return float(np.dot(np.array(flat_w), ll) / len(values))

    def hidden_candidates(self, layer: Layer, j: int, values: list[dict[str, str]], level: Level,
                          iteration: int) -> list[str]:
        t = self.ctx.train
        best = level.best()
        shown = [
            Shown(v[INPUT], v[layer.name], "", v[layer.name] == b, better=b)
            for v, b in zip(values, best, strict=True)
        ]
        proposer = Proposer(self.ctx.client, self.ctx.backward_model, t)
        rewrites = proposer.rewrites(layer.prompt, shown, max(t.prompt_candidates - 1, 0), iteration, j,
                                     template="hidden_rewrite")
        return unique([layer.prompt, *rewrites, *self.ctx.memory.prompts(layer.name)])

    def step(self, iteration: int) -> dict[str, Any]:
        ctx, t = self.ctx, self.ctx.train
        layers = ctx.graph.layers
        out = layers[-1]
        batch = sample_batch(ctx.pool, t.batch_size, t.seed, iteration)
        fwd = ctx.graph.forward(ctx.client, [e.input for e in batch])
        ys = [e.target for e in batch]
        outputs = fwd.outputs()
        correct = [is_correct(ctx.loss, o, y) for o, y in zip(outputs, ys, strict=True)]
        levels = self.infer(fwd.values, ys, correct)
        record: dict[str, Any] = {"batch_accuracy": sum(correct) / len(correct), "layers": {}}
        chosen: dict[str, Candidate] = {}
        if out.trainable:
            shown = [Shown(e.input, o, e.target, c) for e, o, c in zip(batch, outputs, correct, strict=True)]
            cands = layer_candidates(ctx, out, len(layers) - 1, shown, iteration, batch)
            top = levels[-1]
            scores = []
            for c in cands:
                with showing(out, c.demos):
                    scores.append(self.weighted_score(out, fwd.values, top, "above", c.prompt, top.layer.name)
                                  - trust_penalty(out.prompt, c.prompt, t.trust_penalty))
            chosen[out.name] = self._record(record, out, cands, scores)
        for j, level in enumerate(levels):
            layer = level.layer
            if not layer.trainable:
                continue
            prompts = self.hidden_candidates(layer, j, fwd.values, level, iteration)
            scores = [self.weighted_score(layer, fwd.values, level, "samples", c, layer.name) for c in prompts]
            chosen[layer.name] = self._record(record, layer, [Candidate(p, layer.demos) for p in prompts], scores)
            record["layers"][layer.name]["posterior"] = [
                {"texts": ss, "weights": [round(float(x), 6) for x in w]}
                for ss, w in zip(level.samples, level.weights, strict=True)
            ]
        for name, candidate in chosen.items():
            apply(ctx.graph.layer(name), candidate)
        return record

    @staticmethod
    def _record(record: dict[str, Any], layer: Layer, cands: list[Candidate], scores: list[float]) -> Candidate:
        best = pick_best([c.prompt for c in cands], scores)
        record["layers"][layer.name] = {
            "candidates": [c.entry(s, layer) for c, s in zip(cands, scores, strict=True)],
            "chosen": best,
            "objective": scores[best],
        }
        return cands[best]


__all__ = ["VariationalChain", "check_chain", "rng_for", "softmax_rows", "trust_penalty"]
