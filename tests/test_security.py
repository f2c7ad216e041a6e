"""Security: the template sandbox, no pickle, API keys never written down, private folders.

- Templates render in Jinja2's sandbox: attribute-walking payloads fail cleanly, through
  ``dlnflow validate`` (exit 2, located message) and through rendering; template syntax inside
  data (inputs, prompts a model wrote) is never evaluated.
- No pickle: the package imports no pickle-like module, every cache entry is stored as raw text
  holding a JSON object, and a pickle planted in a shared cache is never unpickled.
- API keys: a training run through the real llama.cpp server with a fake key in the variable the
  spec names leaves no trace of the key in any byte under the cache, the run folder or the spec's
  folder, nor in the output; neither does an error whose server message echoes the key.
- Folders: the cache and the run folders are created owner-only (0700), their files 0600, even
  with a permissive umask.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from faultproxy import FaultPlan, FaultProxy
from helpers import write_spec
from server import SERVER_MODEL, FakeOpenAI, Reply
from standin import StandIn

import dlnflow
from dlnflow.cli import cli
from dlnflow.core.errors import TemplateError
from dlnflow.graph.templates import Template
from dlnflow.runtime.cache import CallCache

PACKAGE = Path(dlnflow.__file__).parent
FAKE_KEY = "dlnflow-test-key-4c1d9e2b7a55f0"  # not shaped like an sk- key: only exact redaction hides it
KEY_ENV = "DLNFLOW_TEST_API_KEY"

PAYLOADS = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__.os }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ self._TemplateReference__context }}",
    "{{ self.__init__.__globals__ }}",
    "{{ x.__class__.__base__.__subclasses__() }}",
    "{{ inputs.__class__ }}",
    "{{ x | attr('__class__') }}",
    "{{ '{0.__class__}'.format(x) }}",
    "{% for c in [].__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
]


@pytest.fixture()
def model(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> StandIn:
    """The stand-in for every model, dry runs included; runs and cache under tmp_path."""
    monkeypatch.setattr("dlnflow.planning.sweep.light_backend", lambda settings, base: standin)
    return standin


# -- the template sandbox ----------------------------------------------------------------------------
def spec_with_template(folder: Path, source: str) -> Path:
    escaped = source.replace("\\", "\\\\").replace('"', '\\"')
    path = folder / "attack.yaml"
    path.write_text(
        "version: 1\nname: attack\ndata:\n  format: task\n  task: {name: label_mapping}\nlayers:\n"
        f'  - name: answer\n    template: "{{{{ prompt }}}} {{{{ x }}}} {escaped}"\n'
        '    prompt: "Say a colour."\n    output: {classes: [blue, red]}\n', encoding="utf-8")
    return path


@pytest.mark.parametrize("payload", PAYLOADS)
def test_attribute_walking_fails_cleanly_through_validate(payload: str, tmp_path: Path) -> None:
    spec = spec_with_template(tmp_path, payload)
    result = CliRunner().invoke(cli, ["validate", str(spec)])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert f"{spec}:8:15: the template fails when rendered: template tried something the sandbox forbids" \
        in result.output
    assert "[/layers/0/template]" in result.output


@pytest.mark.parametrize("payload", PAYLOADS)
def test_attribute_walking_fails_cleanly_when_rendered(payload: str) -> None:
    template = Template.parse("{{ prompt }} " + payload)
    with pytest.raises(TemplateError, match="sandbox forbids"):
        template.render(prompt="p", x="sparrow", inputs=[("x", "sparrow")])


RESOURCE_BOMBS = [
    "{{ 'a' * 10 ** 9 }}",
    "{{ [0] * 10 ** 8 }}",
    "{{ 10 ** 100000 }}",
    "{% set a = x * 1000 %}{% set b = a * 1000 %}{{ b + b }}",
]


@pytest.mark.parametrize("payload", RESOURCE_BOMBS)
def test_memory_bombs_fail_fast_through_validate(payload: str, tmp_path: Path) -> None:
    spec = spec_with_template(tmp_path, payload)
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["validate", str(spec)])
    assert time.monotonic() - started < 20
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "the sandbox forbids" in result.output and "(limit " in result.output


def test_bounded_operators_still_work_at_normal_sizes() -> None:
    template = Template.parse("{{ prompt }} {{ '=' * 5 }} {{ 2 ** 16 }} {{ x + '!' }} {{ (inputs | length) * 3 }}")
    assert template.render(prompt="p", x="kiwi", inputs=[("x", "kiwi")]) == "p ===== 65536 kiwi! 3"


def test_template_syntax_in_data_is_never_evaluated() -> None:
    evil = "{{ cycler.__init__.__globals__ }} {{ 7 * 7 }}"
    text = Template.from_spec("classify_forward").render(prompt=evil, x=evil, inputs=[("x", evil)])
    assert text.count(evil) == 2 and "49" not in text


def test_inputs_reach_the_model_as_plain_text(model: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    evil = "{{ 7 * 7 }} {{ self.__init__.__globals__ }}"
    argv = ["--cache-dir", str(tmp_path / "cache"), "run", str(spec), "--input", evil]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, result.output
    [request] = model.log
    assert evil in request.prompt and "49" not in request.prompt


# -- no pickle -------------------------------------------------------------------------------------
PICKLE_LIKE = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib",
               "copyreg"}


def imported_modules(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module.split(".")[0]


def test_the_package_uses_no_pickle() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 20
    for path in sources:
        found = set(imported_modules(path)) & PICKLE_LIKE
        assert not found, f"{path.relative_to(PACKAGE.parent)} imports {found}"
        text = path.read_text(encoding="utf-8")
        assert "allow_pickle=True" not in text and "pickle.load" not in text, path


def stored_rows(cache: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{cache / 'cache.db'}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT key, raw, mode, value, filename FROM Cache").fetchall()


def test_cache_entries_are_json_text(model: StandIn, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, iterations=1)
    result = CliRunner().invoke(cli, ["--cache-dir", str(tmp_path / "cache"), "train", str(spec)])
    assert result.exit_code == 0, result.output
    rows = stored_rows(tmp_path / "cache")
    assert len(rows) == sum(model.calls.values()) > 0
    for key, raw, mode, value, filename in rows:
        assert raw == 1 and mode == 1 and filename is None  # raw text key and value, no side file
        assert isinstance(json.loads(value), dict)
        assert len(key) == 64


class _Planted:
    """Unpickling this touches ``marker``: proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def plant(cache: Path, marker: Path, where: str) -> str:
    """Turn one entry's value (or key) into a pickle, as someone sharing the cache could."""
    key = "ab" * 32
    with CallCache(cache) as store:
        store.put(key, {"text": "fine"}, model="demo")
    payload = sqlite3.Binary(pickle.dumps(_Planted(marker)))
    with sqlite3.connect(cache / "cache.db") as conn:
        if where == "value":
            conn.execute("UPDATE Cache SET mode = 4, value = ? WHERE key = ?", (payload, key))
        else:
            conn.execute("UPDATE Cache SET raw = 0, key = ? WHERE key = ?", (payload, key))
    return key


