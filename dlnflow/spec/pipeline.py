"""A compiled spec: the graph plus the settings every command needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlnflow.graph.layers import Graph
from dlnflow.spec.settings import DataSettings, ExperimentSettings, TrainSettings

LOCK_SUFFIX = ".lock.yaml"


def lock_path_for(spec_path: Path) -> Path:
    """``pipelines/navigate.yaml`` -> ``pipelines/navigate.lock.yaml``.

    >>> lock_path_for(Path("pipelines/navigate.yaml")).as_posix()
    'pipelines/navigate.lock.yaml'
    """
    return spec_path.with_name(spec_path.stem + LOCK_SUFFIX)


@dataclass
class Pipeline:
    """What :func:`dlnflow.spec.compiler.compile_spec` returns.

    ``models`` holds each model's settings as written in the spec (defaults filled in),
    ``spec`` the whole validated document.
    """

    name: str
    spec_path: Path
    graph: Graph
    models: dict[str, dict[str, Any]]
    data: DataSettings
    loss: str
    train: TrainSettings
    experiments: ExperimentSettings = field(default_factory=ExperimentSettings)
    spec: dict[str, Any] = field(default_factory=dict)

    @property
    def lock_path(self) -> Path:
        """``pipelines/navigate.yaml`` -> ``pipelines/navigate.lock.yaml``."""
        return lock_path_for(self.spec_path)

    @property
    def backward_model(self) -> str:
        return self.train.backward_model or self.graph.output.model
