"""The shared cache tier (``file://`` objects and a real ``redis-server``), push/pull and their CLI.

Fast: the stand-in model answers; Redis tests start a real ``redis-server`` on 127.0.0.1.
The end-to-end runs on the real embedded model are in ``test_scale_out.py``.
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from helpers import write_spec
from redis_server import PASSWORD, RedisServer
from server import free_port
from standin import StandIn

from dlnflow.core.backend import Request
from dlnflow.runtime.cache import CallCache
from dlnflow.runtime.remote import RemoteCacheWarning, decode_object, open_store, open_tier, redact
from dlnflow.cli import cli
from dlnflow.runtime.client import Client

REQUESTS = [Request("generate", f"question {i}") for i in range(6)]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def client_on(folder: Path, url: str, model: StandIn | None = None) -> Client:
    return Client({"m": model or StandIn()}, CallCache(folder, remote=open_tier(url)))


def plant(url: str, key: str, raw: bytes) -> None:
    """Write ``raw`` under ``key`` behind dlnflow's back, as a stranger sharing the remote could."""
    store = open_store(url)
    if url.startswith("file://"):
        path = store.path(key)  # type: ignore[attr-defined]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(raw)
    else:
        store._r.set("dlnflow:v2:" + key, raw)  # type: ignore[attr-defined]
    store.close()


def remote_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "file":
        return f"file://{tmp_path / 'remote'}"
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


KINDS = ["file", pytest.param("redis", marks=pytest.mark.redis)]


# -- the tier ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_second_machine_reads_what_the_first_paid_for(kind: str, tmp_path: Path,
                                                      request: pytest.FixtureRequest) -> None:
    url = remote_url(kind, tmp_path, request)
    first, second = StandIn(), StandIn()
    c1 = client_on(tmp_path / "a", url, first)
    answers = c1.run("m", REQUESTS)
    assert sum(first.calls.values()) == len(REQUESTS)
    c2 = client_on(tmp_path / "b", url, second)
    assert c2.run("m", REQUESTS) == answers
    assert sum(second.calls.values()) == 0 and c2.usage.cache_hits == len(REQUESTS)
    assert c2.cache is not None and len(c2.cache) == len(REQUESTS)  # hits were copied into the local tier
    assert c2.cache.remote is not None and c2.cache.remote.counts["hits"] == len(REQUESTS)
    store = open_store(url)
    found = store.get_many([c1.key("m", r) for r in REQUESTS])
    assert [decode_object(found[c1.key("m", r)]) for r in REQUESTS] == [(a, "standin:standin") for a in answers]
    store.close()
    for c in (c1, c2):
        assert c.cache is not None
        c.cache.close()


def test_file_objects_are_content_addressed_json(tmp_path: Path) -> None:
    c = client_on(tmp_path / "a", f"file://{tmp_path / 'remote'}")
    [answer] = c.run("m", REQUESTS[:1])
    key = c.key("m", REQUESTS[0])
    obj = tmp_path / "remote" / key[:2] / key[2:4] / f"{key}.json"
    assert json.loads(obj.read_text()) == {"model": "standin:standin", "result": answer}
    assert [p.name for p in (tmp_path / "remote").rglob("*") if p.is_file()] == [obj.name]  # no temp files left


class Killed(BaseException):
    """Stands for SIGKILL between two writes (a BaseException, so no handler turns it into a warning)."""