@pytest.mark.parametrize("where", ["value", "key"])
def test_a_planted_pickle_is_never_loaded(where: str, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    key = plant(tmp_path / "cache", marker, where)
    with CallCache(tmp_path / "cache") as store:
        assert store.get(key) is None
        problems = store.verify()
        store.stats()
    assert not marker.exists(), "the cache unpickled a planted entry"
    assert problems, "verify did not report the planted entry"


# -- API keys --------------------------------------------------------------------------------------
KEY_SPEC = """\
version: 1
name: keyed
models:
  remote: {{backend: openai, base_url: "{base_url}", model: {model}, api_key_env: {env}, timeout: 60,
           max_retries: {retries}, concurrency: 1}}
data:
  format: task
  task: {{name: label_mapping, size: 12, seed: 0}}
  split: {{train: 4, dev: 2, test: 2, seed: 1}}
layers:
  - name: answer
    template: |-
      {{{{ prompt }}}}

      Input: dog
      Answer: blue

      Input: {{{{ x }}}}
      Answer:
    prompt: "Say blue or red."
    output: {{classes: [blue, red]}}
train:
  method: dln1
  iterations: 1
  batch_size: 2
  prompt_candidates: 2
  example_candidates: 0
  rewrite_max_tokens: 16
  seed: 3
"""


def keyed_train(folder: Path, base_url: str, retries: int = 4, flags: tuple[str, ...] = ()
                ) -> subprocess.CompletedProcess[str]:
    spec_dir = folder / "spec"
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = spec_dir / "keyed.yaml"
    spec.write_text(KEY_SPEC.format(base_url=base_url, model=SERVER_MODEL, env=KEY_ENV, retries=retries))
    env = {**os.environ, KEY_ENV: FAKE_KEY, "DLNFLOW_RUNS_DIR": str(folder / "runs")}
    cmd = [sys.executable, "-m", "dlnflow", *flags, "--json", "--cache-dir", str(folder / "cache"), "train",
           str(spec)]
    return subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=900)


