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
:mod:`dlnflow.sweep`.

>>> m = Matrix(seeds=(1, 2), grid={"train.iterations": [5, 10]})
>>> [(r.seed, r.settings["train.iterations"]) for r in m.runs()]
[(1, 5), (2, 5), (1, 10), (2, 10)]
>>> parse_set("train.prompt_candidates=3,5")
('train.prompt_candidates', [3, 5])
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dlnflow.cache import canonical_json
from dlnflow.errors import InputError
from dlnflow.pipeline import Pipeline
from dlnflow.runs import run_dir

SUMMARY = "summary.json"


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
        if not 0 <= seeds[-1] < 2**32:
            raise InputError(f"--seeds {text!r}: {seeds[-1]} is not a seed (seeds are whole numbers from 0 to 2**32-1)")
    if len(set(seeds)) != len(seeds):
        raise InputError(f"--seeds {text!r}: a seed is repeated")
    return tuple(seeds)


# -- the matrix --------------------------------------------------------------------------------
def point_label(settings: dict[str, Any]) -> str:
    """``train.iterations=5, loss=contains`` (``spec settings`` when nothing is varied).

    >>> point_label({}), point_label({"train.iterations": 5})
    ('spec settings', 'train.iterations=5')
    """
    if not settings:
        return "spec settings"
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v}"
                     for k, v in settings.items())


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
    _check_size(len(chosen), grid)
    return Matrix(chosen, grid, fixed), sweep


MAX_RUNS = 1000
"""Most runs one sweep may hold (seeds times grid points)."""


def _check_size(seeds: int, grid: dict[str, list[Any]]) -> None:
    """Refuse a sweep of more than :data:`MAX_RUNS` runs before anything is expanded."""
    runs = seeds * math.prod(len(values) for values in grid.values())
    if runs > MAX_RUNS:
        sizes = " x ".join([f"{seeds} seed(s)", *(f"{len(v)} {k}" for k, v in grid.items())])
        raise InputError(f"the sweep asks for {runs:,} runs ({sizes}); at most {MAX_RUNS:,} are allowed: "
                         "vary fewer settings or fewer values at once")


def check_settings(pipeline: Pipeline, sets: Sequence[tuple[str, list[Any]]]) -> None:
    """Refuse setting names the spec does not have and values their schema rejects (exit 2)."""
    from dlnflow.compiler import setting_schemas
    from dlnflow.spec import validator
    from dlnflow.spec_messages import did_you_mean

    known = setting_schemas(pipeline.spec)
    problems: list[str] = []
    for key, values in sets:
        if key not in known:
            problems.append(f"--set {key}: no such setting" + did_you_mean(key, list(known))
                            + " (use a dotted name such as train.iterations or layers.<name>.prompt)")
            continue
        check = validator().evolve(schema=known[key])
        for value in values:
            problems += [f"--set {key}={value!r}: {e.message}" for e in check.iter_errors(value)]
    if problems:
        raise InputError("; ".join(problems))


# -- applying settings -----------------------------------------------------------------------------
def _named(items: list[Any], name_key: str, rest: str) -> tuple[Any, str] | None:
    for item in sorted(items, key=lambda it: -len(str(it.get(name_key, "")))):
        name = str(item.get(name_key, ""))
        if rest.startswith(name + "."):
            return item, rest[len(name) + 1 :]
    return None


