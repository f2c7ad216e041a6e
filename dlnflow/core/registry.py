"""Registries: the backends, optimizers and losses a spec can name, built-in or added by a user.

A registry maps a name to an object. Built-in entries are written as ``"module:attribute"``
references and imported on first use, so that knowing the names (the spec layer needs them to
validate a spec) never imports a backend or an optimizer. Code outside the package adds its own
with a decorator::

    from dlnflow import register_backend

    @register_backend("echo")
    class EchoBackend:
        @classmethod
        def from_settings(cls, settings, base_dir): ...

>>> r = Registry("colour", {"blue": "builtins:str"})
>>> @r.register("red")
... def red() -> str:
...     return "red"
>>> r.names(), r.extras(), r.get("red")()
(('blue', 'red'), ('red',), 'red')
>>> r.get("bleu")
Traceback (most recent call last):
...
dlnflow.core.errors.ConfigError: unknown colour 'bleu'; known: blue, red; did you mean 'blue'?
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from dlnflow._util.suggest import did_you_mean
from dlnflow.core.errors import ConfigError

T = TypeVar("T")


class Registry:
    """Names to objects; built-ins resolved lazily from ``"module:attribute"`` references."""

    def __init__(self, kind: str, builtins: Mapping[str, str]):
        self.kind = kind
        self._builtins = dict(builtins)
        self._added: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding ``obj`` under ``name``; a built-in name cannot be taken."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a {self.kind} needs a non-empty name")

        def add(obj: T) -> T:
            if name in self._builtins:
                raise ValueError(f"{name!r} is a built-in {self.kind}; choose another name")
            self._added[name] = obj
            return obj

        return add

    def unregister(self, name: str) -> None:
        """Remove an added entry (built-ins stay)."""
        self._added.pop(name, None)

    def builtin_names(self) -> tuple[str, ...]:
        return tuple(self._builtins)

    def extras(self) -> tuple[str, ...]:
        """The names added with :meth:`register`, in the order they were added."""
        return tuple(self._added)

    def names(self) -> tuple[str, ...]:
        return (*self._builtins, *self._added)

    def __contains__(self, name: object) -> bool:
        return name in self._builtins or name in self._added

    def get(self, name: str) -> Any:
        """The object registered as ``name``; a :class:`ConfigError` with a did-you-mean otherwise."""
        if name in self._added:
            return self._added[name]
        ref = self._builtins.get(name)
        if ref is None:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}"
                              + did_you_mean(name, self.names()))
        module, _, attribute = ref.partition(":")
        return getattr(importlib.import_module(module), attribute)


BACKENDS = Registry("backend", {
    "llamacpp": "dlnflow.backends.llamacpp.backend:LlamaCppBackend",
    "openai": "dlnflow.backends.openai.backend:OpenAIBackend",
})
"""Model backends: classes with ``from_settings(settings, base_dir) -> Backend``."""

OPTIMIZERS = Registry("method", {
    "dln1": "dlnflow.optim.dln1:DLN1",
    "vi": "dlnflow.optim.vi:VariationalChain",
    "ape": "dlnflow.optim.baselines:APE",
    "fewshot": "dlnflow.optim.baselines:FewShot",
    "none": "dlnflow.optim.baselines:ZeroShot",
})
"""Training methods: classes built from a ``TrainContext`` that follow :class:`~dlnflow.core.protocols.Optimizer`."""

LOSSES = Registry("loss", {
    "exact_match": "dlnflow.graph.losses:exact_match",
    "exact_match_ci": "dlnflow.graph.losses:exact_match_ci",
    "contains": "dlnflow.graph.losses:contains",
})
"""Losses: ``(prediction, target) -> bool`` (``True``: correct)."""

register_backend = BACKENDS.register
register_optimizer = OPTIMIZERS.register
register_loss = LOSSES.register
