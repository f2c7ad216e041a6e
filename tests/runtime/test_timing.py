"""Where a run's time goes: the ``timing`` block in --json, summary.json, the run log, the report, ``-v``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import TWO_LAYERS, standin, write_spec  # noqa: F401
from standin import StandIn

from dlnflow.core.backend import Request
from dlnflow.cli import cli
from dlnflow.runtime.client import Client
from dlnflow.report.markdown import load_run, render_markdown
from dlnflow.runtime.timing import Timing, timing_lines


class Slow(StandIn):
    """The stand-in, taking a fixed time per request and counting prompt tokens like a KV cache would."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.evaluated = 0

    def run(self, requests: list[Request]) -> list[dict]:
        time.sleep(self.seconds * len(requests))
        self.evaluated += sum(len(r.prompt.split()) for r in requests)
        return super().run(requests)

    def counters(self) -> dict[str, int]:
        return {"prompt_evaluated": self.evaluated, "prompt_reused": 7}


def test_client_files_seconds_and_counters_per_operation() -> None:
    model = Slow(0.02)
    client = Client({"m": model})
    client.run("m", [Request("generate", f"say {i}", max_tokens=4) for i in range(3)])
    client.run("m", [Request("classify", "pick one", targets=(" a", " b"))])
    t = client.timing_summary(wall_seconds=1.0)
    gen, cls = t["operations"]["generate"], t["operations"]["classify"]
    assert (gen["calls"], cls["calls"]) == (3, 1)
    assert gen["seconds"] >= 0.06 and 0.02 <= cls["seconds"] < gen["seconds"]
    assert gen["tokens_generated"] == 3 and t["tokens_generated"] == 3  # the stand-in writes one word
    assert t["prompt_tokens"] == {"evaluated": 8, "reused": 0}  # deltas of the running totals
    assert t["other_seconds"] == pytest.approx(1.0 - t["model_seconds"], abs=1e-3)
    client.run("m", [Request("classify", "pick one", targets=(" a", " b"))])  # no cache: a second real call
    assert client.timing_summary()["operations"]["classify"]["calls"] == 2


def test_mixed_batches_are_shared_out_and_latency_is_summarised() -> None:
    t = Timing()
    t.record(["score", "score", "classify", "classify"], 4.0, prompt_tokens=40)
    s = t.summary(10.0, latencies=[0.1, 0.2, 0.3, 0.4, 10.0])
    assert s["operations"]["score"]["seconds"] == s["operations"]["classify"]["seconds"] == 2.0
    assert s["remote"]["requests"] == 5 and s["remote"]["median_seconds"] == 0.3
    assert s["remote"]["p95_seconds"] == pytest.approx(0.4 + 0.8 * 9.6)
    assert any(line.startswith("remote requests: 5") for line in timing_lines(s))


def test_train_reports_the_split_everywhere(standin: StandIn, tmp_path: Path) -> None:  # noqa: F811
    spec = write_spec(tmp_path, method="vi", layers=TWO_LAYERS)
    result = CliRunner().invoke(cli, ["--json", "train", str(spec)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    timing = out["timing"]
    assert {op: s["calls"] for op, s in timing["operations"].items()} == dict(standin.calls)
    assert timing["tokens_generated"] == sum(s["tokens_generated"] for s in timing["operations"].values()) > 0
    assert timing["wall_seconds"] == pytest.approx(out["wall_seconds"], abs=0.01)
    run_dir = Path(out["run_dir"])
    assert json.loads((run_dir / "summary.json").read_text())["timing"] == timing
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    steps = [r["timing"] for r in records if r["event"] == "step"]
    assert len(steps) == 2 and steps[-1]["model_seconds"] <= timing["model_seconds"]  # cumulative per step
    report = render_markdown(load_run(run_dir))
    assert "## Where the time went" in report and "| classify |" in report and "| generate |" in report
    text = CliRunner().invoke(cli, ["-v", "train", str(spec)])  # replayed from the cache
    assert text.exit_code == 0, text.output
    assert "where the time went:" in text.stdout and "other (cache, templates, bookkeeping)" in text.stdout
    quiet = CliRunner().invoke(cli, ["train", str(spec)])
    assert "where the time went:" not in quiet.stdout
