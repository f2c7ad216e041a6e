"""Starter pipelines: ``dlnflow init NAME`` writes ``NAME.yaml`` and a tiny ``NAME.jsonl``.

The spec is commented line by line and starts with the ``yaml-language-server`` modeline, so
editors offer completion and hover help from the JSON Schema. When a project's
``schemas/pipeline.schema.json`` is found at or above the target folder the modeline points at
it with a relative path; otherwise at the schema copy inside the installed package.

The data is a placeholder a user replaces with their own: a dozen rows per class, generated
deterministically, whose inputs carry what decides the class, so the starter trains and
scores sensibly on the embedded model. Classes with a built-in word list (``animal``,
``fruit``, ``positive``, ``negative``) get real words or short sentences; any other class
gets short sentences that mention the class name.

>>> rows = make_rows(("animal", "fruit"))
>>> len(rows), sorted({r["target"] for r in rows})
(24, ['animal', 'fruit'])
>>> make_rows(("animal", "fruit")) == rows
True
>>> parse_classes("spam, ham")
('spam', 'ham')
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from dlnflow.core.errors import InputError
from dlnflow.data.tasks.label_mapping import ANIMALS, FRUITS

DEFAULT_CLASSES: tuple[str, ...] = ("animal", "fruit")
ROWS_PER_CLASS = 12
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SCHEMA_RELATIVE = Path("schemas") / "pipeline.schema.json"

POSITIVE: tuple[str, ...] = (
    "I loved every minute of it.", "What a wonderful surprise this was.", "The staff were kind and helpful.",
    "Best purchase I have made all year.", "It works perfectly and looks great.",
    "A truly delightful evening.",
    "I would happily recommend it to friends.", "The food was delicious.", "Fantastic value for the money.",
    "Everything arrived early and in perfect shape.", "This made me so happy.", "An excellent, moving film.",
    "The room was clean, bright and comfortable.", "Brilliant work, thank you!",
)
NEGATIVE: tuple[str, ...] = (
    "I hated every minute of it.", "What a terrible waste of time.", "The staff were rude and unhelpful.",
    "Worst purchase I have made all year.", "It broke on the first day.", "A truly miserable evening.",
    "I would never recommend it to anyone.", "The food was cold and tasteless.", "Awful value for the money.",
    "Everything arrived late and damaged.", "This made me so angry.", "A dull, painful film.",
    "The room was dirty, dark and noisy.", "Disappointing work, sadly.",
)
WORD_LISTS: dict[str, tuple[str, ...]] = {
    "animal": ANIMALS, "fruit": FRUITS, "positive": POSITIVE, "negative": NEGATIVE,
}
MENTION_TEMPLATES: tuple[str, ...] = (
    "This one is {c}.", "Clearly {c}, as far as I can tell.", "I would file it under {c}.",
    "Everything about it says {c}.", "Put it with the other {c} items.", "It looks {c} to me.",
    "Label this as {c}, please.", "Another case of {c}.", "Without doubt: {c}.", "My guess is {c}.",
    "The answer here is {c}.", "Once again, {c}.", "It belongs in the {c} group.", "Typical {c}.",
)


@dataclass(frozen=True)
class Scaffold:
    """What ``dlnflow init`` writes: the spec and its data file."""

    spec: Path
    data: Path
    classes: tuple[str, ...]
    layers: int


# -- checking what the user asked for -----------------------------------------------------------
def check_name(name: str) -> str:
    """A pipeline name as the schema allows it (it also names the files)."""
    if not NAME_PATTERN.match(name):
        raise InputError(f"invalid pipeline name {name!r}: start with a letter or digit and continue with "
                         "letters, digits, '_', '.' or '-' (for example: my-pipeline)")
    return name


def parse_classes(text: str) -> tuple[str, ...]:
    """``"a, b,c"`` -> ``("a", "b", "c")``; at least two distinct, non-empty classes."""
    classes = tuple(part.strip() for part in text.split(","))
    if any(not c for c in classes):
        raise InputError(f"--classes {text!r} has an empty class; write them like --classes yes,no")
    if len(classes) < 2:
        raise InputError(f"--classes {text!r} names one class; a classifier needs at least two (e.g. yes,no)")
    if len(set(classes)) != len(classes):
        raise InputError(f"--classes {text!r} repeats a class; each class must be different")
    return classes


# -- the modeline -------------------------------------------------------------------------------
def schema_reference(folder: Path) -> str:
    """Where the spec's modeline points: a project's schema relative to ``folder``, else the package's."""
    folder = folder.resolve()
    for base in [folder, *folder.parents]:
        candidate = base / SCHEMA_RELATIVE
        if candidate.is_file():
            return Path(os.path.relpath(candidate, folder)).as_posix()
    return str(Path(str(resources.files("dlnflow").joinpath("schema/pipeline.schema.json"))))


# -- data ---------------------------------------------------------------------------------------
def class_inputs(label: str, count: int, rng: random.Random) -> list[str]:
    """``count`` distinct inputs of class ``label``: from its word list, else sentences naming it."""
    words = WORD_LISTS.get(label.lower())
    if words is not None and len(words) >= count:
        return rng.sample(list(words), count)
    return [MENTION_TEMPLATES[i % len(MENTION_TEMPLATES)].format(c=label) for i in range(count)]


def make_rows(classes: tuple[str, ...], per_class: int = ROWS_PER_CLASS,
              seed: int = 0) -> list[dict[str, str]]:
    """``per_class`` rows per class, shuffled; the same rows for the same arguments."""
    rng = random.Random(seed)
    rows = [{"input": text, "target": label}
            for label in classes for text in class_inputs(label, per_class, rng)]
    rng.shuffle(rows)
    return rows


