"""Throughput of the ``openai`` backend against a mock server with a fixed latency.

For each concurrency level the backend sends ``rounds * level`` generate requests (at least
``--min-requests``) to ``benchmarks/mock_server.py`` running in a separate process on
127.0.0.1, and the measured requests per second are compared with the ideal
``level / latency``. The goal is a ratio of at least 0.9 at concurrency 16.

Run from the project root: ``python benchmarks/concurrency.py`` (writes
``benchmarks/results/concurrency.md`` and ``.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
from machine import cpu_model

from dlnflow.backends.openai.backend import OpenAIBackend
from dlnflow.core.backend import Request

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GOAL_LEVEL = 16
GOAL_RATIO = 0.9
MAX_REQUESTS = 1024


def machine() -> dict[str, Any]:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "openai": openai.__version__,
            "load_average_before": [round(x, 2) for x in os.getloadavg()]}


def start_mock(latency: float) -> tuple[subprocess.Popen[str], int]:
    """Start the mock server process and read its port (bounded wait)."""
    proc = subprocess.Popen([sys.executable, str(HERE / "mock_server.py"), "--latency", str(latency),
                             "--lifetime", "600"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("PORT "):
        stop(proc)
        raise RuntimeError(f"mock server did not start (said {line!r})")
    return proc, int(line.split()[1])


def stop(proc: subprocess.Popen[str]) -> None:
    """Stop the mock server we started, by its PID."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def server_stats(port: int, reset: bool = False) -> dict[str, int]:
    path = "/reset" if reset else "/stats"
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return dict(json.load(resp))


def timed_run(backend: OpenAIBackend, port: int, level: int, n_requests: int,
              tag: str) -> tuple[float, int, float]:
    """Seconds for ``n_requests`` distinct generate calls, the most the server saw in flight, and
    the client's CPU seconds (this process) spent on them."""
    server_stats(port, reset=True)
    requests = [Request("generate", f"request {tag}-{i}", max_tokens=2) for i in range(n_requests)]
    cpu = time.process_time()
    start = time.perf_counter()
    results = backend.run(requests)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    if len(results) != n_requests or any(r["text"] != " mock answer" for r in results):
        raise RuntimeError("the mock server's answers did not come back intact")
    return elapsed, server_stats(port)["max_in_flight"], cpu


def measure(port: int, level: int, n_requests: int, latency: float, repeats: int) -> dict[str, Any]:
    """Median over ``repeats`` timed runs through ``OpenAIBackend.run`` at concurrency ``level``."""
    backend = OpenAIBackend.from_settings({"backend": "openai", "model": "mock", "concurrency": level,
                                           "base_url": f"http://127.0.0.1:{port}/v1", "timeout": 30,
                                           "max_retries": 2}, None)
    try:
        backend.run([Request("generate", f"warm-up {i}", max_tokens=2) for i in range(level)])
        runs = [timed_run(backend, port, level, n_requests, f"{level}-{k}") for k in range(repeats)]
    finally:
        backend.close()
    ideal = level / latency
    ratios = sorted(n_requests / sec / ideal for sec, _, _ in runs)
    elapsed = sorted(sec for sec, _, _ in runs)[len(runs) // 2]
    cpu_ms = 1000 * sum(c for _, _, c in runs) / (n_requests * len(runs))
    throughput = n_requests / elapsed
    return {"concurrency": level, "requests": n_requests, "repeats": repeats, "seconds": round(elapsed, 3),
            "requests_per_s": round(throughput, 2), "ideal_per_s": round(ideal, 2),
            "ratio": round(throughput / ideal, 3), "ratio_min": round(ratios[0], 3),
            "ratio_max": round(ratios[-1], 3), "retries": backend.retries,
            "server_max_in_flight": max(m for _, m, _ in runs), "client_cpu_ms_per_request": round(cpu_ms, 2)}


def to_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Remote throughput vs. the ideal (openai backend, mock latency)",
        "",
        f"- date: {report['date']}",
        f"- command: `{report['command']}`",
        (f"- machine: {m['cpu']}, {m['cores']} cores, {m['platform']}, Python {m['python']}, "
         f"openai {m['openai']}; load average before the run {m['load_average_before']}"),
        (f"- mock server: {report['latency_s'] * 1000:g} ms fixed latency per request, a separate process "
         "on 127.0.0.1 (threaded, keep-alive)"),
        "- ideal throughput = concurrency / latency; ratio = measured / ideal",
        ("- each level: the median of several timed runs (seconds, req/s and ratio are the median run's; "
         "min-max of the ratio beside it)"),
        "",
        ("| concurrency | requests per run | runs | seconds | req/s | ideal req/s | ratio | ratio min-max "
         "| retries | max in flight (server) | client CPU ms/request |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["levels"]:
        lines.append(f"| {r['concurrency']} | {r['requests']} | {r['repeats']} | {r['seconds']} | "
                     f"{r['requests_per_s']} | {r['ideal_per_s']} | {r['ratio']} | "
                     f"{r['ratio_min']}-{r['ratio_max']} | {r['retries']} | {r['server_max_in_flight']} | "
                     f"{r['client_cpu_ms_per_request']} |")
    verdict = "met" if report["goal"]["met"] else "NOT met"
    goal = (f"Goal: ratio >= {GOAL_RATIO} at concurrency {GOAL_LEVEL}: {verdict} "
            f"(measured {report['goal']['ratio']}).")
    lines += ["", goal]
    if m["load_average_before"][0] > (m["cores"] or 1):
        lines += ["", ("The machine was busy with other work during this run (load average above its core "
                       "count), so the client got only a share of a core; the ratio at high concurrency is "
                       "bounded by that share times the client's CPU cost per request.")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="mock latency in seconds")
    parser.add_argument("--levels", default="1,4,16,64", help="comma-separated concurrency levels")
    parser.add_argument("--rounds", type=int, default=20, help="requests per level = rounds * level")
    parser.add_argument("--min-requests", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per level (median reported)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for concurrency.md/.json")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    report: dict[str, Any] = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                              "command": "python benchmarks/concurrency.py " + shlex.join(sys.argv[1:] if argv
                                                                                          is None else argv),
                              "machine": machine(), "latency_s": args.latency, "levels": []}
    proc, port = start_mock(args.latency)
    try:
        for level in levels:
            n = min(MAX_REQUESTS, max(args.min_requests, args.rounds * level))
            row = measure(port, level, n, args.latency, max(1, args.repeats))
            report["levels"].append(row)
            print(f"concurrency {level:3d}: {row['requests_per_s']:8.2f} req/s of {row['ideal_per_s']:8.2f} "
                  f"ideal -> ratio {row['ratio']:.3f}", flush=True)
    finally:
        stop(proc)
    at_goal = [r for r in report["levels"] if r["concurrency"] == GOAL_LEVEL]
    ratio = at_goal[0]["ratio"] if at_goal else None
    report["goal"] = {"level": GOAL_LEVEL, "ratio_at_least": GOAL_RATIO, "ratio": ratio,
                      "met": ratio is not None and ratio >= GOAL_RATIO}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "concurrency.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / "concurrency.md").write_text(to_markdown(report), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
