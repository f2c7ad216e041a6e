"""What ``eval`` and ``run`` take from a sweep's lock besides the prompts: the best run's settings.

A sweep (:mod:`dlnflow.experiments.sweep`) writes the prompts of its best run into the spec's lock, and in
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

from dataclasses import dataclass, field
from typing import Any

from dlnflow.core.errors import InputError
from dlnflow.lockfile.allowlist import allowed, refused_line, split_overrides  # noqa: F401  (part of this API)
from dlnflow.lockfile.lock import best_run_of, read_lock
from dlnflow.spec.overrides import apply_overrides, point_label
from dlnflow.spec.pipeline import Pipeline

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


def apply_best_run(pipeline: Pipeline) -> tuple[BestRun | None, Pipeline]:
    """The settings of ``pipeline``'s sweep lock's best run, and the pipeline rebuilt with them.

    ``(None, pipeline)`` when the lock is not a sweep's; ``pipeline`` itself when nothing is
    applied. Settings that no longer fit the spec are left out and reported.
    :meth:`Network.use_lock` calls this before it loads the prompts.
    """
    found = best_run_of(read_lock(pipeline.lock_path))
    if found is None:
        return None, pipeline
    run, seed, overrides = found
    applied, training_only, refused = split_overrides(overrides, pipeline.spec)
    if not applied:
        return BestRun(run, seed, {}, training_only, refused=refused), pipeline
    try:
        rebuilt = apply_overrides(pipeline, applied)
    except InputError as exc:
        return BestRun(run, seed, {}, training_only, problem=str(exc), refused=refused), pipeline
    return BestRun(run, seed, applied, training_only, refused=refused), rebuilt
