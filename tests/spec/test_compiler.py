"""Compiling specs into pipelines: wiring, defaults, settings, and robustness on malformed input."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from dlnflow.core.errors import SpecError
from dlnflow.graph.layers import Decoding
from dlnflow.spec.compiler import compile_spec, setting_schemas
from dlnflow.spec.settings import SplitSettings, TrainSettings

DLN2 = {
    "version": 1,
    "name": "demo-dln2",
    "models": {"small": {"backend": "llamacpp", "n_ctx": 1024}},
    "data": {"format": "jsonl", "path": "data/rows.jsonl", "input": "text",
             "labels": {"a": "blue", "b": "red"}, "split": {"train": 4, "dev": 2}},
    "layers": [
        {"name": "think", "prompt": "Describe the word.", "generate": {"max_tokens": 16, "stop": ["\n"]}},
        {"name": "answer", "inputs": ["x", "think"], "prompt": "Pick a colour.",
         "output": {"classes": ["blue", "red"]}},
    ],
    "loss": "exact_match_ci",
    "train": {"method": "vi", "iterations": 3, "hidden_samples": 2, "budget": {"max_calls": 500}},
    "experiments": {"seeds": [1, 2],
                    "grid": {"train.iterations": [2, 4], "layers.answer.prompt": ["A", "B"]}},
}


def write(tmp_path: Path, spec: dict[str, Any], name: str = "spec.yaml") -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "rows.jsonl").write_text('{"text": "cat", "target": "a"}\n')
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_compile_dln2_spec(tmp_path: Path) -> None:
    p = compile_spec(write(tmp_path, DLN2))
    assert p.name == "demo-dln2" and p.spec_path == (tmp_path / "spec.yaml").resolve()
    think, answer = p.graph.layers
    assert (think.name, think.inputs, think.template.name) == ("think", ("x",), "hidden_forward")
    assert think.model == "small"
    assert think.decoding == Decoding(max_tokens=16, stop=("\n",))
    assert think.classes is None and answer.classes == ("blue", "red")
    assert (answer.inputs, answer.template.name) == (("x", "think"), "classify_forward")
    assert p.graph.output is answer
    assert p.models == {"small": {"backend": "llamacpp", "n_ctx": 1024, "n_batch": 512}}
    assert p.data.path == (tmp_path / "data" / "rows.jsonl").resolve() and p.data.path.is_absolute()
    assert (p.data.input, p.data.target, p.data.labels) == ("text", "target", {"a": "blue", "b": "red"})
    assert p.data.split == SplitSettings(train=4, dev=2, test=100, seed=42)
    assert p.loss == "exact_match_ci"
    assert p.train.method == "vi" and p.train.iterations == 3 and p.train.hidden_samples == 2
    assert p.train.batch_size == TrainSettings().batch_size and p.train.budget.max_calls == 500
    assert p.experiments.seeds == (1, 2) and p.experiments.grid["layers.answer.prompt"] == ["A", "B"]
    assert p.backward_model == "small"
    assert p.lock_path == (tmp_path / "spec.lock.yaml").resolve()


def test_implicit_model_and_default_templates(tmp_path: Path) -> None:
    spec = copy.deepcopy(DLN2)
    del spec["models"]
    spec["layers"][1].pop("output")
    p = compile_spec(write(tmp_path, spec))
    assert p.models == {"local": {"backend": "llamacpp", "n_batch": 512}}
    assert [layer.model for layer in p.graph] == ["local", "local"]
    assert [layer.template.name for layer in p.graph] == ["hidden_forward", "forward"]


def test_openai_model_defaults(tmp_path: Path) -> None:
    spec = copy.deepcopy(DLN2)
    spec["models"]["api"] = {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
    for layer in spec["layers"]:
        layer["model"] = "small"
    spec["train"]["backward_model"] = "api"
    p = compile_spec(write(tmp_path, spec))
    assert p.models["api"] == {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1",
                               "api_key_env": "OPENAI_API_KEY", "chat": False, "concurrency": 8,
                               "timeout": 60, "max_retries": 5}
    assert p.backward_model == "api"


def test_layers_run_in_dependency_order(tmp_path: Path) -> None:
    spec = copy.deepcopy(DLN2)
    spec["layers"] = [
        {"name": "second", "inputs": ["first"]},
        {"name": "first"},
        {"name": "answer", "inputs": ["x", "second"], "output": {"classes": ["blue", "red"]}},
    ]
    p = compile_spec(write(tmp_path, spec))
    assert [layer.name for layer in p.graph] == ["first", "second", "answer"]
    templates = [layer.template.name for layer in p.graph]
    assert templates == ["hidden_forward", "hidden_forward", "classify_forward"]


def test_inline_template_with_input_names(tmp_path: Path) -> None:
    spec = copy.deepcopy(DLN2)
    spec["layers"][1]["template"] = "{{ prompt }}\nWord: {{ x }}\nNotes: {{ think }}\nColour:"
    p = compile_spec(write(tmp_path, spec))
    answer = p.graph.output
    assert answer.template.name is None
    assert answer.render({"x": "cat", "think": "a pet"}) == "Pick a colour.\nWord: cat\nNotes: a pet\nColour:"


def test_every_problem_in_one_error(tmp_path: Path) -> None:
    spec = copy.deepcopy(DLN2)
    spec["layers"][0]["template"] = "forwrd"
    spec["layers"][1]["inputs"] = ["x", "think", "notes"]
    spec["layers"][1]["model"] = "big"
    spec["data"]["path"] = "data/none.jsonl"
    spec["train"]["iterations"] = -1
    spec["experiments"]["grid"]["train.iterationz"] = [1]
    with pytest.raises(SpecError) as info:
        compile_spec(write(tmp_path, spec))
    pointers = [p.pointer for p in info.value.problems]
    assert sorted(pointers) == sorted([
        "/layers/0/template", "/layers/1/inputs/2", "/layers/1/model", "/data/path", "/train/iterations",
        "/experiments/grid/train.iterationz"])
    lines = [p.line for p in info.value.problems]
    assert lines == sorted(lines) and all(p.line > 0 and p.col > 0 for p in info.value.problems)


def test_grid_settings_cover_train_data_layers_models() -> None:
    settings = setting_schemas(DLN2)
    for key in ("train.iterations", "train.budget.max_calls", "data.split.train", "loss",
                "layers.think.generate.temperature", "layers.answer.prompt", "models.small.n_ctx"):
        assert key in settings
    assert "layers.think.name" not in settings and "train.budget" not in settings


MUTANTS: list[Any] = [None, -1, "zz", [1], {"q": 1}, True]


def _pointers(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _pointers(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _pointers(value, (*prefix, i))
    return out


def test_no_traceback_for_any_malformed_value(tmp_path: Path) -> None:
    """Replace each value of a valid spec by each wrong value: only SpecError (or success), never a crash."""
    paths = [p for p in _pointers(DLN2) if p]
    tried = 0
    for path in paths:
        for mutant in MUTANTS:
            spec = copy.deepcopy(DLN2)
            node = spec
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = mutant
            try:
                compile_spec(write(tmp_path, spec))
            except SpecError as exc:
                assert exc.problems and all(p.line >= 1 for p in exc.problems), (path, mutant)
            tried += 1
    assert tried == len(paths) * len(MUTANTS) > 200


def test_shipped_pipelines_compile(shared_data: Path, project: Path) -> None:
    specs = sorted((project / "pipelines").glob("*.yaml"))
    assert len(specs) >= 16
    for spec in specs:
        p = compile_spec(spec)
        assert p.graph.output.classes, spec.name
        if spec.stem.endswith("-dln2"):
            assert [layer.name for layer in p.graph] == ["think", "answer"]
            assert p.graph.output.inputs == ("x", "think") and p.train.method == "vi"


@pytest.mark.real
def test_compiled_spec_runs_on_the_embedded_model(tmp_path: Path, llama: Any) -> None:
    from dlnflow.runtime.client import Client

    spec = {
        "version": 1, "name": "real", "data": {"format": "task", "task": {"name": "label_mapping"}},
        "layers": [{"name": "answer", "prompt": "", "output": {"classes": ["animal", "fruit"]}}],
    }
    p = compile_spec(write(tmp_path, spec))
    assert p.models == {"local": {"backend": "llamacpp", "n_batch": 512}}
    client = Client({"local": llama})  # the session's embedded model, built from these same settings
    plain = p.graph.forward(client, ["horse", "banana"])
    p.graph.load_state({"answer.prompt": "Is the word an animal or a fruit?"})
    instructed = p.graph.forward(client, ["horse"])
    # Measured on Gemma 3 270M: with no instruction the words are classified right (horse 0.96 animal,
    # banana 0.99 fruit); this instruction pulls "horse" towards its last word, "fruit" (0.78).
    assert plain.outputs() == ["animal", "fruit"]
    for probs in plain.probs:
        assert sum(probs) == pytest.approx(1.0, abs=1e-4) and max(probs) > 0.8
    assert instructed.probs[0][1] > plain.probs[0][1] + 0.3
