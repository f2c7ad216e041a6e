"""Prompt optimizers: DLN-1 (one layer), variational inference (DLN-2 and deeper chains), baselines.

Each optimizer is a small object built from a :class:`~dlnflow.optim.context.TrainContext`
with ``prepare()`` (run once before the iterations) and ``step(iteration) -> dict`` (one
update, returning a JSON-serialisable record for the run log).
"""

from __future__ import annotations

from dlnflow.optim.baselines import APE, FewShot, ZeroShot
from dlnflow.optim.context import TrainContext
from dlnflow.optim.dln1 import DLN1
from dlnflow.optim.vi import VariationalChain

OPTIMIZERS = {
    "dln1": DLN1,
    "vi": VariationalChain,
    "none": ZeroShot,
    "fewshot": FewShot,
    "ape": APE,
}

__all__ = ["APE", "DLN1", "OPTIMIZERS", "FewShot", "TrainContext", "VariationalChain", "ZeroShot"]
