"""Tests of the content-addressed call cache: keys, storage, permissions, integrity, processes."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import multiprocessing
import os
import random
import stat
from pathlib import Path
from typing import Any

import diskcache
import pytest

from dlnflow.core.backend import Request
from dlnflow.runtime.cache import (
    DB_NAME,
    FORMAT_VERSION,
    CallCache,
    call_key,
    canonical_json,
    default_cache_dir,
    key_from_identity_json,
    make_private_dir,
    request_json,
)

IDENT = {"backend": "llamacpp", "model": "gemma-3-270m-it", "base_url": None, "sha256": "0" * 63 + "1"}


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    c = CallCache(tmp_path / "cache")
    yield c
    c.close()


# -- keys ----------------------------------------------------------------------------------
def test_golden_key_pins_the_format() -> None:
    req = Request("generate", "Q: 2+2?\nA:", max_tokens=16, temperature=0.7, seed=42, sample=3, stop=("\n",))
    text = (
        '{"model":{"backend":"llamacpp","base_url":null,"model":"gemma-3-270m-it","sha256":"'
        + "0" * 63 + '1"},"request":{"max_tokens":16,"op":"generate","prompt":"Q: 2+2?\\nA:","sample":3,'
        '"seed":42,"stop":["\\n"],"targets":[],"temperature":0.7,"top_p":1.0},"v":2}'
    )
    golden = "11b12cf1f28cd6c7249b6f7c6dacb8e1fc9086aacef1dde83419133821fd1e21"
    assert hashlib.sha256(text.encode()).hexdigest() == golden
    assert call_key(IDENT, req) == golden
    ident = {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:8000/v1"}
    classify = Request("classify", "Is it a bird? ", targets=(" Yes", " No"))
    assert call_key(ident, classify) == "289198cecc887b39264f2caaa31ff2d496862bb7e9ac9814ef39d9e74adcace6"


def test_key_is_sha256_of_the_documented_canonical_body() -> None:
    req = Request("score", "Context: é \"quoted\"\tand\n", targets=(" target ✓",))
    body = {"v": FORMAT_VERSION, "model": IDENT, "request": req.canonical()}
    expected = hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()
    assert call_key(IDENT, req) == expected
    assert key_from_identity_json(canonical_json(IDENT), req) == expected


def _random_request(rng: random.Random) -> Request:
    alphabet = ["a", "Z", " ", "\n", "\t", '"', "\\", "é", "✓", "\x01", "\u2028", "😀", "/", "<"]
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
    op = rng.choice(["generate", "score", "classify"])
    targets: tuple[str, ...] = ()
    if op == "score":
        targets = (text[::-1] or "x",)
    elif op == "classify":
        targets = tuple(rng.choice(alphabet) * rng.randint(1, 3) for _ in range(rng.randint(2, 4)))
    return Request(
        op, text, targets=targets,
        max_tokens=rng.choice([1, 16, 64, 4096]),
        temperature=rng.choice([0.0, 0, 0.7, 1, 1.5, 1e-9]),
        top_p=rng.choice([1.0, 0.95, 1]),
        stop=tuple(rng.choice(alphabet) for _ in range(rng.randint(0, 2))),
        seed=rng.choice([None, 0, 42, 2**40]),
        sample=rng.randint(0, 9),
    )


def test_fast_request_json_equals_canonical_json_of_canonical() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        req = _random_request(rng)
        assert request_json(req) == canonical_json(req.canonical()), req


def test_request_fields_are_the_ones_the_key_knows() -> None:
    # a new Request field must be added to request_json (and here), or it would not reach the key
    names = {f.name for f in dataclasses.fields(Request)}
    assert names == {"op", "prompt", "targets", "max_tokens", "temperature", "top_p", "stop", "seed",
                     "sample", "meta"}


def _variants() -> dict[str, tuple[dict[str, Any], Request]]:
    base = Request("generate", "Say hi:", max_tokens=8, temperature=0.7, seed=1, sample=0)
    other_ident = {**IDENT, "base_url": "http://127.0.0.1:8001/v1"}
    return {
        "base": (IDENT, base),
        "endpoint": ({**IDENT, "base_url": "http://127.0.0.1:8000/v1"}, base),
        "endpoint2": (other_ident, base),
        "model file": ({**IDENT, "sha256": "f" * 64}, base),
        "model name": ({**IDENT, "model": "other"}, base),
        "backend": ({**IDENT, "backend": "openai"}, base),
        "temperature": (IDENT, dataclasses.replace(base, temperature=0.8)),
        "seed": (IDENT, dataclasses.replace(base, seed=2)),
        "sample": (IDENT, dataclasses.replace(base, sample=1)),
        "max_tokens": (IDENT, dataclasses.replace(base, max_tokens=9)),
        "top_p": (IDENT, dataclasses.replace(base, top_p=0.9)),
        "stop": (IDENT, dataclasses.replace(base, stop=("\n",))),
        "prompt": (IDENT, dataclasses.replace(base, prompt="Say hi: ")),
        "op score": (IDENT, Request("score", "Say hi:", targets=(" hi",))),
        "op classify": (IDENT, Request("classify", "Say hi:", targets=(" hi", " ho"))),
        "target": (IDENT, Request("score", "Say hi:", targets=(" ho",))),
        "verbalizers": (IDENT, Request("classify", "Say hi:", targets=(" hi", " hu"))),
        "verbalizer order": (IDENT, Request("classify", "Say hi:", targets=(" ho", " hi"))),
    }


def test_every_answer_changing_field_changes_the_key() -> None:
    keys = {name: call_key(ident, req) for name, (ident, req) in _variants().items()}
    assert len(set(keys.values())) == len(keys), keys


def test_greedy_calls_ignore_seed_and_sample() -> None:
    greedy = Request("generate", "p", temperature=0.0)
    assert call_key(IDENT, greedy) == call_key(IDENT, dataclasses.replace(greedy, seed=5, sample=3))
    score = Request("score", "p", targets=("t",))
    assert call_key(IDENT, score) == call_key(IDENT, dataclasses.replace(score, seed=5, sample=3))
    # ...while a sampled call keeps them apart
    hot = dataclasses.replace(greedy, temperature=0.5, seed=1)
    assert call_key(IDENT, hot) != call_key(IDENT, dataclasses.replace(hot, sample=1))


def test_meta_is_not_part_of_the_key() -> None:
    a = Request("generate", "p", meta={"layer": "think"})
    b = Request("generate", "p", meta={"layer": "answer"})
    assert call_key(IDENT, a) == call_key(IDENT, b)


def test_identity_key_order_does_not_matter() -> None:
    flipped = dict(reversed(list(IDENT.items())))
    req = Request("generate", "p")
    assert call_key(flipped, req) == call_key(IDENT, req)


# -- storing and reading -------------------------------------------------------------------
def test_roundtrip_and_fresh_objects(tmp_path: Path) -> None:
    key = call_key(IDENT, Request("generate", "p"))
    result = {"text": "hello", "logprobs": [-0.5, -1.25], "prompt_tokens": 3, "completion_tokens": 2}
    with CallCache(tmp_path) as c:
        c.put(key, result, model="llamacpp:gemma")
        result["logprobs"].append(99.0)  # the caller's object is not the stored one
        got = c.get(key)
        assert got == {"text": "hello", "logprobs": [-0.5, -1.25], "prompt_tokens": 3, "completion_tokens": 2}
        got["logprobs"].append(1.0)
        got["text"] = "changed"
        assert c.get(key) == {"text": "hello", "logprobs": [-0.5, -1.25], "prompt_tokens": 3,
                              "completion_tokens": 2}
        assert key in c and len(c) == 1
    with CallCache(tmp_path) as reopened:  # from disk, in a new instance
        first = reopened.get(key)
        assert first == {"text": "hello", "logprobs": [-0.5, -1.25], "prompt_tokens": 3, "completion_tokens": 2}
        first["logprobs"].clear()
        assert reopened.get(key)["logprobs"] == [-0.5, -1.25]  # type: ignore[index]


def test_nested_tuples_and_special_floats_survive_as_json(store: CallCache) -> None:
    key = call_key(IDENT, Request("classify", "p", targets=("a", "b")))
    store.put(key, {"probs": (0.25, 0.75), "logprobs": [-math.inf, -0.1], "extra": {"nested": [1, [2]]},
                    "nan": math.nan})
    got = store.get(key)
    assert got is not None
    assert got["probs"] == [0.25, 0.75] and isinstance(got["probs"], list)  # JSON: tuples come back as lists
    assert got["logprobs"][0] == -math.inf and got["extra"] == {"nested": [1, [2]]}
    assert math.isnan(got["nan"])
    got["extra"]["nested"].append(3)
    assert store.get(key)["extra"] == {"nested": [1, [2]]}  # type: ignore[index]


def test_unserialisable_values_store_nothing(store: CallCache) -> None:
    k1, k2 = (call_key(IDENT, Request("generate", p)) for p in ("a", "b"))
    with pytest.raises(TypeError):
        store.put(k1, {"text": object()})
    with pytest.raises(TypeError):
        store.put_many([(k1, {"text": "fine"}), (k2, {"text": {1, 2}})])
    assert len(store) == 0 and store.get(k1) is None


def test_put_many_stores_all(store: CallCache) -> None:
    items = [(call_key(IDENT, Request("generate", str(i))), {"text": str(i)}) for i in range(50)]
    store.put_many(items, model="m:a")
    assert len(store) == 50
    assert [store.get(k) for k, _ in items] == [{"text": str(i)} for i in range(50)]


def test_memory_table_is_bounded_and_disk_still_answers(tmp_path: Path) -> None:
    keys = [call_key(IDENT, Request("generate", str(i))) for i in range(6)]
    size = len('{"text":"0"}')
    with CallCache(tmp_path, memory_bytes=3 * size) as c:
        for i, k in enumerate(keys):
            c.put(k, {"text": str(i)})
        assert list(c._memory) == keys[3:] and c._memory_size == 3 * size
        c.put(keys[5], {"text": "5"})  # rewriting a key does not count it twice
        assert c._memory_size == 3 * size
        assert [c.get(k) for k in keys] == [{"text": str(i)} for i in range(6)]
        assert len(c._memory) == 3 and c._memory_size == 3 * size
        c.put(keys[5], {"text": "far too long to fit in the whole table"})  # replaces, never leaves the old copy behind
        assert keys[5] not in c._memory and c.get(keys[5]) == {"text": "far too long to fit in the whole table"}
        c.clear()
        assert c._memory == {} and c._memory_size == 0
    with CallCache(tmp_path, memory_bytes=0) as off:
        off.put(keys[0], {"text": "0"})
        assert off._memory == {} and off.get(keys[0]) == {"text": "0"}


def test_undecodable_entry_is_a_miss_and_verify_names_it(tmp_path: Path) -> None:
    key = call_key(IDENT, Request("generate", "p"))
    with CallCache(tmp_path) as c:
        c.put(call_key(IDENT, Request("generate", "fine")), {"text": "ok"})
    with diskcache.Cache(str(tmp_path)) as raw:
        raw.set(key, "{not json")
        raw.set("not-a-hash", '{"text": "x"}')
    with CallCache(tmp_path) as c:
        assert c.get(key) is None
        problems = c.verify()
        assert any(key in p and "not a JSON object" in p for p in problems), problems
        assert any("not-a-hash" in p for p in problems), problems
        assert len(problems) == 2


def test_stats_counts_per_model(store: CallCache) -> None:
    for i in range(3):
        store.put(call_key(IDENT, Request("generate", str(i))), {"text": "x"}, model="llamacpp:gemma")
    store.put(call_key(IDENT, Request("generate", "z")), {"text": "x"}, model="openai:gpt")
    s = store.stats()
    assert s["entries"] == 4
    assert s["models"] == {"llamacpp:gemma": 3, "openai:gpt": 1}
    assert s["bytes"] > 0
    assert Path(s["path"]).is_absolute() and Path(s["path"]) == store.directory.absolute()


def test_clear_empties_disk_and_memory(store: CallCache) -> None:
    key = call_key(IDENT, Request("generate", "p"))
    store.put(key, {"text": "x"})
    assert store.clear() == 1
    assert store.get(key) is None and len(store) == 0 and key not in store


def test_verify_clean_on_fresh_and_used_store(store: CallCache) -> None:
    assert store.verify() == []
    store.put(call_key(IDENT, Request("generate", "p")), {"text": "x" * 100_000})  # large value
    assert store.verify() == []
    assert sorted(p.name for p in store.directory.iterdir() if not p.name.startswith(DB_NAME)) == []


# -- where and how it lives on disk ------------------------------------------------------------
def test_folder_and_files_are_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        folder = tmp_path / "deep" / "cache"
        with CallCache(folder) as c:
            c.put(call_key(IDENT, Request("generate", "p")), {"text": "x" * 50_000})
            assert c.get(call_key(IDENT, Request("generate", "p"))) is not None
            assert mode_of(folder) == 0o700
            files = list(folder.rglob("*"))
            names = {p.name for p in files}
            assert DB_NAME in names and DB_NAME + "-wal" in names  # checked while the store is open
            for p in files:
                assert p.is_file() and mode_of(p) == 0o600, (p, oct(mode_of(p)))
    finally:
        os.umask(old)


def test_opening_tightens_a_loose_folder_and_verify_reports_loose_files(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    with CallCache(folder) as c:
        assert mode_of(folder) == 0o700
        os.chmod(folder / DB_NAME, 0o644)
        problems = c.verify()
        assert len(problems) == 1 and "accessible to other users" in problems[0] and DB_NAME in problems[0]


def test_a_placeholder_file_in_the_folder_is_not_a_problem(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / ".gitkeep").touch(mode=0o644)  # the project's cache/ folder ships one
    with CallCache(folder) as c:
        c.put(call_key(IDENT, Request("generate", "p")), {"text": "x"})
        assert c.verify() == []
        (folder / "notes.txt").write_text("something else")
        problems = c.verify()
        assert len(problems) == 2 and all("notes.txt" in p for p in problems), problems


def test_run_directories_are_owner_only_too(tmp_path: Path) -> None:
    from dlnflow.training.runs import RunLog

    old = os.umask(0o022)
    try:
        folder = tmp_path / "runs" / "demo" / "seed1-abcdef12"
        log = RunLog(folder)
        log.write({"iteration": 0})
        assert mode_of(folder / "log.jsonl.partial") == 0o600
        log.finish({"ok": True})
    finally:
        os.umask(old)
    assert mode_of(folder) == 0o700
    assert {p.name: mode_of(p) for p in folder.iterdir()} == {"log.jsonl": 0o600, "summary.json": 0o600}


def test_make_private_dir(tmp_path: Path) -> None:
    made = make_private_dir(tmp_path / "runs" / "x")
    assert made.is_dir() and mode_of(made) == 0o700


def test_default_dir_env_and_project_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "proj"
    (project / "sub" / "deeper").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname='x'\n")
    monkeypatch.delenv("DLNFLOW_CACHE_DIR", raising=False)
    assert default_cache_dir(project / "sub" / "deeper") == project.resolve() / "cache"
    monkeypatch.setenv("DLNFLOW_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert default_cache_dir(project) == tmp_path / "elsewhere"


# -- several processes on one folder ---------------------------------------------------------
PER_PROCESS = 200
STRIDE = 100  # process p writes keys [p*STRIDE, p*STRIDE + PER_PROCESS): neighbours overlap by half


def _value(i: int) -> dict[str, Any]:
    return {"text": f"answer {i} ✓", "logprobs": [-i / 7, -1.0 / (i + 1)], "prompt_tokens": i,
            "completion_tokens": 2}


def _stress_worker(args: tuple[str, int]) -> list[str]:
    """One process: write its range (singly and in batches), read neighbours' keys meanwhile."""
    folder, p = args
    rng = random.Random(p)
    errors: list[str] = []
    with CallCache(folder, memory_bytes=0) as c:  # memory off: every read goes to the database
        mine = list(range(p * STRIDE, p * STRIDE + PER_PROCESS))
        rng.shuffle(mine)
        for n, i in enumerate(mine):
            key = call_key(IDENT, Request("generate", f"prompt {i}"))
            if n % 3 == 0:
                c.put_many([(key, _value(i))], model=f"proc:{p}")
            else:
                c.put(key, _value(i), model=f"proc:{p}")
            j = rng.randrange(0, 3 * STRIDE + PER_PROCESS)
            got = c.get(call_key(IDENT, Request("generate", f"prompt {j}")))
            if got is not None and got != _value(j):
                errors.append(f"process {p}: key {j} read {got!r}")
        for i in mine:
            got = c.get(call_key(IDENT, Request("generate", f"prompt {i}")))
            if got != _value(i):
                errors.append(f"process {p}: own key {i} read {got!r}")
    return errors


def test_four_processes_share_one_folder(tmp_path: Path) -> None:
    folder = str(tmp_path / "shared")
    CallCache(folder).close()
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        outcome = pool.map_async(_stress_worker, [(folder, p) for p in range(4)]).get(timeout=120)
    assert [e for errs in outcome for e in errs] == []
    expected = {i for p in range(4) for i in range(p * STRIDE, p * STRIDE + PER_PROCESS)}
    assert len(expected) == 3 * STRIDE + PER_PROCESS == 500
    with CallCache(folder) as c:
        assert len(c) == len(expected)
        assert c.verify() == []
        for i in sorted(expected):
            assert c.get(call_key(IDENT, Request("generate", f"prompt {i}"))) == _value(i)
        assert sum(c.stats()["models"].values()) == len(expected)
