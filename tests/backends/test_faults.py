"""Fault injection: the ``openai`` backend behind a proxy that breaks things (``faultproxy.py``).

Unit level (a scripted fake server upstream, fast): one fault of each kind is retried to the
right answer and counted; a fault that outlasts the retry budget ends in a clear
:class:`~dlnflow.core.errors.BackendError`.

End to end (the real llama.cpp server upstream): a tiny DLN-1 spec trained through the proxy at
a moderate fault rate ends exactly like a clean run (metrics, learned prompts, every candidate,
its score and the choice), with no error stored in the cache and the retries counted in
``--json``; a server that keeps failing stops the run with exit code 1 and a clear message, keeps
what was earned, and the rerun continues from there.

The clean run goes through the proxy too, with faults off, and both runs use its ``isolate``
mode (see ``faultproxy.py``): llama.cpp's server answers depend slightly on the request before,
and retries reorder requests. Measured without it: a heavier faulted run flipped a dev example
whose class probability sat at 0.4986 (0.5005 after a reordering) and drew a different sampled
rewrite, so its metrics and prompts differed from the clean run for reasons of the server's own.

The spec's template carries two fixed examples so that " blue" and " red" are always among the
server's top next tokens: otherwise a class is scored by echoing the prompt, which llama.cpp's
server makes slow (it sorts the vocabulary for every prompt token).

Faults injected per kind are printed (``pytest -s`` or ``-rP`` shows them). The heavier variant
(more faults, more iterations) runs with ``DLNFLOW_SLOW=1``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FAULTS, Event, FaultPlan, FaultProxy
from server import SERVER_MODEL, FakeOpenAI, Reply, default_completion

from dlnflow.backends.openai.backend import _PROBE_TEXT, OpenAIBackend
from dlnflow.core.backend import Request
from dlnflow.core.errors import BackendError
from dlnflow.runtime.cache import CallCache

HEAVY = os.environ.get("DLNFLOW_SLOW") == "1"
TIMEOUT = 20.0  # the client's timeout on the real server: roomy on a busy 2-core machine
RUN_TIMEOUT = 900  # seconds one training process may take before the test gives up on it


# -- unit level: a scripted fake server behind the proxy -----------------------------------------
def fast_backend(base_url: str, **extra: Any) -> OpenAIBackend:
    settings: dict[str, Any] = {"backend": "openai", "model": "fake-model", "base_url": base_url,
                                "backoff_base": 0.01, "backoff_max": 0.05, "timeout": 1.0, "max_retries": 3}
    settings.update(extra)
    return OpenAIBackend.from_settings(settings, None)


def run_one(proxy: FaultProxy, **extra: Any) -> tuple[dict[str, Any], int]:
    """One generate call through ``proxy``: its result and the backend's retry count."""
    b = fast_backend(proxy.base_url, **extra)
    try:
        [got] = b.run([Request("generate", "hello", max_tokens=2)])
        return got, b.retries
    finally:
        b.close()


@pytest.mark.parametrize("kind", FAULTS)
def test_one_fault_of_each_kind_is_retried_to_the_right_answer(kind: str, fake_openai: FakeOpenAI) -> None:
    plan = FaultPlan(rate=1.0, kinds=(kind,), limit=1, slow_seconds=1.5, retry_after=0.05)
    with FaultProxy(fake_openai.base_url, plan) as proxy:
        got, retries = run_one(proxy)
    assert got["text"] == " ok"
    assert proxy.counts == Counter({kind: 1})
    assert retries == 1
    assert [e.fault for e in proxy.events] == [kind, None]


def test_a_rate_limit_waits_as_long_as_retry_after_asks(fake_openai: FakeOpenAI) -> None:
    plan = FaultPlan(rate=1.0, kinds=("rate_limit",), limit=1, retry_after=0.6)
    with FaultProxy(fake_openai.base_url, plan) as proxy:
        got, retries = run_one(proxy)  # its own back-off would wait at most 0.01 s
    first, second = proxy.events
    assert got["text"] == " ok" and retries == 1
    assert second.at - first.at >= 0.55


