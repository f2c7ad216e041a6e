"""Scoring speed of the embedded backend against raw llama.cpp evaluation, in the same run.

Workload: N candidate prompts x B examples, as prompt search scores them (every candidate on
the same batch of examples), each a ``classify`` request with two verbalizers. Requests are
sent in the order a trainer builds them: all examples of candidate 1, then candidate 2, ...

Timed paths (same loaded model, same process; the three paths take turns on each candidate's
batch of examples, so they run under the same machine load; each repeat sums over candidates):
  raw         each request's full context, tokenized as dlnflow does (BOS + prompt), evaluated
              from an empty KV cache with llama.cpp's batch API in one ``llama_decode`` call,
              logits at the last position only; nothing else (no softmax, no Python result)
  dlnflow     ``LlamaCppBackend.run(all requests)`` from an empty cache: tokenization, aligned
              block evaluation, prefix reuse between consecutive requests, log-softmax, results
  cold        ``LlamaCppBackend.run([request])`` with the KV cache emptied before each request:
              the same work as ``dlnflow`` without any reuse between requests

tokens/s = context tokens of the workload / seconds (median over repeats); ratio = dlnflow tokens/s
/ raw tokens/s = raw time / dlnflow time within one repeat (both count the same tokens), median
over repeats.

A second workload uses verbalizers " (A)" / " (B)" that share their first token, so classify
must evaluate each verbalizer's tokens after the context; its raw baseline evaluates each
context + verbalizer sequence (minus the verbalizer's last token) from scratch, and its tokens
count the context once plus each verbalizer's evaluated tokens.

Run from the project root:  python benchmarks/bench_scoring.py [--candidates 4] [--batch 8]
Writes benchmarks/results/bench_scoring.md and .json.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import cpu_model  # noqa: E402

from dlnflow.backends.llamacpp.backend import LlamaCppBackend  # noqa: E402
from dlnflow.backends.llamacpp.engine import BLOCK, Engine  # noqa: E402
from dlnflow.core.backend import Request  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SUBJ = ROOT.parent / "shared" / "data" / "ordered_prompt" / "subj" / "train.jsonl"

CANDIDATES = [
    "Is the sentence subjective or objective?",
    "Decide whether the sentence below expresses a personal opinion, feeling or judgement "
    "(subjective) or reports facts, events or the plot of a story (objective). Read it carefully, "
    "then answer with a single word.",
    "Label each sentence as subjective or objective.\n"
    "Sentence: the film is a charming, funny and touching portrait of a family.\nLabel: subjective\n"
    "Sentence: after losing his job, a father moves his children to a small town in maine.\n"
    "Label: objective\n"
    "Sentence: it is a dull, lifeless movie that never finds its rhythm.\nLabel: subjective",
    "A sentence is subjective when it gives the writer's view: praise, criticism, feelings, "
    "judgements of quality. It is objective when it only tells what happens or what is, such as "
    "the events of a plot or facts about people and places.\n"
    "Sentence: the story follows two sisters who inherit a farm in the countryside.\n"
    "Label: objective\n"
    "Sentence: a beautifully acted drama that stays with you long after it ends.\nLabel: subjective\n"
    "Sentence: in 1944, a young soldier is sent behind enemy lines to find a missing officer.\n"
    "Label: objective\n"
    "Sentence: the jokes are stale and the pacing is painfully slow.\nLabel: subjective",
]
FALLBACK_SENTENCES = [
    "the movie is a delight from start to finish , with a clever script and warm performances .",
    "a retired detective returns to his home town to investigate the disappearance of a teenager .",
    "it's a mess , but an entertaining one , full of energy and bad ideas .",
    "the film follows three friends as they drive across the country to attend a wedding .",
    "nothing in this picture rings true , and the ending is simply insulting .",
    "when a storm cuts off the island , the residents must decide whom to trust .",
    "one of the most moving documentaries of the year .",
    "the two brothers take over their father's bakery after his sudden death .",
]


def examples(b: int, seed: int) -> tuple[list[str], str]:
    """B example sentences: from the shared subj data when it is beside the project."""
    if SUBJ.exists():
        rows = [json.loads(line)["sentence"].strip().strip('"') for line in SUBJ.open(encoding="utf-8")]
        return random.Random(seed).sample(rows, b), f"subj train (shared data), {b} sampled with seed {seed}"
    picked = [FALLBACK_SENTENCES[i % len(FALLBACK_SENTENCES)] for i in range(b)]
    return picked, "built-in sentences (shared data not found)"


def build(candidates: int, batch: int, seed: int) -> tuple[list[str], str]:
    sents, source = examples(batch, seed)
    prompts = [f"{CANDIDATES[c % len(CANDIDATES)]}\n\nSentence: {s}\nLabel:"
               for c in range(candidates) for s in sents]
    return prompts, source


def raw_eval(engine: Engine, sequences: list[list[int]]) -> float:
    """Seconds to evaluate each sequence from an empty cache, logits at its last position only."""
    lib = engine.lib
    batch = engine.batch
    start = time.perf_counter()
    if max(len(s) for s in sequences) > engine.n_batch:
        raise SystemExit("a raw sequence is longer than n_batch; shorten the prompts")
    for seq in sequences:
        lib.llama_memory_clear(engine.memory, True)
        batch.n_tokens = len(seq)
        for i, tok in enumerate(seq):
            batch.token[i] = tok
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = i == len(seq) - 1
        if lib.llama_decode(engine.ctx, batch) != 0:
            raise RuntimeError("llama_decode failed in the raw baseline")
    elapsed = time.perf_counter() - start
    engine.reset()
    return elapsed


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_cold(backend: LlamaCppBackend, requests: list[Request]) -> float:
    total = 0.0
    for r in requests:
        backend.engine.reset()
        total += timed(lambda r=r: backend.run([r]))
    return total


def workload(backend: LlamaCppBackend, prompts: list[str], verbs: tuple[str, str],
             repeats: int, group: int) -> dict[str, Any]:
    """Time the three paths on one workload; ``group`` requests (one candidate's batch) at a time."""
    engine = backend.engine
    ctx = [engine.tokenize(p, bos=True) for p in prompts]
    vtoks = [engine.tokenize(v, bos=False) for v in verbs]
    single = all(len(v) == 1 for v in vtoks) and vtoks[0] != vtoks[1]
    if single:
        sequences = ctx
        tokens = sum(len(c) for c in ctx)
    else:
        sequences = [c + v[:-1] for c in ctx for v in vtoks]
        tokens = sum(len(c) + sum(len(v) - 1 for v in vtoks) for c in ctx)
    requests = [Request("classify", p, targets=verbs) for p in prompts]
    per_seq = len(sequences) // len(requests)
    engine.reset()
    backend.run(requests[:2])  # warm-up
    times: dict[str, list[float]] = {"raw": [], "dlnflow": [], "cold": []}
    evaluated = reused = 0
    for _ in range(repeats):
        spent = dict.fromkeys(times, 0.0)
        evaluated = reused = 0
        for lo in range(0, len(requests), group):  # interleaved per candidate: same load for all paths
            spent["raw"] += raw_eval(engine, sequences[lo * per_seq : (lo + group) * per_seq])
            engine.reset()
            before = (engine.evaluated, engine.reused)
            spent["dlnflow"] += timed(lambda lo=lo: backend.run(requests[lo : lo + group]))
            evaluated += engine.evaluated - before[0]
            reused += engine.reused - before[1]
            spent["cold"] += run_cold(backend, requests[lo : lo + group])
        for k, v in spent.items():
            times[k].append(v)
    med = {k: statistics.median(v) for k, v in times.items()}
    tps = {k: tokens / v for k, v in med.items()}
    ratios = [r / d for r, d in zip(times["raw"], times["dlnflow"], strict=True)]
    ratios_cold = [r / c for r, c in zip(times["raw"], times["cold"], strict=True)]
    return {
        "verbalizers": list(verbs),
        "verbalizer_tokens": [len(v) for v in vtoks],
        "path": "single-token" if single else "full-verbalizer",
        "requests": len(requests),
        "context_tokens": [len(c) for c in ctx],
        "workload_tokens": tokens,
        "raw_sequences": len(sequences),
        "dlnflow_tokens_evaluated": evaluated,
        "dlnflow_tokens_reused": reused,
        "seconds": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "median_seconds": {k: round(v, 4) for k, v in med.items()},
        "tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
        "ratios": [round(x, 3) for x in ratios],
        "ratio": round(statistics.median(ratios), 3),
        "ratios_cold": [round(x, 3) for x in ratios_cold],
        "ratio_cold": round(statistics.median(ratios_cold), 3),
    }


def machine(backend: LlamaCppBackend) -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads_used": backend.n_threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "llama_cpp_python": md.version("llama-cpp-python"),
        "model": backend.identity(),
        "n_ctx": backend.n_ctx,
        "n_batch": backend.n_batch,
        "block": BLOCK,
    }


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Scoring speed: dlnflow classify vs raw llama.cpp evaluation",
        "",
        f"- date: {report['date']}",
        f"- command: `{report['command']}`",
        f"- load average (1 min) at start / end: {report['load'][0]} / {report['load'][1]}",
        f"- machine: {m['cpu']}, {m['cores']} cores ({m['threads_used']} threads used), {m['platform']}; "
        f"Python {m['python']}, llama-cpp-python {m['llama_cpp_python']}",
        f"- model: {m['model']['model']} (sha256 {m['model']['sha256'][:12]}...), n_ctx {m['n_ctx']}, "
        f"n_batch {m['n_batch']}, evaluation block {m['block']}",
        f"- workload: {report['candidates']} candidate prompts x {report['batch']} examples "
        f"({report['examples']}); {report['repeats']} repeats, paths interleaved per candidate; "
        "tokens/s from median times, ratio = median of per-repeat ratios",
        "",
        "| verbalizers | path | context tokens (min-max) | workload tokens | raw tok/s | dlnflow tok/s "
        "| ratio | cold tok/s | cold ratio |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for w in report["workloads"]:
        t = w["tokens_per_s"]
        ctx = w["context_tokens"]
        lines.append(
            f"| {' / '.join(repr(v) for v in w['verbalizers'])} | {w['path']} | {min(ctx)}-{max(ctx)} "
            f"| {w['workload_tokens']} | {t['raw']} | {t['dlnflow']} | **{w['ratio']}** | {t['cold']} "
            f"| {w['ratio_cold']} |"
        )
    lines += ["", "Goal: ratio >= 0.8."]
    for w in report["workloads"]:
        goal = "met" if w["ratio"] >= 0.8 else "not met"
        lines.append(
            f"- {w['path']}: ratio {w['ratio']} (goal {goal}; per repeat {w['ratios']}); dlnflow evaluated "
            f"{w['dlnflow_tokens_evaluated']} tokens and reused {w['dlnflow_tokens_reused']} from the KV "
            f"cache; without reuse (cold) the ratio is {w['ratio_cold']} (per repeat {w['ratios_cold']})."
        )
    lines += [
        "",
        "Notes:",
        "- raw is the floor of the work: one `llama_decode` per sequence, logits at one position, no",
        "  tokenization or softmax in the timing. dlnflow's timing includes tokenizing, evaluating in",
        f"  blocks aligned to {m['block']} positions (so scores do not depend on what was evaluated",
        "  before), a float64 log-softmax over the vocabulary per scored position, and building results.",
        "- A ratio above 1 comes from the KV prefix reuse: the examples of one candidate share its",
        "  instruction, which is evaluated once per candidate (up to its last complete block).",
        "- full-verbalizer row: raw evaluates context + verbalizer once per verbalizer (each full",
        "  sequence from scratch), so it does the context twice; dlnflow evaluates the context once and",
        "  then each verbalizer's tokens after it. Both count the same workload tokens (context once plus",
        "  the verbalizer tokens that must be evaluated), so that row's ratio includes this saving.",
        "- The machine is shared with other work (load averages above); compare the ratios, measured",
        "  in one process in the same minute, rather than the absolute numbers.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candidates", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    load0 = round(os.getloadavg()[0], 2)
    backend = LlamaCppBackend.from_settings({"backend": "llamacpp", "n_threads": args.threads}, None)
    prompts, source = build(args.candidates, args.batch, args.seed)
    workloads = [workload(backend, prompts, verbs, args.repeats, args.batch)
                 for verbs in ((" subjective", " objective"), (" (A)", " (B)"))]
    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/bench_scoring.py " + " ".join(sys.argv[1:]),
        "load": [load0, round(os.getloadavg()[0], 2)],
        "machine": machine(backend),
        "candidates": args.candidates,
        "batch": args.batch,
        "repeats": args.repeats,
        "examples": source,
        "workloads": workloads,
    }
    backend.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_scoring.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / "bench_scoring.md").write_text(markdown(report), encoding="utf-8")
    sys.stdout.write(markdown(report))


if __name__ == "__main__":
    main()
