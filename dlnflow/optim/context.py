"""What an optimizer works with: the graph, the client, the settings and the training pool."""

from __future__ import annotations

from dataclasses import dataclass, field

from dlnflow.core.example import Example
from dlnflow.graph.layers import Graph
from dlnflow.optim.common import PromptMemory
from dlnflow.runtime.client import Client
from dlnflow.spec.settings import TrainSettings


@dataclass
class TrainContext:
    graph: Graph
    client: Client
    train: TrainSettings
    loss: str
    pool: list[Example]
    backward_model: str
    memory: PromptMemory = field(default_factory=lambda: PromptMemory(0))

    def __post_init__(self) -> None:
        if self.memory.size == 0:
            self.memory = PromptMemory(self.train.memory)
