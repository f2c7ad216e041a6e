"""Reading the answers of OpenAI-compatible servers: usage, echoed logprobs, next-token tables.

Pure functions over the openai client's response objects (or anything shaped like them), so
they can be checked without a server.

>>> target_slice([0, 3, 11, 14], ["The", " cap", "ital", "!"], 3, 14)
[1, 2]
>>> match_verbalizers({" Yes": -0.1, " No": -2.0}, (" Yes", " No"), loose=False)
[-0.1, -2.0]
>>> match_verbalizers({"Yes": -0.1, "No": -2.0}, (" Yes", " No"), loose=True)
[-0.1, -2.0]
>>> match_verbalizers({" Yes": -0.1}, (" Yes", " No"), loose=False) is None
True
"""

from __future__ import annotations

from typing import Any

from dlnflow._util.numeric import softmax
from dlnflow.core.backend import Result
from dlnflow.core.errors import BackendError


def class_result(logprobs: list[float], n_prompt: int, n_completion: int) -> Result:
    """A classify result: normalised ``probs`` and the unnormalised ``logprobs``."""
    return {"probs": softmax(logprobs), "logprobs": logprobs, "prompt_tokens": n_prompt,
            "completion_tokens": n_completion}


def usage(response: Any) -> tuple[int, int]:
    """(prompt tokens, completion tokens) the server reports; zeros when it reports none."""
    counts = getattr(response, "usage", None)
    if counts is None:
        return 0, 0
    return int(counts.prompt_tokens or 0), int(counts.completion_tokens or 0)


def first_choice(response: Any, endpoint: str) -> Any:
    choices = getattr(response, "choices", None)
    if not choices:
        raise BackendError(f"the {endpoint} endpoint answered without any choice; the server may not "
                           "be OpenAI-compatible")
    return choices[0]


def target_slice(offsets: list[int], tokens: list[str], start: int, end: int) -> list[int]:
    """Indices of the echoed tokens that reach into ``[start, end)`` (the target's characters).

    A token straddling ``start`` is kept: it carries target characters.

    >>> target_slice([0, 3, 11], ["The", " capital", "!"], 5, 11)
    [1]
    """
    keep = []
    for i, offset in enumerate(offsets):
        if offset >= end:
            break
        stop = offsets[i + 1] if i + 1 < len(offsets) else offset + len(tokens[i])
        if stop > start:
            keep.append(i)
    return keep


def echo_supported(choice: Any, prompt: str) -> bool:
    """Whether an echo+logprobs answer really carries per-token logprobs of the prompt."""
    lp = getattr(choice, "logprobs", None)
    if lp is None or not lp.text_offset or not lp.token_logprobs or not lp.tokens or lp.text_offset[0] != 0:
        return False
    pairs = zip(lp.token_logprobs, lp.text_offset, strict=False)
    return any(v is not None for v, offset in pairs if offset < len(prompt))


def echoed_target(choice: Any, context: str, target: str) -> tuple[list[float], list[str]]:
    """Log-probabilities and token strings of ``target`` from an echoed ``context + target``.

    The first token of an echoed prompt has no log-probability (null); it is left out, which only
    matters when the context is empty.
    """
    lp = getattr(choice, "logprobs", None)
    if lp is None or not lp.text_offset or lp.token_logprobs is None or lp.tokens is None:
        raise BackendError("the server returned no echoed logprobs for a scoring request")
    full = len(context) + len(target)
    keep = target_slice(list(lp.text_offset), list(lp.tokens), len(context), full)
    kept = [i for i in keep if lp.token_logprobs[i] is not None]
    if target and not kept:
        raise BackendError("the server returned no tokens for the scored target; check that it echoes "
                           "the prompt with character offsets")
    return [float(lp.token_logprobs[i]) for i in kept], [str(lp.tokens[i]) for i in kept]


def completion_top_table(choice: Any) -> dict[str, float]:
    """The next-token alternatives of a completions answer (token text -> logprob)."""
    lp = getattr(choice, "logprobs", None)
    if lp is None or not lp.top_logprobs or lp.top_logprobs[0] is None:
        return {}
    return {str(k): float(v) for k, v in lp.top_logprobs[0].items()}


def cut_at_stop(text: str, stops: tuple[str, ...]) -> str:
    """``text`` without its opening whitespace, up to the first of ``stops`` after that (what a server
    would have returned had the reply not opened with a stop sequence).

    >>> cut_at_stop("\\n\\nThe bird is red.\\n\\nMore.", ("\\n\\n",))
    'The bird is red.'
    >>> cut_at_stop("  no stop here", ("END",))
    'no stop here'
    """
    body = text.lstrip()
    ends = [i for i in (body.find(s) for s in stops if s) if i >= 0]
    return body[: min(ends)] if ends else body


def chat_content_logprobs(choice: Any) -> list[Any]:
    lp = getattr(choice, "logprobs", None)
    return list(getattr(lp, "content", None) or []) if lp is not None else []


def chat_top_table(choice: Any) -> dict[str, float]:
    """The first reply token's alternatives of a chat answer (token text -> logprob)."""
    content = chat_content_logprobs(choice)
    table: dict[str, float] = {}
    if content:
        for item in content[0].top_logprobs or []:
            table.setdefault(str(item.token), float(item.logprob))
    return table


def match_verbalizers(table: dict[str, float], verbalizers: tuple[str, ...], loose: bool) -> list[float] | None:
    """Each verbalizer's logprob from a next-token table, or None if any is missing.

    ``loose`` also matches after stripping whitespace (chat replies start without the space a
    completion would put before the answer), provided that keeps the verbalizers distinct.
    """
    found = [table.get(v) for v in verbalizers]
    if loose and any(v is None for v in found):
        keys = [v.strip() for v in verbalizers]
        if len(set(keys)) == len(keys):
            stripped: dict[str, float] = {}
            for token, logprob in table.items():
                stripped.setdefault(token.strip(), logprob)
            found = [stripped.get(k) for k in keys]
    values = [v for v in found if v is not None]
    return values if len(values) == len(verbalizers) else None
