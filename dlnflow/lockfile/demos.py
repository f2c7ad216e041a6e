"""Demonstrations in the lock file: what is written per layer, and how the data can drift away from it.

A layer that learns demonstrations gets a ``demos`` list in its lock entry, one mapping per
demonstration with its example ``id``, ``input`` and ``target``, in the order they are shown::

    layers:
      answer:
        demos:
        - id: 641bc8babf81a210
          input: cat
          target: blue

``dlnflow status`` (and ``eval``/``run``, which print the drift) compares them with the training
split: a locked demonstration whose id is no longer there (the example was removed, or its input or
target changed, which changes its id) or whose text no longer matches is drift.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dlnflow.core.errors import LockError
from dlnflow.core.example import Example
from dlnflow.graph.demos import Demo, example_id, parse_demos


def lock_demos(state_value: str | None, current: Sequence[Demo]) -> list[dict[str, str]]:
    """The ``demos`` list of a lock entry, from a learned state value (else the layer's current demos)."""
    demos = parse_demos(state_value) if state_value is not None else tuple(current)
    return [d.as_dict() for d in demos]


def demos_k_drift(name: str, entry: Mapping[str, Any], k: int) -> list[str]:
    """A line when the spec's ``demos.k`` no longer matches what the lock holds for layer ``name``.

    >>> demos_k_drift("answer", {"prompt": "p"}, 2)
    ["layer 'answer' learns 2 demonstrations, but the lock holds none"]
    """
    locked = entry.get("demos")
    if locked is None:
        return [f"layer {name!r} learns {k} demonstrations, but the lock holds none"] if k else []
    n = len(locked) if isinstance(locked, list) else 0
    if n != k:
        return [f"demonstrations of layer {name!r}: the lock holds {n}, the spec asks for {k} (demos.k)"]
    return []


def demos_drift(layers: Mapping[str, Any], train: Sequence[Example]) -> list[str]:
    """Lines naming locked demonstrations that the training split no longer holds (by id and text).

    >>> layers = {"answer": {"demos": [{"id": example_id("cat", "blue"), "input": "cat", "target": "blue"}]}}
    >>> demos_drift(layers, [Example("cat", "blue")])
    []
    >>> demos_drift(layers, [Example("cat", "red")])  # doctest: +ELLIPSIS
    ["demonstration 641bc8babf81a210 of layer 'answer' ('cat' -> 'blue') is no longer in the training data"]
    """
    by_id = {example_id(e.input, e.target): e for e in train}
    lines = []
    for name, entry in sorted(layers.items()):
        if not isinstance(entry, Mapping) or "demos" not in entry:
            continue
        try:
            demos = parse_demos(entry["demos"])
        except LockError as exc:
            lines.append(f"demonstrations of layer {name!r}: {exc}")
            continue
        for d in demos:
            found = by_id.get(d.id)
            if found is None:
                lines.append(f"demonstration {d.id} of layer {name!r} ({_clip(d.input)!r} -> {d.target!r}) "
                             "is no longer in the training data")
            elif (found.input, found.target) != (d.input, d.target):
                lines.append(f"demonstration {d.id} of layer {name!r}: its text in the lock differs from the data")
    return lines


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
