"""Class scoring of several-token verbalizers on a server without echo: one branch request plus short
next-token requests, instead of echoing every verbalizer.

Verbalizers such as " (A)" ... " (G)" are several tokens each and share their first token (" ("),
so one biased next-token request cannot tell them apart (:mod:`dlnflow.backends.openai.classify`).
Echo scoring can, at one request per verbalizer that makes the server evaluate the whole context
again; on llama-cpp-python's server each of those costs about 0.3 s per token of context.

The verbalizers' token sequences form a tree. When they all share a first part (possibly empty),
then part ways at one token that differs for every verbalizer, a verbalizer's log-probability is

    log P(shared part) + log P(its branch token | shared part) + log P(its remaining tokens | ...)

- the shared part: one plain next-token request per shared token (usually one: " (");
- the branch: one request with an equal ``logit_bias`` on every branch token, exactly as for
  single-token classes; whatever the server reports (raw or biased values), their differences
  are exact, and every class shares the branch's normaliser;
- the remaining tokens (the closing ")"): one plain next-token request per token and verbalizer,
  sent together; a token missing from the top alternatives is asked for alone with the bias on
  it, which on servers reporting raw log-probabilities (llama-cpp-python's) returns its value.

So " (A)" ... " (G)" costs 1 + 1 + 7 short requests, each one generated token, that a server with
a prompt cache answers from the shared context. Normalised over the verbalizers, the shared part
cancels: the class probabilities depend only on the branch and the remaining tokens.

The texts of the tokens are found by tokenizing the verbalizer's own prefixes (cached), so the
method works with every tokenizer route of :mod:`dlnflow.backends.openai.tokens`. A tokenizer that
does not split a verbalizer at the same places when it is cut (or verbalizers that part ways more
than once) keeps the echo route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

Tokenize = Callable[[str], Awaitable[list[int] | None]]


def branch_point(seqs: Sequence[Sequence[int]]) -> int | None:
    """Where the token sequences part ways: the length of their shared first part, if after it every
    sequence goes on with a token no other one has; else None.

    >>> branch_point([[5, 10, 7], [5, 11, 7], [5, 12, 7]])
    1
    >>> branch_point([[10], [11, 3]]), branch_point([[5, 10], [5, 10, 2]]), branch_point([[1, 2], [2, 3], [2, 4]])
    (0, None, None)
    """
    if len(seqs) < 2 or any(not s for s in seqs):
        return None
    k = 0
    while all(len(s) > k for s in seqs) and len({s[k] for s in seqs}) == 1:
        k += 1
    if any(len(s) <= k for s in seqs) or len({s[k] for s in seqs}) != len(seqs):
        return None
    return k


async def token_texts(text: str, ids: Sequence[int], tokenize: Tokenize) -> list[str] | None:
    """The pieces of ``text`` that are its tokens ``ids``, found by tokenizing its prefixes; None if
    no cut of ``text`` gives the first tokens alone.

    >>> import asyncio
    >>> vocab = {" (": [7], " (A": [7, 65], " (A)": [7, 65, 41]}
    >>> async def tok(t): return vocab.get(t, [0])
    >>> asyncio.run(token_texts(" (A)", [7, 65, 41], tok))
    [' (', 'A', ')']
    """
    pieces: list[str] = []
    start = 0
    for i in range(1, len(ids) + 1):
        end = len(text) if i == len(ids) else None
        for cut in range(start + 1, len(text) + 1) if end is None else (end,):
            if await tokenize(text[:cut]) == list(ids[:i]):
                end = cut
                break
        if end is None or end <= start:
            return None
        pieces.append(text[start:end])
        start = end
    return pieces if "".join(pieces) == text else None
