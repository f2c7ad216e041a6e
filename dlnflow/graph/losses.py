"""Losses: is a prediction correct? (``True`` = correct), and accuracy over a batch.

Both sides are normalised the same way before comparing: surrounding whitespace removed,
inner runs of whitespace collapsed to one space, and punctuation or quotes around the
answer stripped (``"(A)."`` -> ``"A"``; a sign such as ``-5`` is kept). When stripping would
leave nothing (an answer made only of punctuation) the text is compared as it was.

- ``exact_match``: normalised texts are equal (case-sensitive);
- ``exact_match_ci``: the same, ignoring case;
- ``contains``: the prediction contains the target as a whole phrase, ignoring case
  (``"Yes, you return."`` contains ``"yes"``; ``"Not sure"`` does not contain ``"No"``),
  or the two match as ``exact_match_ci``.

>>> exact_match("  The (A). ", "The (A)")
True
>>> accuracy(["Yes", "no", "(B)"], ["Yes", "No", "(A)"], "exact_match_ci")
0.6666666666666666
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from dlnflow.core.registry import LOSSES

_LOOSE = "\"'`.,;:!?\u201c\u201d\u2018\u2019\u00ab\u00bb\u2026"
_PAIRS = {"(": ")", "[": "]", "{": "}", "<": ">"}
_SPACE = re.compile(r"\s+")


def _closing_index(text: str, start: int) -> int | None:
    """Where the bracket opened at ``start`` closes (same bracket kind), or ``None``."""
    opener, closer, depth = text[start], _PAIRS[text[start]], 0
    for i in range(start, len(text)):
        depth += (text[i] == opener) - (text[i] == closer)
        if depth == 0:
            return i
    return None


def _unmatched_close(text: str) -> bool:
    """The last character is a closing bracket that no earlier bracket opens."""
    opener = next(o for o, c in _PAIRS.items() if c == text[-1])
    depth = 0
    for ch in reversed(text):
        depth += (ch == text[-1]) - (ch == opener)
        if depth == 0:
            return False
    return True


def _trim_once(text: str) -> str:
    text = text.strip().strip(_LOOSE).strip()
    if text and text[0] in _PAIRS:
        end = _closing_index(text, 0)
        if end is None or end == len(text) - 1:  # unmatched, or enclosing the whole answer
            return text[1:end] if end is not None else text[1:]
    if text and text[-1] in _PAIRS.values() and _unmatched_close(text):
        return text[:-1]
    return text


def normalize(text: str, casefold: bool = False) -> str:
    """Whitespace collapsed, surrounding punctuation, quotes and brackets stripped, optionally casefolded.

    Brackets are removed only when they enclose the whole answer or have no partner.

    >>> normalize('  "Blue."  ')
    'Blue'
    >>> normalize("(B)"), normalize("B)"), normalize("The (A)."), normalize("f(x)")
    ('B', 'B', 'The (A)', 'f(x)')
    >>> normalize("Two   words\\n", casefold=True)
    'two words'
    >>> normalize("...")
    '...'
    >>> normalize("-5.")
    '-5'
    """
    collapsed = _SPACE.sub(" ", text).strip()
    previous, current = None, collapsed
    while current != previous:
        previous, current = current, _trim_once(current)
    out = current or collapsed
    return out.casefold() if casefold else out


def exact_match(prediction: str, target: str) -> bool:
    """Normalised prediction equals normalised target, case-sensitive.

    >>> exact_match("Yes.", "Yes"), exact_match("yes", "Yes")
    (True, False)
    """
    return normalize(prediction) == normalize(target)


def exact_match_ci(prediction: str, target: str) -> bool:
    """Like :func:`exact_match`, ignoring case.

    >>> exact_match_ci("yes", "Yes")
    True
    """
    return normalize(prediction, casefold=True) == normalize(target, casefold=True)


def contains(prediction: str, target: str) -> bool:
    """The target appears in the prediction as a whole phrase (ignoring case).

    >>> contains("So the answer is (B).", "(B)"), contains("a tough one: (B)", "(A)")
    (True, False)
    >>> contains("Not sure", "No"), contains("No, you do not.", "No")
    (False, True)
    """
    if exact_match_ci(prediction, target):
        return True
    needle = _SPACE.sub(" ", target).strip().casefold()
    if not needle:
        return False
    left = r"(?<!\w)" if re.match(r"\w", needle[0]) else ""
    right = r"(?!\w)" if re.match(r"\w", needle[-1]) else ""
    haystack = _SPACE.sub(" ", prediction).casefold()
    return re.search(left + re.escape(needle) + right, haystack) is not None


def get_loss(name: str) -> Callable[[str, str], bool]:
    """The loss registered as ``name`` (:data:`dlnflow.core.registry.LOSSES`); a
    :class:`~dlnflow.core.errors.ConfigError` naming the known ones (with a did-you-mean) otherwise."""
    loss: Callable[[str, str], bool] = LOSSES.get(name)
    return loss


def accuracy(preds: Sequence[str], targets: Sequence[str], loss_name: str = "exact_match") -> float:
    """Fraction of predictions judged correct by loss ``loss_name``.

    Raises ``ValueError`` when the lengths differ or there is nothing to score (an accuracy
    over no examples would be a made-up number).

    >>> accuracy(["red", "blue"], ["red", "red"])
    0.5
    """
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
    if not targets:
        raise ValueError("accuracy over zero examples is undefined")
    judge = get_loss(loss_name)
    return sum(judge(p, t) for p, t in zip(preds, targets, strict=True)) / len(targets)
