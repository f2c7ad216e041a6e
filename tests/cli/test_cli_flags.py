"""CLI manners: --json, -q and -v after the command as well as before; --version; NO_COLOR kept."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from helpers import write_spec
from standin import StandIn

from dlnflow import __version__
from dlnflow.cli import cli


def invoke(*args: str, **env: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env or None)


@pytest.mark.parametrize("args", [
    ["--json", "cache", "stats"],
    ["cache", "stats", "--json"],
    ["cache", "--json", "stats"],
])
def test_json_before_or_after_the_command(tmp_path: Path, args: list[str]) -> None:
    result = invoke("--cache-dir", str(tmp_path / "c"), *args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["entries"] == 0


def test_json_after_a_plain_command_and_for_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\n")
    after = invoke("validate", str(bad), "--json")
    before = invoke("--json", "validate", str(bad))
    assert after.exit_code == before.exit_code == 2
    assert json.loads(after.stdout) == json.loads(before.stdout) != []


def test_quiet_and_verbose_after_the_command(standin: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    loud = invoke("train", str(spec))
    assert loud.exit_code == 0, loud.output
    assert "training " in loud.stderr and "predicted:" in loud.stderr
    quiet = invoke("train", str(spec), "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert quiet.stdout.splitlines()[:2] == loud.stdout.splitlines()[:2]  # accuracy lines (calls now cached)
    assert invoke("train", str(spec), "-q", "-v").stderr == ""  # -q wins, wherever it stands
    verbose = invoke("train", str(spec), "--iterations", "1", "-vv")
    assert verbose.exit_code == 0, verbose.output


def test_verbose_adds_up_before_and_after(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    result = invoke("-v", "report", str(missing), "-v")  # verbosity 2 prints the traceback of an error
    assert result.exit_code == 2
    assert "Traceback" in result.stderr and "no such run folder or spec" in result.stderr
    once = invoke("report", str(missing), "-v")
    assert once.exit_code == 2 and "Traceback" not in once.stderr


def test_command_keeps_its_own_json_option() -> None:
    export = cli.get_command(None, "export")  # type: ignore[arg-type]
    assert export is not None
    assert sum("--json" in p.opts for p in export.params) == 1
    assert {"-q", "-v"} <= {o for p in export.params for o in p.opts}


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout == f"dlnflow, version {__version__}\n"


def stderr_on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run the real entry point with stderr on a pseudo-terminal (where colour would be used)."""
    leader, follower = pty.openpty()
    proc = subprocess.run([sys.executable, "-m", "dlnflow", *args], stderr=follower, stdout=subprocess.DEVNULL,
                          env=env, timeout=120, check=False)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # closed and drained
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


def test_no_color_is_kept_with_flags_after_the_command(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nname: x\n")
    base = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    code, coloured = stderr_on_a_terminal(["validate", str(bad), "-v"], base)
    assert code == 2 and "\x1b[" in coloured and "bad.yaml:" in coloured
    code, plain = stderr_on_a_terminal(["validate", str(bad), "-v"], {**base, "NO_COLOR": "1"})
    assert code == 2 and "\x1b[" not in plain and "bad.yaml:" in plain
