"""Property-based fuzzing (Hypothesis) of everything that reads user input.

For any generated input, each reader gives a value or a :class:`~dlnflow.errors.DlnflowError`
with exit code 1 or 2 (whose message and ``--json`` payload render), never another exception,
and within a time bound (Hypothesis' ``deadline`` per example) and a memory bound (the
process' peak resident size grows by less than :data:`MEMORY_GROWTH_KB` over a test).

Readers: the spec loader and compiler, the data loaders (jsonl, csv, bbh, leopard,
ordered_prompt), the lock reader (and what ``status``/``eval`` do with a lock it accepts:
drift, prompts, a sweep's best-run settings), ``--set``/``--seeds`` parsing with the sweep
matrix, and the template sandbox.

Profiles: ``ci`` (default, derandomized: 150 spec, 250 data, 150 lock, 300 ``--set`` and 400
template examples, about 35 s for the whole file on a busy 2-core machine) and ``long``
(``DLNFLOW_FUZZ=long``: 2000 examples per reader, random seeds, about 5 minutes). No example database is
written. Inputs the fuzzing found that failed once are pinned with ``@example`` as regression
cases.
"""

from __future__ import annotations

import copy
import json
import os
import resource
import shutil
import string
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from dlnflow.cli.render import error_payload
from dlnflow.core.errors import DlnflowError
from dlnflow.data.dataset import load_dataset
from dlnflow.spec.compiler import compile_spec
from dlnflow.spec.settings import DataSettings, SplitSettings

pytestmark = pytest.mark.fuzz
HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="dlnflow-hypothesis-")
set_hypothesis_home_dir(HYPOTHESIS_HOME)  # its caches stay out of the checkout

