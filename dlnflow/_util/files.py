"""Writing a file whole or not at all.

Every writer puts its bytes in a temporary file beside the target, named
``.<target name>.<pid>-<random>.tmp``, flushes it to disk and renames it over the target, so
readers see the old file or the new one, never half of one. A process killed while writing
leaves its temporary file behind; the next write of the same target removes those whose
process is gone.

>>> import tempfile
>>> target = Path(tempfile.mkdtemp()) / "note.txt"
>>> write_atomic(target, "hello\\n", mode=0o644)
>>> target.read_text(), oct(target.stat().st_mode & 0o777)
('hello\\n', '0o644')
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[^.]+\.tmp$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files of writers of ``path`` whose process no longer runs; return them."""
    removed = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP.match(entry.name)
        if m and m["name"] == path.name and not _alive(int(m["pid"])):
            with contextlib.suppress(OSError):
                entry.unlink()
                removed.append(entry)
    return removed


def _sync_folder(folder: Path) -> None:
    """Make a rename durable (best effort; not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path, mode: int | None = None) -> Iterator[BinaryIO]:
    """A binary handle whose bytes replace ``path`` when the block ends without an exception.

    The new file is owner-only (0600) unless ``mode`` says otherwise; on any exception the
    temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def write_atomic(path: Path, text: str | bytes, mode: int | None = None) -> None:
    """Write ``text`` (UTF-8, ``\\n`` line ends) or bytes to ``path`` whole or not at all."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    with atomic_writer(path, mode) as handle:
        handle.write(data)
