"""Content-addressed call cache.

The key of a call is the sha256 of the canonical JSON (sorted keys, no whitespace) of:
the cache format version, the model identity (backend, model, endpoint, model-file hash),
and the request's canonical form (operation, full prompt, targets, every decoding
parameter with defaults filled in, and for sampled calls the seed and the sample index).
API keys are never part of a key or a value.

Values are JSON text (no pickle: a cache may be shared between users). Eviction is off.
Errors are never stored: only results handed to :meth:`CallCache.put` are.

>>> import tempfile
>>> from dlnflow.backends.base import Request
>>> c = CallCache(tempfile.mkdtemp())
>>> ident = {"backend": "demo", "model": "m"}
>>> k = call_key(ident, Request("generate", "hi"))
>>> c.get(k) is None
True
>>> c.put(k, {"text": "hello"}, model="demo:m")
>>> c.get(k)
{'text': 'hello'}
>>> len(c)
1
>>> c.close()
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import diskcache

from dlnflow.backends.base import Request, Result

FORMAT_VERSION = 1
ENV_VAR = "DLNFLOW_CACHE_DIR"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def call_key(identity: dict[str, Any], request: Request) -> str:
    """The content address of one call.

    >>> from dlnflow.backends.base import Request
    >>> a = call_key({"backend": "x"}, Request("generate", "p", temperature=0.7, seed=1, sample=0))
    >>> b = call_key({"backend": "x"}, Request("generate", "p", temperature=0.7, seed=1, sample=1))
    >>> a != b
    True
    """
    body = {"v": FORMAT_VERSION, "model": identity, "request": request.canonical()}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def find_project_root(start: Path) -> Path:
    """The nearest folder at or above ``start`` holding ``pyproject.toml`` or ``.git``; else ``start``."""
    start = start.resolve()
    for folder in [start, *start.parents]:
        if (folder / "pyproject.toml").exists() or (folder / ".git").exists():
            return folder
    return start


def default_cache_dir(start: Path | None = None) -> Path:
    """``$DLNFLOW_CACHE_DIR`` if set, else ``cache/`` at the project root above ``start``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return find_project_root(start or Path.cwd()) / "cache"


class CallCache:
    """A diskcache-backed store of call results, safe across threads and processes."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            os.chmod(self.directory, 0o700)
        except OSError:
            pass
        old = os.umask(0o077)
        try:
            self._dc = diskcache.Cache(
                str(self.directory),
                eviction_policy="none",
                size_limit=2**62,
                cull_limit=0,
                statistics=False,
            )
        finally:
            os.umask(old)

    def get(self, key: str) -> Result | None:
        raw = self._dc.get(key, default=None, retry=True)
        if raw is None:
            return None
        value = json.loads(raw)
        return value["r"]  # type: ignore[no-any-return]

    def put(self, key: str, result: Result, model: str = "") -> None:
        """Store one successful result (JSON-serialisable) under ``key``."""
        raw = json.dumps({"m": model, "r": result}, separators=(",", ":"), ensure_ascii=False)
        old = os.umask(0o077)
        try:
            self._dc.set(key, raw, retry=True)
        finally:
            os.umask(old)

    def __contains__(self, key: str) -> bool:
        return key in self._dc

    def __len__(self) -> int:
        return len(self._dc)

    def stats(self) -> dict[str, Any]:
        """Entries, bytes on disk and entries per model label."""
        per_model: Counter[str] = Counter()
        for key in self._dc.iterkeys():
            raw = self._dc.get(key, default=None, retry=True)
            if raw is None:
                continue
            try:
                per_model[json.loads(raw).get("m", "")] += 1
            except (ValueError, AttributeError):
                per_model["<unreadable>"] += 1
        return {
            "path": str(self.directory),
            "entries": len(self._dc),
            "bytes": int(self._dc.volume()),
            "models": dict(sorted(per_model.items())),
        }

    def verify(self) -> list[str]:
        """Integrity check of the underlying store; returns warnings (empty when sound)."""
        warnings = self._dc.check(fix=False, retry=True)
        return [str(w.message) for w in warnings]

    def clear(self) -> int:
        return int(self._dc.clear(retry=True))

    def close(self) -> None:
        self._dc.close()

    def __enter__(self) -> CallCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
