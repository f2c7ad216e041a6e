"""Writing a file whole or not at all.

>>> import tempfile
>>> target = Path(tempfile.mkdtemp()) / "note.txt"
>>> write_atomic(target, "hello\\n", mode=0o644)
>>> target.read_text(), oct(target.stat().st_mode & 0o777)
('hello\\n', '0o644')
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, text: str, mode: int | None = None) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never half of one.

    The text goes to a temporary file beside ``path`` (flushed to disk), which is then renamed
    over it. The new file is owner-only (0600) unless ``mode`` says otherwise.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
