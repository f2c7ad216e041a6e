"""Small helpers for tests that train: a spec writer and a stand-in wired in place of the real model."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
from paths import PIPELINES, ROOT, SHARED
from standin import StandIn

QUICK_SPEC = """\
version: 1
name: tiny
models:
  local: {{backend: llamacpp}}
data:
  format: task
  task: {{name: label_mapping, size: 40, seed: 0}}
  split: {{train: 16, dev: 8, test: 8, seed: 1}}
layers:
{layers}
train:
  method: {method}
  iterations: {iterations}
  batch_size: 4
  prompt_candidates: 3
  hidden_samples: 2
  validate_every: 1
  seed: 3
"""

ONE_LAYER = """\
  - name: answer
    prompt: "Say blue or red."
    output: {classes: [blue, red]}
"""

TWO_LAYERS = """\
  - name: think
    prompt: "Is it an animal or a fruit?"
    generate: {max_tokens: 8}
  - name: answer
    inputs: [x, think]
    prompt: "Say blue or red."
    output: {classes: [blue, red]}
"""


def write_spec(folder: Path, method: str = "dln1", iterations: int = 2, layers: str = ONE_LAYER,
               name: str = "tiny.yaml") -> Path:
    path = folder / name
    path.write_text(QUICK_SPEC.format(layers=textwrap.indent(layers, "").rstrip("\n"), method=method,
                                      iterations=iterations))
    return path


def colour_rules(model: StandIn) -> StandIn:
    """Make the stand-in prefer the right colour when the prompt shows an example of it."""

    def cls(prompt: str, verbalizers: tuple[str, ...]) -> list[float]:
        word = prompt.rsplit("Input: ", 1)[-1].split("\n", 1)[0]
        knows = prompt.count("Answer: ") > 1
        fruit = word.endswith(("a", "e", "y", "n", "t"))
        good = [1.0, 0.0] if not fruit else [0.0, 1.0]
        return good if knows else [0.2, 0.0]

    model.cls = cls
    return model


@pytest.fixture()
def standin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> StandIn:
    """Every model a spec names becomes this one stand-in; runs and cache go under tmp_path."""
    model = colour_rules(StandIn())
    monkeypatch.setattr("dlnflow.training.network.make_backend", lambda settings, base: model)
    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DLNFLOW_CACHE_DIR", str(tmp_path / "cache"))
    return model


def read(path: Path) -> Any:
    return path.read_bytes()


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project's example specs and schema in ``tmp_path/project``, so that a user's
    lock files, cache and runs in the checkout never change a result and tests never write there.

    ``pipelines/`` holds the specs (no lock files), ``schemas/`` the schema, and ``../shared``
    points at the public data sets when they are beside the checkout, as the specs expect.
    Cache and run folders default to this copy too.
    """
    root = copy_project(tmp_path)
    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(root / "runs"))
    monkeypatch.setenv("DLNFLOW_CACHE_DIR", str(root / "cache"))
    return root


def copy_project(folder: Path) -> Path:
    """What the ``project`` fixture holds, built in ``folder/project`` (for session-scoped fixtures too)."""
    root = folder / "project"
    (root / "pipelines").mkdir(parents=True)
    for spec in PIPELINES.glob("*.yaml"):
        if not spec.name.endswith(".lock.yaml"):
            shutil.copy2(spec, root / "pipelines" / spec.name)
    shutil.copytree(ROOT / "schemas", root / "schemas")
    (root / "pyproject.toml").write_text("# marks the project root for dlnflow's default folders\n")
    if SHARED.exists():
        (folder / "shared").symlink_to(SHARED, target_is_directory=True)
    return root


def recheck_accuracy(spec: Path, split: str, cache_dir: Path | None = None) -> float:
    """Evaluate ``spec`` with its learned prompts from the warm cache and recount the accuracy by hand.

    The evaluation must make no backend call (training stored every answer) and its accuracy must equal
    the share of predictions that exactly match the labels: a recorded metric can then be compared with
    the returned value instead of only being checked to lie in [0, 1].
    """
    import dlnflow

    kwargs: dict[str, Any] = {} if cache_dir is None else {"cache_dir": cache_dir}
    with dlnflow.load(spec, **kwargs) as net:
        drift = net.use_lock()  # a run with overridden settings drifts only in hyperparameters
        assert all(d.startswith("hyperparameter ") for d in drift), drift
        result = net.evaluate(split)
        examples = getattr(net.dataset, split)
        assert net.client.usage.backend_calls == 0, "the learned prompts' answers were not all cached"
    hits = sum(p.strip().lower() == e.target.strip().lower() for p, e in zip(result.predictions, examples,
                                                                            strict=True))
    assert result.accuracy == hits / len(examples)
    return result.accuracy
