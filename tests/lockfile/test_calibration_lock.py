"""The calibration prior in the lock file: written from dev by training, read back by eval and run,
compared by drift and status, refused when malformed (stand-in model, hand-computed priors)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from helpers import write_spec
from standin import StandIn

import dlnflow
from dlnflow.cli import cli
from dlnflow.core.errors import LockError
from dlnflow.data.tasks.label_mapping import ANIMALS
from dlnflow.lockfile import lock as lockmod

CALIBRATED = """\
  - name: answer
    prompt: "Say blue or red."
    output: {classes: [blue, red], calibration: batch}
"""


def biased(prompt: str, verbalizers: tuple[str, ...]) -> list[float]:
    """Blue is always likelier, less so for fruits: animals 0.9/0.1, fruits 0.6/0.4, no input 0.8/0.2."""
    word = prompt.rsplit("Input: ", 1)[1].split("\n", 1)[0]
    probs = [0.8, 0.2] if word in ("N/A", "", "[MASK]") else [0.9, 0.1] if word in ANIMALS else [0.6, 0.4]
    return [math.log(p) for p in probs]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def trained(standin: StandIn, tmp_path: Path, layers: str = CALIBRATED) -> Path:
    standin.cls = biased
    spec = write_spec(tmp_path, method="none", layers=layers)
    res = invoke("--json", "train", str(spec))
    assert res.exit_code == 0, res.output
    return spec


def test_training_locks_the_dev_prior_and_it_round_trips(standin: StandIn, tmp_path: Path) -> None:
    spec = trained(standin, tmp_path)
    with dlnflow.load(spec) as net:
        dev = net.dataset.dev
    blue = sum(e.target == "blue" for e in dev) / len(dev)
    assert 0 < blue < 1  # the check below needs both kinds of words on dev
    expected = [0.9 * blue + 0.6 * (1 - blue), 0.1 * blue + 0.4 * (1 - blue)]
    text = spec.with_name("tiny.lock.yaml").read_text()
    lock = lockmod.read_lock(spec.with_name("tiny.lock.yaml"))
    assert lock is not None
    entry = lock["layers"]["answer"]["calibration"]
    assert entry["method"] == "batch" and entry["prior"] == pytest.approx(expected, abs=1e-6)
    assert lockmod.dump_lock(lock) == text  # written and read back unchanged
    assert lockmod.calibration_entries(lock) == {"answer": entry}
    with dlnflow.load(spec) as net:
        assert net.use_lock(strict=True) == []
        assert net.pipeline.graph.output.prior == pytest.approx(tuple(expected), abs=1e-6)


def test_run_decides_a_single_input_with_the_locked_prior(standin: StandIn, tmp_path: Path) -> None:
    spec = trained(standin, tmp_path)
    with dlnflow.load(spec) as net:
        fruit = next(e.input for e in net.dataset.test if e.target == "red")
        animal = next(e.input for e in net.dataset.test if e.target == "blue")

    def answer(*flags: str) -> str:
        res = invoke("--json", "run", str(spec), "--input", fruit, *flags)
        assert res.exit_code == 0, res.output
        return str(json.loads(res.stdout)["outputs"][0]["output"])

    assert answer("--strict") == "red"  # raw argmax would say blue
    res = invoke("--json", "run", str(spec), "--input", animal)
    assert json.loads(res.stdout)["outputs"][0]["output"] == "blue"
    spec.with_name("tiny.lock.yaml").unlink()
    assert answer() == "blue"  # no lock: one input alone cannot be batch-calibrated


def test_eval_uses_the_split_mean_and_matches_the_training_report(standin: StandIn, tmp_path: Path) -> None:
    spec = trained(standin, tmp_path)
    path = spec.with_name("tiny.lock.yaml")
    lock = lockmod.read_lock(path)
    assert lock is not None
    out = json.loads(invoke("--json", "eval", str(spec)).stdout)
    assert out["accuracy"] == 1.0 and out["accuracy"] == lock["metrics"]["test"]
    lock["layers"]["answer"]["calibration"]["prior"] = [0.5, 0.5]  # a locked prior that would decide all blue
    lockmod.write_lock(path, lock)
    out = json.loads(invoke("--json", "eval", str(spec)).stdout)
    assert out["accuracy"] == 1.0  # a whole split is calibrated by its own mean
    with dlnflow.load(spec) as net:
        test = net.dataset.test
    blue = sum(e.target == "blue" for e in test) / len(test)
    assert out["calibration_prior"] == pytest.approx([0.9 * blue + 0.6 * (1 - blue), 0.1 * blue + 0.4 * (1 - blue)])
    assert out["label_counts"] == {"blue": round(blue * len(test)), "red": len(test) - round(blue * len(test))}


def test_a_changed_method_is_drift_and_status_still_reports(standin: StandIn, tmp_path: Path) -> None:
    spec = trained(standin, tmp_path)
    spec.write_text(spec.read_text().replace("calibration: batch", "calibration: content_free"))
    with dlnflow.load(spec) as net:
        drift = net.use_lock()
        assert drift == ["calibration of layer 'answer': 'batch' -> 'content_free' (the locked prior is not used)"]
        assert net.pipeline.graph.output.prior is None
    res = invoke("status", str(spec))
    assert res.exit_code in (0, 1), res.output
    assert "calibration of layer 'answer'" in res.output


def test_a_malformed_calibration_entry_is_refused_where_it_is(standin: StandIn, tmp_path: Path) -> None:
    spec = trained(standin, tmp_path)
    path = spec.with_name("tiny.lock.yaml")
    text = path.read_text()
    path.write_text(text.replace("      method: batch\n", "      method: [batch]\n"))
    with pytest.raises(LockError, match=r"tiny.lock.yaml:\d+:\d+: expected a method name, found list"):
        lockmod.read_lock(path)


def learnable(prompt: str, verbalizers: tuple[str, ...]) -> list[float]:
    """Without worked examples in the prompt every input gets 0.8/0.2; with them, as :func:`biased`."""
    if "Answer: " not in prompt:
        return [math.log(0.8), math.log(0.2)]
    return biased(prompt, verbalizers)


def test_the_locked_prior_is_the_dev_mean_of_the_learned_prompt(standin: StandIn, tmp_path: Path) -> None:
    standin.cls = learnable
    spec = write_spec(tmp_path, method="dln1", iterations=2, layers=CALIBRATED)
    res = invoke("--json", "train", str(spec))
    assert res.exit_code == 0, res.output
    lock = lockmod.read_lock(spec.with_name("tiny.lock.yaml"))
    assert lock is not None
    assert "Answer: " in lock["layers"]["answer"]["prompt"]  # training kept a candidate with examples
    assert lock["metrics"]["dev_before"] < lock["metrics"]["dev"] == 1.0
    with dlnflow.load(spec) as net:
        dev = net.dataset.dev
    blue = sum(e.target == "blue" for e in dev) / len(dev)
    expected = [0.9 * blue + 0.6 * (1 - blue), 0.1 * blue + 0.4 * (1 - blue)]  # not the initial 0.8 / 0.2
    assert lock["layers"]["answer"]["calibration"]["prior"] == pytest.approx(expected, abs=1e-6)


def test_training_after_loading_a_lock_drops_the_locked_prior(standin: StandIn, tmp_path: Path) -> None:
    spec = trained(standin, tmp_path)
    with dlnflow.load(spec) as net:
        net.use_lock()
        assert net.pipeline.graph.output.prior is not None
        net.train(write_lock=False, record=False)
        assert net.pipeline.graph.output.prior is None
