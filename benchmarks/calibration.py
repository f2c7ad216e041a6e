"""Calibration of classifier layers: accuracy and predicted labels with none / batch / content_free.

For each spec, the initial prompt (no lock, no training) is evaluated on one split three times,
once per ``output.calibration`` method, set the way ``--set layers.<name>.output.calibration=...``
sets it. The three share one private cache, so ``batch`` costs no calls beyond ``none`` and
``content_free`` adds three per prompt.

    python benchmarks/calibration.py                          # the six specs below, test split
    python benchmarks/calibration.py pipelines/mpqa.yaml --split dev

Writes ``benchmarks/results/calibration.{md,json}`` (with the machine, command and date).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from machine import cpu_model

from dlnflow.spec.compiler import compile_spec
from dlnflow.spec.overrides import apply_overrides
from dlnflow.training.network import Network

ROOT = Path(__file__).resolve().parent.parent
SPECS = ("mpqa", "subj", "trec", "disaster", "navigate", "quickstart")
METHODS = ("none", "batch", "content_free")


def measure(spec: Path, split: str, cache: Path, threads: int | None) -> dict[str, Any]:
    """One spec: per method, accuracy, label counts, calls and the prior used."""
    base = compile_spec(spec)
    if threads is not None:
        base = apply_overrides(base, {f"models.{name}.n_threads": threads for name, settings in base.models.items()
                                      if settings.get("backend", "llamacpp") == "llamacpp"})
    out = base.graph.output
    row: dict[str, Any] = {"spec": spec.name, "layer": out.name, "classes": list(out.classes or ()), "methods": {}}
    for method in METHODS:
        pipeline = apply_overrides(base, {f"layers.{out.name}.output.calibration": method})
        started = time.monotonic()
        with Network(pipeline, cache_dir=cache) as net:
            result = net.evaluate(split)
            usage = net.client.usage.as_dict()
        labels = Counter(result.predictions)
        targets = Counter(e.target for e in getattr(net.dataset, split))
        row["n"] = result.n
        row["targets"] = dict(sorted(targets.items()))
        row["majority"] = round(max(targets.values()) / result.n, 4)
        row["methods"][method] = {
            "accuracy": round(result.accuracy, 4),
            "labels": dict(sorted(labels.items())),
            "prior": [round(p, 4) for p in result.prior] if result.prior else None,
            "backend_calls": usage["backend_calls"],
            "seconds": round(time.monotonic() - started, 1),
        }
        print(f"{spec.name} {method}: {result.accuracy:.2%} {dict(labels)}", file=sys.stderr, flush=True)
    return row


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [
        "# Calibration of classifier layers (initial prompts, no training)",
        "",
        f"- machine: {meta['machine']}",
        f"- model: embedded Gemma 3 270M (llamacpp), split: {meta['split']}",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}, wall time {meta['wall_seconds']:.0f} s",
        "",
        "Accuracy and predicted-label counts per method; `majority` is the share of the most frequent",
        "correct label (what answering one label for everything would score). Calibrated probabilities",
        "are the raw ones divided by the prior and renormalised (`dlnflow/graph/calibration.py`); `batch`",
        "takes the prior from the whole split, `content_free` from the inputs N/A, \"\" and [MASK].",
        "",
        "| spec | n | majority | none | batch | content_free | labels none | labels batch | labels content_free |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        m = r["methods"]
        acc = [f"{m[k]['accuracy']:.0%}" for k in METHODS]
        lab = ["/".join(f"{c} {m[k]['labels'].get(c, 0)}" for c in r["classes"]) for k in METHODS]
        lines.append(f"| {r['spec']} | {r['n']} | {r['majority']:.0%} | " + " | ".join(acc + lab) + " |")
    means = {k: sum(r["methods"][k]["accuracy"] for r in rows) / len(rows) for k in METHODS}
    lines += ["", "Mean accuracy over the specs: "
              + ", ".join(f"{k} {v:.1%}" for k, v in means.items()) + ".", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="*", default=[str(ROOT / "pipelines" / f"{s}.yaml") for s in SPECS])
    ap.add_argument("--split", default="test", choices=["train", "dev", "test"])
    ap.add_argument("--cache-dir", default=None, help="default: a new folder under the system temp folder")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads of the embedded model (1 is far faster on a busy 2-core machine; 0: all cores)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    cache = Path(args.cache_dir or tempfile.mkdtemp(prefix="dlnflow-calibration-"))
    started = time.monotonic()
    rows = [measure(Path(s).resolve(), args.split, cache, args.threads or None) for s in args.specs if Path(s).exists()]
    meta = {
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "command": "python benchmarks/calibration.py" + ("" if args.split == "test" else f" --split {args.split}"),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "split": args.split,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "calibration" if args.split == "test" else f"calibration_{args.split}"
    (out / f"{name}.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    (out / f"{name}.md").write_text(markdown(meta, rows))
    print(markdown(meta, rows))


if __name__ == "__main__":
    main()
