"""The shared tier of the call cache: a store many machines read and write, behind the local one.

The local tier (:class:`~dlnflow.cache.CallCache`, SQLite through diskcache) is fast but must stay
on a local disk: SQLite over NFS corrupts. A team or a cluster shares what it paid for through a
remote tier instead, named by a URL (``--cache-remote URL`` or ``$DLNFLOW_CACHE_REMOTE``):

- ``file:///path``: one immutable JSON object per call at ``ab/cd/<sha256>.json`` under
  ``path`` (the layout DVC uses), written to a temporary name and renamed into place, so it is
  safe on NFS and on object-store mounts; several writers of one key write the same bytes.
- ``redis://[user:password@]host:port/db`` (``rediss://`` for TLS): a Redis or Valkey server
  through the ``redis`` client; writes are ``SET NX`` (the first writer wins, entries never
  change), reads are batched with ``MGET``.

An object is ``{"model": label, "result": {...}}``: the call's result and the model label the
local tier keeps for ``cache stats``. Reads go local, then remote (hits are copied into the local
tier), then to the model; writes go remote, then local (a process killed in between leaves the
call on the remote, where the next reader finds it). What comes back from a remote is decoded
as JSON only and must have that shape; anything else (a corrupt or planted value) is a miss with
one warning, and the fresh answer replaces it. A remote that is down, refuses us or answers more
slowly than :data:`TIMEOUT_S` gets one warning and is not asked again by this process: the run
goes on with the local tier, and ``dlnflow cache push`` uploads what it paid for later.

Credentials in a URL are never shown: every message names the remote by
:func:`dlnflow._util.redact.redact_url`.

>>> redact("redis://alice:s3cret@cache.example:6379/0")
'redis://***@cache.example:6379/0'
>>> redact("file:///srv/dlnflow-cache")
'file:///srv/dlnflow-cache'
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from dlnflow._util.redact import redact as redact_text
from dlnflow._util.redact import redact_url as redact
from dlnflow.core.errors import ConfigError, RuntimeFault

ENV_VAR = "DLNFLOW_CACHE_REMOTE"
TIMEOUT_ENV_VAR = "DLNFLOW_CACHE_REMOTE_TIMEOUT"
TIMEOUT_S = 5.0
"""A remote operation slower than this (seconds) counts as a failure: the remote is given up."""
BATCH = 500
"""Keys per ``MGET`` / per pipeline of writes."""
REDIS_PREFIX = "dlnflow:v2:"
_KEY_RE = re.compile(r"[0-9a-f]{64}")
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, sort_keys=True)

Warn = Callable[[str], None]


class RemoteCacheWarning(UserWarning):
    """The shared cache tier could not be used, or held a value that is not a cache object."""


class RemoteUnavailable(RuntimeFault):
    """The remote tier failed (down, refused, too slow); the message names it without credentials."""


# -- URLs ------------------------------------------------------------------------------------------
def remote_from_env() -> str | None:
    """``$DLNFLOW_CACHE_REMOTE`` when set and not empty."""
    return os.environ.get(ENV_VAR) or None


def timeout_from_env() -> float:
    raw = os.environ.get(TIMEOUT_ENV_VAR)
    try:
        return float(raw) if raw else TIMEOUT_S
    except ValueError:
        raise ConfigError(f"${TIMEOUT_ENV_VAR}={raw!r} is not a number of seconds") from None


# -- objects ---------------------------------------------------------------------------------------
def encode_object(result: dict[str, Any], model: str) -> str:
    """The stored text of one call: ``{"model": ..., "result": ...}`` with sorted keys, no spaces."""
    return _ENCODER.encode({"model": model, "result": result})


def decode_object(raw: object) -> tuple[dict[str, Any], str] | None:
    """``(result, model)`` from stored bytes or text; ``None`` for anything else (never unpickled).

    >>> decode_object(b'{"model":"m","result":{"text":"hi"}}')
    ({'text': 'hi'}, 'm')
    >>> decode_object(b"\\x80\\x04K\\x01.") is None, decode_object('{"result": 1}') is None
    (True, True)
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(raw, str):
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("result"), dict):
        return None
    model = value.get("model", "")
    return value["result"], model if isinstance(model, str) else ""


