"""Did-you-mean suggestions for names a user mistyped.

>>> did_you_mean("clasify_forward", ["forward", "classify_forward"])
"; did you mean 'classify_forward'?"
>>> did_you_mean("zzz", ["forward"])
''
"""

from __future__ import annotations

import difflib
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
    return f"; did you mean {close!r}?" if close else ""
