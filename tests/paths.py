"""Where the tests find the project's files (read-only: tests copy what they use into tmp_path)."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SHARED = ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"
PIPELINES = ROOT / "pipelines"
BAD_SPECS = TESTS / "bad_specs"
BAD_INPUTS = TESTS / "bad_inputs"
DRIVER = TESTS / "drive_standin.py"


def shipped_specs() -> list[str]:
    """The names of the example specs in ``pipelines/`` (lock files left out)."""
    return sorted(p.name for p in PIPELINES.glob("*.yaml") if not p.name.endswith(".lock.yaml"))
