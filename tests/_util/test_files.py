"""``write_atomic``: the old file survives a failed write; no temporary file is left behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dlnflow._util.files import write_atomic


def test_new_files_are_owner_only_unless_a_mode_is_given(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_atomic(tmp_path / "a" / "private.json", "{}\n")
        write_atomic(tmp_path / "shared.py", "x = 1\n", mode=0o644)
    finally:
        os.umask(old)
    assert (tmp_path / "a" / "private.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "shared.py").stat().st_mode & 0o777 == 0o644


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "summary.json"
    write_atomic(target, "old\n")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