@pytest.mark.parametrize("kind", FAULTS)
def test_a_fault_past_the_retry_budget_is_a_clear_backend_error(kind: str, fake_openai: FakeOpenAI) -> None:
    plan = FaultPlan(rate=1.0, kinds=(kind,), slow_seconds=1.5, retry_after=0.05)
    with FaultProxy(fake_openai.base_url, plan) as proxy, pytest.raises(BackendError) as info:
        run_one(proxy, max_retries=1)
    message = str(info.value)
    assert proxy.base_url in message and "2 attempts" in message
    assert proxy.counts == Counter({kind: 2})
    assert ": )" not in message  # every cause named in the message says something


def test_a_reset_connection_is_described_in_words(fake_openai: FakeOpenAI) -> None:
    plan = FaultPlan(rate=1.0, kinds=("reset",))
    with FaultProxy(fake_openai.base_url, plan) as proxy, pytest.raises(BackendError) as info:
        run_one(proxy, max_retries=1)
    message = str(info.value)
    assert "is unreachable (" in message
    detail = message.split("is unreachable (", 1)[1].split(") after", 1)[0]
    assert detail.split(":", 1)[1].strip(), message  # a kind and a description, never an empty one


def test_the_proxy_handles_a_bounded_number_of_requests_at_once(fake_openai: FakeOpenAI) -> None:
    fake_openai.respond = lambda path, body: Reply(body=default_completion(body, fake_openai.top), delay=0.3)
    with FaultProxy(fake_openai.base_url, FaultPlan(rate=0.0), max_workers=2) as proxy:
        b = fast_backend(proxy.base_url, concurrency=6, timeout=10.0)
        try:
            got = b.run([Request("generate", f"p{i}", max_tokens=1) for i in range(6)])
        finally:
            b.close()
    assert len(got) == 6 and proxy.forwarded == 6
    assert proxy.max_active == 2


def test_an_isolating_proxy_resets_the_prefix_and_forwards_one_at_a_time(fake_openai: FakeOpenAI) -> None:
    fake_openai.respond = lambda path, body: Reply(body=default_completion(body, fake_openai.top), delay=0.1)
    with FaultProxy(fake_openai.base_url, FaultPlan(rate=0.0), isolate=True) as proxy:
        b = fast_backend(proxy.base_url, concurrency=4, timeout=10.0)
        try:
            b.run([Request("generate", f"p{i}", max_tokens=1) for i in range(4)])
        finally:
            b.close()
    prompts = [s.body["prompt"] for s in fake_openai.seen]  # in arrival order at the server
    assert prompts[0::2] == ["#"] * 4 and sorted(prompts[1::2]) == ["p0", "p1", "p2", "p3"]
    assert proxy.max_active == 4 and proxy.resets_sent == 4  # four waited at once, went one by one


# -- end to end: the real llama.cpp server behind the proxy ---------------------------------------
SPEC = """\
version: 1
name: faults
models:
  remote:
    backend: openai
    base_url: "{base_url}"
    model: {model}
    timeout: {timeout}
    max_retries: {max_retries}
    concurrency: 1
data:
  format: task
  task: {{name: label_mapping, size: 16, seed: 0}}
  split: {{train: 4, dev: 4, test: 4, seed: 1}}
layers:
  - name: answer
    template: |-
      {{{{ prompt }}}}

      Input: dog
      Answer: blue

      Input: apple
      Answer: red

      Input: {{{{ x }}}}
      Answer:
    prompt: "Say blue or red."
    output: {{classes: [blue, red]}}
train:
  method: dln1
  iterations: {iterations}
  batch_size: 4
  prompt_candidates: 3
  rewrite_examples: 2
  rewrite_max_tokens: 24
  validate_every: 1
  seed: 3
"""


@dataclass
class Outcome:
    """What one ``dlnflow --json train`` left behind."""

    payload: dict[str, Any]
    steps: list[dict[str, Any]]
    cache: Path


