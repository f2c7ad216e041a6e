"""dlnflow: Deep Language Networks as declarative pipelines.

The public API. Names are imported on first use, so ``import dlnflow`` stays cheap and
validating a spec never loads a model runtime::

    import dlnflow

    net = dlnflow.load("pipelines/quickstart.yaml")    # a Network bound to its models and cache
    dlnflow.train("pipelines/quickstart.yaml", dlnflow.TrainOptions(seeds=(1, 2)))

>>> import dlnflow
>>> dlnflow.__version__
'0.1.0'
>>> "register_backend" in dlnflow.__all__
True
"""

from __future__ import annotations

import importlib
from typing import Any

from dlnflow._version import __version__

_PUBLIC = {
    "load": "dlnflow.api.network:open_network",
    "Network": "dlnflow.training.network:Network",
    "TrainOptions": "dlnflow.api.training:TrainOptions",
    "Outcome": "dlnflow.api.training:Outcome",
    "train": "dlnflow.api.training:train",
    "plan": "dlnflow.api.training:plan",
    "results": "dlnflow.api.training:results",
    "lock_status": "dlnflow.api.network:lock_status",
    "compile": "dlnflow.api.specs:compile",
    "draw": "dlnflow.api.specs:draw",
    "register_backend": "dlnflow.core.registry:register_backend",
    "register_optimizer": "dlnflow.core.registry:register_optimizer",
    "register_loss": "dlnflow.core.registry:register_loss",
    "Request": "dlnflow.core.backend:Request",
    "Example": "dlnflow.core.example:Example",
    "DlnflowError": "dlnflow.core.errors:DlnflowError",
    "InputError": "dlnflow.core.errors:InputError",
    "SpecError": "dlnflow.core.errors:SpecError",
    "DataError": "dlnflow.core.errors:DataError",
    "ConfigError": "dlnflow.core.errors:ConfigError",
    "LockError": "dlnflow.core.errors:LockError",
    "RuntimeFault": "dlnflow.core.errors:RuntimeFault",
    "BackendError": "dlnflow.core.errors:BackendError",
    "BudgetExceeded": "dlnflow.core.errors:BudgetExceeded",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562)."""
    ref = _PUBLIC.get(name)
    if ref is None:
        raise AttributeError(f"module 'dlnflow' has no attribute {name!r}")
    module, _, attribute = ref.partition(":")
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