# -- stores ----------------------------------------------------------------------------------------
class RemoteStore(Protocol):
    """What a shared tier offers. Raw values are the stored text (``str``) or bytes."""

    url: str

    def get_many(self, keys: Sequence[str]) -> dict[str, str | bytes]: ...

    def put_many(self, items: Sequence[tuple[str, str]], replace: frozenset[str] = frozenset()) -> int: ...

    def has_many(self, keys: Sequence[str]) -> set[str]: ...

    def keys(self) -> Iterator[str]: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class FileStore:
    """Content-addressed JSON objects under a folder: ``<root>/ab/cd/<key>.json``."""

    def __init__(self, root: Path, url: str):
        self.root = root
        self.url = url

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key[2:4] / f"{key}.json"

    def get_many(self, keys: Sequence[str]) -> dict[str, str | bytes]:
        found: dict[str, str | bytes] = {}
        for key in keys:
            try:
                found[key] = self.path(key).read_bytes()
            except FileNotFoundError:
                continue
        return found

    def has_many(self, keys: Sequence[str]) -> set[str]:
        return {key for key in keys if self.path(key).is_file()}

    def put_many(self, items: Sequence[tuple[str, str]], replace: frozenset[str] = frozenset()) -> int:
        """Write objects not there yet (or listed in ``replace``); returns how many were written."""
        written = 0
        for key, text in items:
            target = self.path(key)
            if key not in replace and target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key[:12]}.", suffix=".tmp", dir=target.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(text)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            written += 1
        return written

    def keys(self) -> Iterator[str]:
        if not self.root.is_dir():
            return
        for path in sorted(self.root.glob("??/??/*.json")):
            key = path.stem
            if _KEY_RE.fullmatch(key) and path.parent.parent.name == key[:2] and path.parent.name == key[2:4]:
                yield key

    def stats(self) -> dict[str, Any]:
        entries = size = 0
        for key in self.keys():
            entries += 1
            try:
                size += self.path(key).stat().st_size
            except OSError:
                pass
        return {"url": self.url, "entries": entries, "bytes": size}

    def close(self) -> None:
        """Nothing to release: every object is opened and closed as it is read or written."""


class RedisStore:
    """Objects as Redis strings under ``dlnflow:v2:<key>``; ``SET NX`` writes, ``MGET`` reads."""

    def __init__(self, client: Any, url: str):
        self._r = client
        self.url = url

    def get_many(self, keys: Sequence[str]) -> dict[str, str | bytes]:
        found: dict[str, str | bytes] = {}
        for start in range(0, len(keys), BATCH):
            chunk = keys[start : start + BATCH]
            values = self._r.mget([REDIS_PREFIX + k for k in chunk])
            found.update({k: v for k, v in zip(chunk, values, strict=True) if v is not None})
        return found

    def has_many(self, keys: Sequence[str]) -> set[str]:
        present: set[str] = set()
        for start in range(0, len(keys), BATCH):
            chunk = keys[start : start + BATCH]
            pipe = self._r.pipeline(transaction=False)
            for k in chunk:
                pipe.exists(REDIS_PREFIX + k)
            present.update(k for k, n in zip(chunk, pipe.execute(), strict=True) if n)
        return present

    def put_many(self, items: Sequence[tuple[str, str]], replace: frozenset[str] = frozenset()) -> int:
        written = 0
        for start in range(0, len(items), BATCH):
            chunk = items[start : start + BATCH]
            pipe = self._r.pipeline(transaction=False)
            for key, text in chunk:
                pipe.set(REDIS_PREFIX + key, text.encode("utf-8"), nx=key not in replace)
            written += sum(1 for ok in pipe.execute() if ok)
        return written

    def keys(self) -> Iterator[str]:
        for name in self._r.scan_iter(match=REDIS_PREFIX + "*", count=1000):
            key = (name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name))[len(REDIS_PREFIX):]
            if _KEY_RE.fullmatch(key):
                yield key

    def stats(self) -> dict[str, Any]:
        keys = list(self.keys())
        size = 0
        for start in range(0, len(keys), BATCH):
            pipe = self._r.pipeline(transaction=False)
            for k in keys[start : start + BATCH]:
                pipe.strlen(REDIS_PREFIX + k)
            size += sum(int(n) for n in pipe.execute())
        return {"url": self.url, "entries": len(keys), "bytes": size}

    def close(self) -> None:
        self._r.close()


