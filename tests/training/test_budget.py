"""Budgets: stop before exceeding max_calls / max_tokens, exit 1 with a clear message, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from helpers import write_spec
from standin import StandIn

from dlnflow.cli import cli
from dlnflow.core.backend import Request
from dlnflow.core.errors import BudgetExceeded
from dlnflow.runtime.cache import CallCache
from dlnflow.runtime.client import Budget, Client
from dlnflow.training.runs import read_log


def train(*args: str) -> Result:
    return CliRunner().invoke(cli, ["train", *args])


def calls(model: StandIn) -> int:
    return sum(model.calls.values())


def uninterrupted_calls(model: StandIn, tmp_path: Path, *args: str) -> int:
    """Backend calls of the same command without a budget, in a separate cache and runs folder."""
    ref = tmp_path / "reference"
    ref.mkdir()
    spec = write_spec(ref)
    before = calls(model)
    result = CliRunner().invoke(cli, ["--cache-dir", str(ref / "cache"), "train", str(spec), *args],
                                env={"DLNFLOW_RUNS_DIR": str(ref / "runs")})
    assert result.exit_code == 0, result.output
    return calls(model) - before


def partial_log(tmp_path: Path) -> list[dict]:
    (run,) = (tmp_path / "runs" / "tiny").iterdir()
    assert (run / "log.jsonl.partial").exists() and not (run / "summary.json").exists()
    return read_log(run)


def test_max_calls_stops_before_exceeding_and_rerun_pays_nothing_twice(standin: StandIn,
                                                                       tmp_path: Path) -> None:
    needed = uninterrupted_calls(standin, tmp_path)
    assert needed > 30
    spec = write_spec(tmp_path)
    standin.calls.clear()
    stopped = train(str(spec), "--max-calls", "30")
    assert stopped.exit_code == 1
    message = stopped.stderr
    assert "stopped before exceeding its budget" in message and "max_calls=30" in message
    assert "run the same command again to continue" in message and "Traceback" not in stopped.output
    paid = calls(standin)
    assert 0 < paid <= 30
    assert not (tmp_path / "tiny.lock.yaml").exists()
    records = partial_log(tmp_path)  # the partial log stays readable and says why it ends
    assert records[0]["event"] == "before" and records[-1]["event"] == "stopped"
    assert records[-1]["usage"]["backend_calls"] == paid
    resumed = train(str(spec), "--max-calls", "1000")
    assert resumed.exit_code == 0, resumed.output
    assert calls(standin) == needed  # the rerun paid only for what the first attempt had not
    with CallCache(tmp_path / "cache") as cache:
        assert len(cache) == needed


def test_max_tokens_never_crosses_the_budget(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    stopped = CliRunner().invoke(cli, ["--json", "train", str(spec), "--max-tokens", "300"])
    assert stopped.exit_code == 1
    error = json.loads(stopped.stdout)
    assert error["error"] == "BudgetExceeded" and error["exit_code"] == 1
    assert "max_tokens=300" in error["message"] and "--max-tokens" in error["message"]
    usage = partial_log(tmp_path)[-1]["usage"]
    assert 0 < usage["prompt_tokens"] + usage["completion_tokens"] <= 300
    assert train(str(spec)).exit_code == 0


def test_spec_budget_and_sweep_budget(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    spec.write_text(spec.read_text() + "  budget: {max_calls: 12}\n")
    result = train(str(spec))
    assert result.exit_code == 1 and "max_calls=12" in result.stderr and calls(standin) <= 12
    sweep = train(str(spec), "--seeds", "1,2", "--max-calls", "70")
    assert sweep.exit_code == 1
    assert "sweep stopped in run 2/2 (seed 2, spec settings) with 1 run(s) finished" in sweep.stderr
    assert calls(standin) <= 12 + 70


def test_client_refuses_a_batch_whose_predicted_tokens_would_cross(tmp_path: Path) -> None:
    model = StandIn(gen=lambda r: "ok")
    budget = Budget(max_tokens=20, predict_tokens=True)
    client = Client({"m": model}, CallCache(tmp_path / "c"), budget=budget)
    fits = Request("generate", "one two three", max_tokens=5)  # at most 3 + 5 = 8 tokens
    client.run("m", [fits])
    spent = client.usage.prompt_tokens + client.usage.completion_tokens
    assert spent == 4
    too_much = Request("generate", "a b c d e f g h", max_tokens=10)  # up to 18: 4 + 18 > 20
    with pytest.raises(BudgetExceeded, match="may spend up to 18 tokens.*max_tokens=20"):
        client.run("m", [too_much])
    assert sum(model.calls.values()) == 1 and client._reserved_tokens == {}
    client.run("m", [fits])  # cached: free
    classify = Request("classify", "x y z", targets=(" a", " b"))  # 3 + 2 = 5: 4 + 5 <= 20
    client.run("m", [classify])
    assert sum(model.calls.values()) == 2


@pytest.mark.real
def test_budget_on_the_real_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(tmp_path / "runs"))
    spec = write_spec(tmp_path, iterations=1)
    base = ["--json", "--cache-dir", str(tmp_path / "cache"), "train", str(spec)]
    stopped = CliRunner().invoke(cli, base + ["--max-calls", "20"])
    assert stopped.exit_code == 1 and "max_calls=20" in json.loads(stopped.stdout)["message"]
    with CallCache(tmp_path / "cache") as cache:
        paid = len(cache)
    assert 0 < paid <= 20
    done = CliRunner().invoke(cli, base + ["--max-calls", "500"])
    assert done.exit_code == 0, done.output
    out = json.loads(done.stdout)
    with CallCache(tmp_path / "cache") as cache:
        assert len(cache) == paid + out["backend_calls"]  # nothing paid twice
    assert out["cache_hits"] >= paid


@pytest.mark.real
def test_max_tokens_stops_a_real_training_run_and_a_rerun_pays_only_for_the_rest(project: Path) -> None:
    """``--max-tokens`` on the embedded model: exit 1 with a message naming the budget and how to go on,
    tokens spent within it, no lock and no summary, the partial log ending in ``stopped``; the same
    command with a higher budget finishes and pays for no call twice."""
    from real_specs import tiny_quickstart

    spec = tiny_quickstart(project / "pipelines")
    cache = project / "cache"  # the project fixture points DLNFLOW_CACHE_DIR and DLNFLOW_RUNS_DIR here
    stopped = CliRunner().invoke(cli, ["--json", "train", str(spec), "--max-tokens", "600"])
    assert stopped.exit_code == 1, stopped.output
    error = json.loads(stopped.stdout)
    assert error["error"] == "BudgetExceeded" and "Traceback" not in stopped.output
    assert "max_tokens=600" in error["message"] and "run the same command again to continue" in error["message"]
    (run,) = (project / "runs" / "quickstart-tiny").iterdir()
    assert (run / "log.jsonl.partial").exists() and not (run / "summary.json").exists()
    assert not spec.with_name("quickstart-tiny.lock.yaml").exists()
    records = read_log(run)
    assert records[0]["event"] == "before" and records[-1]["event"] == "stopped"
    usage = records[-1]["usage"]
    assert 0 < usage["prompt_tokens"] + usage["completion_tokens"] <= 600
    with CallCache(cache) as store:
        paid = len(store)
    assert paid == usage["backend_calls"] > 0  # every paid answer kept
    done = CliRunner().invoke(cli, ["--json", "train", str(spec), "--max-tokens", "100000"])
    assert done.exit_code == 0, done.output
    out = json.loads(done.stdout)
    spent = usage["prompt_tokens"] + usage["completion_tokens"] + out["prompt_tokens"] + out["completion_tokens"]
    assert spent > 600  # the whole run needs more than the budget: the stop cut it short
    with CallCache(cache) as store:
        assert len(store) == paid + out["backend_calls"]  # nothing paid twice
    assert out["cache_hits"] >= paid and spec.with_name("quickstart-tiny.lock.yaml").exists()