settings.register_profile("ci", max_examples=60, deadline=5000, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.register_profile("long", max_examples=2000, deadline=5000, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
PROFILE = settings.get_profile("long" if os.environ.get("DLNFLOW_FUZZ") == "long" else "ci")
MEMORY_GROWTH_KB = 600_000
"""Most the peak resident size may grow during one fuzz test (the bombs it feeds would take GBs)."""


def scaled(n: int) -> settings:
    """The active profile with ``n`` examples in CI (cheap readers get more) and its own count when long."""
    return settings(PROFILE, max_examples=n if PROFILE.max_examples < 1000 else PROFILE.max_examples)


# -- the property ------------------------------------------------------------------------------------------
def value_or_dlnflow_error(read: Callable[[], Any]) -> Any:
    """``read()``'s value, or ``None`` when it raised a dlnflow error that renders with exit code 1 or 2."""
    try:
        return read()
    except DlnflowError as exc:
        assert exc.exit_code in (1, 2), exc
        payload = error_payload(exc)
        json.dumps(payload, ensure_ascii=False)  # the --json path
        assert str(exc)
        return None


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    """One scratch folder for the whole module (Hypothesis runs many examples per test function)."""
    folder = Path(tempfile.mkdtemp(prefix="dlnflow-fuzz-"))
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(HYPOTHESIS_HOME, ignore_errors=True)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start
    assert grown < MEMORY_GROWTH_KB, f"fuzzing grew the peak resident size by {grown} KB"


# -- strategies ------------------------------------------------------------------------------------------
SCALARS = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
           | st.text(max_size=12) | st.sampled_from(["", "x", "answer", "blue", "llamacpp", "openai", "jsonl",
                                                        "{{ x }}", "\ud800", "ñ", "-1", "1e12", "\x00"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)

BASE_SPEC: dict[str, Any] = {
    "version": 1, "name": "fz",
    "models": {"local": {"backend": "llamacpp"}},
    "data": {"format": "task", "task": {"name": "label_mapping", "size": 12, "seed": 0},
             "split": {"train": 4, "dev": 4, "test": 4, "seed": 1}},
    "layers": [{"name": "think", "prompt": "Think.", "generate": {"max_tokens": 4}},
               {"name": "answer", "inputs": ["x", "think"], "prompt": "Say blue or red.",
                "output": {"classes": ["blue", "red"]}}],
    "loss": "exact_match",
    "train": {"method": "dln1", "iterations": 1, "batch_size": 2, "seed": 3},
    "experiments": {"seeds": [1, 2], "grid": {"train.iterations": [1, 2]}},
}
SPEC_PATHS = [
    ("version",), ("name",), ("models",), ("models", "local"), ("models", "local", "backend"),
    ("models", "local", "n_ctx"), ("models", "local", "path"), ("models", "api"), ("models", "api", "base_url"),
    ("data",), ("data", "format"), ("data", "path"), ("data", "labels"), ("data", "task", "size"),
    ("data", "split"), ("data", "split", "seed"), ("data", "split", "train"), ("layers",), ("layers", 0),
    ("layers", 1, "inputs"), ("layers", 1, "name"), ("layers", 0, "template"), ("layers", 1, "output"),
    ("layers", 1, "output", "classes"), ("layers", 0, "generate", "temperature"), ("layers", 0, "model"),
    ("loss",), ("train",), ("train", "method"), ("train", "iterations"), ("train", "backward_model"),
    ("experiments", "grid"), ("experiments", "seeds"), ("extra",),
]
YAML_SNIPPETS = ["&a ", "*a", "!!python/object:os.system ", "<<: *a\n", "---\n", ".nan", ".inf", "\t", "{",
                 "[", "]", "}", ": ", "- ", "\n", "'", '"', "\\ud800", "<<<<<<< HEAD\n", "=======\n", "%YAML 1.1\n",
                 "? ", "!!binary ", "|\n", "#", "\ufeff", "\x85"]


def _set_at(node: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(part, {})
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return
    if isinstance(node, dict) or isinstance(node, list) and isinstance(path[-1], int) and path[-1] < len(node):
        node[path[-1]] = value


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any], paths: list[tuple[Any, ...]]) -> dict[str, Any]:
    """``base`` with a few values replaced by generated ones."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(0, 3))):
        _set_at(data, draw(st.sampled_from(paths)), draw(VALUES))
    return data


@st.composite
def spliced(draw: st.DrawFn, text: str) -> str:
    """``text`` with a few YAML snippets or random characters inserted."""
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        piece = draw(st.sampled_from(YAML_SNIPPETS) | st.text(max_size=4))
        text = text[:at] + piece + text[at:]
    return text


def dump(data: Any, as_json: bool) -> str:
    if as_json:
        return json.dumps(data, ensure_ascii=False, allow_nan=True)
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@st.composite
def spec_texts(draw: st.DrawFn) -> tuple[str, str]:
    """``(suffix, text)``: a spec that is mostly right, spliced, or arbitrary text."""
    as_json = draw(st.booleans())
    kind = draw(st.sampled_from(["mutated", "spliced", "raw"]))
    if kind == "raw":
        return (".json" if as_json else ".yaml"), draw(st.text(max_size=200))
    text = dump(draw(mutated(BASE_SPEC, SPEC_PATHS)), as_json)
    return (".json" if as_json else ".yaml"), (draw(spliced(text)) if kind == "spliced" else text)


# -- the spec loader and compiler ---------------------------------------------------------------------------
@scaled(150)
@given(spec_texts())
@example((".yaml", "a: &a [*a]\n"))
@example((".yaml", "x: " + "[" * 5000 + "]" * 5000))
@example((".json", '{"version": 1, "name": "fz", "layers": [{"name": "a", "prompt": "\\ud800"}]}'))
@example((".yaml", "version: 1\nname: fz\nlayers: [{name: a, prompt: p}]\ntrain: {iterations: 1.0e12}\n"))
def test_the_spec_compiler_gives_a_pipeline_or_a_located_error(work: Path, spec: tuple[str, str]) -> None:
    suffix, text = spec
    path = work / f"spec{suffix}"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    value_or_dlnflow_error(lambda: compile_spec(path))


# -- the data loaders -----------------------------------------------------------------------------------------
ROW_VALUES = SCALARS | st.lists(SCALARS, max_size=2) | st.dictionaries(st.text(max_size=4), SCALARS, max_size=2)
ROWS = st.lists(st.fixed_dictionaries({}, optional={"input": ROW_VALUES, "target": ROW_VALUES,
                                                     "label": ROW_VALUES, "sentence": ROW_VALUES}), max_size=6)
CSV_CELLS = st.text(alphabet=string.ascii_letters + ',"\n\r ;\t\x00é', max_size=8)


@st.composite
def data_file(draw: st.DrawFn, fmt: str) -> bytes:
    """The bytes of a data file in ``fmt``: well formed rows, spliced text or arbitrary bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))
    rows = draw(ROWS)
    if fmt == "csv":
        lines = [",".join(draw(st.lists(CSV_CELLS, min_size=1, max_size=3))) for _ in range(draw(st.integers(0, 5)))]
        text = "\n".join(["input,target", *lines])
    elif fmt in ("jsonl", "ordered_prompt"):
        text = "\n".join(json.dumps(r, ensure_ascii=draw(st.booleans())) for r in rows)
    elif fmt == "bbh":
        text = json.dumps(draw(st.sampled_from([{"examples": rows}, rows, {"examples": {}}])))
    else:
        text = json.dumps(rows)
    if draw(st.booleans()):
        text = draw(spliced(text))
    return text.encode("utf-8", errors="surrogatepass")


