"""Settings written into a spec by dotted name (``train.iterations``, ``layers.<name>.prompt``,
``models.<name>.temperature``), checked against the schema and compiled again.

A sweep uses them for its grid points; ``eval`` and ``run`` for the best run's settings.

>>> point_label({}), point_label({"train.iterations": 5})
('spec settings', 'train.iterations=5')
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

from dlnflow._util.suggest import did_you_mean
from dlnflow.core.errors import InputError
from dlnflow.spec.compiler import IMPLICIT_MODELS, build_pipeline, check_document, setting_schemas
from dlnflow.spec.document import Document
from dlnflow.spec.loader import schema_problems, validator
from dlnflow.spec.pipeline import Pipeline


def point_label(settings: dict[str, Any]) -> str:
    """``train.iterations=5, loss=contains`` (``spec settings`` when nothing is varied)."""
    if not settings:
        return "spec settings"
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v}"
                     for k, v in settings.items())


def check_settings(pipeline: Pipeline, sets: Sequence[tuple[str, list[Any]]]) -> None:
    """Refuse setting names the spec does not have and values their schema rejects (exit 2)."""
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
    data = copy.deepcopy(pipeline.spec)
    for key, value in overrides.items():
        set_setting(data, key, value)
    doc = Document(file=pipeline.spec_path.name, path=pipeline.spec_path, text="", data=data)
    problems = [*schema_problems(doc), *check_document(doc)]
    if problems:
        details = "; ".join(f"{p.message} [{p.pointer}]" for p in problems)
        raise InputError(f"{pipeline.spec_path.name} with {point_label(overrides)}: {details}")
    return build_pipeline(doc)