def open_store(url: str, timeout: float | None = None) -> RemoteStore:
    """The store a URL names (no network traffic yet). Bad URLs are :class:`ConfigError` (exit 2)."""
    shown = redact(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(f"cache remote {shown}: not a URL; use file:///path or redis://host:port/db") from None
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"cache remote {shown}: a file URL names a local path, e.g. file:///mnt/team-cache "
                              "(three slashes)")
        if not parts.path or parts.path == "/":
            raise ConfigError(f"cache remote {shown}: name a folder, e.g. file:///mnt/team-cache")
        return FileStore(Path(unquote(parts.path)), shown)
    if parts.scheme in ("redis", "rediss", "valkey", "valkeys"):
        return _redis_store(url, shown, TIMEOUT_S if timeout is None else timeout)
    raise ConfigError(f"cache remote {shown}: unknown scheme {parts.scheme!r}; "
                      "use file:///path or redis://[user:password@]host:port/db")


def _redis_store(url: str, shown: str, timeout: float) -> RedisStore:
    try:
        import redis  # optional: pip install 'dlnflow[redis]'
    except ImportError:
        raise ConfigError(f"cache remote {shown} needs the redis client: pip install 'dlnflow[redis]'") from None
    url = re.sub(r"^valkey", "redis", url)
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                      health_check_interval=0)
    except ValueError as exc:
        raise ConfigError(f"cache remote {shown}: {str(exc).replace(url, shown)}") from None
    return RedisStore(client, shown)


# -- the tier --------------------------------------------------------------------------------------
def _default_warn(message: str) -> None:
    warnings.warn(message, RemoteCacheWarning, stacklevel=3)


class RemoteTier:
    """A :class:`RemoteStore` as the second tier of a cache: it never raises on the call path.

    The first failure (an exception from the store, or an answer slower than ``timeout``)
    warns once and switches the tier off for the rest of this process. The first value that is
    not a cache object warns once (later ones are counted in :attr:`counts`).
    """

    def __init__(self, store: RemoteStore, warn: Warn | None = None, timeout: float = TIMEOUT_S):
        self.store = store
        self.url = store.url
        self.warn = warn or _default_warn
        self.timeout = timeout
        self.down = False
        self._bad_warned = False
        self._corrupt: set[str] = set()
        self.counts = {"hits": 0, "misses": 0, "written": 0, "corrupt": 0, "failures": 0}

    def get_many(self, keys: Sequence[str]) -> dict[str, tuple[dict[str, Any], str]]:
        """``key -> (result, model)`` for the keys the remote holds as valid objects."""
        if self.down or not keys:
            return {}
        raw = self._guard("read from", lambda: self.store.get_many(keys))
        if raw is None:
            return {}
        found: dict[str, tuple[dict[str, Any], str]] = {}
        for key, value in raw.items():
            decoded = decode_object(value)
            if decoded is None:
                self._bad(key)
                continue
            found[key] = decoded
        self.counts["hits"] += len(found)
        self.counts["misses"] += len(keys) - len(found)
        return found

    def put_many(self, items: Iterable[tuple[str, dict[str, Any], str]]) -> None:
        """Upload ``(key, result, model)``: new keys only, plus keys found corrupt earlier."""
        if self.down:
            return
        encoded = [(key, encode_object(result, model)) for key, result, model in items]
        if not encoded:
            return
        replace = frozenset(k for k, _ in encoded if k in self._corrupt)
        written = self._guard("write to", lambda: self.store.put_many(encoded, replace))
        if written is not None:
            self.counts["written"] += written
            self._corrupt -= replace

    def _guard(self, what: str, action: Callable[[], Any]) -> Any:
        started = time.monotonic()
        try:
            out = action()
        except Exception as exc:  # any failure of the remote: warn once, go on locally
            self._give_up(f"could not {what} the shared cache {self.url} ({_describe(exc)})")
            return None
        elapsed = time.monotonic() - started
        if elapsed > self.timeout:
            self._give_up(f"the shared cache {self.url} took {elapsed:.1f}s to answer (limit {self.timeout:g}s)")
        return out

    def _give_up(self, reason: str) -> None:
        self.counts["failures"] += 1
        if not self.down:
            self.down = True
            self.warn(f"{reason}; continuing with the local cache only. What this run pays for stays in "
                      f"the local cache: upload it later with `dlnflow cache push {self.url}`")

    def _bad(self, key: str) -> None:
        self.counts["corrupt"] += 1
        self._corrupt.add(key)
        if not self._bad_warned:
            self._bad_warned = True
            self.warn(f"the shared cache {self.url} holds a value under {key} that is not a dlnflow cache "
                      "object; it is ignored (treated as a miss) and replaced by the fresh answer")

    def close(self) -> None:
        try:
            self.store.close()
        except Exception:
            pass


