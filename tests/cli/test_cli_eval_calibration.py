"""``dlnflow eval`` with a calibrated classifier on the real model: a biased prompt's answers spread out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dlnflow.cli import cli


@pytest.mark.real
def test_batch_calibration_spreads_the_answers_of_a_biased_prompt(project: Path, shared_data: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLNFLOW_CACHE_DIR", str(project / "cache"))
    source = (project / "pipelines" / "mpqa.yaml").read_text()
    # mpqa's initial prompt answers "negative" for most phrases on the embedded model
    small = source.replace("split: {train: 100, dev: 50, test: 100, seed: 42}",
                           "split: {train: 10, dev: 10, test: 20, seed: 42}")
    small = small.replace("version: 1\n", "version: 1\nmodels:\n  local: {backend: llamacpp, n_threads: 1}\n", 1)
    assert small.count("n_threads: 1") == 1 and "test: 20" in small
    counts = {}
    for method in ("none", "batch"):
        spec = project / "pipelines" / f"mpqa_{method}.yaml"
        spec.write_text(small.replace('classes: ["negative", "positive"]}',
                                      f'classes: ["negative", "positive"], calibration: {method}}}'))
        res = CliRunner().invoke(cli, ["--json", "eval", str(spec), "--initial"])
        assert res.exit_code == 0, res.output
        out = json.loads(res.stdout)
        assert out["n"] == 20
        counts[method] = out["label_counts"]
    raw, calibrated = counts["none"], counts["batch"]
    assert raw != calibrated
    assert max(raw.values()) >= 15  # the prompt is biased: one label for (nearly) everything
    assert min(calibrated.get(c, 0) for c in ("negative", "positive")) >= 5  # calibrated: both labels used
