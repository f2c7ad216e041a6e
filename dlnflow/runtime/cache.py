"""Content-addressed call cache.

The key of a call is the sha256 of the canonical JSON (sorted keys, no whitespace) of:
the cache format version, the model identity (backend, model, endpoint, model-file hash),
and the request's canonical form (operation, full prompt, targets, every decoding
parameter with defaults filled in, and for sampled calls the seed and the sample index).
API keys are never part of a key or a value.

Storage: a diskcache (SQLite) store with eviction off. Each entry's value is the JSON
text of one result (no pickle: a cache may be shared between users); the model label
rides in the entry's tag, for ``stats``. Every value lives inside the database file (no
side files), and the folder and files are readable by their owner only (0700 / 0600).
Errors are never stored: only results handed to :meth:`CallCache.put` are.

In front of the disk store sits an in-process table of the entries this instance has read
or written (bounded by their JSON size, :data:`MEMORY_BYTES`; oldest dropped first). A flat
result (scalars and lists of scalars, as every backend returns) is kept as a private copy and
handed out as a fresh copy, so a warm hit costs a dictionary lookup and a shallow copy; any
other result is kept as JSON text and decoded per hit. An answer does not change under its
key, so the table does not go stale for reads; entries another process clears or refreshes
stay visible to this instance until it is reopened.

>>> import tempfile
>>> from dlnflow.core.backend import Request
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

import contextlib
import errno
import hashlib
import json
import os
import re
import sqlite3
import stat
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from math import isfinite
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import diskcache

from dlnflow.core.backend import Request, Result
from dlnflow.core.errors import RuntimeFault
from dlnflow.runtime.location import DB_NAME, ENV_VAR, default_cache_dir  # noqa: F401  (part of this module's API)

if TYPE_CHECKING:
    from dlnflow.runtime.remote import RemoteTier

FORMAT_VERSION = 2
"""Part of every key. 2: a value is the JSON of one result and the model label is the entry's tag
(1 wrapped both in one JSON object); a new version makes older entries unreachable, never misread."""
MEMORY_BYTES = 32 * 2**20
"""How much JSON text (in characters) one :class:`CallCache` keeps ready in memory; oldest go first."""

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_VALUE_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_string = json.encoder.encode_basestring  # a JSON string literal, non-ASCII kept as is
_KEY_RE = re.compile(r"[0-9a-f]{64}")
_PRIVATE_DIR = 0o700
_PRIVATE_FILE = 0o600


# -- keys --------------------------------------------------------------------------------
def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal bytes.

    >>> canonical_json({"b": 1, "a": [1.5, None]})
    '{"a":[1.5,null],"b":1}'
    """
    return _ENCODER.encode(value)


def request_json(request: Request) -> str:
    """``canonical_json(request.canonical())``, written field by field (it is on every call's path).

    Every field that changes the answer, with defaults filled in; ``seed`` and ``sample``
    only for sampled calls. The fields appear in sorted order, and strings and numbers are
    spelled as :mod:`json` spells them; a test checks the equality on many requests.

    >>> request_json(Request("score", "Q:", targets=(" A",)))
    '{"op":"score","prompt":"Q:","sample":0,"seed":null,"targets":[" A"]}'
    """
    op = request.op
    sampled = op == "generate" and request.temperature > 0
    seed = _scalar(request.seed) if sampled else "null"
    sample = _scalar(request.sample) if sampled else "0"
    # op is one of three plain words (Request checks it), so it needs no escaping
    head = f'"op":"{op}","prompt":{_string(request.prompt)},"sample":{sample},"seed":{seed}'
    if op != "generate":
        return f'{{{head},"targets":{_strings(request.targets)}}}'
    return (f'{{"max_tokens":{_scalar(request.max_tokens)},{head},"stop":{_strings(request.stop)},'
            f'"targets":{_strings(request.targets)},"temperature":{_scalar(request.temperature)},'
            f'"top_p":{_scalar(request.top_p)}}}')


def _scalar(value: Any) -> str:
    """One JSON number or null, as ``json`` writes it (other types take the general encoder)."""
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float and isfinite(value):
        return float.__repr__(value)
    return _ENCODER.encode(value)


def _strings(values: tuple[str, ...]) -> str:
    """A JSON array of strings (anything else takes the general encoder)."""
    if not values:
        return "[]"
    try:
        return "[" + ",".join(map(_string, values)) + "]"
    except TypeError:
        return _ENCODER.encode(list(values))