def _describe(exc: BaseException) -> str:
    """The exception as one line, with no credentials in it."""
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return redact_text(text)


def open_tier(url: str | None, warn: Warn | None = None) -> RemoteTier | None:
    """The remote tier for ``url`` (``None`` when no URL is given)."""
    if not url:
        return None
    timeout = timeout_from_env()
    return RemoteTier(open_store(url, timeout), warn, timeout)


# -- push and pull ---------------------------------------------------------------------------------
class LocalStore(Protocol):
    """What push and pull need of the local tier (:class:`~dlnflow.runtime.cache.CallCache`)."""

    def entries(self) -> Iterable[tuple[str, dict[str, Any], str]]: ...

    def __contains__(self, key: str) -> bool: ...

    def put_many(self, items: Iterable[tuple[str, dict[str, Any]]], model: str = "") -> None: ...


def _batches(items: Iterable[Any], size: int = BATCH) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _remote_fault(store: RemoteStore, what: str, exc: Exception) -> RemoteUnavailable:
    return RemoteUnavailable(f"could not {what} the shared cache {store.url} ({_describe(exc)}); "
                             "nothing was lost: run the same command again when it is reachable")


def push(local: LocalStore, store: RemoteStore) -> dict[str, int]:
    """Upload the local entries the remote lacks (DVC-style); counts of what was seen and sent."""
    seen = present = uploaded = 0
    try:
        for batch in _batches(local.entries()):
            seen += len(batch)
            have = store.has_many([key for key, _, _ in batch])
            present += len(have)
            missing = [(key, encode_object(result, model)) for key, result, model in batch if key not in have]
            uploaded += store.put_many(missing)
    except Exception as exc:
        raise _remote_fault(store, "write to", exc) from exc
    return {"local_entries": seen, "already_on_remote": present, "uploaded": uploaded}


def pull(local: LocalStore, store: RemoteStore) -> dict[str, int]:
    """Download the remote objects the local tier lacks; invalid objects are counted and skipped."""
    seen = present = downloaded = invalid = 0
    try:
        for batch in _batches(store.keys()):
            seen += len(batch)
            missing = [key for key in batch if key not in local]
            present += len(batch) - len(missing)
            by_model: dict[str, list[tuple[str, dict[str, Any]]]] = {}
            for key, raw in store.get_many(missing).items():
                decoded = decode_object(raw)
                if decoded is None:
                    invalid += 1
                    continue
                by_model.setdefault(decoded[1], []).append((key, decoded[0]))
            for model, items in by_model.items():
                local.put_many(items, model=model)
                downloaded += len(items)
    except Exception as exc:
        raise _remote_fault(store, "read from", exc) from exc
    return {"remote_entries": seen, "already_local": present, "downloaded": downloaded, "invalid": invalid}


def remote_stats(store: RemoteStore) -> dict[str, Any]:
    """Entries and bytes on the remote (a failure raises :class:`RemoteUnavailable`)."""
    try:
        return store.stats()
    except Exception as exc:
        raise _remote_fault(store, "read from", exc) from exc
