"""Settings as plain data: what a compiled spec hands to the data loader, the trainer and the CLI.

Defaults here mirror the ``default`` values in ``schemas/pipeline.schema.json``; a test
keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DATA_FORMATS = ("jsonl", "csv", "bbh", "leopard", "ordered_prompt", "task")


@dataclass(frozen=True)
class SplitSettings:
    """How many examples go to train/dev/test, drawn with ``seed`` (``None``: all that remain)."""

    train: int | None = 100
    dev: int | None = 50
    test: int | None = 100
    seed: int = 42


@dataclass(frozen=True)
class DataSettings:
    """Where the examples come from.

    ``path`` is resolved against the spec's folder. ``input``/``target`` name the fields of
    jsonl/csv rows; ``labels`` maps raw labels to class words (e.g. ``{"0": "negative"}``).
    For ``format: task`` the ``task`` mapping names a built-in generated task.
    """

    format: str = "jsonl"
    path: Path | None = None
    input: str = "input"
    target: str = "target"
    labels: dict[str, str] | None = None
    task: dict[str, Any] | None = None
    split: SplitSettings = field(default_factory=SplitSettings)


@dataclass(frozen=True)
class BudgetSettings:
    max_calls: int | None = None
    max_tokens: int | None = None


@dataclass(frozen=True)
class TrainSettings:
    """Hyperparameters of training; see the schema's descriptions for each."""

    method: str = "dln1"
    iterations: int = 10
    batch_size: int = 10
    prompt_candidates: int = 5
    hidden_samples: int = 3
    validate_every: int = 2
    patience: int | None = None
    seed: int = 42
    backward_model: str | None = None
    rewrite_temperature: float = 0.7
    rewrite_max_tokens: int = 64  # measured useful rewrites on the embedded model: <= 55 tokens
    rewrite_examples: int = 5
    example_candidates: int = 1
    posterior_temperature: float = 1.0
    resample_wrong_only: bool = False
    trust_penalty: float = 0.0
    memory: int = 2
    few_shot: int = 5
    budget: BudgetSettings = field(default_factory=BudgetSettings)

    def hyperparameters(self) -> dict[str, Any]:
        """The settings that change training results (for the lock file's drift check)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("budget",):
                continue
            out[f.name] = getattr(self, f.name)
        return out


@dataclass(frozen=True)
class ExperimentSettings:
    """A sweep: seeds and a grid of ``dotted.setting -> [values]``, and where its runs train
    (see :mod:`dlnflow.experiments.executors`)."""

    seeds: tuple[int, ...] = ()
    grid: dict[str, list[Any]] = field(default_factory=dict)
    executor: str = "local"
    jobs: int = 1
    address: str | None = None
