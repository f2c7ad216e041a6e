"""Did-you-mean suggestions for names a user mistyped.

>>> did_you_mean("clasify_forward", ["forward", "classify_forward"])
"; did you mean 'classify_forward'?"
>>> did_you_mean("zzz", ["forward"])
''
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Iterable


def closest(word: object, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The choice most like ``word``, or ``None`` when none is close enough.

    >>> closest("exact_mach", ["exact_match", "contains"])
    'exact_match'
    """
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(word: object, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """``"; did you mean 'X'?"`` when a choice is close to ``word``, else ``""``."""
    close = closest(word, choices, cutoff)
    return f"; did you mean {close!r}?" + lookalikes(str(word), close) if close else ""


def lookalikes(word: str, choice: str) -> str:
    """A note naming the non-ASCII letters that make ``word`` differ from an ASCII ``choice``.

    A key typed with a Cyrillic or Greek letter looks the same as the right one; without the
    note, "unknown key 'n\u0430me'; did you mean 'name'?" reads like nonsense.

    >>> lookalikes("n\u0430me", "name")
    " ('n\u0430me' has the non-ASCII letter '\u0430' (U+0430 CYRILLIC SMALL LETTER A) at position 2)"
    """
    odd = [(i, c) for i, c in enumerate(word, start=1) if ord(c) > 127]
    if not odd or not choice.isascii():
        return ""
    i, c = odd[0]
    name = unicodedata.name(c, "unnamed character")
    more = f" and {len(odd) - 1} more" if len(odd) > 1 else ""
    return f" ({word!r} has the non-ASCII letter {c!r} (U+{ord(c):04X} {name}) at position {i}{more})"
