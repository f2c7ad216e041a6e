"""Tests of ``dlnflow cache path|stats|verify|clear`` through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import diskcache
import pytest
from click.testing import CliRunner, Result

from dlnflow.cli import cli
from dlnflow.core.backend import Request
from dlnflow.runtime.cache import DB_NAME, CallCache, call_key

IDENT = {"backend": "standin", "model": "m"}


@pytest.fixture(autouse=True)
def _no_env_cache_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DLNFLOW_CACHE_DIR", raising=False)


def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, env=env)


def fill(folder: Path, per_model: dict[str, int]) -> list[str]:
    keys = []
    with CallCache(folder) as c:
        for label, n in per_model.items():
            for i in range(n):
                key = call_key(IDENT, Request("generate", f"{label} {i}"))
                c.put(key, {"text": f"t{i}", "prompt_tokens": 2, "completion_tokens": 1}, model=label)
                keys.append(key)
    return keys


def count(folder: Path) -> int:
    with CallCache(folder) as c:
        return len(c)


# -- path --------------------------------------------------------------------------------------
def test_path_follows_option_then_env_then_project_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "proj"
    (project / "pipelines").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    monkeypatch.chdir(project / "pipelines")
    res = invoke("cache", "path")
    assert res.exit_code == 0 and res.output.strip() == str(project.resolve() / "cache")
    assert not (project / "cache").exists()  # asking never creates it
    res = invoke("cache", "path", env={"DLNFLOW_CACHE_DIR": str(tmp_path / "from-env")})
    assert res.output.strip() == str(tmp_path / "from-env")
    res = invoke("--cache-dir", str(tmp_path / "from-flag"), "cache", "path",
                 env={"DLNFLOW_CACHE_DIR": str(tmp_path / "from-env")})
    assert res.output.strip() == str(tmp_path / "from-flag")
    res = invoke("--json", "--cache-dir", str(tmp_path / "x"), "cache", "path")
    assert json.loads(res.output) == {"path": str(tmp_path / "x"), "exists": False}


# -- stats -------------------------------------------------------------------------------------
def test_stats_text_and_json(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    fill(folder, {"llamacpp:gemma-3-270m": 3, "openai:tiny": 1})
    res = invoke("--cache-dir", str(folder), "cache", "stats")
    assert res.exit_code == 0, res.output
    assert f"cache: {folder.absolute()}" in res.output and "entries: 4" in res.output
    lines = res.output.splitlines()
    assert any(line.split() == ["llamacpp:gemma-3-270m", "3"] for line in lines), res.output
    assert any(line.split() == ["openai:tiny", "1"] for line in lines), res.output
    res = invoke("--json", "--cache-dir", str(folder), "cache", "stats")
    data = json.loads(res.output)
    assert data["entries"] == 4 and data["exists"] is True and data["bytes"] > 0
    assert data["models"] == {"llamacpp:gemma-3-270m": 3, "openai:tiny": 1}
    assert data["path"] == str(folder.absolute())


def test_stats_on_a_missing_cache_creates_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "none"
    res = invoke("--json", "--cache-dir", str(folder), "cache", "stats")
    assert res.exit_code == 0 and json.loads(res.output)["entries"] == 0
    assert not folder.exists()
    res = invoke("--cache-dir", str(folder), "cache", "stats")
    assert "no cache there yet" in res.output


def test_env_var_selects_the_cache(tmp_path: Path) -> None:
    folder = tmp_path / "envcache"
    fill(folder, {"a:b": 2})
    res = invoke("--json", "cache", "stats", env={"DLNFLOW_CACHE_DIR": str(folder)})
    assert json.loads(res.output)["entries"] == 2


def test_cache_dir_that_is_a_file_is_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    res = invoke("--cache-dir", str(afile), "cache", "stats")
    assert res.exit_code == 2 and "is a file" in res.output
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.chdir(tmp_path)
    res = invoke("cache", "stats")
    assert res.exit_code == 2 and "is a file, not a folder" in res.output
    assert "Traceback" not in res.output


# -- clear -------------------------------------------------------------------------------------
def test_clear_needs_yes_when_input_is_not_a_terminal(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    fill(folder, {"a:b": 3})
    res = invoke("--cache-dir", str(folder), "cache", "clear")
    assert res.exit_code == 2 and "--yes" in res.output
    assert count(folder) == 3
    res = invoke("--cache-dir", str(folder), "cache", "clear", "--yes")
    assert res.exit_code == 0 and "removed 3 entries" in res.output
    assert count(folder) == 0


def test_clear_asks_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dlnflow.cli.cache as cache_cli

    monkeypatch.setattr(cache_cli, "stdin_is_terminal", lambda: True)
    folder = tmp_path / "c"
    fill(folder, {"a:b": 2})
    res = invoke("--cache-dir", str(folder), "cache", "clear", input="n\n")
    assert res.exit_code == 1 and "Delete every cached call" in res.output
    assert count(folder) == 2
    res = invoke("--cache-dir", str(folder), "cache", "clear", input="y\n")
    assert res.exit_code == 0 and "removed 2 entries" in res.output
    assert count(folder) == 0


def test_clear_json_and_missing_cache(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    fill(folder, {"a:b": 1})
    res = invoke("--json", "--cache-dir", str(folder), "cache", "clear", "-y")
    assert json.loads(res.output) == {"path": str(folder), "removed": 1}
    res = invoke("--cache-dir", str(tmp_path / "none"), "cache", "clear")
    assert res.exit_code == 0 and "nothing to clear" in res.output


# -- verify ------------------------------------------------------------------------------------
def test_verify_clean_and_broken(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    keys = fill(folder, {"a:b": 3})
    res = invoke("--cache-dir", str(folder), "cache", "verify")
    assert res.exit_code == 0 and "3 entries, no problems found" in res.output
    with diskcache.Cache(str(folder)) as raw:
        raw.set(keys[1], "{broken")
    res = invoke("--cache-dir", str(folder), "cache", "verify")
    assert res.exit_code == 1 and keys[1] in res.output and "1 problem(s) found" in res.output
    res = invoke("--json", "--cache-dir", str(folder), "cache", "verify")
    data = json.loads(res.output)
    assert res.exit_code == 1 and data["ok"] is False and len(data["problems"]) == 1


def test_damaged_database_is_a_clear_failure(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / DB_NAME).write_bytes(b"this is not a database" * 100)
    res = invoke("--cache-dir", str(folder), "cache", "verify")
    assert res.exit_code == 1 and "cannot open the cache" in res.output and "Traceback" not in res.output
    res = invoke("--cache-dir", str(folder), "cache", "stats")
    assert res.exit_code == 1 and "move the folder away" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_verify_on_a_missing_cache(tmp_path: Path) -> None:
    res = invoke("--cache-dir", str(tmp_path / "none"), "cache", "verify")
    assert res.exit_code == 0 and "nothing to check" in res.output


# -- help ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("sub", [[], ["path"], ["stats"], ["verify"], ["clear"]])
def test_help_has_examples(sub: list[str]) -> None:
    res = invoke("cache", *sub, "--help")
    assert res.exit_code == 0 and "Examples:" in res.output and "dlnflow cache" in res.output
