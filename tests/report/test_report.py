"""Run reports: reading run folders, the markdown, the learning-curve PNG, finding a spec's run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import write_spec
from reporting import USAGE, check_png, fabricate
from standin import StandIn

import dlnflow
from dlnflow.core.errors import DataError, InputError, SpecError
from dlnflow.report.markdown import (
    ValidationPoint,
    load_run,
    markdown_fence,
    render_markdown,
    resolve_run,
    run_dir_for_spec,
    write_report,
)

def test_load_run_reads_every_validation_point_and_objective(tmp_path: Path) -> None:
    report = load_run(fabricate(tmp_path))
    assert report.finished
    assert report.validation == [ValidationPoint(0, 0.25, "before"), ValidationPoint(2, 0.5),
                                 ValidationPoint(4, 0.75)]
    assert report.objectives == {"answer": [(1, -1.5), (2, -1.0), (3, -0.8), (4, -0.6)]}
    assert report.prompts_before == {"answer": "Pick one."}
    assert report.prompts_after == {"answer": "Animals are blue, fruits red."}
    assert report.metrics == {"dev_before": 0.25, "test_before": 0.3, "dev": 0.75, "test": 0.7}
    assert report.usage["backend_calls"] == 10
    assert report.tokens_saved == 127
    assert report.best_iteration == 4 and report.iterations_run == 4


def test_partial_run_is_reported_as_not_finished(tmp_path: Path) -> None:
    report = load_run(fabricate(tmp_path, finished=False))
    assert not report.finished
    assert report.iterations_run == 4
    assert report.metrics == {"dev_before": 0.25}
    assert "Not finished" in render_markdown(report)


def test_bad_log_line_is_located(tmp_path: Path) -> None:
    run = fabricate(tmp_path)
    lines = (run / "log.jsonl").read_text().splitlines()
    lines[2] = "{not json"
    (run / "log.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        load_run(run)
    assert info.value.problems[0].line == 3
    assert info.value.problems[0].file.endswith("log.jsonl")


# -- the markdown --------------------------------------------------------------------------------
def test_markdown_lists_validation_points_metrics_prompts_and_tokens(tmp_path: Path) -> None:
    text = render_markdown(load_run(fabricate(tmp_path)))
    assert "| 0 | 25.0% | initial prompts |" in text
    assert "| 2 | 50.0% |  |" in text
    assert "| 4 | 75.0% | best, kept |" in text
    assert "| dev | 25.0% | 75.0% |" in text
    assert "| test | 30.0% | 70.0% |" in text
    assert "```text\nPick one.\n```" in text
    assert "```text\nAnimals are blue, fruits red.\n```" in text
    assert "| backend calls (real model calls) | 10 |" in text
    assert "| tokens saved by the cache | 127 (120 prompt + 7 completion) |" in text
    assert "![Dev accuracy and training objective per iteration](learning_curve.png)" in text


def test_prompt_with_backticks_gets_a_longer_fence() -> None:
    assert markdown_fence("use ```code``` here") == "````"
    assert markdown_fence("plain") == "```"


# -- the picture and both files ------------------------------------------------------------------
def test_write_report_makes_a_real_png_and_markdown(tmp_path: Path) -> None:
    run = fabricate(tmp_path)
    paths = write_report(load_run(run), tmp_path / "out" / "nested")
    assert paths["report"] == tmp_path / "out" / "nested" / "report.md"
    check_png(paths["learning_curve"])
    assert "| 4 | 75.0% |" in paths["report"].read_text()


def test_unwritable_out_folder_is_bad_input(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write the report"):
        write_report(load_run(fabricate(tmp_path)), blocker / "sub")


# -- finding runs --------------------------------------------------------------------------------
def test_resolve_run_rejects_folders_without_a_log(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a run folder"):
        resolve_run(tmp_path)
    with pytest.raises(InputError, match="no such run folder or spec"):
        resolve_run(tmp_path / "missing.yaml")


def test_spec_without_a_run_says_train_first(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    with pytest.raises(InputError, match=r"train first: dlnflow train .*tiny\.yaml"):
        run_dir_for_spec(spec)


def test_broken_spec_is_a_spec_error(tmp_path: Path) -> None:
    spec = tmp_path / "broken.yaml"
    spec.write_text("version: 1\nname: x\n")
    with pytest.raises(SpecError):
        resolve_run(spec)


def test_report_of_a_real_stand_in_training(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, iterations=3)
    with dlnflow.load(spec) as net:
        result = net.train()
    run = resolve_run(spec)
    assert run == result.run_dir
    report = load_run(run)
    assert [v.iteration for v in report.validation] == [0, 1, 2, 3]
    assert report.metrics["test"] == pytest.approx(result.metrics["test"])
    assert report.usage["backend_calls"] == result.usage["backend_calls"]
    assert set(report.objectives) == {"answer"} and len(report.objectives["answer"]) == 3
    paths = write_report(report, run)
    check_png(paths["learning_curve"])
    rows = [line for line in paths["report"].read_text().splitlines() if line.startswith("| ")
            and line.split("|")[1].strip().isdigit()]
    assert len(rows) >= 2
    # an overridden seed is a different run that does not exist yet
    with pytest.raises(InputError, match="seed 99"):
        resolve_run(spec, seed=99)


@pytest.mark.parametrize("method", ["none", "fewshot"])
def test_report_of_a_baseline_without_steps(standin: StandIn, tmp_path: Path, method: str) -> None:
    spec = write_spec(tmp_path, method=method)
    with dlnflow.load(spec) as net:
        net.train()
    report = load_run(resolve_run(spec))
    assert report.objectives == {}
    assert report.iterations_run == 0
    assert [(v.iteration, v.event) for v in report.validation] == [(0, "before"), (0, "prepared")]
    paths = write_report(report, tmp_path / "out")
    check_png(paths["learning_curve"])
    text = paths["report"].read_text()
    assert "| 0 |" in text and "after the baseline's setup" in text


def test_run_stopped_by_its_budget_says_why(tmp_path: Path) -> None:
    run = fabricate(tmp_path, finished=False)
    stopped = {"iteration": 5, "event": "stopped", "reason": "budget", "message": "max_calls 10 reached",
               "prompts": {"answer.prompt": "Last one."}, "usage": USAGE}
    with (run / "log.jsonl.partial").open("a") as fh:
        fh.write(json.dumps(stopped) + "\n")
    report = load_run(run)
    assert report.stop_message == "max_calls 10 reached"
    assert report.prompts_after == {"answer": "Last one."}
    assert "it stopped: max_calls 10 reached" in render_markdown(report)
