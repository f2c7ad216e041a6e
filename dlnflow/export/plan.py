"""What an export writes, as plain data: one plan per layer, the models, the warnings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LayerPlan:
    """One layer as the program sees it.

    ``read`` says how its answer is read: ``text`` (a hidden or free-text layer: the
    completion, stripped), ``score`` (a classifier scored by its first token's alternatives)
    or ``label`` (a classifier whose classes share their start: read from a short greedy
    completion). ``fields`` maps each dlnflow input name to its DSPy field name.
    """

    name: str
    index: int
    field: str
    fields: dict[str, str]
    template: str
    parts: tuple[tuple[str, ...], ...]
    instruction: str
    read: str
    classes: tuple[str, ...] | None
    model: str
    decoding: dict[str, Any]
    trainable: bool

    def data(self) -> dict[str, Any]:
        """The layer as the program's ``LAYERS`` entry."""
        return {"field": self.field, "inputs": dict(self.fields), "template": [list(p) for p in self.parts],
                "read": self.read, "classes": list(self.classes) if self.classes else None,
                "model": self.model, "decoding": dict(self.decoding)}


@dataclass
class ExportPlan:
    """Everything the exported files say."""

    name: str
    spec_file: str
    spec_sha256: str
    lock_file: str | None
    lock_sha256: str | None
    layers: list[LayerPlan]
    models: dict[str, dict[str, Any]]
    warnings: list[str] = field(default_factory=list)

    @property
    def instructions_from(self) -> str:
        return "lock" if self.lock_file else "spec"

    @property
    def output(self) -> LayerPlan:
        return self.layers[-1]

    @property
    def default_model(self) -> str:
        return self.output.model


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_dspy` wrote."""

    out: Path
    files: tuple[Path, ...]
    plan: ExportPlan


