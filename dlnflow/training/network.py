"""The Python API: a compiled pipeline bound to its models, cache and data.

>>> import dlnflow                                    # doctest: +SKIP
>>> net = dlnflow.load("pipelines/quickstart.yaml")   # doctest: +SKIP
>>> net("sparrow")                                    # doctest: +SKIP
>>> result = net.train()                              # doctest: +SKIP
>>> net.evaluate("test").accuracy                     # doctest: +SKIP
>>> dict(net.named_parameters())                            # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dlnflow.backends import make_backend
from dlnflow.core.errors import LockError
from dlnflow.data.dataset import Dataset, load_dataset
from dlnflow.graph.calibration import load_fixed_priors
from dlnflow.lockfile import lock as lockmod
from dlnflow.lockfile.best_run import BestRun, apply_best_run
from dlnflow.optim.demos import ensure_demos
from dlnflow.runtime.cache import CallCache, default_cache_dir
from dlnflow.runtime.client import Budget, CacheMode, Client
from dlnflow.runtime.remote import open_tier, remote_from_env
from dlnflow.spec.compiler import compile_spec
from dlnflow.spec.pipeline import Pipeline
from dlnflow.training.evaluate import Evaluation, evaluate
from dlnflow.training.trainer import Trainer


class Network:
    """A trainable Deep Language Network built from a spec.

    ``cache_remote`` names a shared cache tier behind the local one (``file:///path`` or
    ``redis://host:port/db``; default ``$DLNFLOW_CACHE_REMOTE``); see :mod:`dlnflow.runtime.remote`.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        cache_dir: str | Path | None = None,
        cache_mode: CacheMode = "use",
        cache_remote: str | None = None,
    ):
        self.pipeline = pipeline
        self.cache_mode: CacheMode = cache_mode
        self.cache_remote = cache_remote if cache_remote is not None else remote_from_env()
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir(pipeline.spec_path.parent)
        self._client: Client | None = None
        self._dataset: Dataset | None = None
        self.lock_note: str = ""
        self.best_run: BestRun | None = None

    @classmethod
    def load(cls, spec: str | Path, **kwargs: Any) -> Network:
        return cls(compile_spec(spec), **kwargs)

    # -- settings overrides ----------------------------------------------------------------
    def override(self, **train_settings: Any) -> None:
        """Replace training settings (``seed=``, ``iterations=``...) for this network only."""
        given = {k: v for k, v in train_settings.items() if v is not None}
        if given:
            self.pipeline.train = dataclasses.replace(self.pipeline.train, **given)

    # -- resources ---------------------------------------------------------------------------
    @property
    def client(self) -> Client:
        if self._client is None:
            base = self.pipeline.spec_path.parent
            models = {name: make_backend(s, base) for name, s in self.pipeline.models.items()}
            cache = None
            if self.cache_mode != "off":
                cache = CallCache(self.cache_dir, remote=open_tier(self.cache_remote))
            b = self.pipeline.train.budget
            self._client = Client(models, cache, self.cache_mode, Budget(b.max_calls, b.max_tokens))
        return self._client

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            self._dataset = load_dataset(self.pipeline.data, self.pipeline.graph.output.classes)
            # layers that learn demonstrations start from their first draw (a lock replaces it)
            ensure_demos(self.pipeline.graph, self._dataset.train, self.pipeline.train.seed)
        return self._dataset

    def identities(self) -> dict[str, dict[str, Any]]:
        return {name: self.client.identity(name) for name in sorted(self.pipeline.models)}

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            if self._client.cache is not None:
                self._client.cache.close()
            self._client = None

    def replace_pipeline(self, pipeline: Pipeline) -> None:
        """Use ``pipeline`` from now on; models and data are rebuilt from it when next needed."""
        self.close()
        self._dataset = None
        self.pipeline = pipeline

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- nn.Module-like surface -------------------------------------------------------------
    def _with_demos(self) -> None:
        """Layers that learn demonstrations start from their first draw, which needs the data."""
        if any(layer.learns_demos and not layer.demos for layer in self.pipeline.graph):
            _ = self.dataset

    def named_parameters(self) -> Iterator[tuple[str, str]]:
        self._with_demos()
        return self.pipeline.graph.named_parameters()

    def state(self) -> dict[str, str]:
        self._with_demos()
        return self.pipeline.graph.state()

    def load_state(self, state: dict[str, str], strict: bool = True) -> tuple[list[str], list[str]]:
        return self.pipeline.graph.load_state(state, strict)

    def __call__(self, x: str) -> str:
        self._with_demos()
        return self.pipeline.graph(self.client, x)

    def predict(self, xs: list[str]) -> list[str]:
        self._with_demos()
        return self.pipeline.graph.forward(self.client, xs).outputs()

    def evaluate(self, split: str = "test") -> Evaluation:
        examples = getattr(self.dataset, split)
        return evaluate(self.pipeline.graph, self.client, examples, self.pipeline.loss)

    def train(self, **kwargs: Any) -> Any:
        return Trainer(self, **kwargs).fit()

    # -- lock file ---------------------------------------------------------------------------
    def use_lock(self, strict: bool = False) -> list[str]:
        """Load learned prompts from the lock file; return what drifted (empty: a clean match).

        With ``strict`` a drifted lock raises :class:`~dlnflow.core.errors.LockError`. A missing lock
        leaves the spec's prompts in place. When a sweep wrote the lock, its best run's settings
        (all but ``train.*``) are applied first and described in :attr:`best_run`
        (see :mod:`dlnflow.lockfile.best_run`).
        """
        self.best_run, pipeline = apply_best_run(self.pipeline)
        if pipeline is not self.pipeline:
            self.replace_pipeline(pipeline)
        path = self.pipeline.lock_path
        data = lockmod.read_lock(path)
        if data is None:
            self.lock_note = f"no lock file at {path.name}; using the prompts written in the spec"
            if any(layer.learns_demos for layer in self.pipeline.graph):
                _ = self.dataset  # loading the data draws the first demonstrations, as training starts from
                self.lock_note += " and the first draw of demonstrations from train"
            return []
        drifted = lockmod.drift(self.pipeline, data, self.identities(), self.dataset.digest,
                                 self.dataset.train)
        if drifted and strict:
            raise LockError(f"{path.name} does not match the spec (--strict): " + "; ".join(drifted))
        self.pipeline.graph.load_state(lockmod.learned_state(data), strict=True)
        load_fixed_priors(self.pipeline.graph, lockmod.calibration_entries(data))
        self.lock_note = (f"using learned prompts from {path.name}" if not drifted else
                          f"using learned prompts from {path.name}, but it drifted: " + "; ".join(drifted))
        return drifted