@pytest.mark.parametrize("many", [False, True])
def test_a_process_killed_between_the_two_writes_leaves_the_call_on_the_remote(
        many: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker killed after one tier's write is retried by a neighbour reading the same local tier:
    were the local write first, the neighbour would take it as a hit and never upload it."""
    url = f"file://{tmp_path / 'remote'}"
    cache = CallCache(tmp_path / "local", remote=open_tier(url))

    def die(*args: object, **kwargs: object) -> None:
        raise Killed

    monkeypatch.setattr(cache._dc, "set", die)  # the local write
    with pytest.raises(Killed):
        if many:
            cache.put_many([("a" * 64, {"text": "x"})], model="m")
        else:
            cache.put("a" * 64, {"text": "x"}, model="m")
    monkeypatch.undo()
    assert "a" * 64 not in cache
    store = open_store(url)
    assert decode_object(store.get_many(["a" * 64])["a" * 64]) == ({"text": "x"}, "m")
    store.close()
    cache.close()


@pytest.mark.parametrize("kind", KINDS)
def test_planted_values_are_misses_with_one_warning_and_get_replaced(kind: str, tmp_path: Path,
                                                                     request: pytest.FixtureRequest) -> None:
    url = remote_url(kind, tmp_path, request)
    model = StandIn()
    client = client_on(tmp_path / "a", url, model)
    keys = [client.key("m", r) for r in REQUESTS[:3]]
    plant(url, keys[0], pickle.dumps({"text": "from a pickle"}))
    plant(url, keys[1], b"[1, 2, 3]")
    plant(url, keys[2], b'{"model": "x", "result": "not an object"}')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answers = client.run("m", REQUESTS[:3])
    assert sum(model.calls.values()) == 3  # all three were misses
    remote_warnings = [w for w in caught if issubclass(w.category, RemoteCacheWarning)]
    assert len(remote_warnings) == 1 and "not a dlnflow cache object" in str(remote_warnings[0].message)
    store = open_store(url)
    stored = store.get_many(keys)
    assert [decode_object(stored[k]) for k in keys] == [(a, "standin:standin") for a in answers]


def test_remote_down_warns_once_and_the_run_goes_on(tmp_path: Path) -> None:
    pytest.importorskip("redis")
    url = f"redis://someone:{PASSWORD}@127.0.0.1:{free_port()}/0"  # nothing listens there
    model = StandIn()
    client = client_on(tmp_path / "a", url, model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(3):
            client.run("m", [Request("generate", f"q{i}")])
    messages = [str(w.message) for w in caught if issubclass(w.category, RemoteCacheWarning)]
    assert len(messages) == 1 and "continuing with the local cache only" in messages[0]
    assert PASSWORD not in messages[0] and "redis://***@127.0.0.1" in messages[0]
    assert sum(model.calls.values()) == 3 and client.cache is not None and len(client.cache) == 3


def test_redact_hides_passwords_and_bare_tokens() -> None:
    assert redact("redis://:tok3n@h:1/0") == "redis://***@h:1/0"
    assert redact("rediss://u:p%40ss@h:6380/2") == "rediss://***@h:6380/2"
    assert redact("redis://onlytoken@h/0") == "redis://***@h/0"


# -- the CLI -------------------------------------------------------------------------------------
@pytest.mark.parametrize("url, hint", [
    ("ftp://host/x", "unknown scheme 'ftp'"),
    ("file://server/share", "three slashes"),
    ("file:///", "name a folder"),
])
def test_bad_remote_urls_exit_2(tmp_path: Path, url: str, hint: str) -> None:
    res = invoke("--cache-dir", str(tmp_path / "c"), "--cache-remote", url, "cache", "push")
    assert res.exit_code == 2 and hint in res.stderr and "Traceback" not in res.output


def test_train_with_an_unreachable_remote_warns_once_and_leaks_no_password(
        standin: StandIn, tmp_path: Path) -> None:
    pytest.importorskip("redis")
    spec = write_spec(tmp_path)
    url = f"redis://team:{PASSWORD}@127.0.0.1:{free_port()}/0"
    res = invoke("--json", "--cache-remote", url, "train", str(spec))
    assert res.exit_code == 0, res.output
    warnings_shown = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings_shown) == 1 and "redis://***@" in warnings_shown[0]
    assert json.loads(res.stdout)["backend_calls"] > 0
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]
    assert leaks == [] and PASSWORD not in res.output


def test_push_and_pull_send_only_missing_objects(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'remote'}"
    c = Client({"m": StandIn()}, CallCache(tmp_path / "mine"))
    c.run("m", REQUESTS)
    assert c.cache is not None
    c.cache.close()
    res = invoke("--json", "--cache-dir", str(tmp_path / "mine"), "cache", "push", url)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["uploaded"] == 6
    res = invoke("--json", "--cache-dir", str(tmp_path / "mine"), "cache", "push", url)
    out = json.loads(res.stdout)
    assert (out["uploaded"], out["already_on_remote"], out["local_entries"]) == (0, 6, 6)
    plant(url, "f" * 64, b"\x80\x04not json")  # a planted object is skipped and counted
    res = invoke("--json", "--cache-dir", str(tmp_path / "theirs"), "cache", "pull", url)
    out = json.loads(res.stdout)
    assert (out["downloaded"], out["invalid"], out["remote_entries"]) == (6, 1, 7)
    res = invoke("--json", "--cache-dir", str(tmp_path / "theirs"), "cache", "pull", url)
    assert json.loads(res.stdout)["downloaded"] == 0
    res = invoke("--json", "--cache-dir", str(tmp_path / "theirs"), "--cache-remote", url, "cache", "stats")
    stats = json.loads(res.stdout)
    assert stats["entries"] == 6 and stats["models"] == {"standin:standin": 6}
    assert stats["remote"]["entries"] == 7 and stats["remote"]["url"] == url


@pytest.mark.redis
def test_stats_and_push_on_redis_never_show_the_password(redis_server: RedisServer, tmp_path: Path) -> None:
    c = Client({"m": StandIn()}, CallCache(tmp_path / "mine"))
    c.run("m", REQUESTS)
    assert c.cache is not None
    c.cache.close()
    outputs: list[str] = []
    for args in (("cache", "push", redis_server.url), ("cache", "stats")):
        for head in ((), ("--json",)):
            res = invoke(*head, "--cache-dir", str(tmp_path / "mine"), "--cache-remote", redis_server.url, *args)
            assert res.exit_code == 0, res.output
            outputs.append(res.output)
    assert all(PASSWORD not in text for text in outputs)
    assert json.loads(outputs[-1])["remote"]["entries"] == 6



def test_push_to_a_remote_that_is_down_exits_1_without_the_password(tmp_path: Path) -> None:
    pytest.importorskip("redis")
    c = Client({"m": StandIn()}, CallCache(tmp_path / "mine"))
    c.run("m", REQUESTS[:2])
    assert c.cache is not None
    c.cache.close()
    url = f"redis://team:{PASSWORD}@127.0.0.1:{free_port()}/0"
    for head in ((), ("--json",)):
        res = invoke(*head, "--cache-dir", str(tmp_path / "mine"), "cache", "push", url)
        assert res.exit_code == 1 and "Traceback" not in res.output
        assert "could not write to the shared cache redis://***@127.0.0.1" in res.output
        assert PASSWORD not in res.output
