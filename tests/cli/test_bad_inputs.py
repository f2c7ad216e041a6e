"""The bad-input catalog: mistakes beyond the spec catalog, each run through the CLI.

Every case names the command line, the spec it runs on (a small base spec with one part
replaced), the exit code (2 for bad input, 1 for a job that failed at run time) and the phrases
its message must carry: where the problem is (``file:line:col`` when there is a line) and what
is wrong. No case may end in a Python traceback. The table below is the whole expectation.

Files the cases read live in ``tests/bad_inputs/``: ``data/`` (shared with ``test_data.py``),
``data_more/``, ``models/`` and ``cli/``. A few cases build their file at run time (a 1 MB line,
a folder where a file belongs, a damaged cache). Cases run in-process through click's CliRunner
with the stand-in model, except those about backends, which use the real ``make_backend``; a
handful also run through ``python -m dlnflow`` to check the real entry point.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import colour_rules
from paths import BAD_INPUTS
from server import FakeOpenAI, Reply, default_completion
from standin import StandIn

from dlnflow.cli import cli
from dlnflow.data.readers import MAX_LINE_BYTES
from dlnflow.runtime.cache import CallCache

HERE = BAD_INPUTS

BASE = {
    "models": "  local: {backend: llamacpp}",
    "data": "  format: task\n  task: {name: label_mapping, size: 12, seed: 0}\n"
            "  split: {train: 4, dev: 4, test: 4, seed: 1}",
    "layers": '  - name: answer\n    template: classify_forward\n    prompt: "Say blue or red."\n'
              "    output: {classes: [blue, red]}",
    "train": "  method: dln1\n  iterations: 1\n  batch_size: 2\n  prompt_candidates: 2",
}
TWO_LAYERS = ('  - name: think\n    prompt: "Think."\n    generate: {max_tokens: 4}\n  - name: answer\n'
              '    inputs: [x, think]\n    prompt: "Say blue or red."\n    output: {classes: [blue, red]}')
VI = "  method: vi\n  iterations: 1\n  batch_size: 2\n  prompt_candidates: 2\n  hidden_samples: 1"
DRY = ["--cache-dir", "{tmp}/cache", "train", "--dry-run", "{spec}"]
TRAIN = ["--cache-dir", "{tmp}/cache", "train", "{spec}"]
VALIDATE = ["validate", "{spec}"]


@dataclass(frozen=True)
class Case:
    """One bad input: command, spec parts replaced, exit code, phrases the message must hold.

    ``backend``: ``standin`` (the stand-in model), ``real`` (the real backends; nothing is called
    unless the case says so) or ``fake:<behaviour>`` (an OpenAI-compatible fake server; its URL
    replaces ``{fake}``). ``{tmp}``, ``{spec}``, ``{data}``, ``{more}``, ``{models}`` and ``{cli}``
    in the command and the spec parts are replaced by paths.
    """

    id: str
    argv: list[str]
    expect: tuple[str, ...] = ()
    code: int = 2
    spec: dict[str, str] = field(default_factory=dict)
    backend: str = "standin"
    setup: str = ""
    absent: tuple[str, ...] = ()


def data(fmt: str, path: str, extra: str = "", split: str = "{train: 1, dev: 1, test: 1, seed: 1}"
         ) -> dict[str, str]:
    return {"data": f"  format: {fmt}\n  path: {path}\n  split: {split}{extra}"}


def template(text: str) -> dict[str, str]:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return {"layers": f'  - name: answer\n    template: "{escaped}"\n    prompt: "Say blue or red."\n'
                      "    output: {classes: [blue, red]}"}


def openai_model(settings: str) -> dict[str, str]:
    return {"models": f"  api: {{backend: openai, {settings}}}"}


CASES: list[Case] = [
    # -- data files (the ones in data/ are also checked at the loader level by test_data.py) ------------
    Case("data-empty", DRY, spec=data("jsonl", "{data}/empty.jsonl"),
         expect=("empty.jsonl: data file is empty", "at least one example")),
    Case("data-blank-json", DRY, spec=data("bbh", "{data}/blank.json"),
         expect=("blank.json: data file is empty",)),
    Case("data-latin1", DRY, spec=data("jsonl", "{data}/latin1_line1.jsonl"),
         expect=("latin1_line1.jsonl:1:15: not valid UTF-8: byte 0xe9", "save the file as UTF-8")),
    Case("data-bad-json-line", DRY, spec=data("jsonl", "{data}/bad_json_line.jsonl"),
         expect=("bad_json_line.jsonl:3:18: invalid JSON line",)),
    Case("data-trailing-comma", DRY, spec=data("bbh", "{data}/trailing_comma.json"),
         expect=("trailing_comma.json:4:1: invalid JSON",)),
    Case("data-wrong-column", DRY, spec=data("jsonl", "{data}/wrong_field.jsonl"),
         expect=('wrong_field.jsonl:1:1: row has no field "input"', 'did you mean "inputs"')),
    Case("data-label-not-a-class", DRY, spec=data("jsonl", "{data}/unknown_label.jsonl"),
         expect=('unknown_label.jsonl:2:30: label "green" is not one of the output classes (blue, red)',
                 "data.labels")),
    Case("data-ragged-csv", DRY, spec=data("csv", "{data}/ragged.csv"),
         expect=("ragged.csv:3:1: row has 3 fields but the header has 2",)),
    Case("data-bad-quote-csv", DRY, spec=data("csv", "{data}/bad_quote.csv"),
         expect=("bad_quote.csv:3:1: malformed CSV",)),
    Case("data-csv-other-columns", DRY, spec=data("csv", "{data}/csv_other_columns.csv"),
         expect=('csv_other_columns.csv:1:1: row has no field "input"',)),
    Case("data-bbh-no-examples", DRY, spec=data("bbh", "{data}/bbh_no_examples.json"),
         expect=("bbh_no_examples.json:1:1:", 'an "examples" list')),
    Case("data-leopard-not-list", DRY, spec=data("leopard", "{data}/leopard_not_list.json"),
         expect=("leopard_not_list.json:1:1: expected a JSON list of examples",)),
    Case("data-label-case", DRY,
         spec={**data("leopard", "{data}/leopard_case_label.json"),
               "layers": '  - name: answer\n    prompt: "Relevant?"\n'
                         '    output: {classes: ["Relevant", "Not Relevant"]}'},
         expect=('leopard_case_label.json:3:38: label "relevant" is not one of the output',
                 'did you mean "Relevant"')),
    Case("data-null-target", DRY, spec=data("jsonl", "{data}/null_target.jsonl"),
         expect=('null_target.jsonl:2:30: field "target" is null',)),
    Case("data-line-not-object", DRY, spec=data("jsonl", "{data}/not_object.jsonl"),
         expect=('not_object.jsonl:2:1: expected an object with fields "input" and "target"',)),
    Case("data-unmapped-label", DRY,
         spec=data("jsonl", "{data}/unmapped_label.jsonl",
                   "\n  input: sentence\n  target: label\n  labels: {'0': blue, '1': red}"),
         expect=('unmapped_label.jsonl:2:31: label "7" has no entry in data.labels',)),
    Case("data-ordered-prompt-missing-file", DRY,
         spec=data("ordered_prompt", "{data}/ordered_prompt_missing_test"),
         expect=("s.yaml:7:9: the data folder has no test.jsonl",
                 "needs train.jsonl, dev_subsample.jsonl, test.jsonl")),
    Case("data-utf16", DRY, spec=data("jsonl", "{more}/utf16.jsonl"),
         expect=("utf16.jsonl:1:1: not valid UTF-8: byte 0xff",)),
    Case("data-header-only", DRY, spec=data("csv", "{more}/header_only.csv"),
         expect=("header_only.csv: no examples found",)),
    Case("data-missing-target-column", DRY, spec=data("csv", "{more}/no_target_column.csv"),
         expect=('no_target_column.csv:1:1: row has no field "target"', "data.target")),
    Case("data-repeated-csv-column", DRY, spec=data("csv", "{more}/repeated_column.csv"),
         expect=('repeated_column.csv:1:14: the header names column "input" twice (columns 1 and 3)',)),
    Case("data-empty-input", DRY, spec=data("jsonl", "{more}/empty_input.jsonl"),
         expect=('empty_input.jsonl:2:11: field "input" is empty; every example needs an input text',
                 "[/input]")),
    Case("data-nul-bytes", DRY, spec=data("jsonl", "{more}/nul_bytes.jsonl"),
         expect=("nul_bytes.jsonl:2:1: invalid JSON line",)),
    Case("data-array-line", DRY, spec=data("jsonl", "{more}/array_line.jsonl"),
         expect=("array_line.jsonl:2:1: expected an object", "found list")),
    Case("data-too-few-for-split", DRY,
         spec=data("jsonl", "{more}/too_few.jsonl", split="{train: 10, dev: 10, test: 10, seed: 1}"),
         expect=("too_few.jsonl: data.split asks for 10 + 10 + 10 = 30 examples but the data has only 2",
                 "lower the split sizes")),
    Case("data-number-label", DRY, spec=data("jsonl", "{more}/number_label.jsonl"),
         expect=('number_label.jsonl:1:28: label "3" is not one of the output classes',)),
    Case("data-leopard-no-label", DRY, spec=data("leopard", "{more}/leopard_no_label.json"),
         expect=('leopard_no_label.json:1:2: row has no field "label"',)),
    Case("data-bbh-examples-not-list", DRY, spec=data("bbh", "{more}/bbh_examples_not_list.json"),
         expect=("bbh_examples_not_list.json:1:14: expected a JSON list",)),
    Case("data-bbh-no-target", DRY, spec=data("bbh", "{more}/bbh_example_no_target.json"),
         expect=('bbh_example_no_target.json:1:15: row has no field "target"',)),
    Case("data-blank-lines", DRY, spec=data("jsonl", "{more}/only_blank_lines.jsonl"),
         expect=("only_blank_lines.jsonl: data file is empty",)),
    Case("data-tab-separated", DRY, spec=data("csv", "{more}/tab_separated.csv"),
         expect=('tab_separated.csv:1:1: row has no field "input"',)),
    Case("data-gzip", DRY, spec=data("jsonl", "{more}/gzip.jsonl"),
         expect=("gzip.jsonl:1:2: not valid UTF-8: byte 0x8b",)),
    Case("data-yaml-not-jsonl", DRY, spec=data("jsonl", "{more}/yaml_instead.jsonl"),
         expect=("yaml_instead.jsonl:1:1: invalid JSON line",)),
    Case("data-pretty-printed-json", DRY, spec=data("jsonl", "{more}/pretty_printed.jsonl"),
         expect=("pretty_printed.jsonl:1:2: invalid JSON line",)),
    Case("data-binary", DRY, spec=data("bbh", "{more}/binary.json"),
         expect=("binary.json:2:118: not valid UTF-8: byte 0x80",)),
    Case("data-huge-line", DRY, spec=data("jsonl", "{tmp}/huge.jsonl"), setup="huge_line",
         expect=("huge.jsonl:2:1:", "lines over 1 MB are refused")),
    Case("data-path-is-a-folder", DRY, spec=data("jsonl", "{tmp}/folder.jsonl"), setup="folder",
         expect=("s.yaml:7:9:", "is a folder; format 'jsonl' reads one file", "/data/path")),
    # -- templates (inline in the spec; located at the template's line in the spec) ----------------------
    Case("template-unknown-filter", VALIDATE, spec=template("{{ prompt }} {{ x | shout }}"),
         expect=("s.yaml:11:15:", "No filter named 'shout'", "/layers/0/template")),
    Case("template-unknown-test", VALIDATE,
         spec=template("{% if x is shouty %}{{ x }}{% endif %}{{ prompt }}"),
         expect=("s.yaml:11:15:", "No test named 'shouty'")),
    Case("template-unclosed-for", VALIDATE, spec=template("{{ prompt }} {% for a in inputs %}{{ a }}"),
         expect=("s.yaml:11:15:", "template syntax error", "endfor")),
    Case("template-dangling-operator", VALIDATE, spec=template("{{ prompt }} {{ x + }}"),
         expect=("s.yaml:11:15:", "template syntax error", "end of print statement")),
    Case("template-unclosed-comment", VALIDATE, spec=template("{# note {{ prompt }} {{ x }}"),
         expect=("s.yaml:11:15:", "Missing end of comment tag")),
    Case("template-unclosed-call", VALIDATE, spec=template("{{ prompt }} {{ x.upper( }}"),
         expect=("s.yaml:11:15:", "expected ')'")),
    Case("template-include", VALIDATE, spec=template("{% include 'other.txt' %}{{ prompt }} {{ x }}"),
         expect=("s.yaml:11:15:", "fails when rendered", "no loader")),
    Case("template-extends", VALIDATE, spec=template("{% extends 'base.txt' %}{{ prompt }} {{ x }}"),
         expect=("s.yaml:11:15:", "fails when rendered", "no loader")),
    Case("template-division-by-zero", VALIDATE, spec=template("{{ prompt }} {{ x }} {{ 1 / 0 }}"),
         expect=("s.yaml:11:15:", "ZeroDivisionError: division by zero")),
    Case("template-huge-range", VALIDATE,
         spec=template("{{ prompt }} {{ x }} {{ range(10**9) | list | length }}"),
         expect=("s.yaml:11:15:", "Range too big")),
    Case("template-endless-recursion", VALIDATE,
         spec=template("{% macro f() %}{{ f() }}{% endmacro %}{{ prompt }} {{ x }} {{ f() }}"),
         expect=("s.yaml:11:15:", "recurses without end")),
    Case("template-undefined-attribute", VALIDATE, spec=template("{{ prompt }} {{ x.missing }}"),
         expect=("s.yaml:11:15:", "undefined variable", "no attribute 'missing'")),
    Case("template-loop-outside-for", VALIDATE, spec=template("{{ prompt }} {{ x }} {{ loop.index }}"),
         expect=("s.yaml:11:15:", "uses {{ loop }}, which layer 'answer' does not receive",
                 "it receives: inputs, prompt, x")),
    Case("template-index-out-of-range", VALIDATE, spec=template("{{ prompt }} {{ x }} {{ (x | list)[99] }}"),
         expect=("s.yaml:11:15:", "has no element 99")),
    # -- command line -------------------------------------------------------------------------------------
    Case("cli-unknown-command", ["trian", "{spec}"], expect=("No such command 'trian'",)),
    Case("cli-unknown-global-option", ["--cahce-dir", "x", "train", "{spec}"],
         expect=("No such option '--cahce-dir'", "'--cache-dir'")),
    Case("cli-unknown-option", ["train", "--iteration", "3", "{spec}"],
         expect=("Did you mean '--iterations'?",)),
    Case("cli-missing-argument", ["train"], expect=("Missing argument 'SPEC'",)),
    Case("cli-no-cache-with-refresh", ["--no-cache", "--refresh", "train", "{spec}"],
         expect=("--no-cache and --refresh exclude each other",)),
    Case("cli-run-without-input", ["run", "{spec}"], expect=("give at least one --input TEXT or --file F",)),
    Case("cli-nonexistent-spec", ["train", "{tmp}/missing.yaml"], expect=("no such file", "missing.yaml")),
    Case("cli-spec-is-a-folder", ["train", "{tmp}"], expect=("is a directory",)),
    Case("cli-validate-without-spec", ["validate"], expect=("Missing argument 'SPEC...'",)),
    Case("cli-bad-split", ["eval", "{spec}", "--split", "holdout"],
         expect=("'holdout' is not one of 'train', 'dev', 'test'",)),
    Case("cli-negative-iterations", ["train", "--iterations", "-1", "{spec}"],
         expect=("-1 is not in the range x>=0",)),
    Case("cli-seed-not-a-number", ["train", "--seed", "abc", "{spec}"],
         expect=("'abc' is not a valid integer",)),
    Case("cli-seed-and-seeds", ["train", "--seed", "1", "--seeds", "1,2", "{spec}"],
         expect=("--seed and --seeds exclude each other",)),
    Case("cli-bad-seeds", ["train", "--seeds", "1,x", "{spec}"], expect=("'x' is not an integer seed",)),
    Case("cli-set-without-value", ["train", "--set", "nonsense", "{spec}"],
         expect=("expected SETTING=VALUE",)),
    Case("cli-set-unknown-setting", ["train", "--set", "train.itrations=3", "{spec}"],
         expect=("no such setting; did you mean 'train.iterations'?",)),
    Case("cli-graph-format", ["graph", "{spec}", "--format", "png"],
         expect=("'png' is not one of 'dot', 'mermaid', 'text'",)),
    Case("cli-input-file-missing", ["run", "{spec}", "--file", "{tmp}/inputs.txt"],
         expect=("No such file or directory",)),
    Case("cli-input-file-not-utf8", ["--cache-dir", "{tmp}/cache", "run", "{spec}", "--file",
                                     "{cli}/latin1_inputs.txt"],
         expect=("latin1_inputs.txt: not valid UTF-8", "'--file'")),
    Case("cli-cache-dir-is-a-file", ["--cache-dir", "{spec}", "cache", "stats"], expect=("is a file",)),
    Case("cli-unknown-cache-command", ["cache", "frob"], expect=("No such command 'frob'",)),
    Case("cli-clear-without-yes", ["--cache-dir", "{tmp}/cache", "cache", "clear"], setup="cache",
         expect=("add --yes",)),
    Case("cli-report-missing-run", ["report", "{tmp}/no-run"], expect=("no such run folder or spec",)),
    Case("cli-negative-budget", ["train", "--max-calls", "-5", "{spec}"],
         expect=("-5 is not in the range x>=0",)),
    Case("cli-broken-lock-file", ["--cache-dir", "{tmp}/cache", "eval", "{spec}"], setup="broken_lock",
         expect=("s.lock.yaml:3:1: lock file is not valid YAML",
                 "restore it from version control or train again")),
    Case("cli-budget-reached", ["--cache-dir", "{tmp}/cache", "train", "--max-calls", "1", "{spec}"], code=1,
         expect=("would exceed train.budget.max_calls=1", "run the same command again to continue")),
    Case("cli-damaged-cache", TRAIN, code=1, setup="damaged_cache",
         expect=("cannot open the cache", "cache.db")),
    # -- backends -----------------------------------------------------------------------------------------
    Case("backend-official-without-key", TRAIN, backend="real", spec=openai_model("model: gpt-4o-mini"),
         expect=("set the environment variable OPENAI_API_KEY",)),
    Case("backend-named-key-unset", TRAIN, backend="real",
         spec=openai_model("model: gpt-4o-mini, api_key_env: DLNFLOW_TEAM_KEY"),
         expect=("set the environment variable DLNFLOW_TEAM_KEY",)),
    Case("backend-closed-port", TRAIN, code=1, backend="real",
         spec=openai_model("model: m, base_url: 'http://127.0.0.1:9/v1', max_retries: 0"),
         expect=("http://127.0.0.1:9/v1 is unreachable", "check that it is running")),
    Case("backend-not-http", TRAIN, backend="real", spec=openai_model("model: m, base_url: 'ftp://127.0.0.1:9/v1'"),
         expect=("'ftp://127.0.0.1:9/v1' is not an http(s) URL",)),
    Case("backend-bad-port", TRAIN, backend="real",
         spec=openai_model("model: m, base_url: 'http://127.0.0.1:99999/v1'"),
         expect=("has an invalid port",)),
    Case("backend-gguf-not-a-gguf", TRAIN, backend="real",
         spec={"models": "  local: {backend: llamacpp, path: {models}/not_a_model.gguf}"},
         expect=("not_a_model.gguf is not a GGUF model file", "does not start with")),
    Case("backend-gguf-truncated", TRAIN, backend="real",
         spec={"models": "  local: {backend: llamacpp, path: {models}/truncated.gguf}"},
         expect=("llama.cpp could not load", "truncated.gguf", "whole GGUF file")),
    Case("backend-gguf-missing", VALIDATE, backend="real",
         spec={"models": "  local: {backend: llamacpp, path: missing.gguf}"},
         expect=("s.yaml:4:36: model file not found: missing.gguf", "/models/local/path")),
    Case("backend-dln2-chat-model-cannot-score", TRAIN, backend="real",
         spec={**openai_model("model: m, base_url: 'http://127.0.0.1:9/v1', chat: true, max_retries: 0"),
               "layers": TWO_LAYERS, "train": VI},
         expect=("cannot 'score', which method vi", "llamacpp")),
    Case("backend-dln2-server-without-echo", TRAIN, backend="fake:no_echo",
         spec={**openai_model("model: m, base_url: '{fake}', max_retries: 0"),
               "layers": TWO_LAYERS, "train": VI},
         expect=("cannot 'score', which method vi", "echo=True")),
    Case("backend-wrong-key", TRAIN, code=1, backend="fake:unauthorized",
         spec=openai_model("model: m, base_url: '{fake}', max_retries: 0"),
         expect=("failed with HTTP 401", "check the API key in the environment variable OPENAI_API_KEY")),
    Case("backend-unknown-model", TRAIN, code=1, backend="fake:unknown_model",
         spec=openai_model("model: m, base_url: '{fake}', max_retries: 0"),
         expect=("failed with HTTP 404", "that the server knows model 'm'")),
]
# -- round 2: hostile inputs (issue 13) ------------------------------------------------------------------
SECRET = "PASSWORD-hunter2"
def bomb(indent: str = "") -> str:
    """A "billion laughs": 8 levels of 9 aliases each, under 1 KB, 9**8 values once expanded."""
    return "".join(f"{indent}l{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i else "x"] * 9) + "]\n" for i in range(8))


BOMB = bomb()
LOCK = ("schema: 1\nlayers:\n  answer: {prompt: Say blue or red.}\nmodels: {local: {backend: llamacpp}}\n"
        "data: {sha256: x}\ntrain: {}\n")
STATUS = ["--cache-dir", "{tmp}/cache", "status", "--strict", "{spec}"]
VERIFY = ["--cache-dir", "{tmp}/cache", "cache", "verify"]
AUTH_URL = "{fakeauth}"
CASES += [
    # item 1: a lock may not steer models, endpoints, backends or keys
    Case("lock-sweep-sets-base-url", STATUS, setup="lock:" + LOCK + "sweep: {best: {run: r, seed: 1, overrides: "
         "{models.local.backend: openai, 'models.local.base_url': 'http://127.0.0.1:9/v1'}}}\n",
         expect=("models.local.backend, models.local.base_url were not applied",
                 "a lock file may not choose models, endpoints, backends or credentials")),
    # item 2: credentials in base_url never shown
    Case("backend-password-in-url-broken-json", TRAIN, code=1, backend="fake:broken_json",
         spec=openai_model(f"model: m, base_url: '{AUTH_URL}', max_retries: 0"),
         expect=("the server's answer was not valid JSON",), absent=(SECRET,)),
    Case("backend-password-in-url-json-output", ["--json", *TRAIN], code=1, backend="fake:broken_json",
         spec=openai_model(f"model: m, base_url: '{AUTH_URL}', max_retries: 0"),
         expect=('"exit_code": 1', "not valid JSON"), absent=(SECRET,)),
    Case("backend-password-in-bad-url", TRAIN, backend="real",
         spec=openai_model(f"model: m, base_url: 'ftp://me:{SECRET}@127.0.0.1:9/v1'"),
         expect=("is not an http(s) URL", "ftp://***@127.0.0.1:9/v1"), absent=(SECRET,)),
    # item 3: bounded parsing
    Case("spec-alias-bomb", VALIDATE, spec={"train": VI + "\nbomb:\n" + bomb("  ")},
         expect=("s.yaml:", "expands to more than 100000 values")),
    Case("spec-recursive-alias", VALIDATE, spec={"train": VI + "\nloop: &a [*a]"},
         expect=("s.yaml:20:7:", "refers to the value that contains it (a recursive alias)")),
    Case("spec-deep-yaml", VALIDATE, spec={"train": VI + "\ndeep: " + "[" * 20000 + "]" * 20000},
         expect=("s.yaml:20:", "nested more than 64 levels deep")),
    Case("spec-deep-json", ["validate", "{tmp}/deep.json"], setup="file:deep.json:" + "[" * 20000 + "]" * 20000,
         expect=("deep.json:1:65: nested more than 64 levels deep",)),
    Case("spec-dev-zero", ["validate", "/dev/zero"], expect=("/dev/zero: this is a character device",)),
    Case("spec-fifo", ["validate", "{tmp}/fifo.yaml"], setup="fifo:fifo.yaml",
         expect=("fifo.yaml: this is a named pipe (FIFO), not a regular file",)),
    Case("spec-symlink-loop", ["validate", "{tmp}/loop.yaml"], setup="loop:loop.yaml",
         expect=("loop.yaml: a loop of symbolic links",)),
    Case("lock-alias-bomb", STATUS, setup="lock:" + LOCK + BOMB,
         expect=("s.lock.yaml:12:5:", "lock file refused", "expands to more than 100000 values")),
    Case("data-deep-jsonl", DRY, spec=data("jsonl", "{tmp}/deep.jsonl"),
         setup="file:deep.jsonl:" + '{"input": ' + "[" * 20000 + "]" * 20000 + ', "target": "blue"}',
         expect=("deep.jsonl:1:", "nested more than 64 levels deep")),
    Case("data-deep-bbh", DRY, spec=data("bbh", "{tmp}/deep.json"),
         setup="file:deep.json:" + '{"examples": ' + "[" * 20000 + "]" * 20000 + "}",
         expect=("deep.json:1:", "nested more than 64 levels deep")),
    Case("data-dev-zero", DRY, spec=data("jsonl", "/dev/zero"),
         expect=("s.yaml:7:9: data path /dev/zero: this is a character device",)),
    Case("data-fifo", DRY, spec=data("csv", "{tmp}/fifo.csv"), setup="fifo:fifo.csv",
         expect=("fifo.csv: this is a named pipe (FIFO), not a regular file", "/data/path")),
    # item 6: cache errors outside opening
    Case("cache-verify-db-is-a-folder", VERIFY, code=1, setup="dbfolder",
         expect=("cache.db is a folder", "move it away")),
    Case("cache-verify-damaged-page", VERIFY, code=1, setup="damaged_page", expect=("problem",)),
    Case("cache-disk-full-mid-run", TRAIN, code=1, setup="disk_full",
         expect=("cannot store", "the disk is full", "every call stored so far is kept")),
    Case("cache-read-only", TRAIN, code=1, setup="read_only_cache",
         expect=("the cache folder is not writable", "--no-cache"), absent=("damaged",)),
    # item 8: no tracebacks
    Case("spec-negative-split-seed", DRY, spec=data("jsonl", "{data}/../data_more/too_few.jsonl",
                                                    split="{train: 1, dev: 1, test: null, seed: -1}"),
         expect=("s.yaml:8:47:", "must be at least 0", "/data/split/seed")),
    Case("spec-huge-iterations", DRY, spec={"train": "  iterations: 1000000000000"},
         expect=("must be at most 10000", "/train/iterations")),
    Case("spec-iterations-as-float", ["validate", "{tmp}/f.json"], setup="jsonspec:iterations:1e12",
         expect=("f.json:", "expected a whole number", "/train/iterations")),
    Case("cli-huge-grid", [*DRY, "--set", "train.iterations=" + ",".join(map(str, range(40))),
                           "--set", "train.batch_size=" + ",".join(map(str, range(1, 41)))],
         expect=("the sweep asks for 1,600 runs", "at most 1,000")),
    Case("data-lone-surrogate", DRY, spec=data("jsonl", "{tmp}/sur.jsonl"),
         setup='file:sur.jsonl:{"input": "caf\\ud800", "target": "blue"}\n{"input": "b", "target": "red"}\n'
               '{"input": "c", "target": "blue"}',
         expect=("sur.jsonl:1:", 'field "input" holds a lone surrogate escape')),
    Case("cli-input-not-utf8", ["--cache-dir", "{tmp}/cache", "run", "{spec}", "--input", "caf\udce9"],
         expect=("is not valid UTF-8 text", "'--input'")),
    Case("lock-models-entry-a-string", STATUS, setup="lock:" + LOCK.replace("{local: {backend: llamacpp}}",
                                                                             "{local: oops}"),
         expect=("s.lock.yaml:4:", 'expected a mapping for model "local", found str')),
    Case("lock-split-a-string", STATUS, setup="lock:" + LOCK.replace("{sha256: x}", "{sha256: x, split: all}"),
         expect=("s.lock.yaml:", 'expected a "split" mapping, found str')),
    Case("report-wrong-typed-summary", ["report", "{tmp}/run"], setup="summary",
         expect=("summary.json", "metrics must be a mapping")),
    Case("runs-folder-unwritable", TRAIN, code=1, setup="runs_is_file",
         expect=("cannot write", "DLNFLOW_RUNS_DIR")),
    Case("export-to-unwritable-folder", ["export", "{spec}", "--to", "dspy", "{spec}/out"], code=1,
         expect=("cannot write", "s.yaml/out")),
    # item 9: NaN and infinity
    Case("spec-nan-timeout", VALIDATE, backend="real",
         spec=openai_model(f"model: m, base_url: 'http://me:{SECRET}@127.0.0.1:9/v1', timeout: .nan"),
         expect=("s.yaml:4:", "nan, which is not a finite number", "/models/api/timeout"), absent=(SECRET,)),
    Case("spec-inf-temperature", VALIDATE,
         spec={"layers": '  - name: answer\n    prompt: "Say blue or red."\n    generate: {temperature: .inf}\n'
                         "    output: {classes: [blue, red]}"},
         expect=("inf, which is not a finite number", "/layers/0/generate/temperature")),
    Case("cli-set-nan", [*DRY, "--set", "train.rewrite_temperature=.nan"],
         expect=("--set train.rewrite_temperature=nan",)),
    # item 10: messages that point the right way
    Case("backend-n-ctx-huge", VALIDATE, spec={"models": "  local: {backend: llamacpp, n_ctx: 100000000}"},
         expect=("s.yaml:4:", "must be at most 1048576", "/models/local/n_ctx")),
    Case("spec-json-unquoted-non-ascii-key", ["validate", "{tmp}/k.json"],
         setup='file:k.json:{"version": 1, "name": "x", ключ: 1}',
         expect=("k.json:1:29: JSON syntax error", "JSON keys must be in double quotes")),
    Case("lock-conflict-markers", STATUS,
         setup="lock:" + LOCK.replace("layers:\n", "layers:\n<<<<<<< HEAD\n  answer: {prompt: A}\n=======\n")
         .replace("\nmodels", "\n>>>>>>> other\nmodels"),
         expect=("s.lock.yaml:3:1: lock file has an unresolved git merge conflict (lines 3-7)",)),
    Case("lock-duplicate-key", STATUS, setup="lock:" + LOCK + "train: {}\n",
         expect=("s.lock.yaml:7:1:", "duplicate key 'train' (first defined at line 6")),
    Case("spec-cyrillic-key", VALIDATE, spec={"train": VI.replace("method", "m\u0435thod")},
         expect=("did you mean 'method'?", "U+0435 CYRILLIC SMALL LETTER IE")),
    Case("cli-empty-input", ["--cache-dir", "{tmp}/cache", "run", "{spec}", "--input", ""],
         expect=("an input is empty",)),
]
THROUGH_THE_ENTRY_POINT = ["cli-unknown-command", "data-ragged-csv", "template-endless-recursion",
                           "backend-closed-port", "backend-gguf-not-a-gguf", "cli-input-file-not-utf8",
                           "spec-alias-bomb", "spec-deep-yaml", "spec-dev-zero", "spec-fifo", "lock-alias-bomb",
                           "backend-password-in-bad-url", "cli-huge-grid"]


# -- running a case --------------------------------------------------------------------------------
def spec_text(parts: dict[str, str]) -> str:
    p = {**BASE, **parts}
    return (f"version: 1\nname: bad\nmodels:\n{p['models']}\ndata:\n{p['data']}\nlayers:\n{p['layers']}\n"
            f"train:\n{p['train']}\n")


def fill(text: str, paths: dict[str, str]) -> str:
    for name, value in paths.items():
        text = text.replace("{" + name + "}", value)
    return text


def prepare(case: Case, tmp: Path, fake_url: str) -> list[str]:
    """Write the case's spec and files under ``tmp``; return its command line."""
    paths = {"tmp": str(tmp), "spec": str(tmp / "s.yaml"), "data": str(HERE / "data"),
             "more": str(HERE / "data_more"), "models": str(HERE / "models"), "cli": str(HERE / "cli"),
             "fake": fake_url, "fakeauth": fake_url.replace("http://", f"http://me:{SECRET}@")}
    (tmp / "s.yaml").write_text(fill(spec_text(case.spec), paths), encoding="utf-8")
    kind, _, arg = case.setup.partition(":")
    if kind in ROUND_TWO_SETUPS:
        ROUND_TWO_SETUPS[kind](tmp, arg)
    if case.setup == "huge_line":
        (tmp / "huge.jsonl").write_text('{"input": "a", "target": "blue"}\n{"input": "'
                                        + "x" * (MAX_LINE_BYTES + 10) + '"}\n')
    elif case.setup == "folder":
        (tmp / "folder.jsonl").mkdir()
    elif case.setup == "cache":
        CallCache(tmp / "cache").close()
    elif case.setup == "broken_lock":
        (tmp / "s.lock.yaml").write_bytes((HERE / "cli" / "broken.lock.yaml").read_bytes())
    elif case.setup == "damaged_cache":
        (tmp / "cache").mkdir()
        (tmp / "cache" / "cache.db").write_bytes(b"this is not a database\n" * 64)
    return [fill(a, paths) for a in case.argv]


