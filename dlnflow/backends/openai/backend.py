"""The ``openai`` backend: the OpenAI API and OpenAI-compatible servers (vLLM, llama.cpp server, Ollama).

How each operation maps onto the HTTP API:

- ``generate``: the completions endpoint (or chat completions with ``chat: true``) with
  temperature, top_p, max_tokens and stop; sampled calls send a ``seed`` derived from the run
  seed and the sample index, so different samples differ and servers that honour seeds can
  repeat them (llama-cpp-python's server only roughly: its KV prefix reuse shifts the logits
  slightly, which can change a sampled token; the call cache is what makes reruns exact).
- ``score``: the completions endpoint with ``echo=True`` and ``logprobs`` over context + target;
  the tokens kept are those that reach into the target (by the server's character offsets).
  The server tokenizes context and target *together*; a token that straddles the boundary is
  counted with the target. Whether the server allows this is probed once and remembered; when
  it does not, ``capabilities`` lacks ``score``.
- ``classify``: when the server's tokenizer (or tiktoken) says the verbalizers are distinct
  single tokens, one next-token call with an equal ``logit_bias`` on them answers, wherever the
  prompt ranks them (see :mod:`dlnflow.backends.openai.classify`); without a tokenizer, one plain
  next-token call answers when they are among the top alternatives; otherwise each full
  verbalizer is scored by echo. Probabilities are normalised over the verbalizers.

Requests fan out on a private asyncio loop with at most ``concurrency`` in flight; results come
back in request order. The openai client's own retries are off: this module retries 429, 408,
5xx, timeouts and connection errors with jittered exponential back-off, honouring
``Retry-After``, and counts them in :attr:`OpenAIBackend.retries`. The API key is read from the
environment variable the settings name and never appears in identities, messages or reprs.

Costs worth knowing: llama-cpp-python's server sorts the whole vocabulary in Python for every
token it returns logprobs for, so echo scoring there costs ~0.3 s per token of context + target
on a small machine; ``generate`` therefore asks for logprobs only with ``generate_logprobs: true``,
and classification avoids echo whenever the verbalizers are single tokens. Every HTTP request is
counted by kind (:meth:`OpenAIBackend.counters`) and timed (:attr:`OpenAIBackend.latencies`).
``count_tokens`` is an estimate (remote tokenizers are not at hand): about three characters per
token, which errs on the long side.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai

from dlnflow.backends.openai import classify as oc
from dlnflow.backends.openai.branching import branch_point, token_texts
from dlnflow.backends.openai.errors import (
    ErrorContext,
    HTTPBackendError,
    MissingLogprobs,
    connection_error,
    status_error,
)
from dlnflow.backends.openai.responses import (
    chat_content_logprobs,
    cut_at_stop,
    chat_top_table,
    class_result,
    completion_top_table,
    echo_supported,
    echoed_target,
    first_choice,
    match_verbalizers,
    usage,
)
from dlnflow.backends.openai.retry import RetryPolicy, retryable_status
from dlnflow.backends.openai.settings import OpenAISettings
from dlnflow.backends.openai.tokens import RemoteTokenizer
from dlnflow.core.backend import Request, Result, shares_prefix
from dlnflow.core.errors import BackendError, ConfigError

T = TypeVar("T")
_BATCH_FAILED: contextvars.ContextVar[list[bool]] = contextvars.ContextVar("dlnflow_batch_failed")
"""Per batch: set once a call failed, so calls not yet sent are skipped (those in flight still finish)."""


class _Skipped(Exception):
    """A call of a failed batch that was never sent."""

PLACEHOLDER_KEY = "no-key-needed"
CHARS_PER_TOKEN = 3.0
_PROBE_TEXT = "Hello world"
_UNSUPPORTED_STATUSES = (400, 404, 405, 422, 501)
SCORE_ADVICE = (
    "use the embedded 'llamacpp' backend, or an OpenAI-compatible server whose completions endpoint "
    "accepts echo=True with logprobs (llama.cpp server, vLLM)"
)


def derive_seed(seed: int | None, sample: int) -> int:
    """A server seed for sample ``sample`` of a run with ``seed`` (31 bits, stable across runs).

    >>> derive_seed(42, 0) == derive_seed(42, 0), derive_seed(42, 0) == derive_seed(42, 1)
    (True, False)
    """
    digest = hashlib.sha256(f"{seed if seed is not None else 0}:{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


class OpenAIBackend:
    """An OpenAI-compatible endpoint as a dlnflow backend (see the module docstring)."""

    def __init__(self, settings: OpenAISettings, api_key: str) -> None:
        self.settings = settings
        self.retries = 0
        self._api_key = api_key
        self._errors = ErrorContext(settings.endpoint, settings.model, settings.api_key_env,
                                    settings.timeout, (api_key,))
        self._policy = RetryPolicy(settings.max_retries, settings.backoff_base, settings.backoff_max)
        self._score_ok: bool | None = False if settings.chat else None
        self._start_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: openai.AsyncOpenAI | None = None
        self._sem: asyncio.Semaphore | None = None
        self._http: httpx.AsyncClient | None = None
        self._tokenizer: RemoteTokenizer | None = None
        self._class_top = settings.classify_top
        self.latencies: list[float] = []
        self._requests: Counter[str] = Counter()

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: dict[str, Any], base_dir: Path | None = None) -> OpenAIBackend:
        """Build from a ``models.<name>`` mapping; the key comes from ``api_key_env``."""
        parsed = OpenAISettings.parse(settings)
        key = os.environ.get(parsed.api_key_env, "").strip()
        if not key:
            if parsed.official:
                raise ConfigError(
                    f"the OpenAI API needs a key: set the environment variable {parsed.api_key_env} "
                    "(or name another variable with models.<name>.api_key_env)"
                )
            key = PLACEHOLDER_KEY
        return cls(parsed, key)

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.settings.model!r}, base_url={self.settings.endpoint!r})"

    # -- protocol --------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        ident: dict[str, Any] = {"backend": "openai", "model": self.settings.model,
                                 "base_url": self.settings.endpoint}
        if self.settings.chat:
            ident["chat"] = True
        return ident

    @property
    def capabilities(self) -> frozenset[str]:
        """All three operations, minus ``score`` when the server refuses echo with logprobs.

        The first access sends one tiny probe request (without retries); if the server cannot
        be reached, the answer is optimistic and the real call reports the failure.
        """
        if self._score_ok is None:
            try:
                self._submit(self._probe_score(retry=False))
            except BackendError:
                return frozenset({"generate", "score", "classify"})
        ops = {"generate", "classify"}
        if self._score_ok:
            ops.add("score")
        return frozenset(ops)

    @property
    def n_ctx(self) -> int:
        return self.settings.n_ctx

    def count_tokens(self, text: str) -> int:
        """An estimate: ``ceil(len(text) / 3)`` (remote tokenizers are not available here).

        >>> OpenAIBackend(OpenAISettings(model="m"), "k").count_tokens("abcdefg")
        3
        """
        return math.ceil(len(text) / CHARS_PER_TOKEN)

    def counters(self) -> dict[str, int]:
        """Running totals of HTTP requests by kind (see :mod:`dlnflow.runtime.timing`)."""
        return {f"requests_{kind}": n for kind, n in self._requests.items()}

    def run(self, requests: list[Request]) -> list[Result]:
        """Answer ``requests`` concurrently (bounded by ``concurrency``), in request order."""
        return self.run_each(requests, None)

    def run_each(self, requests: list[Request], on_result: Callable[[int, Result], None] | None) -> list[Result]:
        """:meth:`run`, handing each answer to ``on_result(index, result)`` as soon as it arrives.

        When a call fails, the calls already sent still finish (they are paid for) and reach
        ``on_result``; calls not yet sent are skipped; then the first failure is raised.
        """
        if not requests:
            return []
        return self._submit(self._run_all(list(requests), on_result))

    def close(self) -> None:
        """Close the HTTP client and stop the private event loop (idempotent)."""
        with self._start_lock:
            loop, thread, client, http = self._loop, self._thread, self._client, self._http
            self._loop = self._thread = self._client = self._sem = self._http = None
            self._tokenizer = None
        if loop is None:
            return
        for closable in (client, http):
            if closable is not None:
                with contextlib.suppress(Exception):  # closing must not fail the caller
                    asyncio.run_coroutine_threadsafe(closable.aclose() if closable is http else closable.close(),
                                                     loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=10)
        if not loop.is_running():
            loop.close()

    # -- the private loop --------------------------------------------------------------------
    def _start(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="dlnflow-openai", daemon=True)
                thread.start()
                self._client = openai.AsyncOpenAI(
                    api_key=self._api_key, base_url=self.settings.base_url, max_retries=0,
                    timeout=self.settings.timeout,
                )
                self._sem = asyncio.Semaphore(self.settings.concurrency)
                self._http = httpx.AsyncClient(timeout=self.settings.timeout,
                                               headers={"Authorization": f"Bearer {self._api_key}"})
                self._tokenizer = RemoteTokenizer(self.settings.endpoint, self.settings.model,
                                                  self.settings.official, self._post_json)
                self._loop, self._thread = loop, thread
            return self._loop

    def _submit(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._start())
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    async def _run_all(self, requests: list[Request],
                       on_result: Callable[[int, Result], None] | None = None) -> list[Result]:
        failed = [False]

        async def one(index: int, request: Request) -> Result:
            _BATCH_FAILED.set(failed)
            try:
                result = await self._one(request)
            except _Skipped:
                raise
            except BaseException:
                failed[0] = True
                raise
            if on_result is not None:
                on_result(index, result)
            return result

        tasks = [asyncio.ensure_future(one(i, r)) for i, r in enumerate(requests)]
        try:
            done = await asyncio.gather(*tasks, return_exceptions=True)
        except BaseException:  # cancelled (Ctrl-C): stop what is still going
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        errors = [d for d in done if isinstance(d, BaseException) and not isinstance(d, _Skipped)]
        if errors:
            raise errors[0]
        return list(done)  # type: ignore[arg-type]

    async def _one(self, request: Request) -> Result:
        if request.op == "generate":
            return await self._generate(request)
        if request.op == "score":
            return await self._score(request)
        return await self._classify(request)

    # -- retries -----------------------------------------------------------------------------
    async def _call(self, endpoint: str, send: Callable[[], Awaitable[T]], retry: bool = True,
                    kind: str = "generate") -> T:
        """One logical request: bounded concurrency per attempt, retries on transient failures.

        Every attempt is counted under ``kind`` and its seconds kept in :attr:`latencies`.
        """
        budget = self._policy.max_retries if retry else 0
        attempt = 0
        while True:
            headers: dict[str, str] = {}
            try:
                assert self._sem is not None
                async with self._sem:
                    if _BATCH_FAILED.get([False])[0]:
                        raise _Skipped
                    return await self._timed(kind, send)
            except openai.APIStatusError as exc:
                if not retryable_status(exc.status_code) or attempt >= budget:
                    raise status_error(self._errors, exc, endpoint, attempt + 1, self.settings.n_ctx) from None
                headers = dict(exc.response.headers)
            except openai.APIConnectionError as exc:
                if attempt >= budget:
                    raise connection_error(self._errors, exc, endpoint, attempt + 1) from None
            except (ValueError, openai.APIResponseValidationError) as exc:  # truncated or garbled JSON
                if attempt >= budget:
                    raise BackendError(
                        f"{self.settings.endpoint} {endpoint}: the server's answer was not valid JSON "
                        f"({type(exc).__name__}) on all {attempt + 1} attempts; check the server or a proxy "
                        "in front of it"
                    ) from None
            delay = self._policy.delay(attempt, headers)
            attempt += 1
            self.retries += 1
            await asyncio.sleep(delay)

    async def _timed(self, kind: str, send: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            return await send()
        finally:
            self.latencies.append(time.perf_counter() - started)
            self._requests[kind] += 1

    def _extra(self) -> dict[str, Any]:
        return {"extra_body": dict(self.settings.extra_body)} if self.settings.extra_body else {}

    # -- generate ----------------------------------------------------------------------------
    async def _generate(self, r: Request) -> Result:
        assert self._client is not None
        client = self._client
        params: dict[str, Any] = {"model": self.settings.model, "max_tokens": r.max_tokens,
                                  "temperature": r.temperature, "top_p": r.top_p, **self._extra()}
        if r.stop:
            params["stop"] = list(r.stop)
        if r.sampled:
            params["seed"] = derive_seed(r.seed, r.sample)
        if self.settings.chat:
            if self.settings.generate_logprobs:
                params["logprobs"] = True
            messages = [{"role": "user", "content": r.prompt}]
            response = await self._call("chat/completions",
                                        lambda: client.chat.completions.create(messages=messages, **params))
            choice = first_choice(response, "chat/completions")
            text = choice.message.content or ""
            if r.stop and not text.strip() and getattr(choice, "finish_reason", None) == "stop":
                return await self._chat_past_opening_stop(r, messages, params, usage(response))
            logprobs = [float(item.logprob) for item in chat_content_logprobs(choice)] or None
        else:
            if self.settings.generate_logprobs:
                params["logprobs"] = 1
            response = await self._call("completions",
                                        lambda: client.completions.create(prompt=r.prompt, **params))
            choice = first_choice(response, "completions")
            text = choice.text or ""
            raw = choice.logprobs.token_logprobs if choice.logprobs is not None else None
            logprobs = [float(v) for v in raw if v is not None] if raw else None
        n_prompt, n_completion = usage(response)
        return {"text": text, "logprobs": logprobs, "prompt_tokens": n_prompt, "completion_tokens": n_completion}

    async def _chat_past_opening_stop(self, r: Request, messages: list[dict[str, str]], params: dict[str, Any],
                                      spent: tuple[int, int]) -> Result:
        """A chat reply that opened with a stop sequence came back empty: a chat template (say a
        server's fallback one) made the model start with a blank line, which is not the end of its
        answer. Ask once more without stops and cut after the opening whitespace, as the stops mean."""
        assert self._client is not None
        client = self._client
        unstopped = {k: v for k, v in params.items() if k not in ("stop", "logprobs")}
        response = await self._call("chat/completions",
                                    lambda: client.chat.completions.create(messages=messages, **unstopped))
        text = cut_at_stop(first_choice(response, "chat/completions").message.content or "", r.stop)
        n_prompt, n_completion = usage(response)
        return {"text": text, "logprobs": None, "prompt_tokens": spent[0] + n_prompt,
                "completion_tokens": spent[1] + n_completion}

    # -- score -------------------------------------------------------------------------------
    async def _echo_call(self, prompt: str, retry: bool = True, kind: str = "echo") -> Any:
        assert self._client is not None
        client = self._client
        return await self._call("completions", lambda: client.completions.create(
            model=self.settings.model, prompt=prompt, max_tokens=1, echo=True, logprobs=1,
            temperature=0.0, **self._extra()), retry=retry, kind=kind)

    async def _probe_score(self, retry: bool = True) -> bool:
        """Ask once whether completions accept ``echo=True`` with logprobs; remember the answer."""
        if self._score_ok is not None:
            return self._score_ok
        try:
            response = await self._echo_call(_PROBE_TEXT, retry=retry, kind="probe")
        except HTTPBackendError as exc:
            if exc.status in _UNSUPPORTED_STATUSES:
                self._score_ok = False
                return False
            raise
        self._score_ok = echo_supported(first_choice(response, "completions"), _PROBE_TEXT)
        return self._score_ok

    async def _echo(self, context: str, target: str) -> tuple[list[float], list[str], int, int]:
        """Per-token log-probabilities of ``target`` after ``context``, plus the tokens and usage."""
        response = await self._echo_call(context + target)
        logprobs, tokens = echoed_target(first_choice(response, "completions"), context, target)
        return logprobs, tokens, *usage(response)

    async def _score(self, r: Request) -> Result:
        if not await self._probe_score():
            raise ConfigError(
                f"the server at {self.settings.endpoint} (model {self.settings.model!r}) cannot score texts "
                "(its completions endpoint refuses echo with logprobs); " + SCORE_ADVICE
            )
        logprobs, tokens, n_prompt, n_completion = await self._echo(r.prompt, r.targets[0])
        return {"logprobs": logprobs, "tokens": tokens, "prompt_tokens": n_prompt,
                "completion_tokens": n_completion}

    # -- classify ----------------------------------------------------------------------------
    async def _classify(self, r: Request) -> Result:
        verbalizers = r.targets
        distinct = len(set(verbalizers)) == len(verbalizers)
        ids = await self._single_token_ids(verbalizers) if distinct else None
        if ids is not None:
            return await self._classify_biased(r.prompt, verbalizers, ids)
        table: dict[str, float] | None = None
        if distinct and (self.settings.chat or self._score_ok is False or not shares_prefix(verbalizers)):
            found, table = await self._next_token(r.prompt, verbalizers)
            if found is not None:
                return found
        if distinct and not self.settings.chat:
            branched = await self._classify_branching(r.prompt, verbalizers)
            if branched is not None:
                return branched
        if not self.settings.chat and await self._probe_score():
            scored = await asyncio.gather(*(self._echo(r.prompt, v) for v in verbalizers))
            totals = [sum(lps) for lps, _, _, _ in scored]
            return class_result(totals, sum(s[2] for s in scored), sum(s[3] for s in scored))
        if distinct and table is None:
            found, table = await self._next_token(r.prompt, verbalizers)
            if found is not None:
                return found
        raise ConfigError(self._classify_problem(verbalizers, distinct, table))

    async def _post_json(self, url: str, body: dict[str, Any]) -> Any:
        """POST ``body`` to ``url`` (outside the OpenAI API, e.g. a tokenize route); the parsed answer."""
        assert self._http is not None
        http = self._http

        async def send() -> Any:
            response = await http.post(url, json=body)
            response.raise_for_status()
            return response.json()

        assert self._sem is not None
        async with self._sem:
            return await self._timed("tokenize", send)

    async def _single_token_ids(self, verbalizers: tuple[str, ...]) -> list[int] | None:
        """Each verbalizer's token id when all are single, distinct tokens; else None."""
        if self._tokenizer is None or self._class_top < len(verbalizers):
            return None
        keys = oc.keys_for(verbalizers, self.settings.chat)
        found = [await self._tokenizer.tokens(k) for k in keys]
        if any(t is None or len(t) != 1 for t in found):
            return None
        ids = [t[0] for t in found if t is not None]
        return ids if len(set(ids)) == len(ids) else None

    async def _classify_biased(self, context: str, verbalizers: tuple[str, ...], ids: list[int]) -> Result:
        """Class probabilities with an equal ``logit_bias`` on every verbalizer (see
        :mod:`dlnflow.backends.openai.classify`): usually one request."""
        keys = oc.keys_for(verbalizers, self.settings.chat)
        n_prompt = 0
        found: list[float | None] = [None] * len(keys)
        tops = [self._class_top]
        if not self.settings.official and self._class_top < oc.WIDE_TOP:
            tops.append(oc.WIDE_TOP)
        for n in tops:
            capped = False
            try:
                table, used = await self._next_token_table(context, ids, n, "next_token" if n == tops[0] else "wide")
            except HTTPBackendError as exc:
                if exc.status not in (400, 422) or n <= self.settings.n_top:
                    raise
                self._class_top = self.settings.n_top  # the server caps N (e.g. vLLM's --max-logprobs)
                if n != tops[0]:
                    break
                capped = True
                table, used = await self._next_token_table(context, ids, self._class_top, "next_token")
            n_prompt = max(n_prompt, used)
            found = [f if f is not None else v for f, v in zip(found, oc.lookup(table, keys), strict=True)]
            if n != tops[0] and all(v is not None for v in found):
                self._class_top = min(oc.WIDE_TOP, max(self._class_top, 2 * oc.deepest_rank(table, keys)))
            if capped or all(v is not None for v in found):
                break
        for i, value in enumerate(found):
            if value is None:  # raw log-probs and deeper than any N: bias this verbalizer alone
                found[i] = await self._forced_logprob(context, keys[i], ids[i])
        if any(v is None for v in found):
            raise MissingLogprobs(f"{self.settings.endpoint} did not return the log-probabilities of the "
                                  f"verbalizers {list(verbalizers)!r} even with logit_bias on their tokens")
        return class_result([float(v) for v in found if v is not None], n_prompt, 1)

    async def _classify_branching(self, context: str, verbalizers: tuple[str, ...]) -> Result | None:
        """Several-token verbalizers that part ways at one token: the branch request plus next-token
        requests for the other tokens (:mod:`dlnflow.backends.openai.branching`); None when they do not
        have that shape or no tokenizer is reachable."""
        tokenizer = self._tokenizer
        if tokenizer is None:
            return None
        seqs = [await tokenizer.tokens(v) for v in verbalizers]
        if any(s is None for s in seqs):
            return None
        ids = [s for s in seqs if s is not None]
        k = branch_point(ids)
        if k is None:
            return None
        texts = [await token_texts(v, s, tokenizer.tokens) for v, s in zip(verbalizers, ids, strict=True)]
        if any(t is None for t in texts):
            return None
        pieces = [t for t in texts if t is not None]
        try:
            return await self._branch_paths(context, pieces, ids, k)
        except MissingLogprobs:  # a server whose answers leave the tokens out: the echo route
            return None

    async def _branch_paths(self, context: str, pieces: list[list[str]], ids: list[list[int]], k: int) -> Result:
        """The sums of log-probabilities along each verbalizer's tokens (``k`` shared ones first)."""
        head = await self._tokens_logprob(context, pieces[0], ids[0], 0, k)
        branch = await self._classify_biased(context + "".join(pieces[0][:k]), tuple(p[k] for p in pieces),
                                             [s[k] for s in ids])
        tails = await asyncio.gather(*(self._tokens_logprob(context, p, s, k + 1, len(s))
                                       for p, s in zip(pieces, ids, strict=True)))
        totals = [head + b + t for b, t in zip(branch["logprobs"], tails, strict=True)]
        return class_result(totals, int(branch["prompt_tokens"]), 1 + k + sum(len(s) - k - 1 for s in ids))

    async def _tokens_logprob(self, context: str, pieces: list[str], ids: list[int], start: int, stop: int) -> float:
        """The summed log-probabilities of tokens ``start``..``stop - 1`` of one verbalizer, asked together."""
        found = await asyncio.gather(*(self._token_logprob(context + "".join(pieces[:j]), pieces[j], ids[j])
                                       for j in range(start, stop)))
        return float(sum(found))

    async def _token_logprob(self, context: str, text: str, token: int) -> float:
        """The log-probability of one token after ``context``: from the plain next-token alternatives,
        else from a request biased towards it alone (its own value on raw-log-prob servers)."""
        table, _ = await self._next_token_table(context, [], self._class_top, "next_token")
        if text in table:
            return table[text]
        forced = await self._forced_logprob(context, text, token)
        if forced is None:
            raise MissingLogprobs(f"{self.settings.endpoint} did not return the log-probability of {text!r} "
                                  "even with logit_bias on its token")
        return forced

    async def _forced_logprob(self, context: str, key: str, token: int) -> float | None:
        """The log-probability of ``token`` (read as ``key``) after ``context`` from one request biased
        towards it alone (its own value on raw-log-prob servers); None when the answer leaves it out."""
        table, _ = await self._next_token_table(context, [token], 1, "forced")
        return table.get(key)

    async def _next_token_table(self, context: str, ids: list[int], n: int, kind: str) -> tuple[dict[str, float], int]:
        """One next-token request with ``logit_bias`` on ``ids`` and ``n`` alternatives: (table, prompt tokens)."""
        assert self._client is not None
        client = self._client
        bias = oc.bias_body(ids)
        extra = self._extra()
        if self.settings.chat:
            messages = [{"role": "user", "content": context}]
            response = await self._call("chat/completions", lambda: client.chat.completions.create(
                model=self.settings.model, messages=messages, max_tokens=1, logprobs=True, top_logprobs=n,
                temperature=0.0, logit_bias=bias, **extra), kind=kind)
            choice = first_choice(response, "chat/completions")
        else:
            response = await self._call("completions", lambda: client.completions.create(
                model=self.settings.model, prompt=context, max_tokens=1, logprobs=n, temperature=0.0,
                logit_bias=bias, **extra), kind=kind)
            choice = first_choice(response, "completions")
        return oc.classes_table(choice, self.settings.chat), usage(response)[0]

    def _classify_problem(self, verbalizers: tuple[str, ...], distinct: bool,
                          table: dict[str, float] | None) -> str:
        where = f"cannot classify with verbalizers {list(verbalizers)!r} on {self.settings.endpoint}"
        if not distinct:
            why = "the verbalizers repeat"
        elif not table:
            why = "the server returned no next-token log-probabilities"
        else:
            offered = ", ".join(repr(t) for t in list(table)[:5])
            why = (f"they are not distinct single tokens among the top {self.settings.n_top} next tokens "
                   f"(the server offered {offered}, ...)")
        return (f"{where}: {why}, and scoring full verbalizers needs echo with logprobs on the completions "
                "endpoint; use single-token verbalizers or " + SCORE_ADVICE)

    async def _next_token(self, context: str, verbalizers: tuple[str, ...]
                          ) -> tuple[Result | None, dict[str, float]]:
        """The class result from one next-token call (None if a verbalizer is missing) and the table."""
        assert self._client is not None
        client = self._client
        extra = self._extra()
        if self.settings.chat:
            messages = [{"role": "user", "content": context}]
            response = await self._call("chat/completions", lambda: client.chat.completions.create(
                model=self.settings.model, messages=messages, max_tokens=1, logprobs=True,
                top_logprobs=self.settings.n_top, temperature=0.0, **extra), kind="next_token")
            table = chat_top_table(first_choice(response, "chat/completions"))
        else:
            response = await self._call("completions", lambda: client.completions.create(
                model=self.settings.model, prompt=context, max_tokens=1, logprobs=self.settings.n_top,
                temperature=0.0, **extra), kind="next_token")
            table = completion_top_table(first_choice(response, "completions"))
        found = match_verbalizers(table, verbalizers, loose=self.settings.chat)
        return (None if found is None else class_result(found, *usage(response))), table
