"""The HTML report of a real quickstart run, opened in headless Chromium.

Checks: the browser logs no console message at all (the page has no script, so any message is
a blocked load, a CSP violation or a parse problem), the key elements are in the DOM Chromium
built, every reference is inline, and screenshots at desktop and phone width are taken (kept
under the test's temporary folder as artifacts). A control page with a blocked remote image
and a console error shows the check does catch such problems. Skips only when no Chromium is
installed (``.ci/run`` installs the Debian package).
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from quickstart_run import QuickstartRun

from dlnflow.cli import cli

pytestmark = pytest.mark.real

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]
CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\] (.*)")
WIDTHS = {"desktop": (1280, 2000), "phone": (390, 1600)}


def browser() -> str:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium; .ci/run does it)")
    return found


def chromium(page: Path, profile: Path, *extra: str) -> tuple[str, list[str]]:
    """Open ``page``; return stdout and the console messages Chromium logged for it."""
    proc = subprocess.run([browser(), *FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, [m.group(1) for m in CONSOLE.finditer(proc.stderr)]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(scope="module")
def page(quickstart_run: QuickstartRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("html") / "quickstart.html"
    result = CliRunner().invoke(cli, ["report", str(quickstart_run.spec), "--iterations", "1", "--html", str(out)],
                                env=quickstart_run.env)
    assert result.exit_code == 0, result.output
    assert f"HTML report (run {quickstart_run.run_dir.name}): {out}" in result.stdout
    return out


def test_control_page_shows_the_console_check_works(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
                   'script-src \'unsafe-inline\'"><img src="https://example.com/x.png">'
                   '<script>console.error("broken page")</script>')
    _, messages = chromium(bad, tmp_path / "profile", "--dump-dom")
    assert any("example.com/x.png" in m and "Content Security Policy" in m for m in messages), messages
    assert any('"broken page"' in m for m in messages), messages


def test_report_renders_without_console_messages(page: Path, quickstart_run: QuickstartRun, tmp_path: Path) -> None:
    dom, messages = chromium(page, tmp_path / "profile", "--dump-dom")
    assert messages == []
    run_id = quickstart_run.run_dir.name
    assert f'<section class="run" id="run-{run_id}">' in dom
    assert re.search(r'<img class="curve" src="data:image/svg\+xml;base64,[A-Za-z0-9+/=]{1000,}"', dom)
    candidates = re.findall(r'<table class="candidates">(.*?)</table>', dom, re.S)
    assert len(candidates) == 1  # one iteration of one layer
    step = next(json.loads(line) for line in (quickstart_run.run_dir / "log.jsonl").read_text().splitlines()
                if json.loads(line)["event"] == "step")
    logged = step["layers"]["answer"]["candidates"]
    assert candidates[0].count("<tr") == 1 + len(logged) and 1 <= len(logged) <= 2  # header + candidates
    assert candidates[0].count('<tr class="chosen">') == 1
    chosen = logged[step["layers"]["answer"]["chosen"]]
    assert f'{chosen["score"]:.3f} <span class="badge">chosen</span>' in candidates[0]
    for heading in ("Learning curve", "Accuracy", "Predicted labels", "Iterations", "Calls, tokens and cost"):
        assert f"<h3>{heading}</h3>" in dom, heading
    labels = re.search(r'<table class="labels">(.*?)</table>', dom, re.S)
    assert labels is not None
    rows = re.findall(r"<tr><td><code>(\w+)</code></td>((?:<td class=\"num\">\d+</td>)+)</tr>", labels.group(1))
    assert {label for label, _ in rows} <= {"blue", "red"} and rows
    columns = list(zip(*[[int(x) for x in re.findall(r">(\d+)<", cells)] for _, cells in rows], strict=True))
    assert [sum(c) for c in columns] == [30, 30, 36, 36]  # dev and test sizes of the quickstart split


def test_report_references_nothing_outside_itself(page: Path) -> None:
    html = page.read_text(encoding="utf-8")
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [r[:40] for r in refs]
    assert "<script" not in html


@pytest.mark.parametrize("name", WIDTHS)
def test_screenshots(page: Path, tmp_path: Path, name: str) -> None:
    width, height = WIDTHS[name]
    shot = tmp_path / f"report-{name}.png"
    _, messages = chromium(page, tmp_path / "profile", f"--screenshot={shot}", f"--window-size={width},{height}")
    assert messages == []
    assert png_size(shot) == (width, height)
    print(f"screenshot: {shot}")
