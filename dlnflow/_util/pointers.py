"""JSON pointers (RFC 6901): how dlnflow names a place inside a document."""

from __future__ import annotations

from collections.abc import Iterable


def escape(key: str) -> str:
    """One JSON-pointer segment.

    >>> escape("a/b~c")
    'a~1b~0c'
    """
    return key.replace("~", "~0").replace("/", "~1")


def pointer(parts: Iterable[str | int]) -> str:
    """A JSON pointer from path parts.

    >>> pointer(["layers", 0, "name"])
    '/layers/0/name'
    """
    return "".join("/" + escape(str(p)) for p in parts)


def parent(ptr: str) -> str:
    """The pointer one level up (``""`` is the root).

    >>> parent("/layers/0/name"), parent("/name")
    ('/layers/0', '')
    """
    return ptr.rsplit("/", 1)[0] if ptr else ""
