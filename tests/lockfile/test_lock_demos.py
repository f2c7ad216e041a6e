"""Learned demonstrations in the lock file (stand-in model): written with text and ids, replayed,
loaded by ``eval``/``run``, and reported by ``status`` when the data changes them away."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from helpers import ONE_LAYER, write_spec
from standin import StandIn

import dlnflow
from dlnflow.cli import cli
from dlnflow.core.errors import LockError
from dlnflow.graph.demos import example_id
from dlnflow.lockfile import lock as lockmod

DEMO_LAYER = ONE_LAYER + "    demos: {k: 2}\n"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["--json", *args])


def calls(model: StandIn) -> int:
    return sum(model.calls.values())


@pytest.fixture()
def trained(standin: StandIn, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    spec = write_spec(tmp_path, layers=DEMO_LAYER)
    result = invoke("train", str(spec))
    assert result.exit_code == 0, result.output
    return spec, yaml.safe_load(spec.with_name("tiny.lock.yaml").read_text())


def test_lock_records_demonstrations_with_text_and_ids(trained: tuple[Path, dict[str, Any]]) -> None:
    # mutation tried: build_lock without the demos entry made this fail
    spec, lock = trained
    demos = lock["layers"]["answer"]["demos"]
    assert len(demos) == 2
    with dlnflow.load(spec) as net:
        train = {example_id(e.input, e.target): e for e in net.dataset.train}
    for d in demos:
        assert set(d) == {"id", "input", "target"}
        assert d["id"] == example_id(d["input"], d["target"])
        assert (train[d["id"]].input, train[d["id"]].target) == (d["input"], d["target"])


def test_warm_rerun_replays_with_zero_calls_and_the_same_lock(standin: StandIn,
                                                             trained: tuple[Path, dict[str, Any]]) -> None:
    spec, _ = trained
    path = spec.with_name("tiny.lock.yaml")
    before, n = path.read_bytes(), calls(standin)
    result = invoke("train", str(spec))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["backend_calls"] == 0
    assert calls(standin) == n
    assert path.read_bytes() == before


def test_eval_and_run_use_the_locked_demonstrations(standin: StandIn, trained: tuple[Path, dict[str, Any]]) -> None:
    # mutation tried: learned_state without the demos made use_lock fail strictly (missing answer.demos)
    spec, lock = trained
    with dlnflow.load(spec) as net:
        assert net.use_lock() == []
        assert [d.id for d in net.pipeline.graph.output.demos] == [d["id"] for d in lock["layers"]["answer"]["demos"]]
        context = net.pipeline.graph.output.render({"x": "zebra"})
    first = lock["layers"]["answer"]["demos"][0]
    assert f"Input: {first['input']}\nAnswer: {first['target']}\n\n" in context
    result = invoke("run", str(spec), "--input", "zebra")
    assert result.exit_code == 0, result.output
    assert any(context == r.prompt for r in standin.log)


def test_status_reports_a_demonstration_the_data_no_longer_holds(trained: tuple[Path, dict[str, Any]]) -> None:
    # mutation tried: drift() ignoring the train split (no demos_drift) left only the split line
    spec, lock = trained
    assert json.loads(invoke("status", str(spec)).stdout)["clean"] is True
    text = spec.read_text().replace("split: {train: 16, dev: 8, test: 8, seed: 1}",
                                    "split: {train: 4, dev: 8, test: 8, seed: 1}")
    spec.write_text(text)
    with dlnflow.load(spec) as net:
        kept = {example_id(e.input, e.target) for e in net.dataset.train}
    gone = [d for d in lock["layers"]["answer"]["demos"] if d["id"] not in kept]
    assert gone, "the smaller train split should have dropped a demonstration"
    out = json.loads(invoke("status", str(spec)).stdout)
    assert out["clean"] is False
    for d in gone:
        assert any(line.startswith(f"demonstration {d['id']} of layer 'answer'") and "no longer in the training data"
                   in line for line in out["drift"]), out["drift"]


def test_status_reports_a_demonstration_whose_text_changed(trained: tuple[Path, dict[str, Any]]) -> None:
    spec, _ = trained
    path = spec.with_name("tiny.lock.yaml")
    data = lockmod.read_lock(path)
    assert data is not None
    data["layers"]["answer"]["demos"][0]["input"] += " (edited)"
    lockmod.write_lock(path, data)
    out = json.loads(invoke("status", str(spec)).stdout)
    assert out["drift"] == [f"demonstration {data['layers']['answer']['demos'][0]['id']} of layer 'answer': "
                            "its text in the lock differs from the data"]


def test_status_reports_a_changed_demos_k(trained: tuple[Path, dict[str, Any]]) -> None:
    spec, _ = trained
    spec.write_text(spec.read_text().replace("demos: {k: 2}", "demos: {k: 3}"))
    out = json.loads(invoke("status", str(spec)).stdout)
    assert "demonstrations of layer 'answer': the lock holds 2, the spec asks for 3 (demos.k)" in out["drift"]


def test_set_demos_k_on_the_command_line(standin: StandIn, tmp_path: Path) -> None:
    # mutation tried: the compiler ignoring demos.k wrote no demos and failed the first assertion
    spec = write_spec(tmp_path)
    result = invoke("train", str(spec), "--set", "layers.answer.demos.k=3", "--iterations", "1")
    assert result.exit_code == 0, result.output
    lock = yaml.safe_load(Path(json.loads(result.stdout)["lock"]).read_text())
    assert len(lock["layers"]["answer"]["demos"]) == 3


def test_a_lock_with_malformed_demonstrations_is_a_located_error(trained: tuple[Path, dict[str, Any]]) -> None:
    spec, _ = trained
    path = spec.with_name("tiny.lock.yaml")
    path.write_text(path.read_text().replace("    demos:\n", "    demos:\n    - just text\n", 1))
    with pytest.raises(LockError, match=r"tiny\.lock\.yaml:\d+:\d+: demonstrations must be a list"):
        lockmod.read_lock(path)


def test_status_text_lists_the_learned_demonstrations(trained: tuple[Path, dict[str, Any]]) -> None:
    spec, lock = trained
    result = CliRunner().invoke(cli, ["status", str(spec)])
    assert result.exit_code == 0, result.output
    shown = ", ".join(f"{d['input']!r} -> {d['target']!r}" for d in lock["layers"]["answer"]["demos"])
    assert f"  answer demonstrations: {shown}" in result.stdout


def test_a_sweeps_demos_setting_may_come_from_its_lock() -> None:
    # mutation tried: without "demos." in the allow-list, eval of a sweep over demos.k refused the setting
    # and then failed to load the locked demonstrations
    from dlnflow.lockfile.allowlist import split_overrides

    spec = {"layers": [{"name": "answer"}]}
    applied, training, refused = split_overrides({"layers.answer.demos.k": 4, "train.seed": 1}, spec)
    assert (applied, training, refused) == ({"layers.answer.demos.k": 4}, {"train.seed": 1}, {})


def test_without_a_lock_run_shows_the_first_draw_as_training_starts(standin: StandIn, tmp_path: Path) -> None:
    # mutation tried: use_lock returning before the data was loaded made `run` show no demonstrations
    spec = write_spec(tmp_path, layers=DEMO_LAYER)
    result = invoke("run", str(spec), "--input", "zebra")
    assert result.exit_code == 0, result.output
    with dlnflow.load(spec) as net:
        first = net.pipeline.graph.output
        _ = net.dataset
        assert len(first.demos) == 2
        context = first.render({"x": "zebra"})
    assert any(r.prompt == context for r in standin.log)