@st.composite
def data_cases(draw: st.DrawFn) -> tuple[str, dict[str, bytes], dict[str, Any]]:
    fmt = draw(st.sampled_from(["jsonl", "csv", "bbh", "leopard", "ordered_prompt"]))
    if fmt == "ordered_prompt":
        names = draw(st.lists(st.sampled_from(["train.jsonl", "dev_subsample.jsonl", "test.jsonl"]),
                              unique=True, min_size=2, max_size=3))
        files = {name: draw(data_file(fmt)) for name in names}
    else:
        files = {"data": draw(data_file(fmt))}
    options = {
        "labels": draw(st.none() | st.dictionaries(st.text(max_size=3), st.sampled_from(["blue", "red"]), max_size=2)),
        "split": SplitSettings(draw(st.none() | st.integers(1, 3)), draw(st.integers(1, 2)),
                               draw(st.none() | st.integers(1, 2)), draw(st.integers(0, 2**32 - 1))),
        "classes": draw(st.none() | st.just(("blue", "red"))),
    }
    return fmt, files, options


@scaled(250)
@given(data_cases())
@example(("jsonl", {"data": b'{"input": "caf\\ud800", "target": "blue"}\n'},
          {"labels": None, "split": SplitSettings(1, 1, None, 0), "classes": None}))
@example(("bbh", {"data": b'{"examples": ' + b"[" * 5000 + b"]" * 5000 + b"}"},
          {"labels": None, "split": SplitSettings(1, 1, None, 0), "classes": None}))
def test_the_data_loaders_give_a_dataset_or_a_located_error(work: Path, case: tuple[str, dict[str, bytes],
                                                                                   dict[str, Any]]) -> None:
    fmt, files, options = case
    folder = work / "data"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for name, raw in files.items():
        (folder / name).write_bytes(raw)
    path = folder if fmt == "ordered_prompt" else folder / "data"
    settings_ = DataSettings(format=fmt, path=path, labels=options["labels"], split=options["split"])
    value_or_dlnflow_error(lambda: load_dataset(settings_, options["classes"]))


# -- the lock reader, and what eval and status do with a lock it accepts ----------------------------------------
BASE_LOCK: dict[str, Any] = {
    "schema": 1, "dlnflow": "0.1.0", "spec": "fz.yaml",
    "layers": {"think": {"prompt": "Think hard.", "model": "local"},
               "answer": {"prompt": "Say blue or red.", "model": "local", "classes": ["blue", "red"]}},
    "models": {"local": {"backend": "llamacpp", "model": "m"}},
    "data": {"sha256": "x", "source": "task", "split": {"train": 4, "dev": 4, "test": 4, "seed": 1}},
    "loss": "exact_match", "train": {"iterations": 1}, "seed": 3,
    "sweep": {"best": {"run": "r", "seed": 1, "overrides": {"layers.answer.prompt": "Colour?"}}},
}
LOCK_PATHS = [("schema",), ("layers",), ("layers", "answer"), ("layers", "answer", "prompt"), ("layers", "ghost"),
              ("models",), ("models", "local"), ("data",), ("data", "split"), ("data", "labels"), ("train",),
              ("sweep",), ("sweep", "best"), ("sweep", "best", "overrides"), ("sweep", "best", "seed"),
              ("sweep", "best", "overrides", "models.local.base_url"),
              ("sweep", "best", "overrides", "layers.answer.generate.max_tokens"),
              ("sweep", "best", "overrides", "data.split.seed"), ("sweep", "best", "overrides", "loss")]


@st.composite
def lock_texts(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["mutated", "spliced", "raw"]))
    if kind == "raw":
        return draw(st.text(max_size=200))
    text = dump(draw(mutated(BASE_LOCK, LOCK_PATHS)), False)
    return draw(spliced(text)) if kind == "spliced" else text


