"""Registries: a backend, an optimizer and a loss defined outside the package, named by a spec and
trained through the public API; unknown names are located errors with a did-you-mean."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import dlnflow
from dlnflow.core.backend import Request, Result
from dlnflow.core.errors import ConfigError, SpecError
from dlnflow.core.registry import BACKENDS, LOSSES, OPTIMIZERS, Registry
from dlnflow.data.tasks.label_mapping import FRUITS
from dlnflow.spec.loader import packaged_schema, schema

RULE = "Animals are blue, fruits are red."


class KeywordModel:
    """A backend a user might write: it follows the rule only when the prompt states it."""

    capabilities = frozenset({"classify", "generate"})

    @classmethod
    def from_settings(cls, settings: dict[str, Any], base_dir: Path | None) -> KeywordModel:
        return cls()

    def identity(self) -> dict[str, Any]:
        return {"backend": "keyword-model", "model": "rules"}

    @property
    def n_ctx(self) -> int:
        return 10_000

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        pass

    def run(self, requests: list[Request]) -> list[Result]:
        out: list[Result] = []
        for r in requests:
            if r.op == "generate":
                out.append({"text": "", "prompt_tokens": 1, "completion_tokens": 0})
                continue
            line = next(ln for ln in r.prompt.splitlines() if ln.startswith("Input: "))
            right = "red" if line.split()[-1] in FRUITS else "blue"
            knows = RULE in r.prompt
            probs = [0.9 if (t.strip() == right) == knows else 0.1 for t in r.targets]
            total = sum(probs)
            out.append({"probs": [p / total for p in probs], "logprobs": [0.0] * len(probs),
                        "prompt_tokens": 1, "completion_tokens": 0})
        return out


class TryEach:
    """An optimizer a user might write: each step tries the next prompt of a fixed list."""

    iterative = True
    prompts = ("Say a colour.", RULE, "Colour?")

    def __init__(self, ctx: Any):
        self.ctx = ctx

    def prepare(self) -> dict[str, Any]:
        return {"method": "try-each"}

    def step(self, iteration: int) -> dict[str, Any]:
        prompt = self.prompts[(iteration - 1) % len(self.prompts)]
        self.ctx.graph.output.prompt = prompt
        return {"tried": prompt}


def ends_with_class(prediction: str, target: str) -> bool:
    return prediction.strip().endswith(target.strip())


@pytest.fixture()
def registered() -> Iterator[None]:
    dlnflow.register_backend("keyword-model")(KeywordModel)
    dlnflow.register_optimizer("try-each")(TryEach)
    dlnflow.register_loss("ends_with")(ends_with_class)
    yield
    BACKENDS.unregister("keyword-model")
    OPTIMIZERS.unregister("try-each")
    LOSSES.unregister("ends_with")


SPEC = """\
version: 1
name: plugins
models:
  mine: {backend: keyword-model}
data:
  format: task
  task: {name: label_mapping, size: 40, seed: 0}
  split: {train: 16, dev: 10, test: 10, seed: 1}
layers:
  - name: answer
    inputs: [x]
    template: classify_forward
    prompt: "Say a colour."
    output: {classes: [blue, red]}
loss: ends_with
train: {method: try-each, iterations: 3, validate_every: 1, batch_size: 4, seed: 3}
"""


def test_a_spec_naming_outside_plugins_trains_through_the_public_api(registered: None, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(tmp_path / "runs"))
    spec = tmp_path / "plugins.yaml"
    spec.write_text(SPEC)
    outcome = dlnflow.train(spec, cache_dir=tmp_path / "cache")
    m = outcome.payload["metrics"]
    assert m["dev_before"] < 0.5 and m["dev"] == 1.0 and m["test"] == 1.0
    lock = yaml.safe_load((tmp_path / "plugins.lock.yaml").read_text())
    assert lock["layers"]["answer"]["prompt"] == RULE
    assert lock["models"]["mine"]["backend"] == "keyword-model"
    again = dlnflow.train(spec, cache_dir=tmp_path / "cache")
    assert again.payload["backend_calls"] == 0


def test_registered_names_extend_the_schema_only_while_registered(registered: None) -> None:
    assert "keyword-model" in schema()["$defs"]["model"]["properties"]["backend"]["enum"]
    assert "keyword-model" not in packaged_schema()["$defs"]["model"]["properties"]["backend"]["enum"]
    BACKENDS.unregister("keyword-model")
    assert "keyword-model" not in schema()["$defs"]["model"]["properties"]["backend"]["enum"]


def test_an_unregistered_name_is_a_located_spec_error(tmp_path: Path) -> None:
    spec = tmp_path / "plugins.yaml"
    spec.write_text(SPEC.replace("method: try-each", "method: dln2"))
    with pytest.raises(SpecError) as info:
        dlnflow.compile(spec)
    text = str(info.value)
    assert "plugins.yaml:16:17: 'dln2' is not one of" in text and "did you mean 'dln1'? [/train/method]" in text
    assert "keyword-model" in text  # the unregistered backend is reported too


def test_built_in_names_cannot_be_taken_and_unknown_names_suggest() -> None:
    with pytest.raises(ValueError, match="built-in"):
        dlnflow.register_backend("openai")(KeywordModel)
    with pytest.raises(ConfigError, match="did you mean 'dln1'"):
        OPTIMIZERS.get("dln2")


def test_built_ins_resolve_lazily_to_their_classes() -> None:
    r = Registry("thing", {"path": "pathlib:Path"})
    assert r.get("path") is Path
    assert set(OPTIMIZERS.builtin_names()) == {"dln1", "vi", "ape", "fewshot", "none"}
    for name in OPTIMIZERS.builtin_names():
        assert OPTIMIZERS.get(name).iterative in (True, False)

