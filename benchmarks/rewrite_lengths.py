"""How long rewrites are before and after the template stop sequences (embedded model, navigate).

Builds DLN-1 rewrite requests the way the optimizer does (the rewrite template, five worked
examples from navigate's train split, each of the rewrite instructions in turn, temperature 0.7,
one sample index per request) and answers each twice in one process, interleaved:

- before: ``max_tokens=96`` and the blank-line stop only (the settings on main before this change);
- after: ``max_tokens=64`` and :func:`dlnflow.graph.templates.backward_stops` ("rewrite").

Sampling is seeded per request, so both answers are the same tokens until one of them stops: the
after text is the before text cut earlier. The script reports generated tokens, seconds, and what
the cut removed (the instruction the optimizer keeps, from ``clean_proposal``, before and after).
Tokens are the measure; seconds favour "after", which reuses the prompt its "before" twin left in
the KV cache.

    python benchmarks/rewrite_lengths.py --n 12
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dlnflow.backends.llamacpp.backend import LlamaCppBackend  # noqa: E402
from dlnflow.backends.llamacpp.gguf import embedded_model_path  # noqa: E402
from dlnflow.core.backend import Request  # noqa: E402
from dlnflow.graph.templates import REWRITE_INSTRUCTIONS, backward, backward_stops  # noqa: E402
from dlnflow.optim.common import Shown, clean_proposal  # noqa: E402

DATA = (ROOT.parent / "shared" / "data" / "bbh" / "navigate.json").resolve()
PROMPT = "Decide whether the moves below bring you back to where you started."


def requests(n: int) -> list[tuple[Request, Request]]:
    examples = json.loads(DATA.read_text())["examples"]
    shown = [Shown(e["input"], "Yes" if i % 3 else "No", e["target"], ("Yes" if i % 3 else "No") == e["target"])
             for i, e in enumerate(examples[: n + 5])]
    tpl = backward("rewrite")
    pairs = []
    for k in range(n):
        text = tpl.render(prompt=PROMPT, examples=shown[k: k + 5],
                          instruction=REWRITE_INSTRUCTIONS[k % len(REWRITE_INSTRUCTIONS)])
        common = {"temperature": 0.7, "seed": 42, "sample": k + 1}
        pairs.append((Request("generate", text, max_tokens=96, stop=("\n\n",), **common),
                      Request("generate", text, max_tokens=64, stop=backward_stops("rewrite"), **common)))
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    model = LlamaCppBackend(embedded_model_path())
    rows: list[dict[str, Any]] = []
    load = os.getloadavg()[0]
    for before, after in requests(args.n):
        row: dict[str, Any] = {}
        for name, req in (("before", before), ("after", after)):
            started = time.perf_counter()
            [answer] = model.run([req])
            row[name] = {"tokens": answer["completion_tokens"], "seconds": round(time.perf_counter() - started, 2),
                         "text": answer["text"], "kept": clean_proposal(answer["text"])}
        rows.append(row)
        print(row["before"]["tokens"], row["after"]["tokens"], repr(row["after"]["kept"]), flush=True)
    model.close()
    summary = {side: {"tokens_mean": round(statistics.mean(r[side]["tokens"] for r in rows), 1),
                      "tokens_median": statistics.median(r[side]["tokens"] for r in rows),
                      "tokens_max": max(r[side]["tokens"] for r in rows),
                      "seconds_total": round(sum(r[side]["seconds"] for r in rows), 1)}
               for side in ("before", "after")}
    summary["kept_instruction_identical"] = sum(r["before"]["kept"] == r["after"]["kept"] for r in rows)
    payload = {"machine": f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}",
               "date": dt.date.today().isoformat(), "command": "python benchmarks/rewrite_lengths.py "
               + " ".join(sys.argv[1:]), "load_average_1min": [round(load, 2), round(os.getloadavg()[0], 2)],
               "summary": summary, "rows": rows}
    out = Path(args.out)
    (out / "rewrite_lengths.json").write_text(json.dumps(payload, indent=2) + "\n")
    md = [f"# Rewrite lengths before and after the stop sequences ({len(rows)} navigate rewrites)", "",
          f"- machine: {payload['machine']}", f"- date: {payload['date']}", f"- command: `{payload['command']}`",
          f"- load average (1 min) at start / end: {payload['load_average_1min'][0]} / "
          f"{payload['load_average_1min'][1]} (seconds are only comparable within this run)", "",
          "| | tokens mean | median | max | seconds (all requests) |", "|---|---:|---:|---:|---:|"]
    for side in ("before", "after"):
        s = summary[side]
        md.append(f"| {side} | {s['tokens_mean']} | {s['tokens_median']} | {s['tokens_max']} | {s['seconds_total']} |")
    md += ["", f"Kept instruction identical in {summary['kept_instruction_identical']} of {len(rows)} requests; "
           "the others below (what the stops cut):", ""]
    for r in rows:
        if r["before"]["kept"] != r["after"]["kept"]:
            md += [f"- before ({r['before']['tokens']} tokens): `{json.dumps(r['before']['kept'])}`",
                   f"  after ({r['after']['tokens']} tokens): `{json.dumps(r['after']['kept'])}`"]
    (out / "rewrite_lengths.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
