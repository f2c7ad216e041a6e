"""Reliability and security, round 2: the cases that need a server, a signal or a second spec.

- whatever a lock file says, no request carrying the API key reaches a host the spec did not name;
- a batch in which one call fails keeps the others: the rerun pays only for the failed call;
- Ctrl-C during a batch keeps the calls that finished and exits 130 with one line;
- two specs with one ``name`` never share a run folder;
- ``--file -`` with standard input closed, and a read-only spec folder at the end of training.

Servers are :class:`server.FakeOpenAI` on 127.0.0.1; the CLI runs in-process through click's
CliRunner, except the Ctrl-C and closed-stdin cases, which need a real process.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import colour_rules, write_spec
from server import FakeOpenAI, Reply, default_completion
from standin import StandIn

import dlnflow
from dlnflow.runtime.cache import CallCache
from dlnflow.cli import cli
from dlnflow.cli.render import INTERRUPTED

KEY = "sk-test-fake-key-0123456789"

API_SPEC = """\
version: 1
name: rel
models:
  api: {{backend: openai, model: m, base_url: '{url}', max_retries: 0, concurrency: 32}}
data:
  format: task
  task: {{name: label_mapping, size: 12, seed: 0}}
  split: {{train: 4, dev: 4, test: 4, seed: 1}}
layers:
  - name: answer
    prompt: "Say something."
    generate: {{max_tokens: 4}}
