"""``demos`` on a layer: compiled into the layer, a grid/--set setting, and refused off the output layer."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from test_compiler import DLN2, write

from dlnflow.core.errors import SpecError
from dlnflow.spec.compiler import compile_spec, setting_schemas


def test_demos_compile_into_the_output_layer(tmp_path: Path) -> None:
    # mutation tried: _layer not reading demos left demo_k at 0
    spec = copy.deepcopy(DLN2)
    spec["layers"][1]["demos"] = {"k": 4, "seed": 7}
    out = compile_spec(write(tmp_path, spec)).graph.output
    assert (out.demo_k, out.demo_seed, out.demos) == (4, 7, ())
    plain = compile_spec(write(tmp_path, DLN2, "plain.yaml")).graph.output
    assert (plain.demo_k, plain.learns_demos) == (0, False)


def test_demos_k_and_seed_are_settings() -> None:
    settings = setting_schemas(DLN2)
    assert settings["layers.answer.demos.k"]["type"] == "integer"
    assert "layers.answer.demos.seed" in settings


@pytest.mark.parametrize(("demos", "pointer"), [
    ({"k": -1}, "/layers/1/demos/k"), ({"k": 2, "n": 1}, "/layers/1/demos/n"), ({}, "/layers/1/demos")])
def test_bad_demos_are_located(tmp_path: Path, demos: dict[str, int], pointer: str) -> None:
    spec = copy.deepcopy(DLN2)
    spec["layers"][1]["demos"] = demos
    with pytest.raises(SpecError) as info:
        compile_spec(write(tmp_path, spec))
    assert [p.pointer for p in info.value.problems] == [pointer]


def test_demos_on_a_hidden_layer_are_refused(tmp_path: Path) -> None:
    # mutation tried: removing the wiring check compiled this spec
    spec = copy.deepcopy(DLN2)
    spec["layers"][0]["demos"] = {"k": 2}
    with pytest.raises(SpecError) as info:
        compile_spec(write(tmp_path, spec))
    (problem,) = info.value.problems
    assert problem.pointer == "/layers/0/demos"
    assert "only the last layer may learn demonstrations" in problem.message