def _set_path(node: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def set_setting(data: dict[str, Any], key: str, value: Any) -> None:
    """Write the dotted setting ``key`` into a spec's data (``layers.<name>.*``, ``models.<name>.*``,
    ``train.*``, ``data.*``, ``loss``).

    >>> d = {"layers": [{"name": "a.b", "prompt": "p"}]}
    >>> set_setting(d, "layers.a.b.generate.max_tokens", 8); d["layers"][0]["generate"]
    {'max_tokens': 8}
    """
    head, _, rest = key.partition(".")
    if head == "layers":
        found = _named([x for x in data.get("layers", []) if isinstance(x, dict)], "name", rest)
        if found is None:
            raise InputError(f"setting {key!r}: no layer of that name")
        _set_path(found[0], found[1], value)
    elif head == "models":
        from dlnflow.compiler import IMPLICIT_MODELS

        models = data.setdefault("models", copy.deepcopy(IMPLICIT_MODELS))
        names = sorted(models, key=len, reverse=True)
        name = next((n for n in names if rest.startswith(n + ".")), None)
        if name is None:
            raise InputError(f"setting {key!r}: no model of that name")
        _set_path(models[name], rest[len(name) + 1 :], value)
    elif not rest:
        data[head] = copy.deepcopy(value)
    else:
        _set_path(data.setdefault(head, {}), rest, value)


def apply_overrides(pipeline: Pipeline, overrides: dict[str, Any]) -> Pipeline:
    """A new pipeline: ``pipeline``'s spec with ``overrides`` written in, checked and compiled again."""
    from dlnflow.compiler import build_pipeline, check_document
    from dlnflow.spec import Document, schema_problems

    data = copy.deepcopy(pipeline.spec)
    for key, value in overrides.items():
        set_setting(data, key, value)
    doc = Document(file=pipeline.spec_path.name, path=pipeline.spec_path, text="", data=data)
    problems = [*schema_problems(doc), *check_document(doc)]
    if problems:
        details = "; ".join(f"{p.message} [{p.pointer}]" for p in problems)
        raise InputError(f"{pipeline.spec_path.name} with {point_label(overrides)}: {details}")
    return build_pipeline(doc)


# -- run folders and fingerprints -----------------------------------------------------------------
def run_dir_for(pipeline: Pipeline, overrides: dict[str, Any] | None = None, data_digest: str = "") -> Path:
    """``runs/<name>/seed<N>-<hash>``: the hash covers the training hyperparameters, any override
    of a setting outside ``train`` (so two grid points never share a folder), the spec's path and
    the data digest (so two specs with one name, or other data, never share one)."""
    other = {k: _plain(v) for k, v in (overrides or {}).items() if not k.startswith("train.")}
    return run_dir(pipeline.spec_path, pipeline.name, pipeline.train.seed, pipeline.train.hyperparameters(),
                   data_digest, other)


def _plain(value: Any) -> Any:
    from dlnflow.lock import plain

    return plain(value)


def fingerprint(pipeline: Pipeline, data_digest: str) -> str:
    """sha256 of what decides a run's result: layers (template digest, prompt, wiring, decoding,
    classes), model settings (not prices), data settings and content digest, loss and hyperparameters."""
    base = pipeline.spec_path.parent
    layers = [{"name": la.name, "inputs": list(la.inputs), "template": la.template.digest,
               "prompt": la.prompt, "model": la.model, "trainable": la.trainable,
               "decoding": asdict(la.decoding), "classes": list(la.classes or [])} for la in pipeline.graph]
    data = _plain(pipeline.data)
    if pipeline.data.path is not None:
        data["path"] = os.path.relpath(pipeline.data.path, base)
    models = {name: {k: v for k, v in m.items() if k != "price"} for name, m in pipeline.models.items()}
    body = {"layers": layers, "models": models, "data": data, "data_sha256": data_digest,
            "loss": pipeline.loss, "train": pipeline.train.hyperparameters()}
    return hashlib.sha256(canonical_json(_plain(body)).encode()).hexdigest()


def run_config(pipeline: Pipeline, data_digest: str, data_source: str, identities: dict[str, Any],
               overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``config`` block of a run's summary: what the run was, and enough to write its lock later."""
    from dlnflow.lock import public_identity

    return {
        "fingerprint": fingerprint(pipeline, data_digest),
        "seed": pipeline.train.seed,
        "overrides": _plain(overrides or {}),
        "identities": {k: public_identity(v) for k, v in identities.items()},
        "data": {"sha256": data_digest, "source": data_source},
    }


def finished_summary(run_dir: Path, expected: str) -> dict[str, Any] | None:
    """The run's summary when it finished with fingerprint ``expected``; else ``None``."""
    path = run_dir / SUMMARY
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or not isinstance(summary.get("config"), dict):
        return None
    return summary if summary["config"].get("fingerprint") == expected else None