def write_spec(folder: Path, base_url: str, iterations: int = 1, max_retries: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "faults.yaml"
    text = SPEC.format(base_url=base_url, model=SERVER_MODEL, timeout=TIMEOUT, max_retries=max_retries,
                       iterations=iterations)
    path.write_text(text, encoding="utf-8")
    return path


def train(spec: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DLNFLOW_RUNS_DIR": str(spec.parent / "runs")}
    cmd = [sys.executable, "-m", "dlnflow", "--json", "--cache-dir", str(cache), "train", str(spec)]
    return subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)


def outcome(done: subprocess.CompletedProcess[str], cache: Path) -> Outcome:
    assert done.returncode == 0, done.stdout + done.stderr
    payload = json.loads(done.stdout)
    log = Path(payload["run_dir"]) / "log.jsonl"
    steps = [r for r in map(json.loads, log.read_text(encoding="utf-8").splitlines()) if r["event"] == "step"]
    return Outcome(payload, steps, cache)


def cached_values(cache: Path) -> list[dict[str, Any]]:
    """Every stored value, read straight from the database: each must be raw text holding a JSON object."""
    db = cache / "cache.db"
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT mode, value FROM Cache").fetchall()
    values = []
    for mode, value in rows:
        assert mode == 1 and isinstance(value, str), f"entry stored as mode {mode}, not raw text"
        decoded = json.loads(value)
        assert isinstance(decoded, dict)
        values.append(decoded)
    return values


def assert_only_answers(values: list[dict[str, Any]]) -> None:
    """No error, no half answer: class results sum to one, generations carry text."""
    for v in values:
        assert "error" not in v
        if "probs" in v:
            assert sum(v["probs"]) == pytest.approx(1.0) and len(v["probs"]) == 2
        else:
            assert isinstance(v["text"], str)


def assert_same_training(clean: Outcome, other: Outcome) -> None:
    a, b = clean.payload, other.payload
    assert b["metrics"] == a["metrics"]
    assert b["prompts"] == a["prompts"]
    assert len(other.steps) == len(clean.steps)
    for mine, theirs in zip(other.steps, clean.steps, strict=True):
        for name, layer in theirs["layers"].items():
            got = mine["layers"][name]
            assert [c["prompt"] for c in got["candidates"]] == [c["prompt"] for c in layer["candidates"]]
            assert got["chosen"] == layer["chosen"]
            assert [c["score"] for c in got["candidates"]] == [c["score"] for c in layer["candidates"]]


def is_probe(event: Event) -> bool:
    """The backend's one-off capability probe (sent without retries)."""
    try:
        body = json.loads(event.body)
    except ValueError:
        return False
    return bool(body.get("echo")) and body.get("prompt") == _PROBE_TEXT


def observed_retries(events: list[Event]) -> int:
    """Requests the proxy saw again (same body): the retries, as seen from the wire."""
    bodies = Counter(e.body for e in events if not is_probe(e))
    return sum(n - 1 for n in bodies.values())


_CLEAN: dict[int, Outcome] = {}


@pytest.fixture(scope="module")
def clean_runs(llama_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``clean(iterations)``: the spec trained once per module through the proxy without faults."""

    def clean(iterations: int) -> Outcome:
        if iterations not in _CLEAN:
            folder = tmp_path_factory.mktemp(f"clean{iterations}")
            with FaultProxy(llama_server, FaultPlan(rate=0.0), isolate=True) as proxy:
                spec = write_spec(folder, proxy.base_url, iterations)
                _CLEAN[iterations] = outcome(train(spec, folder / "cache"), folder / "cache")
            assert proxy.injected == 0 and proxy.resets_sent == proxy.isolated > 0
        return _CLEAN[iterations]

    yield clean
    _CLEAN.clear()


def train_through_faults(clean: Outcome, llama_server: str, folder: Path, plan: FaultPlan,
                         iterations: int, max_retries: int = 8) -> None:
    with FaultProxy(llama_server, plan, isolate=True) as proxy:
        spec = write_spec(folder, proxy.base_url, iterations, max_retries)
        faulty = outcome(train(spec, folder / "cache"), folder / "cache")
    on_calls = sum(1 for e in proxy.events if e.fault and not is_probe(e))
    retries = faulty.payload["retries"]
    wire = observed_retries(proxy.events)
    probes = sum(1 for e in proxy.events if is_probe(e))
    print(f"\n{proxy.summary()}; {probes} capability probe(s); retries counted {retries} "
          f"(seen on the wire {wire}); backend calls {faulty.payload['backend_calls']}; "
          f"metrics {faulty.payload['metrics']}")
    assert set(proxy.counts) == set(FAULTS), f"not every fault kind was injected: {proxy.summary()}"
    assert_same_training(clean, faulty)
    assert faulty.payload["backend_calls"] == clean.payload["backend_calls"]
    values = cached_values(faulty.cache)
    assert_only_answers(values)
    assert len(values) == len(cached_values(clean.cache)) == faulty.payload["backend_calls"]
    assert retries == wire >= on_calls > 0
    for i, e in enumerate(proxy.events):  # every 429 was waited out as long as it asked
        if e.fault == "rate_limit" and not is_probe(e):
            again = next(later for later in proxy.events[i + 1:] if later.body == e.body)
            assert again.at - e.at >= plan.retry_after - 0.05
    with CallCache(faulty.cache) as store:
        assert store.verify() == []


@pytest.mark.server
@pytest.mark.real
def test_training_through_faults_ends_like_a_clean_run(clean_runs: Any, llama_server: str,
                                                        tmp_path: Path) -> None:
    # seed 2 at rate 0.25: the first 30 requests draw one fault of each kind, the next 40 four more
    plan = FaultPlan(rate=0.25, seed=2, retry_after=0.7, slow_seconds=TIMEOUT + 1)
    train_through_faults(clean_runs(1), llama_server, tmp_path, plan, iterations=1)


@pytest.mark.server
@pytest.mark.real
@pytest.mark.slow
@pytest.mark.skipif(not HEAVY, reason="heavier variant; set DLNFLOW_SLOW=1")
@pytest.mark.parametrize("seed", [11, 12])
def test_heavier_faults_over_more_iterations(seed: int, clean_runs: Any, llama_server: str,
                                             tmp_path: Path) -> None:
    plan = FaultPlan(rate=0.5, seed=seed, retry_after=0.7, slow_seconds=TIMEOUT + 1)
    # at this rate a request now and then draws nine faults in a row: a larger retry budget
    train_through_faults(clean_runs(2), llama_server, tmp_path, plan, iterations=2, max_retries=14)


@pytest.mark.server
@pytest.mark.real
def test_a_fault_past_the_retry_budget_stops_the_run_and_keeps_what_was_earned(
        clean_runs: Any, llama_server: str, tmp_path: Path) -> None:
    clean = clean_runs(1)
    plan = FaultPlan(rate=1.0, kinds=("server_error",), clean_first=12)
    cache = tmp_path / "cache"
    with FaultProxy(llama_server, plan, isolate=True) as proxy:
        spec = write_spec(tmp_path, proxy.base_url, max_retries=2)
        done = train(spec, cache)
        failed_at = proxy.summary()
        assert done.returncode == 1, done.stdout + done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        error = json.loads(done.stdout)
        assert error["error"].endswith("BackendError") and error["exit_code"] == 1
        assert f"request to {proxy.base_url} (model '{SERVER_MODEL}') failed with HTTP 500 after 3 attempts" \
            in error["message"]
        assert "try again later" in error["message"]
        earned = cached_values(cache)
        assert_only_answers(earned)
        assert 0 < len(earned) <= proxy.forwarded
        with CallCache(cache) as store:
            assert store.verify() == []
        proxy.set_plan(FaultPlan(rate=0.0))  # the server recovers: training continues from the cache
        resumed = outcome(train(write_spec(tmp_path, proxy.base_url), cache), cache)
    print(f"\nafter the failed run {len(earned)} entries; {failed_at}; resumed with "
          f"{resumed.payload['cache_hits']} cache hits and {resumed.payload['backend_calls']} new calls")
    # every stored answer is reused once more than in the clean run, every other call is paid again
    assert resumed.payload["cache_hits"] == clean.payload["cache_hits"] + len(earned)
    assert resumed.payload["backend_calls"] + len(earned) == clean.payload["backend_calls"]
    assert_same_training(clean, resumed)

