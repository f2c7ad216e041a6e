"""Small variants of the shipped quickstart specs, for short runs on the real embedded model.

Each variant starts from a spec in a project copy (the ``project`` fixture, or :func:`copy_project`),
replaces whole lines of it and writes the result beside the original under a new name. Every line to
replace must occur exactly once: when a shipped spec changes, these tests fail here, loudly, instead of
quietly testing something else.
"""

from __future__ import annotations

from pathlib import Path

QUICKSTART_SPLIT = "  split: {train: 40, dev: 30, test: 36, seed: 42}"
QUICKSTART_DEMOS = "    demos: {k: 6}                     # learned demonstrations, recorded in the lock file\n"
"""The quickstart's demonstrations: the variants below train the instruction alone."""
DLN2_SPLIT = "  split: {train: 40, dev: 20, test: 40, seed: 42}"


def variant(spec: Path, name: str, changes: dict[str, str]) -> Path:
    """``spec`` with each key line replaced by its value, written to ``<name>.yaml`` beside it."""
    text = spec.read_text(encoding="utf-8")
    for old, new in changes.items():
        assert text.count(old) == 1, f"{spec.name}: expected one line {old!r}"
        text = text.replace(old, new)
    out = spec.with_name(f"{name}.yaml")
    out.write_text(text, encoding="utf-8")
    return out


def ape_quickstart(pipelines: Path) -> Path:
    """The quickstart trained by APE: three instructions induced from the four train examples, each
    scored on all four (the batch is the whole train split)."""
    return variant(pipelines / "quickstart.yaml", "quickstart-ape", {
        "name: quickstart": "name: quickstart-ape",
        QUICKSTART_SPLIT: "  split: {train: 4, dev: 4, test: 4, seed: 42}",
        "  method: dln1": "  method: ape",
        QUICKSTART_DEMOS: "",
        "  batch_size: 8": "  batch_size: 4",
        "  prompt_candidates: 4": "  prompt_candidates: 3\n  rewrite_max_tokens: 40",
        "  example_candidates: 3": "  example_candidates: 2",
    })


def tiny_quickstart(pipelines: Path) -> Path:
    """The quickstart with DLN-1 cut to one iteration on four examples and two short rewrites."""
    return variant(pipelines / "quickstart.yaml", "quickstart-tiny", {
        "name: quickstart": "name: quickstart-tiny",
        QUICKSTART_SPLIT: "  split: {train: 4, dev: 4, test: 4, seed: 42}",
        "  iterations: 6": "  iterations: 1",
        QUICKSTART_DEMOS: "",
        "  batch_size: 8": "  batch_size: 4",
        "  prompt_candidates: 4": "  prompt_candidates: 3\n  rewrite_max_tokens: 24",
        "  example_candidates: 3": "  example_candidates: 1",
        "  validate_every: 3": "  validate_every: 1",
    })


CHAIN3_LAYERS = """\
    generate: {max_tokens: 8}
  - name: colour
    inputs: [x, think]
    template: hidden_forward
    prompt: "Name the colour of the word in one word: blue for an animal, red for a fruit."
    generate: {max_tokens: 4}
  - name: answer
    inputs: [x, colour]"""


def chain3(pipelines: Path, iterations: int = 1) -> Path:
    """The DLN-2 quickstart with a second hidden layer (think -> colour -> answer), trained by VI on a
    batch of three with two posterior samples per hidden text."""
    return variant(pipelines / "quickstart-dln2.yaml", "quickstart-chain3", {
        "name: quickstart-dln2": "name: quickstart-chain3",
        DLN2_SPLIT: "  split: {train: 3, dev: 2, test: 2, seed: 42}",
        "    generate: {max_tokens: 16}\n  - name: answer\n    inputs: [x, think]": CHAIN3_LAYERS,
        "  iterations: 2": f"  iterations: {iterations}",
        "  batch_size: 6": "  batch_size: 3",
        "  prompt_candidates: 3": "  prompt_candidates: 2\n  example_candidates: 0\n  rewrite_max_tokens: 24",
    })
