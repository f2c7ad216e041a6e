"""Tests of the client: cache use, de-duplication, failures, budget and accounting."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from standin import StandIn

from dlnflow.core.backend import Request, Result
from dlnflow.core.errors import BackendError, BudgetExceeded, ConfigError
from dlnflow.runtime.cache import CallCache, call_key
from dlnflow.runtime.client import Budget, Client, Usage

GEN = Request("generate", "Name a colour:", max_tokens=4)


def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll ``condition`` (bounded); fail the test if it never holds."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


class Endpoint(StandIn):
    """A stand-in that says which server it is (as an OpenAI-compatible backend would)."""

    def __init__(self, base_url: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.base_url = base_url

    def identity(self) -> dict[str, Any]:
        return {"backend": "standin", "model": self.name, "base_url": self.base_url}


class Gate(StandIn):
    """A stand-in whose calls block until released, to hold requests in flight."""

    def __init__(self, fail: BaseException | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.started = threading.Event()
        self.release = threading.Event()
        self.fail = fail
        self.batches: list[int] = []

    def run(self, requests: list[Request]) -> list[Result]:
        self.batches.append(len(requests))
        self.started.set()
        assert self.release.wait(20), "test never released the gate"
        if self.fail is not None:
            raise self.fail
        return super().run(requests)


def make(tmp_path: Path, backend: Any | None = None, **kwargs: Any) -> tuple[Client, Any]:
    model = backend if backend is not None else StandIn()
    return Client({"m": model}, CallCache(tmp_path / "cache"), **kwargs), model


def total_calls(model: StandIn) -> int:
    return sum(model.calls.values())


# -- the cache saves calls -------------------------------------------------------------------
def test_second_identical_call_makes_no_backend_call(tmp_path: Path) -> None:
    client, model = make(tmp_path)
    reqs = [GEN, Request("score", "Sky is", targets=(" blue",)), Request("classify", "x", targets=("a", "b"))]
    first = client.run("m", reqs)
    assert total_calls(model) == 3
    second = client.run("m", reqs)
    assert second == first and total_calls(model) == 3
    # a new client and a new cache object on the same folder: still no call
    fresh_model = StandIn()
    fresh = Client({"m": fresh_model}, CallCache(tmp_path / "cache"))
    assert fresh.run("m", reqs) == first
    assert total_calls(fresh_model) == 0 and fresh.usage.cache_hits == 3


def test_in_batch_duplicates_reach_the_backend_once(tmp_path: Path) -> None:
    client, model = make(tmp_path)
    other = dataclasses.replace(GEN, prompt="Name a fruit:")
    out = client.run("m", [GEN, other, GEN, GEN, other])
    assert total_calls(model) == 2 and [r.prompt for r in model.log] == [GEN.prompt, other.prompt]
    assert out[0] == out[2] == out[3] and out[1] == out[4]
    assert client.usage.deduplicated == 3 and client.usage.backend_calls == 2


def test_duplicates_are_deduplicated_even_with_cache_off(tmp_path: Path) -> None:
    model = StandIn()
    client = Client({"m": model}, None, mode="off")
    client.run("m", [GEN, GEN])
    assert total_calls(model) == 1


def test_concurrent_identical_requests_reach_the_backend_once(tmp_path: Path) -> None:
    gate = Gate()
    client, _ = make(tmp_path, gate)
    results: list[list[Result]] = []
    threads = [threading.Thread(target=lambda: results.append(client.run("m", [GEN]))) for _ in range(8)]
    threads[0].start()
    assert gate.started.wait(10)
    for t in threads[1:]:
        t.start()
    wait_until(lambda: client.usage.deduplicated == 7)
    gate.release.set()
    for t in threads:
        t.join(20)
    assert gate.batches == [1] and total_calls(gate) == 1
    assert len(results) == 8 and all(r == results[0] for r in results)
    assert client.usage.backend_calls == 1 and client.usage.deduplicated == 7


def test_a_call_finished_between_lookup_and_claim_is_not_repeated(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    client, model = make(tmp_path)
    original = client._claim
    raced = []

    def claim_after_another_caller_finished(*args: Any) -> Any:
        if not raced:  # first caller: its lookup missed; now someone else completes the same call
            raced.append(True)
            client.run("m", [GEN])
        return original(*args)

    monkeypatch.setattr(client, "_claim", claim_after_another_caller_finished)
    client.run("m", [GEN])
    assert total_calls(model) == 1 and client.usage.cache_hits == 1


def test_threads_with_overlapping_batches_call_each_request_once(tmp_path: Path) -> None:
    client, model = make(tmp_path)
    reference = StandIn()  # same rules, separate counters: gives the expected answers
    reqs = [dataclasses.replace(GEN, prompt=f"item {i}") for i in range(40)]
    errors: list[AssertionError] = []

    def work(offset: int) -> None:
        try:
            for start in range(0, 40, 5):
                batch = reqs[(start + offset) % 40:(start + offset) % 40 + 7]
                assert client.run("m", batch) == reference.run(batch)
        except AssertionError as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert client.usage.backend_calls == 40 and total_calls(model) == 40
    assert len(client.cache) == 40  # type: ignore[arg-type]


# -- keys keep different things apart ------------------------------------------------------------
def test_two_endpoints_never_share_entries(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "cache")
    a = Endpoint("http://127.0.0.1:8000/v1", gen=lambda r: "from A")
    b = Endpoint("http://127.0.0.1:8001/v1", gen=lambda r: "from B")
    client = Client({"a": a, "b": b}, cache)
    assert client.run("a", [GEN])[0]["text"] == "from A"
    assert client.run("b", [GEN])[0]["text"] == "from B"
    assert total_calls(a) == 1 and total_calls(b) == 1
    assert client.key("a", GEN) != client.key("b", GEN)
    assert client.key("a", GEN) == call_key(a.identity(), GEN)


def test_more_samples_reuse_the_first_ones_and_a_new_seed_draws_new(tmp_path: Path) -> None:
    client, model = make(tmp_path)
    hot = dataclasses.replace(GEN, temperature=0.7, seed=42)
    five = client.run("m", [dataclasses.replace(hot, sample=k) for k in range(5)])
    assert total_calls(model) == 5
    ten = client.run("m", [dataclasses.replace(hot, sample=k) for k in range(10)])
    assert total_calls(model) == 10 and ten[:5] == five
    assert [r.sample for r in model.log[5:]] == [5, 6, 7, 8, 9]
    client.run("m", [dataclasses.replace(hot, seed=43, sample=k) for k in range(5)])
    assert total_calls(model) == 15


# -- cache modes -------------------------------------------------------------------------------
def counting_gen() -> Callable[[Request], str]:
    n = {"i": 0}

    def gen(_: Request) -> str:
        n["i"] += 1
        return f"answer {n['i']}"

    return gen


def test_mode_off_neither_reads_nor_writes(tmp_path: Path) -> None:
    use, _ = make(tmp_path, StandIn(gen=lambda r: "cached"))
    use.run("m", [GEN])
    cache = use.cache
    assert cache is not None and len(cache) == 1
    model = StandIn(gen=counting_gen())
    off = Client({"m": model}, CallCache(tmp_path / "cache"), mode="off")
    new = dataclasses.replace(GEN, prompt="never seen")
    assert off.run("m", [GEN, new]) != []
    assert [r["text"] for r in off.run("m", [GEN])] == ["answer 3"]  # called again: nothing was read
    assert total_calls(model) == 3 and off.usage.cache_hits == 0
    reader = CallCache(tmp_path / "cache")
    assert len(reader) == 1 and reader.get(use.key("m", GEN))["text"] == "cached"  # type: ignore[index]
    assert reader.get(use.key("m", new)) is None  # nothing was written


def test_mode_refresh_writes_but_does_not_read(tmp_path: Path) -> None:
    use, _ = make(tmp_path, StandIn(gen=lambda r: "old"))
    use.run("m", [GEN])
    model = StandIn(gen=counting_gen())
    refresh = Client({"m": model}, CallCache(tmp_path / "cache"), mode="refresh")
    assert refresh.run("m", [GEN])[0]["text"] == "answer 1"
    assert refresh.run("m", [GEN])[0]["text"] == "answer 2"  # does not read its own writes either
    assert refresh.usage.cache_hits == 0 and total_calls(model) == 2
    later_model = StandIn()
    later = Client({"m": later_model}, CallCache(tmp_path / "cache"))
    assert later.run("m", [GEN])[0]["text"] == "answer 2" and total_calls(later_model) == 0


def test_is_cached_follows_the_mode(tmp_path: Path) -> None:
    client, _ = make(tmp_path)
    assert not client.is_cached("m", GEN)
    client.run("m", [GEN])
    assert client.is_cached("m", GEN)
    refresh = Client(client.models, client.cache, mode="refresh")
    assert not refresh.is_cached("m", GEN)


# -- secrets -----------------------------------------------------------------------------------
class KeyedBackend(StandIn):
    """Holds an API key the way a remote backend does (read from the environment)."""

    def __init__(self, env: str, **kwargs: Any):
        super().__init__(**kwargs)
        import os

        self.api_key = os.environ[env]
        self.headers = {"Authorization": f"Bearer {self.api_key}"}

    def identity(self) -> dict[str, Any]:
        return {"backend": "remote", "model": "m", "base_url": "http://127.0.0.1:9/v1"}


def scan(folder: Path, needle: bytes) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_api_key_never_reaches_the_cache_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-dlnflow-test-7f3a9c1e5b2d4f60a8e1c3b5d7f9a2c4"
    monkeypatch.setenv("DLNFLOW_TEST_KEY", secret)
    model = KeyedBackend("DLNFLOW_TEST_KEY", gen=lambda r: f"canary-result {r.prompt}")
    cache = CallCache(tmp_path / "cache")
    client = Client({"remote": model}, cache)
    reqs = [dataclasses.replace(GEN, prompt=f"q{i}", temperature=0.5, seed=i) for i in range(20)]
    reqs += [Request("score", "p", targets=("t",)), Request("classify", "p", targets=("a", "b"))]
    client.run("remote", reqs)
    client.run("remote", reqs)
    assert scan(cache.directory, b"canary-result q7")  # the scan does see what is stored (WAL included)
    assert scan(cache.directory, secret.encode()) == []
    cache.close()  # and after the log is folded into the database
    assert scan(tmp_path / "cache", b"canary-result q7")
    assert scan(tmp_path / "cache", secret.encode()) == []
    assert scan(tmp_path / "cache", secret[3:].encode()) == []


def test_openai_identity_holds_no_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    openai_backend = pytest.importorskip("dlnflow.backends.openai.backend")
    secret = "sk-dlnflow-test-0d9e8f7a6b5c4d3e2f1a"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    backend = openai_backend.OpenAIBackend.from_settings(
        {"backend": "openai", "model": "tiny", "base_url": "http://127.0.0.1:9/v1"}, None)
    try:
        ident = backend.identity()
        assert secret not in repr(ident) and ident["base_url"].startswith("http://127.0.0.1:9")
    finally:
        backend.close()


# -- failures --------------------------------------------------------------------------------------
def test_failed_call_caches_nothing_and_propagates(tmp_path: Path) -> None:
    def boom(r: Request) -> str:
        raise BackendError("server said 500")

    client, model = make(tmp_path, StandIn(gen=boom))
    with pytest.raises(BackendError, match="server said 500"):
        client.run("m", [GEN, dataclasses.replace(GEN, prompt="other")])
    assert client.cache is not None and len(client.cache) == 0
    assert client._inflight == {} and client.usage.backend_calls == 0
    model.gen = lambda r: "fine now"
    assert client.run("m", [GEN])[0]["text"] == "fine now"  # nothing stale left in flight
    assert len(client.cache) == 1


def test_waiting_duplicates_get_the_same_error(tmp_path: Path) -> None:
    error = BackendError("connection reset")
    gate = Gate(fail=error)
    client, _ = make(tmp_path, gate)
    caught: list[BaseException] = []

    def call() -> None:
        try:
            client.run("m", [GEN])
        except BackendError as exc:
            caught.append(exc)

    threads = [threading.Thread(target=call) for _ in range(4)]
    threads[0].start()
    assert gate.started.wait(10)
    for t in threads[1:]:
        t.start()
    wait_until(lambda: client.usage.deduplicated == 3)
    gate.release.set()
    for t in threads:
        t.join(20)
    assert len(caught) == 4 and all(exc is error for exc in caught)
    assert gate.batches == [1] and len(client.cache) == 0  # type: ignore[arg-type]
    assert client._inflight == {} and client._reserved == 0


def test_backend_returning_too_few_results_is_an_error_not_a_hang(tmp_path: Path) -> None:
    class Short(StandIn):
        def run(self, requests: list[Request]) -> list[Result]:
            return super().run(requests)[:-1]

    client, _ = make(tmp_path, Short())
    with pytest.raises(BackendError, match="returned 1 results for 2 requests"):
        client.run("m", [GEN, dataclasses.replace(GEN, prompt="b")])
    assert client._inflight == {} and len(client.cache) == 0  # type: ignore[arg-type]


def test_unserialisable_result_is_an_error_and_stores_nothing(tmp_path: Path) -> None:
    class Odd(StandIn):
        def run(self, requests: list[Request]) -> list[Result]:
            return [{"text": object()} for _ in requests]

    client, _ = make(tmp_path, Odd())
    with pytest.raises(TypeError):
        client.run("m", [GEN])
    assert client._inflight == {} and len(client.cache) == 0  # type: ignore[arg-type]


def test_results_without_token_counts_count_as_zero(tmp_path: Path) -> None:
    class Quiet(StandIn):
        def run(self, requests: list[Request]) -> list[Result]:
            return [{"text": "x", "prompt_tokens": None} for _ in requests]

    client, _ = make(tmp_path, Quiet())
    assert client.run("m", [GEN]) == [{"text": "x", "prompt_tokens": None}]
    assert client.run("m", [GEN]) == [{"text": "x", "prompt_tokens": None}]
    u = client.usage
    assert (u.backend_calls, u.cache_hits, u.prompt_tokens, u.saved_prompt_tokens) == (1, 1, 0, 0)
    assert client._inflight == {}


def test_unknown_model_and_missing_capability(tmp_path: Path) -> None:
    client, _ = make(tmp_path, StandIn(capabilities=frozenset({"generate"})))
    with pytest.raises(ConfigError, match="no model named 'x'"):
        client.run("x", [GEN])
    with pytest.raises(ConfigError, match="cannot 'score'"):
        client.require("m", ["generate", "score"], "DLN-2")
    client.require("m", ["generate"], "DLN-1")
    assert client.can("m", "generate") and not client.can("m", "score")


# -- budget --------------------------------------------------------------------------------------
def reqs_named(*names: str) -> list[Request]:
    return [dataclasses.replace(GEN, prompt=n) for n in names]


def test_budget_stops_before_the_call_that_would_exceed_it(tmp_path: Path) -> None:
    client, model = make(tmp_path, budget=Budget(max_calls=3))
    client.run("m", reqs_named("a", "b"))
    with pytest.raises(BudgetExceeded, match="max_calls=3"):
        client.run("m", reqs_named("c", "d"))
    assert total_calls(model) == 2 and client._inflight == {}
    client.run("m", reqs_named("a", "b", "a"))  # cached and duplicate calls are free
    client.run("m", reqs_named("a", "c"))  # one new call: exactly at the budget
    assert total_calls(model) == 3 and client.usage.backend_calls == 3
    with pytest.raises(BudgetExceeded):
        client.run("m", reqs_named("z"))
    assert total_calls(model) == 3
    # a rerun with a larger budget continues from the cache
    more = Client({"m": model}, client.cache, budget=Budget(max_calls=2))
    more.run("m", reqs_named("a", "b", "c", "d", "z"))
    assert total_calls(model) == 5 and more.usage.cache_hits == 3


def test_budget_counts_calls_in_flight_on_other_threads(tmp_path: Path) -> None:
    gate = Gate()
    client, _ = make(tmp_path, gate, budget=Budget(max_calls=3))
    t = threading.Thread(target=lambda: client.run("m", reqs_named("a", "b")))
    t.start()
    assert gate.started.wait(10)
    with pytest.raises(BudgetExceeded, match="2 spent or in flight"):
        client.run("m", reqs_named("c", "d"))
    gate.release.set()
    t.join(20)
    assert gate.batches == [2] and client.usage.backend_calls == 2


def test_token_budget(tmp_path: Path) -> None:
    client, model = make(tmp_path, budget=Budget(max_tokens=5))
    client.run("m", [Request("generate", "one two three four five six")])  # 6 prompt + 1 completion
    with pytest.raises(BudgetExceeded, match="max_tokens=5"):
        client.run("m", reqs_named("more"))
    client.run("m", [Request("generate", "one two three four five six")])  # cached: fine
    assert total_calls(model) == 1


# -- accounting ------------------------------------------------------------------------------------
def test_accounting_of_calls_hits_and_tokens(tmp_path: Path) -> None:
    seen: list[int] = []
    client, _ = make(tmp_path, StandIn(gen=lambda r: "two words"))
    client.on_progress = lambda u: seen.append(u.requests)
    a, b = Request("generate", "one two three"), Request("score", "x y", targets=("t u v",))
    client.run("m", [a, b, a])
    u = client.usage
    # generate: 3 prompt + 2 completion; score: 2 prompt + 3 target tokens, 0 completion
    assert (u.backend_calls, u.cache_hits, u.deduplicated) == (2, 0, 1)
    assert (u.prompt_tokens, u.completion_tokens) == (3 + 5, 2)
    client.run("m", [a, b])
    assert (u.backend_calls, u.cache_hits) == (2, 2)
    assert (u.saved_prompt_tokens, u.saved_completion_tokens) == (8, 2)
    assert (u.prompt_tokens, u.completion_tokens) == (8, 2)  # nothing more was spent
    assert u.requests == 4 and u.hit_rate == 0.5
    assert u.as_dict()["hit_rate"] == 0.5 and u.as_dict()["backend_calls"] == 2
    assert client.per_model["m"] == u
    assert seen == [2, 4]


def test_accounting_per_model(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "c")
    client = Client({"a": Endpoint("u1"), "b": Endpoint("u2")}, cache)
    client.run("a", [GEN])
    client.run("b", [GEN, dataclasses.replace(GEN, prompt="x")])
    client.run("b", [GEN])
    assert client.per_model["a"] == Usage(backend_calls=1, prompt_tokens=3, completion_tokens=1)
    assert client.per_model["b"].backend_calls == 2 and client.per_model["b"].cache_hits == 1
    assert client.usage.backend_calls == 3 and client.usage.cache_hits == 1
    assert cache.stats()["models"] == {"standin:standin": 3}


# -- the real embedded model ---------------------------------------------------------------------
@pytest.mark.real
def test_real_model_second_run_makes_no_calls(tmp_path: Path, llama: Any) -> None:
    reqs = [Request("generate", "The capital of France is", max_tokens=3),
            Request("classify", "Is a sparrow a bird? Answer:", targets=(" Yes", " No"))]
    client = Client({"local": llama}, CallCache(tmp_path / "cache"))
    first = client.run("local", reqs)
    assert client.usage.backend_calls == 2 and first[0]["text"].strip()
    assert abs(sum(first[1]["probs"]) - 1.0) < 1e-6
    again = Client({"local": llama}, CallCache(tmp_path / "cache"))
    assert again.run("local", reqs) == first
    assert again.usage.backend_calls == 0 and again.usage.cache_hits == 2
    assert again.usage.saved_prompt_tokens == client.usage.prompt_tokens > 0
    ident = client.identity("local")
    assert ident["backend"] == "llamacpp" and len(ident["sha256"]) == 64
