"""The executable graph: layers in topological order, each an LLM call with a learnable prompt.

Modelled on ``torch.nn.Module``: :meth:`Graph.named_parameters` walks the layers and yields
``(dotted name, prompt)``; :meth:`Graph.state` / :meth:`Graph.load_state` save and restore
prompts by dotted name and, when strict, report missing and unexpected names instead of
guessing.

The last layer is the output layer. When it declares ``classes`` it is scored (one
``classify`` call over the verbalizers), otherwise it generates free text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from dlnflow.core.backend import Request
from dlnflow.core.errors import LockError
from dlnflow.core.protocols import Caller
from dlnflow.graph import calibration as calib
from dlnflow.graph.demos import DEMOS, Demo, demo_block, demos_text, parse_demos, with_demos
from dlnflow.graph.templates import Template

INPUT = "x"


@dataclass(frozen=True)
class Decoding:
    """Generation settings of a layer (temperature 0: greedy and deterministic)."""

    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ("\n\n",)


@dataclass
class Layer:
    """One language layer: ``template(prompt, inputs) -> model -> text``.

    ``prompt`` is the learnable parameter; ``initial_prompt`` is what the spec said. A layer with
    ``demo_k > 0`` also learns ``demos``: that many training examples shown before the input
    (:mod:`dlnflow.graph.demos`); ``demo_seed`` seeds their first draw (``None``: the run's seed).
    """

    name: str
    inputs: tuple[str, ...]
    template: Template
    prompt: str
    model: str
    trainable: bool = True
    decoding: Decoding = field(default_factory=Decoding)
    classes: tuple[str, ...] | None = None
    initial_prompt: str = ""
    calibration: str = calib.DEFAULT
    prior: tuple[float, ...] | None = None  # fixed calibration prior (from the lock file); see graph.calibration
    demo_k: int = 0
    demos: tuple[Demo, ...] = ()
    demo_seed: int | None = None

    def __post_init__(self) -> None:
        if not self.initial_prompt:
            self.initial_prompt = self.prompt

    @property
    def is_classifier(self) -> bool:
        return bool(self.classes)

    @property
    def verbalizers(self) -> tuple[str, ...]:
        """What follows the rendered context for each class (a leading space, as a word would)."""
        return tuple(" " + c for c in self.classes or ())

    @property
    def learns_demos(self) -> bool:
        return self.demo_k > 0

    def instruction_text(self, prompt: str | None = None) -> str:
        """What the template receives as ``prompt``: the instruction, then the demonstrations."""
        text = self.prompt if prompt is None else prompt
        rendered = [demo_block(self.template, d, self.inputs) for d in self.demos]
        sep = rendered[0][0] if rendered else ""
        return with_demos(text, [block for _, block in rendered], sep)

    def render(self, values: dict[str, str], prompt: str | None = None) -> str:
        """The full text sent to the model for one example (instruction, demonstrations, input)."""
        pairs = [(name, values[name]) for name in self.inputs]
        variables: dict[str, Any] = dict(pairs)
        return self.template.render(prompt=self.instruction_text(prompt), inputs=pairs, **variables)

    def generate_request(self, context: str, temperature: float | None = None, **kw: Any) -> Request:
        d = self.decoding
        return Request(
            "generate",
            context,
            max_tokens=d.max_tokens,
            temperature=d.temperature if temperature is None else temperature,
            top_p=d.top_p,
            stop=d.stop,
            **kw,
        )

    def classify_request(self, context: str) -> Request:
        return Request("classify", context, targets=self.verbalizers)

    def score_request(self, context: str, target: str) -> Request:
        return Request("score", context, targets=(" " + target.strip(),))

    def prompt_digest(self) -> str:
        return hashlib.sha256(self.initial_prompt.encode("utf-8")).hexdigest()


@dataclass
class ForwardResult:
    """What a forward pass produced, per example.

    ``values[i]`` maps ``x`` and each layer name to its text; ``probs[i]`` holds the output
    layer's class probabilities before calibration (empty when it generates text); ``prior`` the
    calibration prior its decisions used (``None``: uncalibrated).
    """

    values: list[dict[str, str]]
    probs: list[list[float]]
    output: str
    prior: list[float] | None = None

    def outputs(self) -> list[str]:
        return [v[self.output] for v in self.values]


@dataclass
class Graph:
    """Layers in topological order; the last one is the output."""

    layers: list[Layer]
    name: str = "pipeline"

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def output(self) -> Layer:
        return self.layers[-1]

    # -- parameters, nn.Module style -------------------------------------------------------
    def named_parameters(self) -> Iterator[tuple[str, str]]:
        """``(dotted name, value)`` of every trainable layer's prompt (and demonstrations), in graph order."""
        for layer in self.layers:
            if layer.trainable:
                yield f"{layer.name}.prompt", layer.prompt
                if layer.learns_demos:
                    yield f"{layer.name}.{DEMOS}", demos_text(layer.demos)

    def state(self) -> dict[str, str]:
        """Every layer's prompt (and demonstrations, as JSON text) by dotted name (trainable or not)."""
        out: dict[str, str] = {}
        for layer in self.layers:
            out[f"{layer.name}.prompt"] = layer.prompt
            if layer.learns_demos:
                out[f"{layer.name}.{DEMOS}"] = demos_text(layer.demos)
        return out

    def load_state(self, state: dict[str, str], strict: bool = True) -> tuple[list[str], list[str]]:
        """Set prompts from ``state``; return ``(missing, unexpected)`` names.

        With ``strict`` any missing or unexpected name raises :class:`LockError` and
        nothing is changed.
        """
        own = self.state()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append("missing: " + ", ".join(missing))
            if unexpected:
                parts.append("unexpected: " + ", ".join(unexpected))
            raise LockError("learned prompts do not fit this graph (" + "; ".join(parts) + ")")
        demos = {name: parse_demos(value) for name, value in state.items()
                 if name in own and name.endswith("." + DEMOS)}
        for name, value in state.items():
            if name in own:
                layer_name, kind = name.rsplit(".", 1)
                if kind == DEMOS:
                    self.layer(layer_name).demos = demos[name]
                else:
                    self.layer(layer_name).prompt = value
        return missing, unexpected

    # -- forward -----------------------------------------------------------------------------
    def forward(self, client: Caller, xs: Sequence[str]) -> ForwardResult:
        """Run every layer over the batch at its decoding settings (greedy by default).

        A classifier decides by its calibrated probabilities (see :mod:`dlnflow.graph.calibration`).
        """
        values: list[dict[str, str]] = [{INPUT: x} for x in xs]
        probs: list[list[float]] = [[] for _ in xs]
        prior: list[float] | None = None
        for layer in self.layers:
            contexts = [layer.render(v) for v in values]
            if layer.is_classifier:
                answers = client.run(layer.model, [layer.classify_request(c) for c in contexts])
                assert layer.classes is not None
                rows = [list(a["probs"]) for a in answers]
                prior = calib.prior_for(client, layer, rows)
                for v, p, row in zip(values, probs, rows, strict=True):
                    p[:] = row
                    v[layer.name] = calib.decide(layer.classes, row, prior)
            else:
                answers = client.run(layer.model, [layer.generate_request(c) for c in contexts])
                for v, a in zip(values, answers, strict=True):
                    v[layer.name] = a["text"].strip()
        return ForwardResult(values, probs, self.output.name, prior)

    def __call__(self, client: Caller, x: str) -> str:
        return self.forward(client, [x]).outputs()[0]