def render_rows(rows: list[dict[str, str]]) -> str:
    """JSON Lines text (keys in a fixed order, non-ASCII kept)."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


# -- the spec -----------------------------------------------------------------------------------
def _quoted(values: tuple[str, ...]) -> str:
    """A YAML flow list of double-quoted strings (so 'yes', 'no' or 'null' stay text)."""
    return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in values) + "]"


def _choice(classes: tuple[str, ...]) -> str:
    """``("a", "b", "c")`` -> ``a, b or c``."""
    return ", ".join(classes[:-1]) + " or " + classes[-1]


HIDDEN_LAYER = """\
  - name: think                    # a hidden layer: writes a short note for the next layer
    inputs: [x]                    # x is the input of each example
    template: hidden_forward
    prompt: "Describe the input in a few words."
    generate: {max_tokens: 16}
"""


def _layers_block(classes: tuple[str, ...], layers: int) -> str:
    instruction = json.dumps(f"Read the input and answer with one word: {_choice(classes)}.",
                             ensure_ascii=False)
    inputs = ("[x, think]             # residual: the input and the hidden text" if layers == 2
              else "[x]                    # x is the input of each example")
    answer = (
        "  - name: answer                   # the output layer (the last one)\n"
        f"    inputs: {inputs}\n"
        "    template: classify_forward     # a built-in template, or inline Jinja text\n"
        f"    prompt: {instruction}\n"
        f"    output: {{classes: {_quoted(classes)}}}   # answers are scored by class probability\n"
    )
    return answer if layers == 1 else HIDDEN_LAYER + answer


def _train_block(layers: int) -> str:
    if layers == 2:
        return ("train:\n"
                "  method: vi                       # DLN-2: both prompts, hidden texts as latent variables\n"
                "  iterations: 1                    # raise for real work\n"
                "  batch_size: 4\n"
                "  prompt_candidates: 2\n"
                "  hidden_samples: 2                # posterior hidden texts per example\n"
                "  validate_every: 1\n"
                "  seed: 42\n")
    return ("train:\n"
            "  method: dln1                     # prompt search on the output layer\n"
            "  iterations: 2                    # raise for real work\n"
            "  batch_size: 4\n"
            "  prompt_candidates: 3             # current prompt + rewrites + one with worked examples\n"
            "  validate_every: 1                # evaluate on dev after every step, keep the best\n"
            "  seed: 42\n")


def render_spec(name: str, classes: tuple[str, ...], layers: int, schema_ref: str, data_file: str) -> str:
    """The commented starter spec."""
    n = len(classes) * ROWS_PER_CLASS
    train, dev = n // 2, n // 4
    return (
        f"# yaml-language-server: $schema={schema_ref}\n"
        "#\n"
        f"# {name}: a starter Deep Language Network written by `dlnflow init`.\n"
        f"# {data_file} holds a small generated placeholder data set: replace it with your own\n"
        "# examples, one JSON object a line with \"input\" and \"target\" (a target is one of the\n"
        "# classes below), then raise the split sizes and the iterations.\n"
        "#\n"
        f"#   dlnflow validate {name}.yaml\n"
        f"#   dlnflow train {name}.yaml       # writes the learned prompts to {name}.lock.yaml\n"
        f"#   dlnflow report {name}.yaml      # report.md and learning_curve.png of the run\n"
        "version: 1\n"
        f"name: {name}\n"
        f"description: Starter pipeline with {layers} layer{'s' if layers > 1 else ''} "
        f"and classes {_choice(classes)}.\n"
        "models:\n"
        "  local: {backend: llamacpp}       # embedded Gemma 3 270M: no key, no server\n"
        "  # api: {backend: openai, model: gpt-4o-mini, chat: true}           # key from OPENAI_API_KEY\n"
        "  # server: {backend: openai, base_url: http://127.0.0.1:8000/v1, model: my-model}\n"
        "data:\n"
        "  format: jsonl\n"
        f"  path: {json.dumps(data_file).ljust(25)} # relative to this file\n"
        f"  split: {{train: {train}, dev: {dev}, test: {n - train - dev}, seed: 0}}\n"
        "layers:\n"
        + _layers_block(classes, layers)
        + "loss: exact_match\n"
        + _train_block(layers)
    )


# -- writing ------------------------------------------------------------------------------------
def scaffold(name: str, folder: Path, layers: int = 1,
             classes: tuple[str, ...] = DEFAULT_CLASSES) -> Scaffold:
    """Write ``NAME.yaml`` and ``NAME.jsonl`` into ``folder``; never overwrite an existing file."""
    check_name(name)
    if layers not in (1, 2):
        raise InputError(f"--layers must be 1 or 2, not {layers}")
    spec, data = folder / f"{name}.yaml", folder / f"{name}.jsonl"
    existing = [p for p in (spec, data) if p.exists()]
    if existing:
        verb = "exists" if len(existing) == 1 else "exist"
        raise InputError(f"{' and '.join(str(p) for p in existing)} already {verb}; init never overwrites "
                         "files: choose another NAME or --dir, or move the file away")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        text = render_spec(name, classes, layers, schema_reference(folder), data.name)
        _create(data, render_rows(make_rows(classes)))
        _create(spec, text)
    except FileExistsError as exc:
        raise InputError(f"{exc.filename} already exists; init never overwrites files") from exc
    except OSError as exc:
        raise InputError(f"cannot write into {folder}: {exc.strerror or exc}; choose another --dir") from exc
    return Scaffold(spec, data, classes, layers)


def _create(path: Path, text: str) -> None:
    """Write a new file; ``FileExistsError`` if something is already there."""
    with open(path, "x", encoding="utf-8") as fh:
        fh.write(text)
