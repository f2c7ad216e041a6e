"""Cost of one cache hit: dlnflow's client path against DSPy's cache, in the same run.

A hit is: compute the key of a request, find the entry, decode it into a result the
caller may keep. Both libraries get the same N requests (same prompts, same decoding
settings) and the same answer content, written once and then read warm.

dlnflow, measured through ``Client.run(model, [request])`` (one request per call, the
most expensive way to ask):
  client_warm   entries this process has written or read before (in-memory table)
  client_disk   a fresh ``CallCache`` on the same folder: every hit read from SQLite

DSPy (if installed), measured through ``dspy.clients.cache.Cache.get(request, ignored)``
with the request dict and the record a cached ``dspy.LM`` call uses (``PreparedCall.key``,
``CallResult.dump``):
  dspy_get_default  memory + disk tiers, as ``dspy.cache`` is configured by default (warm)
  dspy_get_disk     disk tier only (what a new process sees first)
  dspy_lm_call      ``lm(prompt)`` answered from ``dspy.cache`` (DSPy's whole hit path)

Run from the project root:  python benchmarks/bench_cache.py [--n 1000] [--repeats 3]
Writes benchmarks/results/bench_cache.md and .json.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata as md
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from machine import cpu_model  # noqa: E402

from dlnflow.core.backend import Request, Result  # noqa: E402
from dlnflow.runtime.cache import CallCache  # noqa: E402
from dlnflow.runtime.client import Client  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
INSTRUCTION = ("Read the sentence and decide whether it states a fact about the speaker's own experience "
               "or an opinion about the world. Answer with one word.")
ANSWER = "Opinion"
LOGPROBS = [-0.0213, -1.2734, -0.0008, -0.5521]


def prompt(i: int) -> str:
    return f"{INSTRUCTION}\n\nSentence: example number {i}, a short sentence about a film I saw.\nAnswer:"


class Silent:
    """A backend that must never be called: every request in this benchmark is a hit."""

    capabilities = frozenset({"generate"})
    n_ctx = 8192

    def identity(self) -> dict[str, Any]:
        return {"backend": "openai", "model": "gemma-3-270m", "base_url": "http://127.0.0.1:8000/v1"}

    def run(self, requests: list[Request]) -> list[Result]:
        raise AssertionError("the benchmark expected only cache hits")

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        """Nothing to release: this model holds no resources."""


def result_for(i: int) -> Result:
    return {"text": ANSWER, "logprobs": LOGPROBS, "prompt_tokens": 40 + i % 7, "completion_tokens": 4}


def timed(fn: Callable[[Any], Any], items: list[Any]) -> list[float]:
    """Microseconds per call of ``fn(item)``, garbage collector paused."""
    out = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for item in items:
            t0 = clock()
            fn(item)
            out.append((clock() - t0) / 1000)
    finally:
        gc.enable()
    return out


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_us": round(statistics.median(ordered), 2),
            "p90_us": round(ordered[int(0.9 * (len(ordered) - 1))], 2),
            "mean_us": round(statistics.fmean(ordered), 2), "samples": len(ordered)}


# -- dlnflow -------------------------------------------------------------------------------------
def bench_dlnflow(n: int, repeats: int, work: Path) -> dict[str, dict[str, float]]:
    reqs = [Request("generate", prompt(i), max_tokens=16) for i in range(n)]
    folder = work / "dlnflow"
    writer = Client({"m": Silent()}, CallCache(folder))  # type: ignore[dict-item]
    assert writer.cache is not None
    writer.cache.put_many(((writer.key("m", r), result_for(i)) for i, r in enumerate(reqs)), model="openai:g")
    want = {r.prompt: result_for(i) for i, r in enumerate(reqs)}

    def hit(client: Client) -> Callable[[Request], Any]:
        def one(r: Request) -> None:
            got = client.run("m", [r])
            if got[0] != want[r.prompt]:  # pragma: no cover - a wrong answer voids the numbers
                raise AssertionError("wrong value")
        return one

    timed(hit(writer), reqs)  # warm-up pass
    warm: list[float] = []
    for _ in range(repeats):
        warm += timed(hit(writer), reqs)
    disk: list[float] = []
    for _ in range(repeats):
        fresh = Client({"m": Silent()}, CallCache(folder))  # type: ignore[dict-item]
        disk += timed(hit(fresh), reqs)
        assert fresh.usage.cache_hits == n and fresh.usage.backend_calls == 0
        fresh.cache.close()  # type: ignore[union-attr]
    assert writer.usage.backend_calls == 0
    writer.cache.close()
    return {"client_warm": summary(warm), "client_disk": summary(disk)}


# -- DSPy ----------------------------------------------------------------------------------------
def bench_dspy(n: int, repeats: int, work: Path) -> dict[str, dict[str, float]]:
    import dspy
    from dspy._vendor.lm15.types import Usage
    from dspy.clients.cache import Cache
    from dspy.clients.call_result import CallResult
    from dspy.clients.execution import IGNORED_CACHE_KEYS, prepare
    from dspy.lm15 import Message, Response, TextPart

    lm = dspy.LM("openai/gemma-3-270m", api_base="http://127.0.0.1:8000/v1", api_key="none",
                 temperature=0.0, max_tokens=16)
    requests = [prepare(lm, prompt(i), None, {}, direct=True).key(lm, False) for i in range(n)]

    def record(i: int) -> dict[str, Any]:
        usage = Usage(input_tokens=40 + i % 7, output_tokens=4, total_tokens=44 + i % 7)
        message = Message(role="assistant", parts=(TextPart(ANSWER),))
        response = Response(id=f"r{i}", model="gemma-3-270m", message=message, finish_reason="stop",
                            usage=usage)
        return CallResult.native(response).dump()  # type: ignore[no-any-return]

    out: dict[str, dict[str, float]] = {}
    for name, memory in (("dspy_get_default", True), ("dspy_get_disk", False)):
        cache = Cache(enable_disk_cache=True, enable_memory_cache=memory, disk_cache_dir=str(work / name),
                      disk_size_limit_bytes=2**30)
        for i, req in enumerate(requests):
            cache.put(req, record(i), IGNORED_CACHE_KEYS)

        def get(req: dict[str, Any], cache: Cache = cache) -> None:
            if cache.get(req, IGNORED_CACHE_KEYS) is None:  # pragma: no cover
                raise AssertionError("miss")

        timed(get, requests)
        samples: list[float] = []
        for _ in range(repeats):
            samples += timed(get, requests)
        out[name] = summary(samples)
        if name == "dspy_get_default":
            dspy.cache = cache  # the LM path below reads the default-configured cache

    def call(i: int) -> None:
        if lm(prompt(i)) != [ANSWER]:  # pragma: no cover
            raise AssertionError("wrong value")

    timed(call, list(range(n)))
    samples = []
    for _ in range(repeats):
        samples += timed(call, list(range(n)))
    out["dspy_lm_call"] = summary(samples)
    return out


# -- report --------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = cpu_model()
    versions = {}
    for pkg in ("diskcache", "dspy", "orjson"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(terse=True),
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version, **versions}


def ratios(r: dict[str, dict[str, float]]) -> dict[str, float]:
    pairs = {"client_warm / dspy_get_default": ("client_warm", "dspy_get_default"),
             "client_disk / dspy_get_disk": ("client_disk", "dspy_get_disk"),
             "client_warm / dspy_lm_call": ("client_warm", "dspy_lm_call")}
    return {label: round(r[a]["median_us"] / r[b]["median_us"], 3)
            for label, (a, b) in pairs.items() if a in r and b in r}


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Cache hit cost: dlnflow vs DSPy",
        "",
        f"- date: {report['date']}",
        f"- command: `{report['command']}`",
        f"- load average (1 min) at start / end: {report['load'][0]} / {report['load'][1]}",
        (f"- machine: {m['cpu']}, {m['cores']} cores, {m['os']}; Python {m['python']}, "
         f"SQLite {m['sqlite']}, diskcache {m['diskcache']}, dspy {m['dspy'] or 'not installed'}"),
        (f"- N = {report['n']} entries, {report['repeats']} timed passes over all of them after one "
         "warm-up pass; each sample is one hit (key + lookup + decode); garbage collector paused while timing"),
        "",
        "| path | what is timed | median µs | p90 µs |",
        "| --- | --- | ---: | ---: |",
    ]
    for name, what in WHAT.items():
        if name in report["results"]:
            s = report["results"][name]
            lines.append(f"| {name} | {what} | {s['median_us']} | {s['p90_us']} |")
    lines += ["", "Ratios of medians (goal: dlnflow at most 1/3 of DSPy):", ""]
    lines += [f"- {k}: {v} ({'goal met' if v <= 1 / 3 else 'goal not met'})"
              for k, v in report["ratios"].items()]
    if report.get("dspy_error"):
        lines += ["", f"DSPy could not be measured: {report['dspy_error']}"]
    lines += ["", NOTES]
    return "\n".join(lines) + "\n"


WHAT = {
    "client_warm": "dlnflow `Client.run(m, [req])`, entry read before by this process",
    "client_disk": "dlnflow `Client.run(m, [req])`, fresh `CallCache`: read from SQLite",
    "dspy_get_default": "DSPy `Cache.get(request, ignored)`, memory + disk tiers (default), warm",
    "dspy_get_disk": "DSPy `Cache.get(request, ignored)`, disk tier only",
    "dspy_lm_call": "DSPy `lm(prompt)` answered from its cache",
}

NOTES = """Notes:
- Both libraries key on the full request (model, prompt, decoding settings) with sha256; DSPy's key
  leaves out the endpoint (`api_base`), so two servers with the same model name share entries;
  dlnflow's key includes it.
