"""One row of the accuracy table: train one method on one task with one seed, and what it cost.

Each row runs in a fresh :class:`~dlnflow.training.network.Network`, so its client counts only that
run's work. Two views of cost are kept because the call cache is shared between rows:

- ``backend_calls`` / ``prompt_tokens`` / ``completion_tokens``: what this row really sent to the
  model (cache misses);
- ``requests`` / ``prompt_tokens_total`` / ``completion_tokens_total``: everything the method
  asked for, cache hits included (a request repeated within the run counts each time);
- ``distinct_requests`` / ``distinct_prompt_tokens`` / ``distinct_completion_tokens``: the
  different requests the run made, each once: what the method costs on an empty cache, whatever
  other rows ran before it. Compare methods on these: a hit on an entry another row wrote is not
  free work for the later method.

Both include the 0-shot evaluation every run starts with (``dev_before`` / ``test_before``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from accuracy_protocol import METHODS, Protocol, write_spec

import dlnflow
from dlnflow.core.example import Example
from dlnflow.training.trainer import Trainer


def split_digest(examples: list[Example]) -> str:
    """A short digest of a split's inputs and targets (rows of one task must agree on it)."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.input, e.target]).encode())
    return h.hexdigest()[:12]


def cost_columns(usage: dict[str, Any]) -> dict[str, int]:
    """Real and total (cache hits included) calls and tokens from a client's usage counters."""
    return {
        "backend_calls": int(usage["backend_calls"]),
        "cache_hits": int(usage["cache_hits"]),
        "deduplicated": int(usage.get("deduplicated", 0)),
        "requests": int(usage["backend_calls"]) + int(usage["cache_hits"]),
        "prompt_tokens": int(usage["prompt_tokens"]),
        "completion_tokens": int(usage["completion_tokens"]),
        "prompt_tokens_total": int(usage["prompt_tokens"]) + int(usage["saved_prompt_tokens"]),
        "completion_tokens_total": int(usage["completion_tokens"]) + int(usage["saved_completion_tokens"]),
    }


class DistinctRequests:
    """Wraps a client's ``run`` to record each different request (by cache key) and its tokens."""

    def __init__(self, client: Any):
        self.client = client
        self.inner = client.run
        self.seen: dict[str, tuple[int, int]] = {}
        client.run = self.run  # this client only: an attribute on the instance

    def run(self, model: str, requests: Any) -> Any:
        results = self.inner(model, requests)
        for req, res in zip(requests, results, strict=True):
            key = self.client.key(model, req)
            self.seen[key] = (int(res.get("prompt_tokens") or 0), int(res.get("completion_tokens") or 0))
        return results

    def columns(self) -> dict[str, int]:
        return {"distinct_requests": len(self.seen),
                "distinct_prompt_tokens": sum(p for p, _ in self.seen.values()),
                "distinct_completion_tokens": sum(c for _, c in self.seen.values())}


def label_counts(net: Any) -> dict[str, Any]:
    """Test predictions and targets, counted by label and example by example (in test order).

    Replays the final test evaluation from the cache (``Network.evaluate``, which decides classes
    exactly as the trainer's own test evaluation did), so it costs no model calls.
    """
    evaluation = net.evaluate("test")
    targets = [e.target for e in net.dataset.test]
    return {"test_predictions": dict(Counter(evaluation.predictions)),
            "test_targets": dict(Counter(targets)),
            "test_predicted": list(evaluation.predictions),
            "test_gold": targets}


def annotate_row(row: dict[str, Any], protocol: Protocol, data_dir: Path, cache_dir: Path, scratch: Path,
                 threads: int | None = None) -> dict[str, Any]:
    """Add label counts to a finished DLN row, evaluating its learned prompts again (cache hits)."""
    spec = write_spec(row["task"], row["method"], protocol, row["seed"], data_dir, scratch / "specs", threads)
    with dlnflow.load(spec, cache_dir=cache_dir, cache_mode="use") as net:
        net.load_state(row["prompts"], strict=True)
        counts = label_counts(net)
        replay_calls = net.client.usage.backend_calls
    return {**row, **counts, "annotate_backend_calls": replay_calls}


