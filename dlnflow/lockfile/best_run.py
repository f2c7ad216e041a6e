"""What ``eval`` and ``run`` take from a sweep's lock besides the prompts: the best run's settings.

A sweep (:mod:`dlnflow.experiments.sweep`) writes the prompts of its best run into the spec's lock, and in
``sweep.best.overrides`` every setting that run replaced in the spec. The learned prompts only
make sense with the settings they were learned and measured with, so before a locked spec is
evaluated or run, the best run's settings are applied too, except the training-only ones:

- applied: ``layers.*`` (decoding such as ``generate.max_tokens``, templates, inputs, classes,
  initial prompts), ``models.*`` (which model answers, with which options), ``loss`` (how ``eval``
  scores an answer) and ``data.*`` (which examples ``eval`` reads);
- not applied: ``train.*`` (method, iterations, candidates, seed...). They decide which prompts
  training finds, and the lock already holds those; a forward pass never reads them.

>>> split_overrides({"train.seed": 3, "layers.think.generate.max_tokens": 8, "loss": "contains"})
({'layers.think.generate.max_tokens': 8, 'loss': 'contains'}, {'train.seed': 3})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dlnflow.core.errors import InputError
from dlnflow.lockfile.lock import best_run_of, read_lock
from dlnflow.spec.overrides import apply_overrides, point_label
from dlnflow.spec.pipeline import Pipeline

TRAINING_ONLY = "train."


def split_overrides(overrides: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(applied, training_only)``: the settings inference needs, and the ones only training reads."""
    applied = {k: v for k, v in overrides.items() if not k.startswith(TRAINING_ONLY)}
    return applied, {k: v for k, v in overrides.items() if k.startswith(TRAINING_ONLY)}


@dataclass(frozen=True)
class BestRun:
    """The sweep run whose prompts a lock holds, and what of its settings was applied."""

    run: str
    seed: int | None
    applied: dict[str, Any] = field(default_factory=dict)
    training_only: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None

    def note(self) -> str:
        """One line for the user: which run's prompts, and with which settings."""
        head = f"prompts of the sweep's best run {self.run} (seed {self.seed})"
        if self.problem is not None:
            return f"{head}; its settings were not applied: {self.problem}"
        if not self.applied:
            return f"{head}; it changed only training settings, which answering does not use"
        return f"{head}, with its settings: {point_label(self.applied)}"

    def as_dict(self) -> dict[str, Any]:
        return {"run": self.run, "seed": self.seed, "applied": dict(self.applied),
                "training_only": dict(self.training_only), "problem": self.problem}


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
    applied, training_only = split_overrides(overrides)
    if not applied:
        return BestRun(run, seed, {}, training_only), pipeline
    try:
        rebuilt = apply_overrides(pipeline, applied)
    except InputError as exc:
        return BestRun(run, seed, {}, training_only, problem=str(exc)), pipeline
    return BestRun(run, seed, applied, training_only), rebuilt
