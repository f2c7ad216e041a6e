"""Lettered classes on a remote server: one-token requests against echo scoring, in the same run.

Workload: the first ``--examples`` inputs of a BBH task, rendered with its spec's output layer and
initial prompt, classified over the spec's classes (" (A)", " (B)", ...) through the ``openai``
backend against llama.cpp's OpenAI-compatible server (started here on 127.0.0.1, stopped by its
PID) serving the embedded GGUF. The two routes take turns example by example, so they share the
machine's load:

  branch   what the backend does now: a request per shared token, one biased request where the
           classes part ways, one per remaining token and class (one generated token each)
  echo     the previous route for such classes: one echo request per class

and the embedded backend computes the reference class probabilities. Reported: requests by
kind, wall seconds per route, their ratio, and the largest class-probability difference of each
route from the embedded model.

Run from the project root:  python benchmarks/bench_remote_classes.py [--task hyperbaton] [--examples 3]
Writes benchmarks/results/bench_remote_classes.md and .json.
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
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from dspy_baseline import MODEL_ALIAS, free_port, start_server, stop_server  # noqa: E402
from machine import cpu_model  # noqa: E402

ROOT = HERE.parent


def requests_for(task: str, count: int) -> list[Any]:
    """``classify`` requests for the task's first ``count`` inputs, as its spec renders them."""
    import dlnflow
    from dlnflow.core.backend import Request

    spec = ROOT / "pipelines" / f"{task}.yaml"
    data = json.loads((ROOT.parent / "shared" / "data" / "bbh" / f"{task}.json").read_text(encoding="utf-8"))
    with dlnflow.load(spec) as net:
        layer = net.pipeline.graph.output
        made = [layer.classify_request(layer.render({"x": ex["input"]})) for ex in data["examples"][:count]]
    return [Request("classify", r.prompt, targets=r.targets) for r in made]


def timed(backend: Any, request: Any) -> tuple[list[float], float]:
    started = time.perf_counter()
    [result] = backend.run([request])
    return list(result["probs"]), time.perf_counter() - started


def measure(task: str, count: int, threads: int) -> dict[str, Any]:
    from dlnflow.backends.llamacpp.backend import LlamaCppBackend, embedded_model_path
    from dlnflow.backends.openai.backend import OpenAIBackend

    requests = requests_for(task, count)
    scratch = Path(tempfile.mkdtemp(prefix="dlnflow-remote-classes-"))
    port = free_port()
    server = start_server(embedded_model_path(), port, scratch / "server.log", threads)
    settings = {"backend": "openai", "model": MODEL_ALIAS, "base_url": f"http://127.0.0.1:{port}/v1",
                "timeout": 600, "extra_body": {"repeat_penalty": 1.0}}
    branch, echo = OpenAIBackend.from_settings(settings, None), OpenAIBackend.from_settings(settings, None)

    async def no_branch(context: str, verbalizers: tuple[str, ...]) -> None:
        return None

    echo._classify_branching = no_branch  # type: ignore[method-assign]  # the route before branching
    local = LlamaCppBackend(embedded_model_path(), n_threads=threads)
    seconds = {"branch": 0.0, "echo": 0.0}
    worst = {"branch": 0.0, "echo": 0.0}
    try:
        for request in requests:
            [reference] = local.run([request])
            for name, backend in (("branch", branch), ("echo", echo)):
                probs, took = timed(backend, request)
                seconds[name] += took
                worst[name] = max(worst[name], max(abs(a - b) for a, b in zip(probs, reference["probs"],
                                                                            strict=True)))
        counts = {"branch": branch.counters(), "echo": echo.counters()}
    finally:
        branch.close()
        echo.close()
        local.close()
        stop_server(server)
    return {"task": task, "examples": len(requests), "classes": list(requests[0].targets),
            "mean_prompt_chars": round(sum(len(r.prompt) for r in requests) / len(requests)),
            "seconds": {k: round(v, 2) for k, v in seconds.items()},
            "echo_over_branch": round(seconds["echo"] / seconds["branch"], 1),
            "max_prob_difference_from_embedded": {k: round(v, 4) for k, v in worst.items()},
            "requests": counts}


def report(result: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = ["# Lettered classes on llama.cpp's server: one-token requests against echo", "",
             f"- machine: {meta['machine']}", f"- date: {meta['date']}", f"- command: `{meta['command']}`",
             f"- load average (1 min) at start / end: {meta['load_start']} / {meta['load_end']}", "",
             f"Task {result['task']}, first {result['examples']} inputs rendered with the spec's initial prompt "
             f"(mean {result['mean_prompt_chars']} characters), classes {', '.join(result['classes'])}.", "",
             "| route | seconds | requests by kind | largest class-probability difference from the embedded model |",
             "|---|---:|---|---:|"]
    for name in ("branch", "echo"):
        kinds = ", ".join(f"{k.removeprefix('requests_')} {v}" for k, v in sorted(result["requests"][name].items()))
        lines.append(f"| {name} | {result['seconds'][name]} | {kinds} | "
                     f"{result['max_prob_difference_from_embedded'][name]} |")
    lines += ["", f"Echo took **{result['echo_over_branch']}x** the time of the one-token requests.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="hyperbaton", help="a BBH task with a spec in pipelines/ (lettered classes)")
    ap.add_argument("--examples", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="threads of the server and of the embedded model")
    args = ap.parse_args(argv)
    load_start = round(os.getloadavg()[0], 2)
    result = measure(args.task, args.examples, args.threads)
    meta = {"machine": f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python benchmarks/bench_remote_classes.py " + " ".join(argv or sys.argv[1:]),
            "load_start": load_start, "load_end": round(os.getloadavg()[0], 2)}
    out = HERE / "results" / "bench_remote_classes"
    out.with_suffix(".json").write_text(json.dumps({**meta, **result}, indent=1) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(report(result, meta), encoding="utf-8")
    print(report(result, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
