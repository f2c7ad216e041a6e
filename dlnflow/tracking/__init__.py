"""Experiment tracking: a training run (or a sweep) logged to MLflow.

Turned on by ``dlnflow train --track mlflow`` or a ``tracking:`` section in the spec
(``tracking: {backend: mlflow, uri: ..., experiment: ...}``); ``--track none`` turns a spec's
section off. The tracking URI is ``$DLNFLOW_TRACKING_URI`` if set, else the section's ``uri``,
else ``sqlite:///<project root>/mlflow.db``. A plain path (no scheme) in the section is an SQLite
database file relative to the spec (MLflow 3 refuses plain-folder stores unless told otherwise).

What is logged per run: parameters (spec name and file, loss, data settings, every training
hyperparameter, the seed, each model's identity, a sweep's overrides), metrics with
``step=iteration`` (batch accuracy, dev accuracy at validation points, backend calls, tokens,
cache hit rate), the final dev/test accuracy before and after, and as artifacts ``log.jsonl``,
``summary.json``, the lock file and the HTML report. A sweep is a parent run (its settings,
the best point, the lock and the sweep's HTML report) with one child run per seed x setting;
runs a sweep skips because they finished earlier are logged from their folders.

Tracking never changes or fails training: the first failure (MLflow missing, a store that
cannot be written, ...) is reported once through ``warn`` and tracking stops for that command.
``mlflow`` is imported only in :mod:`dlnflow.tracking.mlflow_tracker`, and only when tracking is on.
"""
