"""Datasets: examples from a file (or a generated task), checked, then split into train/dev/test.

Formats (``data.format`` in a spec):

- ``bbh``: a JSON object ``{"examples": [{"input", "target"}, ...]}``; one pool.
- ``leopard``: a JSON list of ``{"sentence1", "label"}``; one pool.
- ``jsonl`` / ``csv``: one example per line (CSV with a header row); fields named by
  ``data.input`` / ``data.target`` (default ``input`` / ``target``); one pool.
- ``ordered_prompt``: a directory with ``train.jsonl``, ``dev_subsample.jsonl`` and
  ``test.jsonl`` (rows ``{"sentence", "label"}``); each split is drawn from its own file.
- ``task``: a built-in generated task (:mod:`dlnflow.data.tasks`).

A pool is split with a :class:`numpy.random.Generator` permutation seeded by ``split.seed``
(train first, then dev, then test, so changing the test size never changes train). A size of
``None`` takes all that remain. Generated tasks are split with their classes interleaved, so
every split is balanced. ``data.labels`` maps raw labels to class words before targets are
checked against the output layer's classes.

``Dataset.digest`` identifies the data: the sha256 of the file's bytes (for a directory, of
each file's name and digest), or of the generated task's canonical JSON. Every problem found
is reported at once, located (file, line, column, JSON pointer), as a :class:`DataError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlnflow._util.suggest import closest
from dlnflow.core.errors import DataError, Problem
from dlnflow.core.example import Example
from dlnflow.data import tasks
from dlnflow.data.readers import (
    Record,
    csv_records,
    display_name,
    file_error,
    json_records,
    jsonl_records,
    read_source,
)
from dlnflow.spec.settings import DataSettings, SplitSettings

SPLITS = ("train", "dev", "test")
ORDERED_PROMPT_FILES = {"train": "train.jsonl", "dev": "dev_subsample.jsonl", "test": "test.jsonl"}
FIELD_DEFAULTS = {"ordered_prompt": ("sentence", "label"), "leopard": ("sentence1", "label")}
MAX_PROBLEMS = 20


@dataclass(frozen=True)
class Dataset:
    """The three splits, a digest identifying the data, and where it came from."""

    train: list[Example]
    dev: list[Example]
    test: list[Example]
    digest: str
    source: str

    def split(self, name: str) -> list[Example]:
        """One split by name (``train``, ``dev`` or ``test``)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return list(getattr(self, name))


class _Problems:
    """Collects problems; a repeated problem (same key) is counted, not listed again."""

    def __init__(self) -> None:
        self.items: list[Problem] = []
        self.index: dict[Any, int] = {}
        self.repeats: Counter[Any] = Counter()

    def add(self, problem: Problem, key: Any = None) -> None:
        if key is not None and key in self.index:
            self.repeats[key] += 1
            return
        if key is not None:
            self.index[key] = len(self.items)
        self.items.append(problem)

    def extend(self, problems: Sequence[Problem]) -> None:
        for p in problems:
            self.add(p)

    def check(self, what: str) -> None:
        """Raise one :class:`DataError` holding every problem, if there are any."""
        if not self.items:
            return
        items = list(self.items)
        for key, n in self.repeats.items():
            p = items[self.index[key]]
            items[self.index[key]] = dataclasses.replace(p, message=f"{p.message} (and {n} more rows like this)")
        if len(items) > MAX_PROBLEMS:
            rest = len(items) - MAX_PROBLEMS
            items = items[:MAX_PROBLEMS] + [Problem(items[0].file, 0, 0, "", f"... and {rest} more problems")]
        raise DataError(f"{what}: {len(self.items)} problem(s) in the data", items)


def _fields(settings: DataSettings) -> tuple[str, str]:
    """The input and target field names, with the format's own defaults where the spec kept ours."""
    default_in, default_target = FIELD_DEFAULTS.get(settings.format, ("input", "target"))
    name_in = default_in if settings.input == "input" else settings.input
    name_target = default_target if settings.target == "target" else settings.target
    return name_in, name_target


