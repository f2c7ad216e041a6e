"""``output.calibration`` in a spec: compiled onto the layer, its default, and `--set` for sweeps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import write_spec
from standin import StandIn

from dlnflow.cli import cli
from dlnflow.core.errors import InputError
from dlnflow.data.tasks.label_mapping import ANIMALS
from dlnflow.graph import calibration as calib
from dlnflow.lockfile import lock as lockmod
from dlnflow.spec.compiler import compile_spec
from dlnflow.spec.loader import schema
from dlnflow.spec.overrides import apply_overrides, check_settings


def test_the_default_is_the_schemas_and_the_compiler_uses_it(tmp_path: Path) -> None:
    prop = schema()["$defs"]["layer"]["properties"]["output"]["properties"]["calibration"]
    assert prop["default"] == calib.DEFAULT and prop["enum"] == list(calib.METHODS)
    assert compile_spec(write_spec(tmp_path)).graph.output.calibration == calib.DEFAULT


def test_set_chooses_the_method_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    base = compile_spec(write_spec(tmp_path))
    for method in calib.METHODS:
        changed = apply_overrides(base, {"layers.answer.output.calibration": method})
        assert changed.graph.output.calibration == method
        assert changed.graph.output.classes == ("blue", "red")
    with pytest.raises(InputError, match="'platt' is not one of"):
        check_settings(base, [("layers.answer.output.calibration", ["platt"])])


def biased(prompt: str, verbalizers: tuple[str, ...]) -> list[float]:
    """Blue always likelier, less so for fruits (a batch-calibrated argmax is right, a raw one is not)."""
    word = prompt.rsplit("Input: ", 1)[1].split("\n", 1)[0]
    return [math.log(0.9), math.log(0.1)] if word in ANIMALS else [math.log(0.6), math.log(0.4)]


def test_a_sweep_over_calibration_trains_one_run_per_method(standin: StandIn, tmp_path: Path) -> None:
    standin.cls = biased
    spec = write_spec(tmp_path, method="none")
    res = CliRunner().invoke(cli, ["--json", "train", str(spec), "--set",
                                   "layers.answer.output.calibration=none,batch"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    methods = [r["settings"]["layers.answer.output.calibration"] for r in out["runs"]]
    assert sorted(methods) == ["batch", "none"]
    lock = lockmod.read_lock(spec.with_name("tiny.lock.yaml"))
    assert lock is not None
    assert lock["sweep"]["best"]["overrides"]["layers.answer.output.calibration"] == "batch"
    assert lock["metrics"]["dev"] == 1.0 and lock["layers"]["answer"]["calibration"]["method"] == "batch"
