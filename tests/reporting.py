"""Helpers for the report tests (``report/`` and ``cli/``): a fabricated run folder, PNG checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
USAGE = {"backend_calls": 10, "cache_hits": 4, "completion_tokens": 30, "prompt_tokens": 900,
         "saved_prompt_tokens": 120, "saved_completion_tokens": 7, "retries": 0}


def step(it: int, objective: float, prompt: str, dev: float | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "iteration": it, "event": "step", "batch_accuracy": 0.5,
        "layers": {"answer": {"candidates": [{"prompt": prompt, "score": objective}], "chosen": 0,
                              "objective": objective}},
        "prompts": {"answer.prompt": prompt}, "usage": USAGE,
    }
    if dev is not None:
        record["dev"] = dev
    return record


def fabricate(folder: Path, finished: bool = True) -> Path:
    """A run folder as the trainer writes it: 4 steps, dev measured at 0, 2 and 4."""
    run = folder / "runs" / "demo" / "seed1-abcdef12"
    run.mkdir(parents=True)
    records = [
        {"iteration": 0, "event": "before", "prompts": {"answer.prompt": "Pick one."}, "dev": 0.25,
         "usage": USAGE},
        step(1, -1.5, "Pick one. Example: cat -> blue"),
        step(2, -1.0, "Pick one. Example: cat -> blue", dev=0.5),
        step(3, -0.8, "Animals are blue."),
        step(4, -0.6, "Animals are blue, fruits red.", dev=0.75),
    ]
    text = "".join(json.dumps(r) + "\n" for r in records)
    (run / ("log.jsonl" if finished else "log.jsonl.partial")).write_text(text)
    if finished:
        summary = {**USAGE, "metrics": {"dev_before": 0.25, "test_before": 0.3, "dev": 0.75, "test": 0.7},
                   "prompts": {"answer.prompt": "Animals are blue, fruits red."}, "iterations_run": 4,
                   "best_iteration": 4, "wall_seconds": 12.5, "run_dir": str(run)}
        (run / "summary.json").write_text(json.dumps(summary))
    return run


def check_png(path: Path) -> None:
    """A real, readable, non-trivial PNG."""
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000
    pixels = imread(str(path))
    assert pixels.shape[0] >= 300 and pixels.shape[1] >= 400
    assert pixels.std() > 0.05  # not a blank canvas


# -- reading ------------------------------------------------------------------------------------