def files_holding(root: Path, secret: bytes) -> list[Path]:
    """Every file under ``root`` whose bytes contain ``secret``."""
    return [p for p in root.rglob("*") if p.is_file() and secret in p.read_bytes()]


@pytest.mark.server
@pytest.mark.real
def test_the_api_key_is_sent_but_never_written(llama_server: str, tmp_path: Path) -> None:
    with FaultProxy(llama_server, FaultPlan(rate=0.0)) as recorder:  # passes everything, records headers
        done = keyed_train(tmp_path, recorder.base_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert recorder.events and all(e.authorization == f"Bearer {FAKE_KEY}" for e in recorder.events)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "keyed.lock.yaml" for p in written) and any(p.name == "cache.db" for p in written)
    assert any(p.name == "log.jsonl" for p in written)
    assert files_holding(tmp_path, FAKE_KEY.encode()) == []
    assert FAKE_KEY not in done.stdout + done.stderr
    print(f"\n{len(written)} files ({sum(p.stat().st_size for p in written)} bytes) scanned; "
          f"{len(recorder.events)} requests carried the key")


@pytest.mark.parametrize("flags", [(), ("-vv",)], ids=["plain", "verbose"])
def test_an_error_echoing_the_key_does_not_show_it(flags: tuple[str, ...], fake_openai: FakeOpenAI,
                                                   tmp_path: Path) -> None:
    echo = {"error": {"message": f"Incorrect API key: {FAKE_KEY}"}}
    fake_openai.respond = lambda path, body: Reply(401, echo)
    done = keyed_train(tmp_path, fake_openai.base_url, retries=0, flags=flags)
    assert done.returncode == 1
    assert "failed with HTTP 401" in done.stdout and KEY_ENV in done.stdout
    assert FAKE_KEY not in done.stdout + done.stderr
    assert fake_openai.seen and fake_openai.seen[0].headers["authorization"] == f"Bearer {FAKE_KEY}"
    assert files_holding(tmp_path, FAKE_KEY.encode()) == []


# -- private folders --------------------------------------------------------------------------------
def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root.parent)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_cache_and_run_folders_are_private_even_with_a_permissive_umask(
        model: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs-root" / "runs"
    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(runs))
    spec = write_spec(tmp_path, iterations=1)
    old = os.umask(0)
    try:
        result = CliRunner().invoke(cli, ["--cache-dir", str(tmp_path / "cache-root" / "cache"), "train", str(spec)])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    found = {**modes(tmp_path / "cache-root"), **modes(tmp_path / "runs-root")}
    dirs = {name: m for name, m in found.items() if (tmp_path / name).is_dir()}
    files = {name: m for name, m in found.items() if not (tmp_path / name).is_dir()}
    assert len(dirs) >= 6 and len(files) >= 3  # cache-root, cache, runs-root, runs, runs/tiny, the run; db, log, ...
    assert {n: oct(m) for n, m in dirs.items() if m != 0o700} == {}
    assert {n: oct(m) for n, m in files.items() if m != 0o600} == {}