def _file(tmp: Path, arg: str) -> None:
    name, _, text = arg.partition(":")
    (tmp / name).write_text(text, encoding="utf-8")


def _damaged_page(tmp: Path, arg: str) -> None:
    """A cache with entries whose database has a page overwritten in the middle."""
    with CallCache(tmp / "cache") as store:
        store.put_many(((f"{i:064x}", {"text": "x" * 200}) for i in range(400)), model="m")
    db = tmp / "cache" / "cache.db"
    data = bytearray(db.read_bytes())
    page = 4096
    middle = (len(data) // page // 2) * page
    data[middle:middle + page] = b"\xff" * page
    db.write_bytes(bytes(data))


def _summary(tmp: Path, arg: str) -> None:
    run = tmp / "run"
    run.mkdir()
    (run / "log.jsonl").write_text('{"iteration": 0, "event": "before", "dev": 0.5}\n')
    (run / "summary.json").write_text('{"metrics": [1, 2], "iterations_run": "three"}\n')


def _jsonspec(tmp: Path, arg: str) -> None:
    key, _, value = arg.partition(":")
    (tmp / "f.json").write_text('{"version": 1, "name": "f", "data": {"format": "task", "task": '
                                '{"name": "label_mapping"}}, "layers": [{"name": "answer", "prompt": "p", '
                                '"output": {"classes": ["blue", "red"]}}], "train": {"' + key + '": ' + value + "}}")


ROUND_TWO_SETUPS: dict[str, Any] = {
    "file": _file,
    "lock": lambda tmp, text: (tmp / "s.lock.yaml").write_text(text, encoding="utf-8"),
    "fifo": lambda tmp, name: os.mkfifo(tmp / name),
    "loop": lambda tmp, name: ((tmp / name).symlink_to(tmp / (name + ".2")),
                               (tmp / (name + ".2")).symlink_to(tmp / name)),
    "dbfolder": lambda tmp, arg: (tmp / "cache" / "cache.db").mkdir(parents=True),
    "damaged_page": _damaged_page,
    "summary": _summary,
    "jsonspec": _jsonspec,
    "runs_is_file": lambda tmp, arg: os.environ.__setitem__("DLNFLOW_RUNS_DIR", str(tmp / "s.yaml")),
}


def fault_setups(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    """Faults no file can cause for a root user: a disk that fills mid-run, a read-only file system."""
    import errno
    import sqlite3

    import diskcache

    if case.setup == "disk_full":
        calls = {"n": 0}
        real = diskcache.Cache.set

        def filling(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] > 3:
                raise sqlite3.OperationalError("database or disk is full")
            return real(self, *args, **kwargs)

        monkeypatch.setattr(diskcache.Cache, "set", filling)
    elif case.setup == "read_only_cache":
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr("dlnflow.runtime.cache._create_private_db", refuse)


def fake_behaviour(fake: FakeOpenAI, behaviour: str) -> None:
    def respond(path: str, body: dict[str, Any]) -> Reply:
        if behaviour == "broken_json":
            return Reply(raw=b'{"id": "cmpl", "choices": [{"text": ')
        if behaviour == "unauthorized":
            return Reply(401, {"error": {"message": "Incorrect API key provided"}})
        if behaviour == "unknown_model":
            return Reply(404, {"error": {"message": f"The model {body.get('model')!r} does not exist"}})
        if body.get("echo"):  # no_echo: a server that refuses echo with logprobs
            return Reply(400, {"error": {"message": "echo is not supported"}})
        return Reply(body=default_completion(body, fake.top))

    fake.respond = respond


@pytest.fixture()
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runs, cache and keys of the environment kept out of the cases."""
    monkeypatch.setenv("DLNFLOW_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DLNFLOW_CACHE_DIR", str(tmp_path / "default-cache"))
    for name in ("OPENAI_API_KEY", "DLNFLOW_TEAM_KEY"):
        monkeypatch.delenv(name, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    return work


def use_standin(monkeypatch: pytest.MonkeyPatch) -> None:
    model = colour_rules(StandIn())
    monkeypatch.setattr("dlnflow.training.network.make_backend", lambda settings, base: model)
    monkeypatch.setattr("dlnflow.planning.sweep.light_backend", lambda settings, base: model)


def check(case: Case, code: int, output: str) -> None:
    assert code == case.code, f"{case.id}: exit {code}, expected {case.code}\n{output}"
    assert "Traceback" not in output, f"{case.id}: a traceback\n{output}"
    for phrase in case.expect:
        assert phrase in output, f"{case.id}: {phrase!r} not in the message:\n{output}"
    for phrase in case.absent:
        assert phrase not in output, f"{case.id}: {phrase!r} must not be shown:\n{output}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, isolated: Path, monkeypatch: pytest.MonkeyPatch,
                   request: pytest.FixtureRequest) -> None:
    fake_url = "http://127.0.0.1:9/v1"
    if case.backend.startswith("fake:"):
        fake: FakeOpenAI = request.getfixturevalue("fake_openai")
        fake_behaviour(fake, case.backend.split(":", 1)[1])
        fake_url = fake.base_url
    if case.backend == "standin":
        use_standin(monkeypatch)
    monkeypatch.setenv("DLNFLOW_RUNS_DIR", os.environ["DLNFLOW_RUNS_DIR"])  # restored after the case
    fault_setups(case, monkeypatch)
    argv = prepare(case, isolated, fake_url)
    result = CliRunner().invoke(cli, argv)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        escaped = type(result.exception).__name__
        pytest.fail(f"{case.id}: {escaped} escaped: {result.exception}\n{result.output}")
    check(case, result.exit_code, result.output)


@pytest.mark.parametrize("case_id", THROUGH_THE_ENTRY_POINT)
def test_bad_input_through_the_entry_point(case_id: str, isolated: Path) -> None:
    """The same cases through ``python -m dlnflow`` (real backends; none of these reaches a model)."""
    case = next(c for c in CASES if c.id == case_id)
    argv = prepare(case, isolated, "http://127.0.0.1:9/v1")
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["DLNFLOW_RUNS_DIR"] = str(isolated.parent / "runs")
    cmd = [sys.executable, "-m", "dlnflow", *argv]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=120)
    check(case, done.returncode, done.stdout + done.stderr)


def test_the_catalog_is_big_enough_and_its_files_are_used() -> None:
    assert len(CASES) >= 40 and len({c.id for c in CASES}) == len(CASES)
    assert all(c.expect for c in CASES)
    used = " ".join(" ".join(c.spec.values()) + " " + " ".join(c.argv) for c in CASES)
    for folder in ("data_more", "models", "cli"):
        for path in (HERE / folder).iterdir():
            assert path.name in used or (folder == "cli" and path.name == "broken.lock.yaml"), path
