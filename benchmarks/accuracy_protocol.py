"""The settings of the accuracy benchmark: tasks, methods, protocols, and the specs built from them.

A *protocol* fixes the split sizes and every method's hyperparameters. The split seed never
changes (it is the one written in the task's spec), so every method and every training seed
sees exactly the same train/dev/test examples; only the training seed varies between runs.

Each run trains a copy of the task's spec from ``pipelines/`` written as JSON into a scratch
folder, with the data path pointing into ``--data-dir`` and the protocol's settings filled in.
The copy keeps lock files and run folders out of the project.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dlnflow.spec.overrides import set_setting

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = ROOT / "pipelines"

# task -> its data below the data folder (the layout of ../shared/data)
TASK_DATA: dict[str, str] = {
    "hyperbaton": "bbh/hyperbaton.json",
    "navigate": "bbh/navigate.json",
    "date_understanding": "bbh/date_understanding.json",
    "logical_deduction_seven_objects": "bbh/logical_deduction_seven_objects.json",
    "mpqa": "ordered_prompt/mpqa",
    "trec": "ordered_prompt/trec",
    "subj": "ordered_prompt/subj",
    "disaster": "leopard/disaster_eval.json",
}
TASKS = tuple(TASK_DATA)
ROW_FORMAT = 2  # rows written by an older version of the benchmark are run again

# Test accuracy (%) reported by the DLN paper with text-davinci-003 (mean of 3 seeds).
PAPER: dict[str, dict[str, float | None]] = {
    "hyperbaton": {"0-shot": 60.8, "dln1": 91.9, "dln2": None},
    "navigate": {"0-shot": 64.1, "dln1": 68.5, "dln2": 83.1},
    "date_understanding": {"0-shot": 56.4, "dln1": 55.7, "dln2": 75.2},
    "logical_deduction_seven_objects": {"0-shot": 45.9, "dln1": 47.5, "dln2": 45.7},
    "mpqa": {"0-shot": 88.0, "dln1": 88.5, "dln2": None},
    "trec": {"0-shot": 61.9, "dln1": 89.7, "dln2": None},
    "subj": {"0-shot": 61.7, "dln1": 83.2, "dln2": 85.9},
    "disaster": {"0-shot": 81.6, "dln1": 81.7, "dln2": 82.8},
}


@dataclass(frozen=True)
class Method:
    """A row kind of the table: which spec variant it trains and with which dlnflow method.

    ``base`` names the method whose protocol settings the row uses (itself when empty), and
    ``sets`` are extra spec settings as ``--set`` takes them, written into the spec copy;
    ``{output}`` in a setting's name stands for the spec's output (last) layer.
    """

    name: str
    label: str
    variant: str  # "" (one layer), "-dln2" (two layers) or "dspy"
    train_method: str  # dlnflow's train.method, or the DSPy optimizer's name
    base: str = ""
    sets: tuple[tuple[str, Any], ...] = ()

    @property
    def settings_of(self) -> str:
        """The method whose entry in a protocol's ``settings`` this row uses."""
        return self.base or self.name


BASE_METHODS: tuple[Method, ...] = (
    Method("zero-shot", "0-shot", "", "none"),
    Method("few-shot", "few-shot (5)", "", "fewshot"),
    Method("ape", "APE", "", "ape"),
    Method("dln1", "DLN-1", "", "dln1"),
    Method("dln2", "DLN-2", "-dln2", "vi"),
    Method("copro", "DSPy COPRO", "dspy", "copro"),
    Method("mipro", "DSPy MIPROv2", "dspy", "mipro"),
)
# The medium protocol's rows that add settings to a base method: plain data, name -> (base, settings).
CALIBRATED = ("layers.{output}.output.calibration", "batch")
DEMOS = ("layers.{output}.demos.k", 4)
DERIVED_ROWS: dict[str, tuple[str, str, tuple[tuple[str, Any], ...]]] = {
    "zero-shot-cal": ("0-shot calibrated", "zero-shot", (CALIBRATED,)),
    "few-shot-cal": ("few-shot calibrated", "few-shot", (CALIBRATED,)),
    "dln1-cal": ("DLN-1 calibrated", "dln1", (CALIBRATED,)),
    "dln1-demos-cal": ("DLN-1 + demos calibrated", "dln1", (CALIBRATED, DEMOS)),
    "dln2-cal": ("DLN-2 calibrated", "dln2", (CALIBRATED,)),
}