@pytest.fixture(scope="module")
def fuzz_pipeline(work: Path) -> Any:
    spec = work / "fz.yaml"
    spec.write_text(dump(BASE_SPEC, False))
    return compile_spec(spec)


@scaled(150)
@given(lock_texts())
@example("schema: 1\nlayers: {}\nmodels: {local: x}\ndata: {split: all}\ntrain: {}\n")
@example("".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i else "x"] * 9) + "]\n" for i in range(8)))
def test_the_lock_reader_gives_a_lock_or_a_located_error(work: Path, fuzz_pipeline: Any, text: str) -> None:
    from dlnflow.lockfile.allowlist import split_overrides
    from dlnflow.lockfile.lock import best_run_of, drift, learned_state, read_lock
    from dlnflow.spec.overrides import apply_overrides

    path = work / "fz.lock.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    lock = value_or_dlnflow_error(lambda: read_lock(path))
    if lock is None:
        return
    assert isinstance(drift(fuzz_pipeline, lock, {"local": {"backend": "llamacpp", "model": "m"}}, "x"), list)
    pipeline = fuzz_pipeline
    before = pipeline.graph.state()
    value_or_dlnflow_error(lambda: pipeline.graph.load_state(learned_state(lock), strict=True))
    pipeline.graph.load_state(before)
    found = best_run_of(lock)
    if found is not None:
        applied, _, _ = split_overrides(found[2], pipeline.spec)
        assert not any(k.startswith("models.") for k in applied)
        value_or_dlnflow_error(lambda: apply_overrides(pipeline, applied))


# -- --set and --seeds ---------------------------------------------------------------------------------------------
SET_KEYS = st.sampled_from(["train.iterations", "train.seed", "loss", "layers.answer.prompt", "models.local.n_ctx",
                            "data.split.seed", "layers.think.generate.temperature", "nope", "", "layers..x",
                            "models.local.base_url", "train.rewrite_temperature"])
SET_VALUES = st.text(max_size=20) | st.sampled_from(["1,2", "[1, 2]", "[", ".nan", ".inf", "1e12", "-1", "null",
                                                      "[a, 'b,c']", "&a [*a]", "{a: 1}", "3", "0.5"])


@scaled(300)
@given(st.lists(st.tuples(SET_KEYS | st.text(max_size=10), SET_VALUES).map(lambda kv: f"{kv[0]}={kv[1]}")
                | st.text(max_size=20), max_size=3), st.none() | st.text(max_size=12))
@example(["train.rewrite_temperature=.nan"], None)
@example(["train.iterations=" + ",".join(map(str, range(40))), "train.batch_size=" + ",".join(map(str, range(40)))],
         None)
def test_set_and_seeds_give_a_matrix_or_an_input_error(fuzz_pipeline: Any, sets: list[str],
                                                       seeds: str | None) -> None:
    from dlnflow.experiments.matrix import matrix_for, parse_seeds, parse_set

    def build() -> Any:
        chosen = parse_seeds(seeds) if seeds is not None else None
        return matrix_for(fuzz_pipeline, chosen, [parse_set(text) for text in sets])

    value_or_dlnflow_error(build)


# -- the template sandbox ---------------------------------------------------------------------------------------------
JINJA = ["{{ ", " }}", "{% ", " %}", "x", "prompt", "inputs", " for a in inputs ", " endfor ", "range(", ")", "(",
         " * ", " ** ", " + ", "9", "99999", "|", "list", "length", "'a'", " macro f() ", "f()", " endmacro ",
         "loop.index", ".", "__class__", "__globals__", "[", "]", " if ", " else ", " endif ", "~", "1/0", "{#",
         "#}", " set y = ", "y", "join", "upper", "lipsum", "cycler", "namespace()", "'%s' % ", "format", " is ",
         "defined", "\n", "-", "10**100", "'x' * 10**7"]


@scaled(400)
@given(st.lists(st.sampled_from(JINJA), max_size=14).map("".join) | st.text(max_size=40))
@example("{% for a in range(99999) %}{% for b in range(99999) %}x{% endfor %}{% endfor %}")
@example("{{ x.__class__.__mro__ }}")
def test_the_template_sandbox_renders_or_refuses(source: str) -> None:
    from dlnflow.graph.templates import Template

    template = value_or_dlnflow_error(lambda: Template.from_spec(source))
    if template is not None:
        value_or_dlnflow_error(lambda: template.render(prompt="Say.", x="sparrow", inputs=["sparrow"]))
