"""Sweeps: one spec trained over several seeds and settings, as a matrix of runs.

A spec's ``experiments`` section (or ``dlnflow train --seeds 1,2,3 --set key=v1,v2``) names the
seeds and a grid of dotted settings. :class:`Matrix` expands them into runs, grid point by grid
point and seed by seed inside each point. Every run is the spec with some settings replaced
(:func:`apply_overrides` rebuilds the pipeline from the spec's data, so any setting the grid may
name works, not only ``train.*``), and gets its own run folder (:func:`run_dir_for`).

A run is *finished* when its folder holds a ``summary.json`` whose ``config.fingerprint`` equals
the run's current :func:`fingerprint`: the effective layers, templates, prompts, models, data
(settings and content digest), loss and training hyperparameters. A sweep skips finished runs;
any other run is trained again, which replays every call the cache already holds for free, so
an interrupted sweep continues where it stopped. Running a sweep lives in
:mod:`dlnflow.experiments.sweep`.

>>> m = Matrix(seeds=(1, 2), grid={"train.iterations": [5, 10]})
>>> [(r.seed, r.settings["train.iterations"]) for r in m.runs()]
[(1, 5), (2, 5), (1, 10), (2, 10)]
>>> parse_set("train.prompt_candidates=3,5")
('train.prompt_candidates', [3, 5])
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from dlnflow.core.errors import InputError
from dlnflow.spec.overrides import check_settings, point_label
from dlnflow.spec.pipeline import Pipeline


# -- parsing the command line ----------------------------------------------------------------
def _scalar(text: str) -> Any:
    """A YAML scalar: ``10`` -> 10, ``0.5`` -> 0.5, ``null`` -> None, anything else stays text."""
    try:
        return yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        return text


def parse_set(text: str) -> tuple[str, list[Any]]:
    """``key=v1,v2`` -> ``(key, [v1, v2])``; a value written as a YAML list (``key=[a, "b,c"]``) is
    taken as the list of values, so values may contain commas.

    >>> parse_set("layers.answer.prompt=['Say a, or b.', Say c.]")
    ('layers.answer.prompt', ['Say a, or b.', 'Say c.'])
    >>> parse_set("loss=contains")
    ('loss', ['contains'])
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise InputError(f"--set {text!r}: expected SETTING=VALUE[,VALUE...], e.g. train.iterations=10")
    raw = raw.strip()
    if raw.startswith("["):
        try:
            values = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise InputError(f"--set {text!r}: the list of values does not parse: {exc}") from None
        if not isinstance(values, list) or not values:
            raise InputError(f"--set {text!r}: expected a non-empty list of values")
        return key, values
    return key, [_scalar(part.strip()) for part in raw.split(",")]


def parse_seeds(text: str) -> tuple[int, ...]:
    """``13,42,25`` -> ``(13, 42, 25)``.

    >>> parse_seeds("13, 42,25")
    (13, 42, 25)
    """
    seeds: list[int] = []
    for part in text.split(","):
        try:
            seeds.append(int(part.strip()))
        except ValueError:
            raise InputError(f"--seeds {text!r}: {part.strip()!r} is not an integer seed") from None
    if len(set(seeds)) != len(seeds):
        raise InputError(f"--seeds {text!r}: a seed is repeated")
    return tuple(seeds)


# -- the matrix --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunPoint:
    """One cell of the matrix: a seed, the grid values of its point and the fixed overrides."""

    seed: int
    settings: dict[str, Any]
    fixed: dict[str, Any] = field(default_factory=dict)

    @property
    def overrides(self) -> dict[str, Any]:
        """Everything this run replaces in the spec, ``train.seed`` included."""
        return {**self.fixed, **self.settings, "train.seed": self.seed}

    @property
    def label(self) -> str:
        return f"seed {self.seed}, {point_label(self.settings)}"


@dataclass(frozen=True)
class Matrix:
    """Seeds x grid values; ``fixed`` settings apply to every run."""

    seeds: tuple[int, ...]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)

    def points(self) -> list[dict[str, Any]]:
        """Every combination of grid values, the first key varying slowest."""
        keys = list(self.grid)
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*self.grid.values())]

    def runs(self) -> list[RunPoint]:
        return [RunPoint(seed, point, self.fixed) for point in self.points() for seed in self.seeds]

    def as_dict(self) -> dict[str, Any]:
        return {"seeds": list(self.seeds), "grid": {k: list(v) for k, v in self.grid.items()},
                "fixed": dict(self.fixed)}


def matrix_for(pipeline: Pipeline, seeds: Sequence[int] | None = None,
               sets: Sequence[tuple[str, list[Any]]] = ()) -> tuple[Matrix, bool]:
    """The matrix of ``pipeline``'s experiments with the command line's ``--seeds``/``--set`` applied.

    A ``--set`` with one value fixes that setting for every run; with several it becomes (or
    replaces) a grid dimension. Returns the matrix and whether it is a sweep (seeds or a grid
    were asked for); without one the matrix holds the single run of the spec's own seed.
    """
    grid = {k: list(v) for k, v in pipeline.experiments.grid.items()}
    fixed: dict[str, Any] = {}
    for key, values in sets:
        grid.pop(key, None)
        fixed.pop(key, None)
        if len(values) == 1:
            fixed[key] = values[0]
        else:
            grid[key] = list(values)
    chosen = tuple(seeds) if seeds else tuple(pipeline.experiments.seeds)
    if "train.seed" in grid:
        raise InputError("vary the seed with experiments.seeds or --seeds, not with a grid over train.seed")
    if chosen and "train.seed" in fixed:
        raise InputError("give the seeds either as experiments.seeds / --seeds or as train.seed, not both")
    sweep = bool(chosen) or bool(grid)
    if not chosen:
        chosen = (int(fixed.pop("train.seed", pipeline.train.seed)),)
    check_settings(pipeline, sets)
    return Matrix(chosen, grid, fixed), sweep


