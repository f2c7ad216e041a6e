"""Built-in generated tasks: data dlnflow writes itself, so examples work without any download.

A spec selects one with ``data: {format: task, task: {name: label_mapping, size: 300, seed: 0}}``.
Each task declares its output classes; a spec's output layer should list exactly those.

Tasks:

- ``label_mapping`` (classes ``["blue", "red"]``): English animal nouns are labelled
  ``blue`` and fruit nouns ``red``. See :mod:`dlnflow.data.tasks.label_mapping`.

>>> task_classes("label_mapping")
('blue', 'red')
>>> [e.input for e in generate("label_mapping", 4, seed=1)] == [e.input for e in generate("label_mapping", 4, 1)]
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dlnflow._util.suggest import did_you_mean
from dlnflow.core.example import Example
from dlnflow.data.tasks import label_mapping


@dataclass(frozen=True)
class Task:
    """A generated task: its classes, the largest size it can make, and its generator."""

    name: str
    classes: tuple[str, ...]
    max_size: int
    make: Callable[[int, int], list[Example]]
    description: str


TASKS: dict[str, Task] = {
    "label_mapping": Task(
        name="label_mapping",
        classes=label_mapping.CLASSES,
        max_size=label_mapping.max_size(),
        make=label_mapping.generate,
        description="animal nouns -> blue, fruit nouns -> red (an arbitrary mapping to learn)",
    ),
}


def get_task(name: str) -> Task:
    """The task called ``name``; ``KeyError`` with the known names and a did-you-mean otherwise."""
    if name in TASKS:
        return TASKS[name]
    hint = did_you_mean(name, TASKS)
    raise KeyError(f"unknown task {name!r}; built-in tasks: {', '.join(TASKS)}{hint}")


def task_classes(name: str) -> tuple[str, ...]:
    """The output classes of task ``name`` (what its targets can be)."""
    return get_task(name).classes


def generate(name: str, size: int, seed: int = 0) -> list[Example]:
    """``size`` examples of task ``name``, the same for the same ``seed`` on every run."""
    return get_task(name).make(size, seed)
