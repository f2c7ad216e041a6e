"""Class scoring with logit_bias on the openai backend: the request logic against an emulated server,
and one request per classification against the real llama.cpp server."""

from __future__ import annotations

import json
import math
import urllib.request
from typing import Any

import pytest
from server import SERVER_MODEL, FakeOpenAI, Reply

from dlnflow.backends.openai import classify as openai_classify
from dlnflow.core.backend import Request
from dlnflow.backends.openai.backend import OpenAIBackend

FILLER = {f" w{i}": -1.0 - 0.1 * i for i in range(40)}  # 40 tokens more likely than anything below
IDS = {" Yes": 8438, " No": 2301, **{t: 5000 + i for i, t in enumerate(FILLER)}}


def raw_server(model: dict[str, float], cap: int | None = None) -> Any:
    """Answers like llama-cpp-python's server: top-N of the *raw* log-probs, plus the sampled token,
    which is the argmax after ``logit_bias``; HTTP 400 above ``cap`` alternatives (like vLLM)."""
    by_id = {IDS[t]: t for t in model}

    def respond(path: str, body: dict[str, Any]) -> Reply:
        n = int(body.get("logprobs") or 0)
        if cap is not None and n > cap:
            return Reply(400, {"error": {"message": f"logprobs {n} is above the server's maximum {cap}"}})
        bias = {by_id[int(k)]: float(v) for k, v in (body.get("logit_bias") or {}).items()}
        ranked = sorted(model.items(), key=lambda kv: -kv[1])
        sampled = max(model, key=lambda t: model[t] + bias.get(t, 0.0))
        top = dict(ranked[:n])
        top.setdefault(sampled, model[sampled])
        logprobs = {"tokens": [sampled], "token_logprobs": [model[sampled]], "text_offset": [0],
                    "top_logprobs": [top]}
        return Reply(body={"choices": [{"index": 0, "text": sampled, "finish_reason": "length",
                                        "logprobs": logprobs}],
                           "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})

    return respond


def make(fake: FakeOpenAI, model: dict[str, float], cap: int | None = None, **extra: Any) -> OpenAIBackend:
    fake.vocab = IDS
    fake.respond = raw_server(model, cap)
    return OpenAIBackend.from_settings({"backend": "openai", "model": "m", "base_url": fake.base_url,
                                        "backoff_base": 0.01, "timeout": 5, **extra}, None)


def exact(yes: float, no: float) -> list[float]:
    return [1 / (1 + math.exp(no - yes)), 1 / (1 + math.exp(yes - no))]


def classify(b: OpenAIBackend, prompt: str = "Q: A:") -> dict[str, Any]:
    [res] = b.run([Request("classify", prompt, targets=(" Yes", " No"))])
    return res


def test_classes_below_the_plain_top_20_cost_one_request(fake_openai: FakeOpenAI) -> None:
    b = make(fake_openai, {**FILLER, " Yes": -9.0, " No": -7.5})
    try:
        res = classify(b)
        assert res["probs"] == pytest.approx(exact(-9.0, -7.5)) and res["logprobs"] == [-9.0, -7.5]
        [sent] = fake_openai.seen
        assert sent.body["logit_bias"] == {"8438": 100, "2301": 100} and sent.body["logprobs"] == 1000
        assert not sent.body.get("echo")
        assert [s.path for s in fake_openai.side] == ["/extras/tokenize"] * 3  # "", " Yes", " No": once
        classify(b, "another prompt")
        assert len(fake_openai.side) == 3 and b.counters() == {"requests_tokenize": 3, "requests_next_token": 2}
    finally:
        b.close()


def test_deep_classes_widen_once_then_stay_single(fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_classify, "WIDE_TOP", 100)
    b = make(fake_openai, {**FILLER, " Yes": -9.0, " No": -7.5}, classify_top_logprobs=5)
    try:
        assert classify(b)["probs"] == pytest.approx(exact(-9.0, -7.5))
        assert [s.body["logprobs"] for s in fake_openai.seen] == [5, 100]  # " Yes" is rank 42: not in the top 5
        classify(b, "next")
        assert fake_openai.seen[-1].body["logprobs"] == 84  # twice the deepest rank seen
        assert b.counters() == {"requests_tokenize": 3, "requests_next_token": 2, "requests_wide": 1}
    finally:
        b.close()


def test_classes_beyond_any_top_are_asked_one_by_one(fake_openai: FakeOpenAI,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_classify, "WIDE_TOP", 10)
    b = make(fake_openai, {**FILLER, " Yes": -9.0, " No": -7.5}, classify_top_logprobs=5)
    try:
        assert classify(b)["probs"] == pytest.approx(exact(-9.0, -7.5))
        forced = fake_openai.seen[-1].body
        assert forced["logit_bias"] == {"8438": 100} and forced["logprobs"] == 1  # only the missing " Yes"
        assert b.counters()["requests_forced"] == 1
    finally:
        b.close()


def test_a_server_capping_logprobs_is_asked_within_its_cap(fake_openai: FakeOpenAI) -> None:
    b = make(fake_openai, {**FILLER, " Yes": -1.05, " No": -1.25}, cap=20)
    try:
        assert classify(b)["probs"] == pytest.approx(exact(-1.05, -1.25))
        assert [s.body["logprobs"] for s in fake_openai.seen] == [1000, 20]
        classify(b, "next")
        assert fake_openai.seen[-1].body["logprobs"] == 20
        deep = make(fake_openai, {**FILLER, " Yes": -9.0, " No": -7.5}, cap=20)  # capped and out of its top
        fake_openai.seen.clear()
        assert classify(deep)["probs"] == pytest.approx(exact(-9.0, -7.5))
        sent = [(s.body["logprobs"], len(s.body["logit_bias"])) for s in fake_openai.seen]
        assert sent == [(1000, 2), (20, 2), (1, 1)]  # refused, within the cap, then the missing class alone
        deep.close()
    finally:
        b.close()


def test_multi_token_verbalizers_fall_back_to_echo_when_the_server_leaves_their_tokens_out(
        fake_openai: FakeOpenAI) -> None:
    fake_openai.vocab = IDS  # " purple" is not one token there, and the emulated answers never offer " "
    b = OpenAIBackend.from_settings({"backend": "openai", "model": "m", "base_url": fake_openai.base_url}, None)
    try:
        [res] = b.run([Request("classify", "Q:", targets=(" Yes", " purple"))])
        assert any(s.body.get("logit_bias") for s in fake_openai.seen)  # the branch route was tried first
        assert any(s.body.get("echo") for s in fake_openai.seen) and math.isclose(sum(res["probs"]), 1.0)
    finally:
        b.close()


# -- the real llama.cpp server -----------------------------------------------------------------------
# Prompts whose " Yes"/" No" are not among the server's plain top 20 next tokens (checked below).
OFF_TOP = [
    "List three colours of the rainbow, separated by commas.\n\nInput: rainbow\nAnswer:",
    "Translate into German.\n\nInput: good morning\nAnswer:",
]
PROB_TOL = 0.03  # as for the other server tests (see tests/test_backends_openai.py)


def plain_top(base_url: str, prompt: str) -> dict[str, float]:
    body = json.dumps({"model": SERVER_MODEL, "prompt": prompt, "max_tokens": 1, "logprobs": 20,
                       "temperature": 0.0}).encode()
    req = urllib.request.Request(base_url + "/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return dict(json.loads(resp.read())["choices"][0]["logprobs"]["top_logprobs"][0])


@pytest.mark.server
@pytest.mark.real
def test_real_server_classifies_off_top_classes_in_one_request_each(llama_server: str, llama: Any) -> None:
    for prompt in OFF_TOP:
        top = plain_top(llama_server, prompt)
        assert " Yes" not in top and " No" not in top, prompt
    b = OpenAIBackend.from_settings({"backend": "openai", "model": SERVER_MODEL, "base_url": llama_server,
                                     "timeout": 120}, None)
    try:
        requests = [Request("classify", p, targets=(" Yes", " No")) for p in OFF_TOP]
        theirs = b.run(requests)
        counts = b.counters()
    finally:
        b.close()
    ours = llama.run(requests)
    assert counts["requests_next_token"] == len(OFF_TOP)  # one completions request per classification
    assert set(counts) == {"requests_tokenize", "requests_next_token"}  # no echo, probe, wider or forced calls
    assert counts["requests_tokenize"] == 3  # "" (the BOS prefix), " Yes", " No"
    for t, o in zip(theirs, ours, strict=True):
        assert t["probs"] == pytest.approx(o["probs"], abs=PROB_TOL)
        assert max(t["probs"]) < 0.999  # both classes carry probability: not a degenerate answer


def test_several_token_verbalizers_that_part_at_one_token_need_no_echo(fake_openai: FakeOpenAI) -> None:
    """" (A)" and " (B)" share their first tokens and end with ")": one request per shared token, one
    biased request at the branch, one per closing token; the class log-probabilities are the sums along
    each path. (The emulated tokenizer gives one token per character.)"""
    fake_openai.vocab = {}
    nxt = {"Pick:": {" ": -0.1, " ok": -1.2}, "Pick: ": {"(": -0.2}, "Pick: (": {"B": -0.5, "A": -1.0},
           "Pick: (A": {")": -0.2}, "Pick: (B": {")": -0.9}}
    by_id = {1000 + ord(c): c for c in " (AB)"}

    def respond(path: str, body: dict[str, Any]) -> Reply:
        assert not body.get("echo")
        model = nxt[body["prompt"]]
        bias = {by_id[int(k)]: float(v) for k, v in (body.get("logit_bias") or {}).items()}
        sampled = max(model, key=lambda t: model[t] + bias.get(t, 0.0))
        logprobs = {"tokens": [sampled], "token_logprobs": [model[sampled]], "text_offset": [0],
                    "top_logprobs": [dict(model)]}
        return Reply(body={"choices": [{"index": 0, "text": sampled, "finish_reason": "length",
                                        "logprobs": logprobs}],
                           "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})

    fake_openai.respond = respond
    b = OpenAIBackend.from_settings({"backend": "openai", "model": "m", "base_url": fake_openai.base_url,
                                     "backoff_base": 0.01, "timeout": 5}, None)
    try:
        [res] = b.run([Request("classify", "Pick:", targets=(" (A)", " (B)"))])
    finally:
        b.close()
    assert res["logprobs"] == pytest.approx([-0.1 - 0.2 - 1.0 - 0.2, -0.1 - 0.2 - 0.5 - 0.9])
    assert res["probs"] == pytest.approx(exact(-1.5, -1.7))
    prompts = sorted(s.body["prompt"] for s in fake_openai.seen)
    assert prompts == ["Pick:", "Pick: ", "Pick: (", "Pick: (A", "Pick: (B"]  # one-token requests, no echo
    branch = next(s.body for s in fake_openai.seen if s.body["prompt"] == "Pick: (")
    assert branch["logit_bias"] == {"1065": 100, "1066": 100}


@pytest.mark.server
@pytest.mark.real
def test_real_server_classifies_lettered_options_without_echo(llama_server: str, llama: Any) -> None:
    """BBH-style classes " (A)" ... " (D)" (several tokens, one shared first token) on llama.cpp's server:
    short next-token requests only, class probabilities as the embedded model computes them."""
    prompt = ("Which is a fruit?\nOptions:\n(A) chair\n(B) apple\n(C) river\n(D) cloud\nAnswer:")
    request = Request("classify", prompt, targets=(" (A)", " (B)", " (C)", " (D)"))
    b = OpenAIBackend.from_settings({"backend": "openai", "model": SERVER_MODEL, "base_url": llama_server,
                                     "timeout": 120}, None)
    try:
        [theirs] = b.run([request])
        counts = b.counters()
    finally:
        b.close()
    [ours] = llama.run([request])
    assert "requests_echo" not in counts and "requests_probe" not in counts, counts
    assert counts["requests_next_token"] <= 1 + 1 + 4 + 4  # shared token, branch, closing ")" (forced if rare)
    assert theirs["probs"] == pytest.approx(ours["probs"], abs=PROB_TOL)
    assert theirs["logprobs"] == pytest.approx(ours["logprobs"], abs=0.15)
    assert max(theirs["probs"]) < 0.999 and min(theirs["logprobs"]) < -1.0
