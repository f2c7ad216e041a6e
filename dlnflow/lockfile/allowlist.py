"""Which settings a lock file may carry into ``eval`` and ``run``: an explicit allow-list.

A sweep records in its lock every setting its best run replaced. Of those, inference takes only
the ones listed here (a layer's prompt, template, inputs, trainable flag, decoding, output and
demonstration settings; ``loss``; how the data is read and split). Everything else is refused and named,
above all ``models.*`` and a layer's ``model``: a lock file is data a team commits and reviews,
so it never decides which model answers, where requests go or which credentials they carry.

>>> spec = {"layers": [{"name": "think"}]}
>>> split_overrides({"train.seed": 3, "layers.think.generate.max_tokens": 8, "loss": "contains"}, spec)
({'layers.think.generate.max_tokens': 8, 'loss': 'contains'}, {'train.seed': 3}, {})
>>> split_overrides({"models.local.base_url": "http://elsewhere/v1", "layers.think.model": "api"}, spec)[2]
{'models.local.base_url': 'http://elsewhere/v1', 'layers.think.model': 'api'}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TRAINING_ONLY = "train."
LAYER_SETTINGS = ("prompt", "template", "inputs", "trainable", "generate.", "output.", "demos.")
"""What of a layer a lock may set (``generate.``, ``output.`` and ``demos.``: every setting below them)."""
OTHER_SETTINGS = ("loss", "data.input", "data.target", "data.labels", "data.split.")
REFUSED_WHY = ("a lock file may not choose models, endpoints, backends or credentials; "
               "only the spec and the command line do")


def allowed(key: str, spec: Mapping[str, Any]) -> bool:
    """Whether a lock's sweep may apply setting ``key`` to the spec ``spec`` (plain data).

    >>> allowed("layers.a.b.prompt", {"layers": [{"name": "a.b"}]}), allowed("models.m.model", {})
    (True, False)
    """
    if any(key == s or (s.endswith(".") and key.startswith(s)) for s in OTHER_SETTINGS):
        return True
    layers = spec.get("layers")
    for layer in layers if isinstance(layers, list) else []:
        name = layer.get("name") if isinstance(layer, Mapping) else None
        if isinstance(name, str) and key.startswith(f"layers.{name}."):
            rest = key[len(name) + 8:]
            if any(rest == s or (s.endswith(".") and rest.startswith(s)) for s in LAYER_SETTINGS):
                return True
    return False


def split_overrides(overrides: Mapping[str, Any], spec: Mapping[str, Any]
                    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(applied, training_only, refused)``: the settings inference may take from a lock, the ones
    only training reads, and the ones a lock may not set (see :func:`allowed`)."""
    training = {k: v for k, v in overrides.items() if k.startswith(TRAINING_ONLY)}
    rest = {k: v for k, v in overrides.items() if k not in training}
    applied = {k: v for k, v in rest.items() if allowed(k, spec)}
    return applied, training, {k: v for k, v in rest.items() if k not in applied}


def refused_line(refused: Mapping[str, Any]) -> str:
    """One line naming the settings refused from a lock."""
    return f"the lock's sweep settings {', '.join(sorted(refused))} were not applied: {REFUSED_WHY}"