def _text(value: Any) -> str | None:
    """A field value as text (numbers allowed), or ``None`` when it is not text-like."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _missing_field(record: Record, name: str, role: str, found: list[str], problems: _Problems) -> None:
    close = closest(name, found, cutoff=0.7)
    hint = f'did you mean "{close}"? ' if close else ""
    hint += f"set data.{role} to the field that holds the {role} text"
    message = f'row has no field "{name}" (fields found: {", ".join(found) or "none"})'
    problems.add(record.missing(message, hint=hint), ("missing", name, tuple(found)))


def _check_target(
    record: Record, field: str, raw: str, labels: dict[str, str] | None,
    classes: tuple[str, ...] | None, problems: _Problems,
) -> str | None:
    """Map ``raw`` through ``labels`` and check it is a class; ``None`` (and a problem) when not."""
    target = raw.strip()
    if labels is not None:
        if target not in labels:
            message = f'label "{target}" has no entry in data.labels (mapped: {", ".join(labels)})'
            problems.add(record.problem(message, field, "add it to data.labels"), ("unmapped", target))
            return None
        target = labels[target]
    if classes and target not in classes:
        close = [c for c in classes if c.casefold() == target.casefold()]
        if close:
            hint = f'classes are case-sensitive: did you mean "{close[0]}"?'
        elif labels is None:
            hint = 'map raw labels to class words with data.labels, e.g. {"0": "' + classes[0] + '"}'
        else:
            hint = "make data.labels map every raw label to one of the classes"
        message = f'label "{target}" is not one of the output classes ({", ".join(classes)})'
        problems.add(record.problem(message, field, hint), ("class", target))
        return None
    return target


def to_examples(
    records: list[Record], fields: tuple[str, str], labels: dict[str, str] | None,
    classes: tuple[str, ...] | None, problems: _Problems,
) -> list[Example]:
    """Turn located rows into examples, adding a problem for every row that does not fit."""
    out: list[Example] = []
    for record in records:
        if not isinstance(record.fields, dict):
            kind = type(record.fields).__name__
            message = f'expected an object with fields "{fields[0]}" and "{fields[1]}", found {kind}'
            problems.add(record.problem(message), ("shape", kind))
            continue
        found = list(record.fields)
        values: list[str | None] = []
        for name, role in zip(fields, ("input", "target"), strict=True):
            if name not in record.fields:
                _missing_field(record, name, role, found, problems)
                values.append(None)
                continue
            text = _text(record.fields[name])
            if text is None:
                kind = type(record.fields[name]).__name__ if record.fields[name] is not None else "null"
                problems.add(record.problem(f'field "{name}" is {kind}; expected text', name), ("type", name, kind))
            values.append(text)
        if values[0] is not None and not values[0].strip():
            hint = "remove the row, or fill in its input text"
            problems.add(record.problem(f'field "{fields[0]}" is empty; every example needs an input text',
                                        fields[0], hint), ("empty", fields[0]))
            continue
        if values[0] is None or values[1] is None:
            continue
        target = _check_target(record, fields[1], values[1], labels, classes, problems)
        if target is not None:
            out.append(Example(values[0], target))
    return out


def _sizes(split: SplitSettings, available: int, where: str, what: str) -> tuple[int, int, int]:
    """Resolve the three split sizes against a pool of ``available`` examples."""
    asked = [split.train, split.dev, split.test]
    if sum(size is None for size in asked) > 1:
        raise DataError(f"{where}: at most one of data.split train/dev/test may be null (all that remain)")
    fixed = sum(size or 0 for size in asked)
    if fixed > available:
        message = (f"data.split asks for {' + '.join(str(s or 0) for s in asked)} = {fixed} examples "
                   f"but {what} has only {available}")
        hint = "lower the split sizes, or set one of them to null to take all that remain"
        raise DataError(f"{where}: {message}", [Problem(where, 0, 0, "", message, hint=hint)])
    train, dev, test = (available - fixed if s is None else s for s in asked)
    return train, dev, test


def split_pool(
    pool: list[Example], split: SplitSettings, where: str, balanced: bool = False,
) -> tuple[list[Example], list[Example], list[Example]]:
    """Split one pool into train/dev/test by ``split`` (sizes and seed).

    >>> pool = [Example(str(i), "a") for i in range(10)]
    >>> tr, dev, te = split_pool(pool, SplitSettings(train=5, dev=2, test=None, seed=1), "x")
    >>> len(tr), len(dev), len(te), len({e.input for e in tr + dev + te})
    (5, 2, 3, 10)
    """
    n_train, n_dev, n_test = _sizes(split, len(pool), where, "the data")
    rng = np.random.default_rng(split.seed)
    order = balanced_order([e.target for e in pool], rng) if balanced else list(rng.permutation(len(pool)))
    shuffled = [pool[i] for i in order]
    return (shuffled[:n_train], shuffled[n_train:n_train + n_dev],
            shuffled[n_train + n_dev:n_train + n_dev + n_test])


def balanced_order(targets: list[str], rng: np.random.Generator) -> list[int]:
    """A random order of indices whose every prefix is as class-balanced as possible.

    >>> order = balanced_order(["a", "a", "b", "b"], np.random.default_rng(0))
    >>> sorted(order), sorted("aabb"[i] for i in order[:2])
    ([0, 1, 2, 3], ['a', 'b'])
    """
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(targets):
        groups.setdefault(t, []).append(i)
    queues = [[g[j] for j in rng.permutation(len(g))] for g in groups.values()]
    order: list[int] = []
    for r in range(max(len(q) for q in queues) if queues else 0):
        round_ = [q[r] for q in queues if r < len(q)]
        order.extend(round_[j] for j in rng.permutation(len(round_)))
    return order


def _read_records(fmt: str, path: Path) -> tuple[bytes, list[Record], list[Problem]]:
    name = display_name(path)
    raw, text = read_source(path, line_based=fmt in ("jsonl", "csv"))
    if fmt == "bbh":
        return raw, json_records(text, name, key="examples"), []
    if fmt == "leopard":
        return raw, json_records(text, name), []
    if fmt == "csv":
        return raw, *csv_records(text, name)
    return raw, *jsonl_records(text, name)


def _pool_dataset(settings: DataSettings, path: Path, classes: tuple[str, ...] | None) -> Dataset:
    raw, records, parse_problems = _read_records(settings.format, path)
    problems = _Problems()
    problems.extend(parse_problems)
    pool = to_examples(records, _fields(settings), settings.labels, classes, problems)
    name = display_name(path)
    problems.check(name)
    if not pool:
        raise file_error(path, "no examples found")
    train, dev, test = split_pool(pool, settings.split, name)
    return Dataset(train, dev, test, hashlib.sha256(raw).hexdigest(), f"{settings.format}:{path.name}")


def _ordered_prompt(settings: DataSettings, folder: Path, classes: tuple[str, ...] | None) -> Dataset:
    if not folder.is_dir():
        files = ", ".join(ORDERED_PROMPT_FILES.values())
        what = "not found" if not folder.exists() else "is a file"
        raise file_error(folder, f"ordered_prompt data folder {what}", f"data.path must be a folder holding {files}")
    problems = _Problems()
    pools: dict[str, list[Example]] = {}
    digest = hashlib.sha256()
    for split, filename in ORDERED_PROMPT_FILES.items():
        raw, records, parse_problems = _read_records("jsonl", folder / filename)
        digest.update(f"{filename}\0{hashlib.sha256(raw).hexdigest()}\n".encode())
        problems.extend(parse_problems)
        pools[split] = to_examples(records, _fields(settings), settings.labels, classes, problems)
    problems.check(display_name(folder))
    chosen: list[list[Example]] = []
    for k, split in enumerate(SPLITS):
        size = getattr(settings.split, split)
        pool, where = pools[split], display_name(folder / ORDERED_PROMPT_FILES[split])
        if size is not None and size > len(pool):
            message = f"data.split.{split} asks for {size} examples but the file has only {len(pool)}"
            raise DataError(f"{where}: {message}", [Problem(where, 0, 0, "", message, hint="lower it or use null")])
        order = np.random.default_rng([settings.split.seed, k]).permutation(len(pool))
        chosen.append([pool[i] for i in order[: len(pool) if size is None else size]])
    return Dataset(*chosen, digest=digest.hexdigest(), source=f"ordered_prompt:{folder.name}")


def _task(settings: DataSettings, classes: tuple[str, ...] | None) -> Dataset:

    options = dict(settings.task or {})
    name, size, seed = options.get("name"), int(options.get("size", 300)), int(options.get("seed", 0))
    where = f"task {name}"
    try:
        task = tasks.get_task(str(name))
        generated = task.make(size, seed)
    except KeyError as exc:
        raise DataError(str(exc.args[0]), [Problem("data.task", 0, 0, "/data/task/name", str(exc.args[0]))]) from None
    except ValueError as exc:
        raise DataError(str(exc), [Problem("data.task", 0, 0, "/data/task/size", str(exc))]) from None
    labels = settings.labels or {}
    examples = [Example(e.input, labels.get(e.target, e.target)) for e in generated]
    produced = sorted({e.target for e in examples})
    if classes and not set(produced) <= set(classes):
        message = (f"task {name} produces the labels {', '.join(produced)} but the output layer's classes "
                   f"are {', '.join(classes)}")
        raise DataError(message, [Problem("data.task", 0, 0, "/data/task/name", message,
                                          hint=f"use output classes {list(task.classes)}")])
    canonical = {"task": name, "size": size, "seed": seed, "examples": [[e.input, e.target] for e in examples]}
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    train, dev, test = split_pool(examples, settings.split, where, balanced=True)
    return Dataset(train, dev, test, hashlib.sha256(blob).hexdigest(), f"task:{name}(size={size}, seed={seed})")


def load_dataset(settings: DataSettings, classes: tuple[str, ...] | None = None) -> Dataset:
    """Load, check and split the data ``settings`` describe.

    ``classes`` are the output layer's classes: when given, every target (after
    ``settings.labels``) must be one of them. Raises :class:`DataError` listing every problem.
    """
    classes = tuple(classes) if classes else None
    if settings.format == "task":
        return _task(settings, classes)
    if settings.path is None:
        raise DataError(f"data.path is required for format {settings.format!r}",
                        [Problem("spec", 0, 0, "/data/path", f"data.path is required for format {settings.format!r}")])
    path = Path(settings.path)
    if settings.format == "ordered_prompt":
        return _ordered_prompt(settings, path, classes)
    if settings.format not in ("bbh", "leopard", "jsonl", "csv"):
        raise DataError(f"unknown data format {settings.format!r}")
    return _pool_dataset(settings, path, classes)
