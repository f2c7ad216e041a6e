"""dlnflow: Deep Language Networks as declarative pipelines."""

from __future__ import annotations

__version__ = "0.1.0"

from typing import Any


def load(spec: Any, **kwargs: Any) -> Any:
    """Compile a spec file into a :class:`dlnflow.training.network.Network` bound to its models."""
    from dlnflow.training.network import Network

    return Network.load(spec, **kwargs)


__all__ = ["__version__", "load"]
