"""The HTML report's content: diffs, escaping, folding, timing, label counts, sweeps and --compare.

Run folders are fabricated or trained with the stand-in model; the page in a real browser is
checked by ``test_report_browser.py``.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from click.testing import CliRunner, Result
from helpers import write_spec
from standin import StandIn
from reporting import fabricate, step

from dlnflow.cli import cli
from dlnflow.report.html import FOLD_AT, render_run_html, word_diff


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_word_diff_round_trips() -> None:
    old, new = "Answer with blue or red.", "Answer with red.\n\nInput: fig\nAnswer: red"
    pieces = word_diff(old, new)
    assert "".join(t for op, t in pieces if op != "ins") == old
    assert "".join(t for op, t in pieces if op != "del") == new
    assert word_diff("same", "same") == [("same", "same")]


def test_single_run_page(tmp_path: Path) -> None:
    run = fabricate(tmp_path)
    html = render_run_html(run)
    assert render_run_html(run) == html  # the same run gives the same bytes (no dates, salted ids)
    assert "<text" in _curve_svg(html)  # text kept as text in the inline SVG
    assert '<section class="run" id="run-seed1-abcdef12">' in html
    assert html.count('<table class="candidates">') == 4  # one per iteration
    # iteration 3 replaced the prompt: its diff deletes the example and inserts the rule
    assert "<del>Pick one. Example: cat -&gt; blue</del><ins>Animals are blue.</ins>" in html
    assert html.count("<span class=\"muted\">unchanged</span>") == 1  # iteration 2 kept iteration 1's prompt
    assert "Not recorded for this run" in html  # a summary without label counts (older runs)
    assert "<h3>Time per operation</h3>" not in html
    assert "25.0% → 75.0%" in html and "30.0% → 70.0%" in html


def _curve_svg(html: str) -> str:
    found = re.search(r'<img class="curve" src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', html)
    assert found is not None
    return base64.b64decode(found.group(1)).decode("utf-8")


def test_prompts_are_escaped_and_long_ones_fold(tmp_path: Path) -> None:
    run = fabricate(tmp_path)
    nasty = "<script>alert(1)</script> & \"quotes\" " + "word " * (FOLD_AT // 4)
    log = run / "log.jsonl"
    log.write_text(log.read_text() + json.dumps(step(5, -0.5, nasty)) + "\n")
    html = render_run_html(run)
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;quotes&#34;" in html
    folded = re.findall(r"<details><summary>(.*?)… \((\d+) characters\)</summary>", html)
    assert any(int(n) == len(nasty) for _, n in folded)


def test_timing_and_label_counts_when_recorded(tmp_path: Path) -> None:
    run = fabricate(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    summary["timing"] = {"evaluate": 1.25, "step": {"generate": 2.5, "score": 0.125}}
    summary["label_counts"] = {"dev_before": {"red": 3, "blue": 1}, "dev": {"blue": 2, "red": 2},
                               "test_before": {"red": 4}, "test": {"blue": 1, "red": 2, "": 1}}
    (run / "summary.json").write_text(json.dumps(summary))
    html = render_run_html(run)
    timing = re.search(r'<table class="timing">(.*?)</table>', html, re.S)
    assert timing is not None
    assert re.findall(r"<td>([\w.]+)</td><td class=\"num\">([\d.]+)</td>", timing.group(1)) == [
        ("evaluate", "1.250"), ("step.generate", "2.500"), ("step.score", "0.125")]
    labels = re.search(r'<table class="labels">(.*?)</table>', html, re.S)
    assert labels is not None
    rows = re.findall(r"<tr><td><code>(.*?)</code></td>(.*?)</tr>", labels.group(1))
    assert [(name, re.findall(r">(\d+)<", cells)) for name, cells in rows] == [
        ("red", ["3", "2", "4", "2"]), ("blue", ["1", "2", "0", "1"]), ("(empty)", ["0", "0", "0", "1"])]


def test_unfinished_run(tmp_path: Path) -> None:
    html = render_run_html(fabricate(tmp_path, finished=False))
    assert "<strong>Not finished</strong>: the log stops after iteration 4" in html


def test_training_records_label_counts(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    trained = invoke("--json", "train", str(spec))
    assert trained.exit_code == 0, trained.output
    summary = json.loads((Path(json.loads(trained.stdout)["run_dir"]) / "summary.json").read_text())
    counts = summary["label_counts"]
    assert set(counts) == {"dev_before", "dev", "test_before", "test"}
    sizes = {"dev": 8, "test": 8}  # the helper spec's split
    for key, c in counts.items():
        assert sum(c.values()) == sizes[key.split("_")[0]] and set(c) <= {"blue", "red"}, key
    assert "cost" not in summary  # the helper spec has no prices


def test_sweep_page_and_compare(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, iterations=1)
    spec.write_text(spec.read_text() + "experiments:\n  seeds: [1, 2]\n  grid: {train.prompt_candidates: [2, 3]}\n")
    trained = invoke("--json", "train", str(spec))
    assert trained.exit_code == 0, trained.output
    runs = json.loads(trained.stdout)["runs"]
    out = tmp_path / "sweep.html"
    result = invoke("--json", "report", str(spec), "--html", str(out))
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    assert written["sweep"] is True and len(written["runs"]) == 4
    html = out.read_text()
    ids = [Path(r["run_dir"]).name for r in runs]
    for run_id in ids:
        assert f'<a href="#run-{run_id}">{run_id}</a>' in html
        assert f'<section class="run" id="run-{run_id}">' in html
    points = re.search(r'<table class="points">(.*?)</table>', html, re.S)
    assert points is not None and points.group(1).count("<tr") == 3  # header + 2 grid points
    assert points.group(1).count('class="best"') == 1
    pair = (ids[3], ids[0])
    chosen = invoke("report", str(spec), "--html", str(out), "--compare", ",".join(pair))
    assert chosen.exit_code == 0, chosen.output
    side = re.search(r'<section id="compare">(.*?)</section>', out.read_text(), re.S)
    assert side is not None
    assert re.findall(r'<h3><a href="#run-([\w-]+)">', side.group(1)) == list(pair)
    unknown = invoke("report", str(spec), "--html", str(out), "--compare", f"{ids[0]},seed9-00000000")
    assert unknown.exit_code == 2 and "no run seed9-00000000 in this sweep" in unknown.output


def test_html_usage_errors(tmp_path: Path) -> None:
    run = fabricate(tmp_path)
    out = tmp_path / "r.html"
    assert "--compare goes with --html" in invoke("report", str(run), "--compare", "a,b").output
    bad = invoke("report", str(run), "--html", str(out), "--compare", "a,b")
    assert bad.exit_code == 2 and "give the sweep's spec" in bad.output
    odd = invoke("report", str(run), "--html", str(out), "--compare", "only-one")
    assert odd.exit_code == 2 and "two run folder names" in odd.output
    blocked = tmp_path / "file"
    blocked.write_text("")
    cannot = invoke("report", str(run), "--html", str(blocked / "r.html"))
    assert cannot.exit_code == 2 and "cannot write" in cannot.output and "Traceback" not in cannot.output
