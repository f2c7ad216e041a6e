"""What ``eval`` and ``run`` take from a sweep's lock besides the prompts: the best run's settings.

A sweep (:mod:`dlnflow.sweep`) writes the prompts of its best run into the spec's lock, and in
``sweep.best.overrides`` every setting that run replaced in the spec. The learned prompts only
make sense with the settings they were learned and measured with, so before a locked spec is
evaluated or run, the best run's settings are applied too, except the training-only ones:

- applied, and only these (:func:`allowed`): a layer's ``prompt``, ``template``, ``inputs``,
  ``trainable``, ``generate.*`` (decoding such as ``max_tokens``) and ``output.*`` (classes);
  ``loss`` (how ``eval`` scores an answer); ``data.split.*``, ``data.input``, ``data.target`` and
  ``data.labels`` (which examples ``eval`` reads and how);
- refused, and named by ``status``, ``eval`` and ``run``: everything else, above all ``models.*``
  and a layer's ``model``. A lock file is data a team commits and reviews; it must never decide
  which model answers, where requests go or which credentials they carry, so only the spec and
  the command line name models, endpoints, backends and keys. A refused setting also counts as
  drift, so ``status --strict`` fails on it;
- not applied: ``train.*`` (method, iterations, candidates, seed...). They decide which prompts
  training finds, and the lock already holds those; a forward pass never reads them.

>>> spec = {"layers": [{"name": "think"}]}
>>> split_overrides({"train.seed": 3, "layers.think.generate.max_tokens": 8, "loss": "contains"}, spec)
({'layers.think.generate.max_tokens': 8, 'loss': 'contains'}, {'train.seed': 3}, {})
>>> split_overrides({"models.local.base_url": "http://elsewhere/v1", "layers.think.model": "api"}, spec)[2]
{'models.local.base_url': 'http://elsewhere/v1', 'layers.think.model': 'api'}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dlnflow.errors import InputError
from dlnflow.experiments import apply_overrides, point_label
from dlnflow.lock import read_lock

if TYPE_CHECKING:
    from dlnflow.network import Network

TRAINING_ONLY = "train."
LAYER_SETTINGS = ("prompt", "template", "inputs", "trainable", "generate.", "output.")
"""What of a layer a lock may set (``generate.`` and ``output.``: every setting below them)."""
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


@dataclass(frozen=True)
class BestRun:
    """The sweep run whose prompts a lock holds, and what of its settings was applied."""

    run: str
    seed: int | None
    applied: dict[str, Any] = field(default_factory=dict)
    training_only: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None
    refused: dict[str, Any] = field(default_factory=dict)

    def note(self) -> str:
        """One line for the user: which run's prompts, with which settings, and what was refused."""
        head = f"prompts of the sweep's best run {self.run} (seed {self.seed})"
        tail = f"; {refused_line(self.refused)}" if self.refused else ""
        if self.problem is not None:
            return f"{head}; its settings were not applied: {self.problem}{tail}"
        if not self.applied:
            changed = "only training settings, which answering does not use" if not self.refused else \
                "no setting that answering may take from a lock"
            return f"{head}; it changed {changed}{tail}"
        return f"{head}, with its settings: {point_label(self.applied)}{tail}"

    def as_dict(self) -> dict[str, Any]:
        return {"run": self.run, "seed": self.seed, "applied": dict(self.applied),
                "training_only": dict(self.training_only), "problem": self.problem,
                "refused": sorted(self.refused)}


def best_run_of(lock: Mapping[str, Any] | None) -> tuple[str, int | None, dict[str, Any]] | None:
    """``(run folder name, seed, overrides)`` of a sweep lock's best run; ``None`` for other locks."""
    sweep = lock.get("sweep") if isinstance(lock, Mapping) else None
    best = sweep.get("best") if isinstance(sweep, Mapping) else None
    if not isinstance(best, Mapping):
        return None
    overrides = best.get("overrides")
    seed = best.get("seed")
    return (str(best.get("run", "?")), seed if isinstance(seed, int) else None,
            dict(overrides) if isinstance(overrides, Mapping) else {})


def apply_best_run(net: Network) -> BestRun | None:
    """Give ``net`` the settings of its sweep lock's best run (``None``: the lock is not a sweep's).

    The pipeline is rebuilt with the settings applied (models and data follow it when next
    used). Settings that no longer fit the spec are left out and reported.
    :meth:`Network.use_lock` calls this before it loads the prompts.
    """
    found = best_run_of(read_lock(net.pipeline.lock_path))
    if found is None:
        return None
    run, seed, overrides = found
    applied, training_only, refused = split_overrides(overrides, net.pipeline.spec)
    if not applied:
        return BestRun(run, seed, {}, training_only, refused=refused)
    try:
        pipeline = apply_overrides(net.pipeline, applied)
    except InputError as exc:
        return BestRun(run, seed, {}, training_only, problem=str(exc), refused=refused)
    net.replace_pipeline(pipeline)
    return BestRun(run, seed, applied, training_only, refused=refused)
