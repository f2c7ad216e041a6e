"""What ``eval`` and ``run`` take from a sweep's lock besides the prompts: the best run's settings.

A sweep (:mod:`dlnflow.sweep`) writes the prompts of its best run into the spec's lock, and in
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
from typing import TYPE_CHECKING, Any

from dlnflow.errors import InputError
from dlnflow.experiments import apply_overrides, point_label
from dlnflow.lock import read_lock

if TYPE_CHECKING:
    from dlnflow.network import Network

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
    applied, training_only = split_overrides(overrides)
    if not applied:
        return BestRun(run, seed, {}, training_only)
    try:
        pipeline = apply_overrides(net.pipeline, applied)
    except InputError as exc:
        return BestRun(run, seed, {}, training_only, problem=str(exc))
    net.replace_pipeline(pipeline)
    return BestRun(run, seed, applied, training_only)
