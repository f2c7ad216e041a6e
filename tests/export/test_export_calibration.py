"""Export of a calibrated classifier: the DSPy program cannot calibrate, and says so with the prior."""

from __future__ import annotations

from pathlib import Path

from exporting import LEARNED_QUICK, locked_spec

from dlnflow.export.to_dspy import export_dspy, plan_export
from dlnflow.lockfile import lock as lockmod
from dlnflow.spec.compiler import compile_spec

CALIBRATED = ("output: {classes: [blue, red]}", "output: {classes: [blue, red], calibration: batch}")


def test_a_calibrated_layer_is_exported_with_a_warning_naming_the_locked_prior(tmp_path: Path) -> None:
    spec = locked_spec(tmp_path, "quickstart", LEARNED_QUICK, edit=CALIBRATED)
    path = spec.with_name("quickstart.lock.yaml")
    lock = lockmod.read_lock(path)
    assert lock is not None
    lock["layers"]["answer"]["calibration"] = {"method": "batch", "prior": [0.7, 0.3]}
    lockmod.write_lock(path, lock)
    plan = plan_export(compile_spec(spec))
    (warning,) = [w for w in plan.warnings if "calibration" in w]
    assert warning.startswith("layer 'answer' uses calibration 'batch' in dlnflow, but the exported program "
                              "cannot calibrate")
    assert "the lock's prior (blue=0.7, red=0.3) is not applied" in warning
    result = export_dspy(spec, tmp_path / "out")
    readme = next(p for p in result.files if p.name == "README.md").read_text()
    assert "cannot calibrate" in readme and "blue=0.7, red=0.3" in readme


def test_an_uncalibrated_layer_gets_no_such_warning(tmp_path: Path) -> None:
    spec = locked_spec(tmp_path, "quickstart", LEARNED_QUICK)
    assert not [w for w in plan_export(compile_spec(spec)).warnings if "calibrat" in w]