"""


@pytest.fixture()
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DLNFLOW_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return tmp_path


def install_standin(monkeypatch: pytest.MonkeyPatch) -> None:
    model = colour_rules(StandIn())
    monkeypatch.setattr("dlnflow.training.network.make_backend", lambda settings, base: model)
    monkeypatch.setattr("dlnflow.planning.sweep.light_backend", lambda settings, base: model)


def lock_text(overrides: dict[str, Any] | None, models: str = "{}") -> str:
    sweep = "" if overrides is None else f"sweep: {{best: {{run: r, seed: 1, overrides: {json.dumps(overrides)}}}}}\n"
    return (f"schema: 1\nlayers:\n  answer: {{prompt: Answer briefly.}}\nmodels: {models}\n"
            f"data: {{sha256: x}}\ntrain: {{}}\n{sweep}")


# -- item 1: a lock file cannot send the key elsewhere -----------------------------------------------
def test_no_request_with_the_key_reaches_a_host_the_spec_did_not_name(isolated: Path) -> None:
    named, other = FakeOpenAI(), FakeOpenAI()
    try:
        spec = isolated / "s.yaml"
        spec.write_text(API_SPEC.format(url=named.base_url))
        attempts = [
            lock_text({"models.api.base_url": other.base_url}),
            lock_text({"models.api.backend": "openai", "models.api.base_url": other.base_url,
                       "models.api.api_key_env": "OPENAI_API_KEY", "layers.answer.generate.max_tokens": 3}),
            lock_text({"layers.answer.model": "evil", "models.evil.base_url": other.base_url}),
            lock_text({"models.api.extra_body": {"base_url": other.base_url}}),
            lock_text(None, models=f"{{api: {{backend: openai, base_url: '{other.base_url}'}}}}"),
        ]
        for text in attempts:
            (isolated / "s.lock.yaml").write_text(text)
            for argv in (["run", str(spec), "--input", "sparrow"], ["eval", str(spec), "--split", "test"],
                         ["--json", "run", str(spec), "--input", "mango"]):
                result = CliRunner().invoke(cli, argv)
                assert result.exit_code == 0, result.output
                assert KEY not in result.output
            with dlnflow.load(spec) as net:
                net.use_lock()
                net("kiwi")
        assert other.seen == [], "a request went to a host only the lock named"
        assert named.seen and all(s.headers.get("authorization") == f"Bearer {KEY}" for s in named.seen)
    finally:
        named.close()
        other.close()


def test_status_names_the_refused_lock_settings(isolated: Path) -> None:
    spec = isolated / "s.yaml"
    spec.write_text(API_SPEC.format(url="http://127.0.0.1:9/v1"))
    (isolated / "s.lock.yaml").write_text(lock_text({"models.api.base_url": "http://127.0.0.1:8/v1"}))
    result = CliRunner().invoke(cli, ["status", "--strict", str(spec)])
    assert result.exit_code == 2
    assert "models.api.base_url were not applied" in result.output


# -- item 4: every paid call is kept ---------------------------------------------------------------------
def failing_one(fake: FakeOpenAI, bad: str, batch: int) -> None:
    """The fake fails the call whose prompt holds ``bad`` once all ``batch`` calls were sent (so every
    other call is paid for); the others answer a little later than that failure."""
    def respond(path: str, body: dict[str, Any]) -> Reply:
        if bad in str(body.get("prompt", "")):
            deadline = time.monotonic() + 30
            while len(fake.seen) < batch and time.monotonic() < deadline:
                time.sleep(0.01)
            return Reply(400, {"error": {"message": "this input is refused"}})
        return Reply(body=default_completion(body, fake.top), delay=0.5)

    fake.respond = respond


def test_a_failed_call_in_a_batch_keeps_the_others_and_the_rerun_pays_only_for_it(
        isolated: Path, fake_openai: FakeOpenAI) -> None:
    spec = isolated / "s.yaml"
    spec.write_text(API_SPEC.format(url=fake_openai.base_url))
    words = [f"word{i}" for i in range(19)] + ["POISON"]
    argv = ["run", str(spec), *[a for w in words for a in ("--input", w)]]
    failing_one(fake_openai, "POISON", len(words))
    first = CliRunner().invoke(cli, argv)
    assert first.exit_code == 1 and "this input is refused" in first.output
    assert len(fake_openai.seen) == 20
    with CallCache(isolated / "cache") as store:
        assert len(store) == 19
    fake_openai.respond = None
    fake_openai.seen.clear()
    second = CliRunner().invoke(cli, argv)
    assert second.exit_code == 0, second.output
    assert len(fake_openai.seen) == 1 and "POISON" in fake_openai.seen[0].body["prompt"]


# -- items 4 and 5: Ctrl-C keeps finished calls and exits 130 -------------------------------------------------
def test_ctrl_c_during_a_batch_keeps_the_finished_calls_and_exits_130(isolated: Path,
                                                                    fake_openai: FakeOpenAI) -> None:
    def respond(path: str, body: dict[str, Any]) -> Reply:
        slow = "SLOW" in str(body.get("prompt", ""))
        return Reply(body=default_completion(body, fake_openai.top), delay=8.0 if slow else 0.0)

    fake_openai.respond = respond
    spec = isolated / "s.yaml"
    spec.write_text(API_SPEC.format(url=fake_openai.base_url))
    inputs = [a for w in ["alpha", "beta", "gamma", "SLOW"] for a in ("--input", w)]
    env = {**os.environ, "PYTHONPATH": str(Path(dlnflow.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "dlnflow", "-q", "run", str(spec), *inputs], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while _entries(isolated / "cache") < 3:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the three fast calls were never stored"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err.strip() == INTERRUPTED, err
    assert _entries(isolated / "cache") == 3


def _entries(folder: Path) -> int:
    if not (folder / "cache.db").exists():
        return 0
    with CallCache(folder) as store:
        return len(store)


# -- item 7: run folders ------------------------------------------------------------------------------------
def test_two_specs_with_one_name_never_share_a_run_folder(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_standin(monkeypatch)
    one = write_spec(isolated, iterations=1, name="one.yaml")
    two = write_spec(isolated, iterations=1, name="two.yaml")
    two.write_text(two.read_text().replace("seed: 0}", "seed: 5}"))  # same name, other data
    trained = CliRunner().invoke(cli, ["--json", "train", str(one)])
    assert trained.exit_code == 0, trained.output
    run_one = json.loads(trained.output)["run_dir"]
    report = CliRunner().invoke(cli, ["report", str(two)])
    assert report.exit_code == 2 and "has no training run" in report.output, report.output
    trained = CliRunner().invoke(cli, ["--json", "train", str(two)])
    assert json.loads(trained.output)["run_dir"] != run_one


# -- item 8: closed stdin, read-only spec folder ------------------------------------------------------------
def test_file_dash_with_stdin_closed_is_a_usage_error(isolated: Path) -> None:
    spec = isolated / "s.yaml"
    spec.write_text(API_SPEC.format(url="http://127.0.0.1:9/v1"))
    env = {**os.environ, "PYTHONPATH": str(Path(dlnflow.__file__).parents[1])}
    done = subprocess.run([sys.executable, "-m", "dlnflow", "run", str(spec), "--file", "-"], env=env,
                          capture_output=False, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: os.close(0), timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "standard input is closed" in done.stderr and "Traceback" not in done.stderr


def test_train_with_a_read_only_spec_folder_keeps_the_run_and_says_where_the_lock_went(
        isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_standin(monkeypatch)
    spec = write_spec(isolated, iterations=1)
    real = tempfile.mkstemp

    def read_only_beside_the_spec(*args: Any, **kwargs: Any) -> Any:
        if Path(kwargs.get("dir", "")) == spec.parent:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, **kwargs)

    monkeypatch.setattr("dlnflow._util.files.tempfile.mkstemp", read_only_beside_the_spec)
    result = CliRunner().invoke(cli, ["--json", "train", str(spec)])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    run_dir = Path(payload["run_dir"])
    assert payload["lock"] == str(run_dir / "tiny.lock.yaml") and (run_dir / "tiny.lock.yaml").is_file()
    assert "the file system is read-only" in payload["lock_note"]
    assert (run_dir / "summary.json").is_file() and not (spec.parent / "tiny.lock.yaml").exists()