def derived(name: str, label: str, base: str, sets: tuple[tuple[str, Any], ...]) -> Method:
    b = next(m for m in BASE_METHODS if m.name == base)
    return Method(name, label, b.variant, b.train_method, base, sets)


METHODS: dict[str, Method] = {m.name: m for m in (
    *BASE_METHODS, *(derived(name, *row) for name, row in DERIVED_ROWS.items()))}
DLN_METHODS = tuple(n for n, m in METHODS.items() if m.variant != "dspy")
DSPY_METHODS = tuple(n for n, m in METHODS.items() if m.variant == "dspy")
ORIGINAL_ROWS = tuple(m.name for m in BASE_METHODS)
MEDIUM_ROWS = ("zero-shot", "zero-shot-cal", "few-shot", "few-shot-cal", "dln1", "dln1-cal", "dln1-demos-cal",
               "dln2-cal")


@dataclass(frozen=True)
class Protocol:
    """Split sizes and hyperparameters of every method.

    ``split`` is (train, dev, test); ``split_by_task`` overrides it per task.
    ``hidden_max_tokens`` caps the hidden layer's generation in DLN-2 (``None``: the spec's value).
    """

    name: str
    split: tuple[int, int, int]
    settings: dict[str, dict[str, Any]]
    split_by_task: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    hidden_max_tokens: int | None = None
    dspy: dict[str, dict[str, Any]] = field(default_factory=dict)
    dspy_time_cap: float = 900.0
    rows: tuple[str, ...] = ORIGINAL_ROWS
    output_name: str = ""  # results file name without suffix ("" : accuracy-<name>)

    def split_for(self, task: str) -> tuple[int, int, int]:
        return self.split_by_task.get(task, self.split)

    def config(self, task: str, method: str) -> dict[str, Any]:
        """Everything that determines a row's result except the training seed."""
        out: dict[str, Any] = {"protocol": self.name, "split": list(self.split_for(task)),
                               "row_format": ROW_FORMAT}
        if METHODS[method].variant == "dspy":
            out["dspy"] = self.dspy.get(method, {})  # the time cap is left out: it changes no result
        else:
            out["train"] = self.settings.get(METHODS[method].settings_of, {})
            if METHODS[method].sets:
                out["sets"] = [list(kv) for kv in METHODS[method].sets]
            if METHODS[method].variant == "-dln2":
                out["hidden_max_tokens"] = self.hidden_max_tokens
        return out

    def fingerprint(self, task: str, method: str) -> str:
        text = json.dumps(self.config(task, method), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def describe(self) -> dict[str, Any]:
        return asdict(self)


SMALL = Protocol(
    name="small",
    split=(40, 20, 50),
    settings={
        "zero-shot": {},
        "few-shot": {"few_shot": 5},
        "ape": {"prompt_candidates": 4, "batch_size": 8},
        "dln1": {"iterations": 3, "batch_size": 8, "prompt_candidates": 3, "validate_every": 1},
        "dln2": {"iterations": 2, "batch_size": 6, "prompt_candidates": 3, "hidden_samples": 2,
                 "validate_every": 1},
    },
    hidden_max_tokens=32,
    dspy={
        "copro": {"breadth": 3, "depth": 1, "init_temperature": 1.0, "train_size": 20},
        "mipro": {"num_candidates": 2, "num_trials": 2, "max_bootstrapped_demos": 0,
                  "max_labeled_demos": 0, "train_size": 20},
    },
    dspy_time_cap=2400.0,
)

PAPER_PROTOCOL = Protocol(
    name="paper",
    split=(100, 50, 100),
    split_by_task={"disaster": (1000, 250, 250)},
    settings={
        "zero-shot": {},
        "few-shot": {"few_shot": 5},
        "ape": {"prompt_candidates": 20, "batch_size": 20},
        "dln1": {"iterations": 20, "batch_size": 20, "prompt_candidates": 20, "validate_every": 2},
        "dln2": {"iterations": 20, "batch_size": 20, "prompt_candidates": 20, "hidden_samples": 5,
                 "validate_every": 2},
    },
    dspy={
        "copro": {"breadth": 10, "depth": 3, "init_temperature": 1.4, "train_size": 100},
        "mipro": {"auto": "light", "train_size": 100},
    },
    dspy_time_cap=7200.0,
)

BBH_TASKS = ("hyperbaton", "navigate", "date_understanding", "logical_deduction_seven_objects")

# BBH tasks have 250 examples in all: test gets 150 (the paired differences this protocol is for
# shrink with the test size), dev 60 (it only chooses among a few candidates), train 40 (enough for
# batches of 8, five few-shot examples and four demonstrations). The others draw dev and test from
# their own files (mpqa, subj, trec) or a pool of 5430 (disaster): train 100, dev 100, test 200.
MEDIUM = Protocol(
    name="medium",
    split=(100, 100, 200),
    split_by_task=dict.fromkeys(BBH_TASKS, (40, 60, 150)),
    settings={
        "zero-shot": {},
        "few-shot": {"few_shot": 5},
        # one dev validation per run (at the last iteration): with dev at 60-100 examples each
        # validation costs as much as the whole training (see the sizing in benchmarks/README.md)
        "dln1": {"iterations": 3, "batch_size": 8, "prompt_candidates": 3, "validate_every": 3},
        "dln2": {"iterations": 2, "batch_size": 6, "prompt_candidates": 3, "hidden_samples": 2,
                 "validate_every": 2},
    },
    hidden_max_tokens=32,
    rows=MEDIUM_ROWS,
    output_name="accuracy_medium",
)

PROTOCOLS = {"small": SMALL, "paper": PAPER_PROTOCOL, "medium": MEDIUM}


def spec_document(task: str, method: str, protocol: Protocol, seed: int, data_dir: Path,
                  threads: int | None = None) -> dict[str, Any]:
    """The task's spec from ``pipelines/`` with the protocol's data split and settings filled in.

    ``threads`` sets ``n_threads`` of the embedded model (``None``: its default, all cores).
    """
    variant = METHODS[method].variant if METHODS[method].variant != "dspy" else ""
    source = PIPELINES / f"{task}{variant}.yaml"
    doc: dict[str, Any] = yaml.safe_load(source.read_text(encoding="utf-8"))
    train_n, dev_n, test_n = protocol.split_for(task)
    data = doc["data"]
    data["path"] = str((data_dir / TASK_DATA[task]).resolve())
    data["split"] = {**data.get("split", {}), "train": train_n, "dev": dev_n, "test": test_n}
    train = {k: v for k, v in doc.get("train", {}).items() if k in ("backward_model",)}
    train.update(protocol.settings.get(METHODS[method].settings_of, {}))
    train["method"] = "none" if METHODS[method].variant == "dspy" else METHODS[method].train_method
    train["seed"] = seed
    doc["train"] = train
    if threads is not None:
        models = doc.setdefault("models", {"local": {"backend": "llamacpp"}})
        for model in models.values():
            if model.get("backend", "llamacpp") == "llamacpp":
                model["n_threads"] = threads
    if variant == "-dln2" and protocol.hidden_max_tokens is not None:
        for layer in doc["layers"][:-1]:
            layer.setdefault("generate", {})["max_tokens"] = protocol.hidden_max_tokens
    for key, value in row_settings(method, doc):
        set_setting(doc, key, value)
    return doc


def row_settings(method: str, doc: dict[str, Any]) -> list[tuple[str, Any]]:
    """The row's extra settings with ``{output}`` resolved to the spec's output (last) layer."""
    output = doc["layers"][-1]["name"]
    return [(key.replace("{output}", output), value) for key, value in METHODS[method].sets]


def write_spec(task: str, method: str, protocol: Protocol, seed: int, data_dir: Path, folder: Path,
               threads: int | None = None) -> Path:
    """Write the filled-in spec as JSON into ``folder`` (one file per task, method and seed)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{task}-{method}-seed{seed}.json"
    doc = spec_document(task, method, protocol, seed, data_dir, threads)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def unaccepted_settings(task: str, method: str, protocol: Protocol, data_dir: Path, folder: Path) -> str | None:
    """Why this dlnflow cannot build the row's spec (a setting it does not know yet), or ``None``.

    Only rows with extra settings are checked, and only their settings are to blame: the same spec
    without them compiles.
    """
    if not METHODS[method].sets:
        return None
    from dlnflow.core.errors import DlnflowError
    from dlnflow.spec.compiler import compile_spec

    spec = write_spec(task, method, protocol, 0, data_dir, folder)
    try:
        compile_spec(spec)
    except DlnflowError as exc:
        where = str(spec.parent) + os.sep
        return f"this dlnflow does not accept the row's settings yet: {str(exc).replace(where, '')}"
    return None
