"""Class scoring on OpenAI-compatible servers in one request, wherever the prompt puts the classes.

The problem. Class probabilities come from the next-token log-probabilities of the verbalizers'
tokens, but servers only return the top ``N`` alternatives. A prompt that pushes " Yes" and " No"
below the top 20 used to send every classification to echo scoring (one request per verbalizer,
and on llama-cpp-python's server ~0.3 s of Python sorting per token of context), or, on the
OpenAI API (no echo for chat models), to an error.

The method. When every verbalizer is a single token of the server's vocabulary (ids from
:mod:`dlnflow.backends.openai.tokens`) and their tokens are distinct, one completions (or chat)
request asks for one token at temperature 0 with ``logit_bias`` = +100 on each verbalizer's token
and ``N`` top log-probabilities. The same bias on every verbalizer keeps their ratios: if
``l_i`` is verbalizer ``i``'s logit, biased or not ``p_i / p_j = exp(l_i - l_j)``, so normalising
over the verbalizers gives the exact class probabilities whether the server reports log-probs
before or after the bias. What the bias changes is *which* log-probs come back:

- Servers that report log-probs after the bias put the verbalizers at the top: one request with
  ``N >= number of classes`` always has them all. (vLLM started with ``--logprobs-mode
  processed_logprobs``; older vLLM versions (V0 engine) applied logits processors before
  computing log-probs.)
- Servers that report the model's raw log-probs (llama-cpp-python's server: verified here, its
  top list and values ignore ``logit_bias``; the OpenAI API since early 2024; vLLM's V1 default
  ``raw_logprobs``) still return the *sampled* token, which the bias makes the most likely
  verbalizer, with its raw log-prob; the others come back only if they are in the raw top ``N``.
  So on servers that accept a large ``N`` (llama-cpp-python accepts any ``N``; measured there,
  ``N = 1000`` costs no more than ``N = 20`` because the server sorts the whole vocabulary either
  way) the backend asks for ``N = 1000``. When a verbalizer is still missing it asks once more
  with ``N = 20000`` and then keeps an ``N`` twice the deepest rank it has seen, so later
  requests of the run are single again. If a verbalizer is beyond even that (or the server caps
  ``N``, as the OpenAI API does at 5 for completions and 20 for chat, and vLLM at its
  ``--max-logprobs``, default 20), each missing verbalizer costs one more request with the bias
  on it alone: it becomes the sampled token and its raw log-prob comes back. That is exact too,
  with one request per missing class instead of one per token of context. A server that refuses
  ``N = 1000`` (HTTP 400/422) is asked with its plain ``top_logprobs`` from then on.

On servers that report log-probs after the bias, a result's ``logprobs`` are the verbalizers'
biased values (all shifted by the same constant); ``probs`` are exact either way.

Verbalizers that are several tokens long, or share their first token (" (A)" and " (B)"), need
the probability of every token of the verbalizer, which one next-token request cannot give. When
they part ways at one token, :mod:`dlnflow.backends.openai.branching` scores them with short
next-token requests (completions endpoint). Otherwise they keep the previous route: echo scoring
where the server allows it (cheap on vLLM, which computes prompt log-probs inside the engine; slow
on llama-cpp-python's server, see :mod:`dlnflow.backends.openai.backend`), and an error naming
single-token verbalizers or the embedded backend where it does not (the OpenAI API).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dlnflow.backends.openai.responses import chat_content_logprobs, chat_top_table, completion_top_table

BIAS = 100
"""The bias put on every verbalizer's token (the OpenAI API's largest allowed value)."""
WIDE_TOP = 20000
"""The one wider retry when a verbalizer is missing from the first answer's top alternatives."""


def classes_table(choice: Any, chat: bool) -> dict[str, float]:
    """The next-token alternatives of one answer, plus the sampled token itself.

    >>> from types import SimpleNamespace as NS
    >>> lp = NS(tokens=[" No"], token_logprobs=[-11.0], top_logprobs=[{" mer": -0.3}], text_offset=[0])
    >>> classes_table(NS(logprobs=lp), chat=False)
    {' mer': -0.3, ' No': -11.0}
    """
    table = chat_top_table(choice) if chat else completion_top_table(choice)
    token, logprob = sampled_token(choice, chat)
    if token is not None and logprob is not None:
        table.setdefault(token, logprob)
    return table


def sampled_token(choice: Any, chat: bool) -> tuple[str | None, float | None]:
    """The token the server produced and its log-probability (None when it gave none)."""
    if chat:
        content = chat_content_logprobs(choice)
        if not content:
            return None, None
        return str(content[0].token), float(content[0].logprob)
    lp = getattr(choice, "logprobs", None)
    if lp is None or not lp.tokens or not lp.token_logprobs or lp.token_logprobs[0] is None:
        return None, None
    return str(lp.tokens[0]), float(lp.token_logprobs[0])


def keys_for(verbalizers: Sequence[str], chat: bool) -> tuple[str, ...]:
    """The token texts to look for: a chat reply starts without the space a completion has.

    >>> keys_for((" Yes", " No"), chat=True), keys_for((" Yes", " No"), chat=False)
    (('Yes', 'No'), (' Yes', ' No'))
    """
    return tuple(v.strip() for v in verbalizers) if chat else tuple(verbalizers)


def lookup(table: dict[str, float], keys: Sequence[str]) -> list[float | None]:
    """Each key's log-prob in ``table`` (None where missing)."""
    return [table.get(k) for k in keys]


def deepest_rank(table: dict[str, float], keys: Sequence[str]) -> int:
    """The largest 1-based rank of a key among the table's values, sorted from most likely.

    >>> deepest_rank({"a": -0.1, "b": -2.0, "c": -5.0}, ["c", "a"])
    3
    """
    order = {k: i + 1 for i, (k, _) in enumerate(sorted(table.items(), key=lambda kv: -kv[1]))}
    return max((order[k] for k in keys if k in order), default=0)


def bias_body(ids: Sequence[int]) -> dict[str, int]:
    """``logit_bias`` for these token ids (keys are the ids as strings, as the API wants).

    >>> bias_body([8438, 2301])
    {'8438': 100, '2301': 100}
    """
    return {str(i): BIAS for i in ids}