- The stored value is each library's own format for the same answer (text, four token logprobs,
  token counts): DSPy's `CallResult.dump()` record is nested, dlnflow's result is one flat object.
- DSPy deep-copies the stored record on every hit (after unpickling it on a disk hit). dlnflow keeps
  a private copy of flat results in memory and copies their lists on a hit; on a disk hit it decodes
  the JSON value (values are JSON, never pickle) and fills its memory table, both inside the timing.
- The machine is shared with other work (load averages above); compare the ratios, which come from
  one process in the same minute, rather than the absolute numbers."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="entries (and hits per pass)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the N entries")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for bench_cache.md/.json")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/bench_cache.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(), "n": args.n, "repeats": args.repeats, "results": {}, "dspy_error": None,
        "load": [round(os.getloadavg()[0], 2)],
    }
    with tempfile.TemporaryDirectory() as tmp:
        report["results"].update(bench_dlnflow(args.n, args.repeats, Path(tmp)))
        try:
            report["results"].update(bench_dspy(args.n, args.repeats, Path(tmp)))
        except ImportError as exc:
            report["dspy_error"] = f"dspy is not installed ({exc}); install it with pip install -e '.[dspy]'"
    report["command"] = report["command"].strip()
    report["load"].append(round(os.getloadavg()[0], 2))
    report["ratios"] = ratios(report["results"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_cache.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (args.out / "bench_cache.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