def run_dln_row(task: str, method: str, seed: int, protocol: Protocol, data_dir: Path, cache_dir: Path,
                scratch: Path, threads: int | None = None) -> dict[str, Any]:
    """Train ``method`` on ``task`` with training seed ``seed``; return the row (metrics, cost, splits).

    ``cpu_seconds`` is the CPU time of this process during the row (all its threads).
    """
    spec = write_spec(task, method, protocol, seed, data_dir, scratch / "specs", threads)
    started = datetime.now(UTC)
    clock, cpu = time.monotonic(), time.process_time()
    with dlnflow.load(spec, cache_dir=cache_dir, cache_mode="use") as net:
        data = net.dataset
        distinct = DistinctRequests(net.client)
        result = Trainer(net, write_lock=False).fit()
        usage = net.client.usage.as_dict()
        counts = label_counts(net)  # after the usage is read: this replay is not the method's cost
    return {
        "task": task,
        "method": method,
        "seed": seed,
        "status": "ok",
        "test": result.metrics["test"],
        "dev": result.metrics["dev"],
        "test_before": result.metrics["test_before"],
        "dev_before": result.metrics["dev_before"],
        **cost_columns(usage),
        **distinct.columns(),
        **counts,
        "wall_seconds": round(time.monotonic() - clock, 1),
        "cpu_seconds": round(time.process_time() - cpu, 1),
        "threads": threads,
        "iterations_run": result.iterations_run,
        "best_iteration": result.best_iteration,
        "prompts": result.prompts,
        "splits": {"train": split_digest(data.train), "dev": split_digest(data.dev),
                   "test": split_digest(data.test),
                   "sizes": [len(data.train), len(data.dev), len(data.test)]},
        "data_digest": data.digest,
        "started": started.isoformat(timespec="seconds"),
    }


def failed_row(task: str, method: str, seed: int, status: str, error: str) -> dict[str, Any]:
    return {"task": task, "method": method, "seed": seed, "status": status, "error": error[-2000:]}


FINISHED = ("ok", "compile_failed")


class Results:
    """The JSON results file: rows keyed ``task/method/seed``.

    Each :meth:`put` re-reads the file under an exclusive lock on its folder, adds the row and
    rewrites the file atomically, so two benchmark processes (say DLN rows and DSPy rows) can
    share one results file.
    """

    def __init__(self, path: Path, header: dict[str, Any]):
        self.path = path
        self.doc: dict[str, Any] = {"rows": {}}
        if path.exists():
            self.doc = json.loads(path.read_text(encoding="utf-8"))
        self.doc.update(header)

    @staticmethod
    def key(task: str, method: str, seed: int) -> str:
        return f"{task}/{method}/{seed}"

    def done(self, task: str, method: str, seed: int, fingerprint: str) -> bool:
        """A row is done when it finished (ok, or a DSPy compile failure) under the same settings."""
        self._merge_from_disk()
        row = self.doc["rows"].get(self.key(task, method, seed))
        return bool(row) and row.get("status") in FINISHED and row.get("fingerprint") == fingerprint

    def put(self, row: dict[str, Any]) -> None:
        self.doc["rows"][self.key(row["task"], row["method"], row["seed"])] = row
        self.save(row)

    def _merge_from_disk(self, keep: dict[str, Any] | None = None) -> None:
        if not self.path.exists():
            return
        disk = json.loads(self.path.read_text(encoding="utf-8"))
        rows = {**disk.get("rows", {}), **({keep_key(keep): keep} if keep else {})}
        planned = sorted(set(disk.get("planned", [])) | set(self.doc.get("planned", [])))
        self.doc["rows"] = rows
        self.doc["planned"] = planned

    def save(self, row: dict[str, Any] | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            self._merge_from_disk(row)
            fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(self.doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
            os.replace(tmp, self.path)
        finally:
            fcntl.flock(folder, fcntl.LOCK_UN)
            os.close(folder)

    def rows(self) -> list[dict[str, Any]]:
        order = {m: i for i, m in enumerate(METHODS)}
        return sorted(self.doc["rows"].values(),
                      key=lambda r: (r["task"], order.get(r["method"], 99), r["seed"]))


def keep_key(row: dict[str, Any]) -> str:
    return Results.key(row["task"], row["method"], row["seed"])
