"""DSPy baselines (COPRO, MIPROv2) for the accuracy benchmark, on the same model and the same splits.

The embedded GGUF is served by llama.cpp's OpenAI-compatible server on 127.0.0.1 (started by
:func:`start_server`, stopped by its PID); DSPy talks to it through ``dspy.LM(..., engine="litellm")``,
which sends ``max_tokens`` (the default engine of DSPy 3.4 sends ``max_completion_tokens``, which
that server ignores). The model file has no chat template, so the server is started with the
Gemma turn format (``--chat_format gemma``).

The program is one ``dspy.Predict`` whose instruction is the task spec's initial prompt, with an
``answer`` output field described by the class words. A prediction counts as correct when its
answer, stripped of spaces, quotes and a final full stop, equals the target (case-insensitive).
Nothing is dropped: every example is scored, and the row records how many answers failed to
parse (the adapter raised), how many parsed to a word outside the classes, and how often each
adapter's parser failed (DSPy's chat adapter retries with its JSON adapter, a second call).

One row runs in its own process (``python benchmarks/dspy_baseline.py --task ... --out row.json``)
so the caller can bound its time by killing it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

MODEL_ALIAS = "gemma-3-270m"
COMPILE_ATTEMPTS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(gguf: Path, port: int, log: Path, threads: int | None = None, n_ctx: int = 4096,
                 wait: float = 180.0) -> subprocess.Popen[bytes]:
    """Start llama.cpp's server on 127.0.0.1:``port`` and wait (bounded) until it answers."""
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
           "--port", str(port), "--model_alias", MODEL_ALIAS, "--chat_format", "gemma", "--n_ctx", str(n_ctx),
           "--n_threads", str(threads or os.cpu_count() or 1)]
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama.cpp server exited with code {proc.returncode}; see {log.name}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5):
                return proc
        except OSError:
            time.sleep(1.0)
    stop_server(proc)
    raise RuntimeError(f"llama.cpp server did not answer within {wait:.0f} s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server this module started (by its PID): terminate, then kill after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def normalise(text: str) -> str:
    """An answer as compared with the target: no quotes, brackets, final full stop or case.

    >>> normalise(' "Yes." '), normalise("(A)"), normalise("A")
    ('yes', 'a', 'a')
    """
    return text.strip().strip("\"'`*").strip().rstrip(".").strip().strip("()[]").strip().lower()


def parse_counter() -> Any:
    """A DSPy callback counting parser failures per adapter and per phase (compile, test...)."""
    from dspy.utils.callback import BaseCallback

    class ParseCounter(BaseCallback):
        def __init__(self) -> None:
            self.phase = "setup"
            self.adapters: dict[str, str] = {}
            self.failures: Counter[str] = Counter()
            self.parses: Counter[str] = Counter()

        def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            self.adapters[call_id] = type(instance).__name__

        def on_adapter_parse_end(self, call_id: str, outputs: Any,
                                 exception: BaseException | None = None) -> None:
            name = f"{self.phase}:{self.adapters.pop(call_id, '?')}"
            self.parses[name] += 1
            if exception is not None:
                self.failures[name] += 1

    return ParseCounter()


def make_program(dspy: Any, instruction: str, classes: tuple[str, ...]) -> Any:
    fields = {
        "text": (str, dspy.InputField(desc="the input")),
        "answer": (str, dspy.OutputField(desc="exactly one of: " + ", ".join(classes))),
    }
    signature = dspy.Signature(fields, instruction)
    return dspy.Predict(signature)


def last_output(history: list[dict[str, Any]]) -> str:
    """The text of the most recent model answer in DSPy's history (for the record of failures)."""
    if not history:
        return ""
    outputs = history[-1].get("outputs") or [""]
    first = outputs[0]
    return str(first.get("text", first) if isinstance(first, dict) else first)[:300]


def score(program: Any, examples: list[Any], classes: tuple[str, ...],
          history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Accuracy over every example; failures to parse count as wrong and are counted.

    ``raw_failures`` keeps the model's own text for the first three failures.
    """
    known = {normalise(c) for c in classes}
    correct = parse_failed = off_label = 0
    errors: Counter[str] = Counter()
    answers: list[str | None] = []
    raw: list[str] = []
    for ex in examples:
        try:
            answer = str(program(text=ex.text).answer)
        except Exception as exc:  # an adapter that cannot parse raises; the example counts as wrong
            parse_failed += 1
            errors[type(exc).__name__] += 1
            answers.append(None)
            if len(raw) < 3 and history is not None:
                raw.append(last_output(history))
            continue
        answers.append(answer[:80])
        got = normalise(answer)
        off_label += got not in known
        correct += got == normalise(ex.answer)
    n = len(examples)
    return {"accuracy": correct / n if n else 0.0, "n": n, "parse_failures": parse_failed,
            "off_label": off_label, "errors": dict(errors), "answers": answers[:10], "raw_failures": raw}


def history_cost(history: list[dict[str, Any]]) -> dict[str, int]:
    """Calls and tokens from DSPy's global history.

    Real calls are those DSPy's cache did not answer; distinct requests count each different
    (messages, settings) once, which is what the row costs on an empty cache.
    """
    real = [h for h in history if not getattr(h.get("response"), "cache_hit", False)]
    tokens = lambda rows, k: sum(int((h.get("usage") or {}).get(k) or 0) for h in rows)  # noqa: E731
    distinct: dict[str, dict[str, Any]] = {}
    for h in history:
        settings = {k: v for k, v in sorted((h.get("kwargs") or {}).items()) if not k.startswith("api_")}
        distinct.setdefault(json.dumps([h.get("messages"), h.get("prompt"), settings], default=str), h)
    return {"distinct_requests": len(distinct),
            "distinct_prompt_tokens": tokens(distinct.values(), "prompt_tokens"),
            "distinct_completion_tokens": tokens(distinct.values(), "completion_tokens"),
            "backend_calls": len(real), "cache_hits": len(history) - len(real), "requests": len(history),
            "prompt_tokens": tokens(real, "prompt_tokens"),
            "completion_tokens": tokens(real, "completion_tokens"),
            "prompt_tokens_total": tokens(history, "prompt_tokens"),
            "completion_tokens_total": tokens(history, "completion_tokens")}


def optimise(dspy: Any, method: str, settings: dict[str, Any], program: Any, metric: Any, train: list[Any],
             dev: list[Any], prompt_lm: Any, seed: int) -> Any:
    """Compile ``program`` with COPRO (scored on ``train``) or MIPROv2 (validated on ``dev``)."""
    if method == "copro":
        opt = dspy.COPRO(prompt_model=prompt_lm, metric=metric, breadth=settings["breadth"],
                         depth=settings["depth"], init_temperature=settings["init_temperature"])
        return opt.compile(program, trainset=train, eval_kwargs={"num_threads": 1, "display_progress": False})
    keys = ("num_candidates", "max_bootstrapped_demos", "max_labeled_demos")
    auto = settings.get("auto")
    opt = dspy.MIPROv2(metric=metric, prompt_model=prompt_lm, auto=auto, seed=seed, num_threads=1,
                       **{k: settings[k] for k in keys if k in settings and auto is None})
    extra: dict[str, Any] = {} if auto else {"num_trials": settings["num_trials"], "minibatch": False}
    return opt.compile(program, trainset=train, valset=dev, **extra)


def run_row(task: str, method: str, seed: int, protocol_name: str, data_dir: Path, port: int,
            cache_dir: Path, scratch: Path, checkpoint: Callable[[dict[str, Any]], None] | None = None
            ) -> dict[str, Any]:
    """Optimise and evaluate one DSPy program; return the row.

    ``checkpoint`` receives the partial row after each phase (the un-optimised test evaluation,
    the compile), so a row stopped by the time cap still says how far it got and what failed.
    """
    save = checkpoint or (lambda partial: None)
    import dspy
    from accuracy_protocol import PROTOCOLS, write_spec
    from accuracy_runs import split_digest

    import dlnflow

    protocol = PROTOCOLS[protocol_name]
    settings = protocol.dspy[method]
    spec = write_spec(task, method, protocol, seed, data_dir, scratch / "specs")
    with dlnflow.load(spec, cache_dir=cache_dir) as net:
        data, layer = net.dataset, net.pipeline.graph.output
        instruction, classes = layer.prompt, tuple(layer.classes or ())
    as_dspy = lambda rows: [dspy.Example(text=e.input, answer=e.target).with_inputs("text") for e in rows]  # noqa: E731
    train, dev, test = as_dspy(data.train[: settings["train_size"]]), as_dspy(data.dev), as_dspy(data.test)
    dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=True,
                         disk_cache_dir=str(cache_dir / "dspy"))
    base = f"http://127.0.0.1:{port}/v1"
    task_lm = dspy.LM(f"openai/{MODEL_ALIAS}", api_base=base, api_key="local", engine="litellm",
                      temperature=0.0, max_tokens=48, num_retries=1)
    counter = parse_counter()
    dspy.configure(lm=task_lm, callbacks=[counter], max_errors=10**9)
    metric = lambda ex, pred, trace=None: normalise(str(getattr(pred, "answer", ""))) == normalise(ex.answer)  # noqa: E731
    program = make_program(dspy, instruction, classes)
    from dspy.clients.base_lm import GLOBAL_HISTORY

    started = time.monotonic()
    counter.phase = "test_before"
    before = score(program, test, classes, GLOBAL_HISTORY)
    keys = ("n", "parse_failures", "off_label", "errors", "raw_failures")
    partial = {"task": task, "method": method, "seed": seed, "status": "running", "phase": "compile",
               "test": None, "test_before": before["accuracy"],
               "parse": {"test_before": {k: before[k] for k in keys}}}
    save({**partial, **history_cost(GLOBAL_HISTORY)})
    counter.phase = "compile"
    compiled, errors = None, []
    for attempt in range(COMPILE_ATTEMPTS):  # a failed proposal is retried with fresh samples
        prompt_lm = dspy.LM(f"openai/{MODEL_ALIAS}", api_base=base, api_key="local", engine="litellm",
                            temperature=settings.get("init_temperature", 1.0), max_tokens=200, num_retries=1,
                            rollout_id=seed * 100 + attempt, seed=seed * 100 + attempt)
        try:
            compiled = optimise(dspy, method, settings, program, metric, train, dev, prompt_lm, seed)
            break
        except Exception as exc:  # recorded, never hidden: the row says what failed and how often
            errors.append(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}")
    counter.phase = "test"
    partial.update(phase="test", compile_errors=errors)
    save({**partial, **history_cost(GLOBAL_HISTORY)})
    after = score(compiled, test, classes, GLOBAL_HISTORY) if compiled is not None else None
    learned = [p.signature.instructions for p in compiled.predictors()] if compiled is not None else []
    parse = {"test_before": {k: before[k] for k in keys},
             "adapter_parse_failures": dict(counter.failures), "adapter_parses": dict(counter.parses),
             "compile_attempts": len(errors) + (compiled is not None), "compile_errors": errors}
    if after is not None:
        parse["test"] = {k: after[k] for k in keys}
    return {
        "task": task, "method": method, "seed": seed,
        "status": "ok" if after is not None else "compile_failed",
        "test": after["accuracy"] if after is not None else None, "test_before": before["accuracy"],
        **history_cost(GLOBAL_HISTORY),
        "wall_seconds": round(time.monotonic() - started, 1),
        "parse": parse,
        "sample_answers": (after or before)["answers"],
        "prompts": {"instruction": learned[0] if learned else None, "initial": instruction},
        "demos": sum(len(getattr(p, "demos", []) or []) for p in compiled.predictors()) if compiled else 0,
        "splits": {"train": split_digest(data.train), "dev": split_digest(data.dev),
                   "test": split_digest(data.test),
                   "sizes": [len(data.train), len(data.dev), len(data.test)], "dspy_train": len(train)},
        "data_digest": data.digest,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="one DSPy row of the accuracy benchmark (run by accuracy.py)")
    ap.add_argument("--task", required=True)
    ap.add_argument("--method", required=True, choices=("copro", "mipro"))
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--protocol", default="small")
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cache-dir", type=Path, required=True)
    ap.add_argument("--scratch", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()

    def write(row: dict[str, Any]) -> None:
        tmp = a.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(row, indent=1, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, a.out)

    write(run_row(a.task, a.method, a.seed, a.protocol, a.data_dir, a.port, a.cache_dir, a.scratch, write))


if __name__ == "__main__":
    main()
