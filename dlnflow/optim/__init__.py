"""Prompt optimizers: DLN-1 (one layer), variational inference (DLN-2 and deeper chains), baselines.

Each optimizer is a small object built from a :class:`~dlnflow.optim.context.TrainContext` that
follows :class:`~dlnflow.core.protocols.Optimizer`: ``prepare()`` (run once before the
iterations) and ``step(iteration) -> dict`` (one update, returning a JSON-serialisable record for
the run log). The trainer finds the class for ``train.method`` in
:data:`dlnflow.core.registry.OPTIMIZERS`; :func:`~dlnflow.core.registry.register_optimizer` adds one.
"""