def key_from_identity_json(identity_json: str, request: Request) -> str:
    """:func:`call_key` with the identity already in canonical JSON (clients encode it once).

    The text hashed is exactly ``canonical_json({"model": identity, "request": body, "v": FORMAT_VERSION})``:
    the keys ``model`` < ``request`` < ``v`` are written in sorted order by hand.
    """
    text = f'{{"model":{identity_json},"request":{request_json(request)},"v":{FORMAT_VERSION}}}'
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def call_key(identity: dict[str, Any], request: Request) -> str:
    """The content address of one call.

    >>> a = call_key({"backend": "x"}, Request("generate", "p", temperature=0.7, seed=1, sample=0))
    >>> b = call_key({"backend": "x"}, Request("generate", "p", temperature=0.7, seed=1, sample=1))
    >>> a != b
    True
    """
    return key_from_identity_json(canonical_json(identity), request)


# -- where the cache lives ---------------------------------------------------------------
def make_private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and its missing parents, each owner-only (0700) whatever the umask; an
    existing folder at ``path`` is made owner-only too when we own it (existing parents are left
    as they are).

    >>> import tempfile
    >>> base = Path(tempfile.mkdtemp())
    >>> p = make_private_dir(base / "a" / "b")
    >>> oct(p.stat().st_mode & 0o777), oct((base / "a").stat().st_mode & 0o777)
    ('0o700', '0o700')
    """
    folder = Path(path)
    for missing in reversed([p for p in (folder, *folder.parents) if not p.exists()]):
        missing.mkdir(mode=_PRIVATE_DIR, exist_ok=True)
        _chmod_quietly(missing, _PRIVATE_DIR)
    _chmod_quietly(folder, _PRIVATE_DIR)
    return folder


def _chmod_quietly(path: Path, mode: int) -> None:
    """Set ``mode`` if we may (a shared cache owned by someone else is left as it is)."""
    try:
        if stat.S_IMODE(path.stat().st_mode) != mode:
            os.chmod(path, mode)
    except OSError:
        pass


def _create_private_db(directory: Path) -> None:
    """Create the database file owner-only before SQLite opens it.

    SQLite gives its ``-wal`` and ``-shm`` files the mode of the database file, so no
    process-wide umask change is needed. Existing files are tightened where we own them.
    """
    db = directory / DB_NAME
    if not db.exists():
        fd = os.open(db, os.O_CREAT | os.O_RDWR, _PRIVATE_FILE)
        os.close(fd)
    for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
        if (directory / name).exists():
            _chmod_quietly(directory / name, _PRIVATE_FILE)


# -- the store ---------------------------------------------------------------------------
REFUSED_PICKLE = "<pickled data refused>"


class JSONOnlyDisk(diskcache.Disk):
    """diskcache's storage layer with unpickling switched off.

    dlnflow only ever writes text keys and JSON text values. A key or value that was stored
    pickled (planted by someone else sharing the cache) is never unpickled: it reads back as
    :data:`REFUSED_PICKLE`, which is no valid key and no JSON, so it is a miss that
    :meth:`CallCache.verify` reports.
    """

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            return REFUSED_PICKLE
        return super().get(key, raw)

    def fetch(self, mode: int, filename: Any, value: Any, read: bool) -> Any:
        if mode == diskcache.core.MODE_PICKLE:
            return REFUSED_PICKLE
        return super().fetch(mode, filename, value, read)


class CallCache:
    """A diskcache-backed store of call results, safe across threads and processes.

    ``remote`` is an optional shared tier behind it (:mod:`dlnflow.runtime.remote`): results stored
    here are uploaded to it too, and :meth:`fetch_remote` copies its hits into this store. A result
    goes to the shared tier *before* the local one: a process killed between the two writes then
    leaves the call on the remote only (the next reader finds it there), never in a local cache
    that other workers on the machine read as a hit and so never upload.
    """

    def __init__(self, directory: str | os.PathLike[str], memory_bytes: int = MEMORY_BYTES,
                 remote: RemoteTier | None = None):
        self.remote = remote
        try:
            self._open(directory)
        except (sqlite3.Error, OSError) as exc:
            raise store_fault(exc, Path(directory), "cannot open the cache database") from None
        self._memory: dict[str, tuple[Result | str, int]] = {}
        self._memory_size = 0
        self._memory_limit = max(0, memory_bytes)
        self._memory_lock = threading.Lock()

    def _open(self, directory: str | os.PathLike[str]) -> None:
        db = Path(directory) / DB_NAME
        if db.exists() and not db.is_file():
            raise RuntimeFault(f"cannot open the cache: {db} is a folder (or another kind of file), not the "
                               "cache database; move it away (the cache only saves time: nothing else is lost)")
        self.directory = make_private_dir(directory)
        _create_private_db(self.directory)
        self._dc = diskcache.Cache(
            str(self.directory),
            eviction_policy="none",
            size_limit=2**62,
            cull_limit=0,
            statistics=False,
            disk_min_file_size=2**62,  # every value stays inside the database: no side files
            disk=JSONOnlyDisk,
        )

    # -- entries ---------------------------------------------------------------------------
    def get(self, key: str) -> Result | None:
        """The stored result for ``key`` (a fresh object each time), or ``None``.

        An entry that does not decode to a JSON object is treated as missing, so the call
        is made again and the entry rewritten; :meth:`verify` lists such entries.
        """
        found = self._memory.get(key)
        if found is None:
            return self._load(key)
        entry = found[0]
        if type(entry) is dict:
            return {k: v[:] if type(v) is list else v for k, v in entry.items()}
        return json.loads(entry)  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        """Turn a database or disk error while ``doing`` something into a clear :class:`RuntimeFault`."""
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise store_fault(exc, self.directory, doing) from None

    def _load(self, key: str) -> Result | None:
        """Read ``key`` from disk and remember it in memory."""
        with self._guard("cannot read the cache"):
            raw = self._dc.get(key, default=None, retry=True)
        if not isinstance(raw, str):
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(value, dict):
            return None
        self._remember(key, raw, value)
        return value

    def put(self, key: str, result: Result, model: str = "") -> None:
        """Store one successful result (JSON-serialisable) under ``key``; ``model`` labels it."""
        raw = _VALUE_ENCODER.encode(result)
        if self.remote is not None:  # shared tier first: see the class docstring
            self.remote.put_many([(key, result, model)])
        with self._guard("cannot store a call in the cache"):
            self._dc.set(key, raw, tag=model, retry=True)
        self._remember(key, raw, result)

    def put_many(self, items: Iterable[tuple[str, Result]], model: str = "") -> None:
        """Store several results in one transaction; nothing is written if one does not encode."""
        encoded = [(key, _VALUE_ENCODER.encode(result), result) for key, result in items]
        if self.remote is not None:  # shared tier first: see the class docstring
            self.remote.put_many([(key, result, model) for key, _, result in encoded])
        with self._guard("cannot store calls in the cache"), self._dc.transact(retry=True):
            for key, raw, _ in encoded:
                self._dc.set(key, raw, tag=model, retry=True)
        for key, raw, result in encoded:
            self._remember(key, raw, result)

    def fetch_remote(self, keys: Iterable[str]) -> dict[str, Result]:
        """Look ``keys`` up in the remote tier (one batch); hits are stored here and returned."""
        if self.remote is None:
            return {}
        found = self.remote.get_many(list(keys))
        if not found:
            return {}
        encoded = [(key, _VALUE_ENCODER.encode(result), model) for key, (result, model) in found.items()]
        with self._dc.transact(retry=True):
            for key, raw, model in encoded:
                self._dc.set(key, raw, tag=model, retry=True)
        out: dict[str, Result] = {}
        for (key, raw, _), (result, _) in zip(encoded, found.values(), strict=True):
            self._remember(key, raw, result)
            out[key] = result  # freshly decoded: the memory table keeps its own copy
        return out

    def entries(self) -> Iterable[tuple[str, Result, str]]:
        """Every valid entry on disk as ``(key, result, model label)`` (others are skipped)."""
        for key in self._dc.iterkeys():
            if not (isinstance(key, str) and _KEY_RE.fullmatch(key)):
                continue
            found = self._dc.get(key, default=None, tag=True, retry=True)
            if not isinstance(found, tuple) or not isinstance(found[0], str):
                continue
            try:
                value = json.loads(found[0])
            except ValueError:
                continue
            if isinstance(value, dict):
                yield key, value, str(found[1] or "")

    def _remember(self, key: str, raw: str, value: Result) -> None:
        """Keep ``key`` in memory: a private copy of a flat result, else its JSON text."""
        size = len(raw)
        keep = size <= self._memory_limit
        entry: Result | str = (_flat_copy(value) if _is_flat(value) else raw) if keep else raw
        with self._memory_lock:
            memory = self._memory
            old = memory.pop(key, None)
            if old is not None:
                self._memory_size -= old[1]
            if not keep:
                return
            memory[key] = (entry, size)
            self._memory_size += size
            while self._memory_size > self._memory_limit:
                self._memory_size -= memory.pop(next(iter(memory)))[1]

    def __contains__(self, key: str) -> bool:
        if key in self._memory:
            return True
        with self._guard("cannot read the cache"):
            return key in self._dc

    def __len__(self) -> int:
        with self._guard("cannot count the cache's entries"):
            return len(self._dc)

    # -- maintenance -----------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Entries, bytes on disk and entries per model label."""
        with self._guard("cannot read the cache"):
            return self._stats()

    def _stats(self) -> dict[str, Any]:
        per_model: Counter[str] = Counter()
        for key in self._dc.iterkeys():
            found = self._dc.get(key, default=None, tag=True, retry=True)
            if isinstance(found, tuple) and found[0] is not None:
                per_model[str(found[1] or "")] += 1
        return {
            "path": str(self.directory.absolute()),
            "entries": len(self._dc),
            "bytes": int(self._dc.volume()),
            "models": dict(sorted(per_model.items())),
        }

    def verify(self) -> list[str]:
        """Problems found in the store (empty when sound).

        Checks the database's integrity and bookkeeping, that every key is a sha256 hex
        digest and every value decodes to a JSON object, and that the folder and its files
        are readable by their owner only. A database too damaged to be read through is one problem.
        """
        try:
            return self._verify()
        except (sqlite3.Error, OSError) as exc:
            return [str(store_fault(exc, self.directory, "the check stopped"))]

    def _verify(self) -> list[str]:
        problems = [str(w.message) for w in self._dc.check(fix=False, retry=True)
                    if not _is_placeholder_warning(w)]
        for key in self._dc.iterkeys():
            if not (isinstance(key, str) and _KEY_RE.fullmatch(key)):
                problems.append(f"unexpected key {key!r} (not a sha256 hex digest)")
                continue
            raw = self._dc.get(key, default=None, retry=True)
            if raw is None:
                continue  # removed by another process meanwhile
            if not _decodes_to_object(raw):
                problems.append(f"entry {key}: value is not a JSON object")
        problems.extend(_permission_problems(self.directory))
        return problems

    def clear(self) -> int:
        """Remove every entry; returns how many there were on disk."""
        with self._memory_lock:
            self._memory.clear()
            self._memory_size = 0
        with self._guard("cannot clear the cache"):
            return int(self._dc.clear(retry=True))

    def close(self) -> None:
        self._dc.close()
        if self.remote is not None:
            self.remote.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def store_fault(exc: BaseException, directory: Path, doing: str) -> RuntimeFault:
    """A :class:`RuntimeFault` naming what went wrong with the cache at ``directory`` and what to do.

    >>> str(store_fault(OSError(errno.ENOSPC, "No space left on device"), Path("c"), "cannot store"))[:50]
    'cannot store (c/cache.db): the disk is full; free '

    """
    text = str(exc).lower()
    code = getattr(exc, "errno", None)
    where = f"{doing} ({directory / DB_NAME})"
    if code == errno.ENOSPC or "disk is full" in text or "no space" in text:
        return RuntimeFault(f"{where}: the disk is full; free some space and run the same command again "
                            "(every call stored so far is kept)")
    if code in (errno.EROFS, errno.EACCES, errno.EPERM) or "readonly" in text or "read-only" in text:
        return RuntimeFault(f"{where}: the cache folder is not writable (read-only file system or no "
                            "permission); point --cache-dir (or $DLNFLOW_CACHE_DIR) at a writable folder, or "
                            "pass --no-cache")
    if "locked" in text or "busy" in text:
        return RuntimeFault(f"{where}: the database stayed locked by another process; try again when it is done")
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError) or \
            "malformed" in text or "not a database" in text:
        return RuntimeFault(f"{where}: the database is damaged ({exc}); move the folder away "
                            "(the cache only saves time: nothing else is lost)")
    return RuntimeFault(f"{where}: {exc}; if the database is damaged, move the folder away "
                        "(the cache only saves time: nothing else is lost)")


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _is_flat(value: Result) -> bool:
    """True when ``value`` holds only str keys, JSON scalars and lists of scalars.

    Such a result is copied exactly by :func:`_flat_copy` (no JSON round trip needed).
    """
    for k, v in value.items():
        if type(k) is not str:
            return False
        kind = type(v)
        if kind is list:
            if not all(type(x) in _SCALARS for x in v):
                return False
        elif kind not in _SCALARS:
            return False
    return True


def _flat_copy(value: Result) -> Result:
    return {k: v[:] if type(v) is list else v for k, v in value.items()}


def _decodes_to_object(raw: object) -> bool:
    if not isinstance(raw, str):
        return False
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:
        return False


def _is_placeholder_warning(warning: Any) -> bool:
    """An 'unknown file' warning about an empty file (such as a ``.gitkeep``): harmless."""
    if not issubclass(warning.category, diskcache.UnknownFileWarning):
        return False
    name = str(warning.message).removeprefix("unknown file: ")
    try:
        return os.path.getsize(name) == 0
    except OSError:
        return False


def _permission_problems(directory: Path) -> list[str]:
    """Group- or world-accessible parts of the cache folder (empty files hold nothing to read)."""
    problems = []
    paths = [directory, *sorted(directory.rglob("*"))]
    for path in paths:
        try:
            info = path.stat()
        except OSError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077 and (path.is_dir() or info.st_size > 0):
            problems.append(f"{path} is accessible to other users (mode {oct(mode)}); "
                            f"run: chmod {'700' if path.is_dir() else '600'} {path}")
    return problems
