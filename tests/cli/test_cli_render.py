"""Colour manners: only on a terminal, never with NO_COLOR; errors rendered the same otherwise."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys

from click.testing import CliRunner
from paths import BAD_SPECS

from dlnflow.cli import cli
from dlnflow.cli.render import paint, use_color

BAD_SPEC = BAD_SPECS / "bad_enum_method.yaml"
ESC = "\x1b["


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_without_no_color() -> None:
    assert use_color(FakeTerminal(), {}) is True
    assert use_color(io.StringIO(), {}) is False
    assert use_color(FakeTerminal(), {"NO_COLOR": "1"}) is False
    # no-color.org: an empty NO_COLOR does not disable colour
    assert use_color(FakeTerminal(), {"NO_COLOR": ""}) is True


def test_paint_is_identity_without_colour() -> None:
    assert paint("ok", "ok", False) == "ok"
    assert paint("ok", "ok", True).startswith(ESC) and "ok" in paint("ok", "ok", True)


def test_piped_output_has_no_escape_codes() -> None:
    result = CliRunner().invoke(cli, ["validate", str(BAD_SPEC)], color=True)
    assert result.exit_code == 2
    assert "bad_enum_method.yaml:" in result.output
    assert ESC not in result.output


def _stderr_on_a_terminal(env: dict[str, str]) -> tuple[int, str]:
    """Run the real console entry point with stderr attached to a pseudo-terminal."""
    leader, follower = pty.openpty()
    proc = subprocess.run([sys.executable, "-m", "dlnflow", "validate", str(BAD_SPEC)], stderr=follower,
                          stdout=subprocess.DEVNULL, env=env, timeout=120, check=False)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal side is closed and drained
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.returncode, b"".join(chunks).decode("utf-8", "replace")


def test_terminal_gets_colour_and_no_color_turns_it_off() -> None:
    base = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    code, coloured = _stderr_on_a_terminal(base)
    assert code == 2
    assert ESC in coloured and "bad_enum_method.yaml:" in coloured
    code, plain = _stderr_on_a_terminal({**base, "NO_COLOR": "1"})
    assert code == 2
    assert ESC not in plain and "bad_enum_method.yaml:" in plain
