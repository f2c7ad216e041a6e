"""Accuracy benchmark: DLN-1 / DLN-2 against 0-shot, few-shot, APE and DSPy (COPRO, MIPROv2).

Every method runs on the embedded model (Gemma 3 270M) over the paper's eight tasks with
identical data splits (fixed split seed) and several training seeds. Results go to
``benchmarks/results/accuracy.json`` (one entry per task/method/seed, written as soon as a row
finishes) and ``accuracy.md`` (regenerated from the JSON after every row).

Resuming: model calls are cached under ``cache/bench-accuracy`` at the project root, so an
interrupted row continues where it stopped, and finished rows are skipped on a rerun (``--force``
runs them again; a row made under other settings is run again too).

Protocols (see ``accuracy_protocol.py``): ``small`` (default) is sized for a 2-core machine;
``paper`` uses the paper's settings (batch 20, 20 iterations, 20 candidates, 5 hidden samples,
validation every 2) for bigger models and machines; it writes ``accuracy-paper.json`` / ``.md``.
``medium`` (``accuracy_medium.json`` / ``.md``) is the one that can tell methods apart: dev 100 and
test 200 (BBH: train/dev/test 40/60/150 of its 250 examples), seeds 1-3, rows 0-shot, few-shot,
DLN-1 (each also calibrated), DLN-1 with demonstrations (calibrated) and DLN-2 (calibrated), each
row's test predictions kept example by example, and paired bootstrap intervals against 0-shot and
few-shot (``accuracy_stats.py``, ``accuracy_medium_report.py``).

Sizing of ``medium`` (``--dry`` prints it row by row; ``accuracy_dry.py`` says how): about 26,800 new model calls
and 3.0 hours of one core (181 CPU minutes; DLN-2's nine rows 67 of them) for the 177 rows on an
empty cache, at CPU seconds per call measured on the small table's rows (``--threads 1``, load
3-10). Measured again on 2026-12-03 (``nice -n 15``, load 10-22): 1.76 times those rates on five
small rows of navigate and date_understanding, i.e. about 5.3 hours at that load
(``--rate-scale 1.76``). The table and the method are in ``benchmarks/README.md``.

Run from the project root::

    python benchmarks/accuracy.py                                   # the whole small table
    python benchmarks/accuracy.py --tasks navigate,subj --methods dln1,ape --seeds 1
    python benchmarks/accuracy.py --methods copro --tasks mpqa      # DSPy (needs the dspy extra)
    python benchmarks/accuracy.py --report                          # only rewrite the markdown
    python benchmarks/accuracy.py --protocol medium --dry           # predicted calls and CPU per row

DLN-2 runs on ``--dln2-tasks`` (default navigate, subj, disaster; ``all`` for every task).
DSPy rows start llama.cpp's OpenAI-compatible server on 127.0.0.1 for their duration.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from accuracy_medium_report import render_medium  # noqa: E402
from accuracy_protocol import (  # noqa: E402
    DSPY_METHODS, METHODS, PROTOCOLS, ROOT, TASKS, Protocol, unaccepted_settings)
from accuracy_report import render  # noqa: E402
from accuracy_runs import FINISHED, Results, annotate_row, failed_row, run_dln_row  # noqa: E402
from machine import cpu_model  # noqa: E402

DEFAULT_DLN2_TASKS = ("navigate", "subj", "disaster")
DEFAULT_SEEDS = (1, 2)
MEDIUM_SEEDS = (1, 2, 3)


def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()}, Python {platform.python_version()}"


def names(text: str, known: tuple[str, ...], what: str) -> list[str]:
    """Parse ``a,b`` (or ``all``) against the known names; a bad name is a usage error (exit 2)."""
    if text == "all":
        return list(known)
    got = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in got if t not in known]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(bad)}; choose from {', '.join(known)} or all")
    return got


def selectable(protocol: Protocol) -> tuple[str, ...]:
    """Rows ``--methods`` may name: the protocol's, and any base method it has settings for (medium
    has no plain DLN-2 row, but ``--methods dln2`` runs one)."""
    extra = [m.name for m in METHODS.values() if not m.sets and m.name in protocol.settings]
    return tuple(dict.fromkeys([*protocol.rows, *extra]))


def missing_dspy_modules(methods: list[str]) -> list[str]:
    """Modules the chosen DSPy methods import that are not installed (MIPROv2 needs optuna)."""
    import importlib.util

    wanted = {"dspy"} if any(METHODS[m].variant == "dspy" for m in methods) else set()
    if "mipro" in methods:
        wanted.add("optuna")
    return sorted(m for m in wanted if importlib.util.find_spec(m) is None)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), default="small")
    ap.add_argument("--tasks", default="all", help="comma-separated tasks or 'all'")
    ap.add_argument("--methods", default="all",
                    help="comma-separated rows of the protocol or 'all' (small and paper: "
                    f"{', '.join(PROTOCOLS['small'].rows)}; medium: {', '.join(PROTOCOLS['medium'].rows)})")
    ap.add_argument("--seeds", default=None,
                    help="training seeds, e.g. 1,2,3 (default: 1,2; medium: 1,2,3)")
    ap.add_argument("--dln2-tasks", default=",".join(DEFAULT_DLN2_TASKS),
                    help="tasks DLN-2 runs on, or 'all'")
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--cache-dir", type=Path, default=ROOT / "cache" / "bench-accuracy")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (markdown beside it)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads of the embedded model (default: all cores; 1 is far faster on a "
                    "busy machine)")
    ap.add_argument("--force", action="store_true", help="run rows again even if they are done")
    ap.add_argument("--report", action="store_true", help="only rewrite the markdown from the JSON")
    ap.add_argument("--merge", type=Path, nargs="+", default=None, metavar="JSON",
                    help="add the rows of other results files of the same protocol (say, from processes that "
                    "ran different --tasks at once, each with its own --out) to --out, then rewrite its markdown")
    ap.add_argument("--annotate", action="store_true",
                    help="add test label counts and per-example predictions to finished DLN rows that lack "
                    "them (replays cached calls)")
    ap.add_argument("--dry", action="store_true",
                    help="print each planned row's predicted calls and CPU time, and the total; run nothing")
    ap.add_argument("--split", default=None, metavar="TRAIN,DEV,TEST",
                    help="replace the protocol's split sizes on every task (a quick try-out; needs --out)")
    ap.add_argument("--rates", type=Path, default=None,
                    help="--dry: results JSON whose rows give the seconds per call (default results/accuracy.json)")
    ap.add_argument("--rate-scale", type=float, default=1.0,
                    help="--dry: multiply those seconds per call (e.g. 1.76, measured on a busier machine)")
    args = ap.parse_args(argv)
    protocol = PROTOCOLS[args.protocol]
    if args.seeds is None:
        args.seeds = ",".join(map(str, MEDIUM_SEEDS if args.protocol == "medium" else DEFAULT_SEEDS))
    try:
        args.tasks = names(args.tasks, TASKS, "task")
        args.methods = names(args.methods, selectable(protocol), "method") if args.methods != "all" \
            else list(protocol.rows)
        args.dln2_tasks = names(args.dln2_tasks, TASKS, "task")
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except (argparse.ArgumentTypeError, ValueError) as exc:
        ap.error(str(exc))
    if not args.report and not args.data_dir.is_dir():
        ap.error(f"--data-dir {args.data_dir} is not a folder; point it at a copy of the shared data "
                 "(bbh/, ordered_prompt/, leopard/)")
    if args.split is not None:
        try:
            sizes = tuple(int(n) for n in args.split.split(","))
        except ValueError:
            sizes = ()
        if len(sizes) != 3 or min(sizes) < 1:
            ap.error(f"--split {args.split}: give three positive sizes, e.g. 20,10,20")
        if args.out is None:
            ap.error("--split: give --out too, so the protocol's committed results are not replaced")
        args.split = sizes
    if args.out is None:
        suffix = "" if args.protocol == "small" else f"-{args.protocol}"
        args.out = HERE / "results" / f"{protocol.output_name or 'accuracy' + suffix}.json"
    if args.report and not args.out.is_file():
        ap.error(f"--report: no results at {args.out}; run the benchmark first")
    missing = missing_dspy_modules(args.methods) if not (args.report or args.annotate or args.dry) else []
    if missing:
        ap.error(f"the DSPy rows need {', '.join(missing)}: pip install -e '.[dspy]'")
    return args


def protocol_of(args: argparse.Namespace) -> Protocol:
    """The chosen protocol, with ``--split`` applied to every task when given."""
    protocol = PROTOCOLS[args.protocol]
    if getattr(args, "split", None):
        return dataclasses.replace(protocol, split=args.split, split_by_task={})
    return protocol


def plan(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """Rows in run order: DLN methods seed by seed (a whole table per seed), then DSPy rows.

    Within a task the rows keep the protocol's order, so a calibrated row follows the row whose
    calls it shares. Two-layer rows (DLN-2) run on ``--dln2-tasks`` only.
    """
    order = [m for m in selectable(PROTOCOLS[args.protocol]) if m in args.methods and METHODS[m].variant != "dspy"]
    rows = [(task, m, seed) for seed in args.seeds for task in args.tasks for m in order
            if METHODS[m].variant != "-dln2" or task in args.dln2_tasks]
    rows += [(task, m, seed) for m in DSPY_METHODS if m in args.methods
             for seed in args.seeds for task in args.tasks]
    return rows


def shown_path(path: Path) -> str:
    """A path as committed files may show it: relative to the project when possible."""
    try:
        return os.path.relpath(path.resolve(), ROOT)
    except ValueError:
        return path.name


class DspyServer:
    """llama.cpp's server for the DSPy rows, started on first use and stopped by its PID."""

    def __init__(self, scratch: Path, threads: int | None):
        self.scratch = scratch
        self.threads = threads
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def ensure(self) -> int:
        if self.proc is None:
            from dspy_baseline import free_port, start_server

            from dlnflow.backends.llamacpp.backend import embedded_model_path

            self.port = free_port()
            log = self.scratch / "server.log"
            self.proc = start_server(embedded_model_path(), self.port, log, self.threads)
        return self.port

    def stop(self) -> None:
        if self.proc is not None:
            from dspy_baseline import stop_server

            stop_server(self.proc)
            self.proc = None


def run_dspy_row(task: str, method: str, seed: int, protocol: Protocol, args: argparse.Namespace,
                 server: DspyServer, scratch: Path) -> dict[str, Any]:
    """Run one DSPy row in a child process, killed (by its PID) after the protocol's time cap."""
    port = server.ensure()
    out = scratch / f"dspy-{task}-{method}-{seed}.json"
    cmd = [sys.executable, str(HERE / "dspy_baseline.py"), "--task", task, "--method", method,
           "--seed", str(seed),
           "--protocol", protocol.name, "--data-dir", str(args.data_dir), "--port", str(port),
           "--cache-dir", str(args.cache_dir), "--scratch", str(scratch), "--out", str(out)]
    log = scratch / f"dspy-{task}-{method}-{seed}.log"
    with open(log, "wb") as fh:
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # no price-list download
        child = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        timed_out = False
        try:
            child.wait(timeout=protocol.dspy_time_cap)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:  # over the cap, or this process is being stopped: the child goes too
            if child.poll() is None:
                child.kill()
                child.wait(timeout=30)
        if timed_out:
            note = f"stopped after the time cap of {protocol.dspy_time_cap:.0f} s"
            if out.exists():  # the phases it finished (un-optimised test, compile) stay on record
                partial = json.loads(out.read_text(encoding="utf-8"))
                where = f"{note}, during phase {partial.get('phase')}"
                return {**partial, "status": "timeout", "error": where}
            return failed_row(task, method, seed, "timeout", note)
    done = json.loads(out.read_text(encoding="utf-8")) if out.exists() else {}
    if child.returncode != 0 or done.get("status") == "running":
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
        return failed_row(task, method, seed, "failed", f"exit {child.returncode}: " + "\n".join(tail))
    return done


def header(args: argparse.Namespace, protocol: Protocol, previous: list[str]) -> dict[str, Any]:
    keys = sorted(set(previous) | {Results.key(*r) for r in plan(args)})
    return {
        "protocol": protocol.describe(),
        "machine": machine(),
        "model": "Gemma 3 270M (Q4_K_M GGUF), embedded llama.cpp; DSPy rows through llama.cpp's server",
        "command": "python benchmarks/accuracy.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "data_dir": shown_path(args.data_dir),
        "seeds": sorted(set(args.seeds)),
        "planned": keys,
        "load_start": round(os.getloadavg()[0], 1),
        "updated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def write_report(results: Results) -> None:
    results.doc["updated"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    results.save()
    medium = results.doc["protocol"].get("name") == "medium"
    text = (render_medium if medium else render)(results.doc, results.rows())
    results.path.with_suffix(".md").write_text(text, encoding="utf-8")


def merge(results: Results, paths: list[Path], protocol: str) -> None:
    """Take every row of ``paths`` into ``results`` (a row of a later file replaces one with the same
    task, method and seed); the header keeps the commands of all of them."""
    commands = [results.doc["command"]] if results.doc.get("command") else []
    for path in paths:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("protocol", {}).get("name") != protocol:
            raise SystemExit(f"--merge {path}: its rows are of protocol {doc.get('protocol', {}).get('name')!r}, "
                             f"not {protocol!r}")
        for key in ("protocol", "machine", "model", "data_dir"):
            results.doc.setdefault(key, doc.get(key))
        results.doc["planned"] = sorted(set(results.doc.get("planned", [])) | set(doc.get("planned", [])))
        results.doc["seeds"] = sorted(set(results.doc.get("seeds", [])) | set(doc.get("seeds", [])))
        loads = [x for x in (results.doc.get("load_start"), doc.get("load_start")) if x is not None]
        results.doc["load_start"] = max(loads) if loads else None
        commands.append(doc.get("command", ""))
        for row in doc.get("rows", {}).values():
            results.put(row)
    results.doc["command"] = " ; ".join(dict.fromkeys(c for c in commands if c))


def sanitize(text: str) -> str:
    """Keep this machine's paths out of committed error messages."""
    return text.replace(str(ROOT), ".").replace(str(ROOT.parent), "..").replace(str(Path.home()), "~")


def annotate(args: argparse.Namespace, protocol: Protocol, results: Results) -> int:
    """Label counts for the selected finished DLN rows that were written without them."""
    scratch = Path(tempfile.mkdtemp(prefix="dlnflow-accuracy-"))
    try:
        for task, method, seed in plan(args):
            row = results.doc["rows"].get(Results.key(task, method, seed))
            if METHODS[method].variant == "dspy" or not row or row.get("status") != "ok":
                continue
            if "test_predictions" in row and "test_predicted" in row and not args.force:
                continue
            results.put(annotate_row(row, protocol, args.data_dir, args.cache_dir, scratch, args.threads))
        write_report(results)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def run(args: argparse.Namespace) -> int:
    protocol = protocol_of(args)
    results = Results(args.out, {})
    if args.report:
        write_report(results)
        return 0
    if args.merge:
        merge(results, args.merge, protocol.name)
        write_report(results)
        return 0
    if args.annotate:
        return annotate(args, protocol, results)
    if args.dry:
        from accuracy_dry import dry_run

        return dry_run(plan(args), protocol, args)
    results.doc.update(header(args, protocol, results.doc.get("planned", [])))
    scratch = Path(tempfile.mkdtemp(prefix="dlnflow-accuracy-"))
    runs_before = os.environ.get("DLNFLOW_RUNS_DIR")
    os.environ["DLNFLOW_RUNS_DIR"] = str(scratch / "runs")  # run logs stay out of the project
    server = DspyServer(scratch, args.threads)
    failures = 0
    try:
        for task, method, seed in plan(args):
            fingerprint = protocol.fingerprint(task, method)
            if not args.force and results.done(task, method, seed, fingerprint):
                continue
            clock = time.monotonic()
            print(f"[{datetime.now().strftime('%H:%M:%S')}] {task} {method} seed {seed} ...", flush=True)
            why = unaccepted_settings(task, method, protocol, args.data_dir, scratch / "check")
            if why is not None:  # not a failure: the row waits for the feature it needs
                results.put({**failed_row(task, method, seed, "unavailable", sanitize(why)),
                             "fingerprint": fingerprint})
                print(f"    unavailable: {why[:160]}", flush=True)
                continue
            try:
                if METHODS[method].variant == "dspy":
                    row = run_dspy_row(task, method, seed, protocol, args, server, scratch)
                else:
                    row = run_dln_row(task, method, seed, protocol, args.data_dir, args.cache_dir, scratch,
                                      args.threads)
            except Exception:
                row = failed_row(task, method, seed, "failed", traceback.format_exc())
            if "error" in row:
                row["error"] = sanitize(row["error"])
            row["fingerprint"] = fingerprint
            failures += row["status"] not in FINISHED
            results.put(row)
            write_report(results)
            print(f"    {row['status']}: test {row.get('test')} (before {row.get('test_before')}), "
                  f"{time.monotonic() - clock:.0f} s", flush=True)
    finally:
        server.stop()
        write_report(results)
        if runs_before is None:
            os.environ.pop("DLNFLOW_RUNS_DIR", None)
        else:
            os.environ["DLNFLOW_RUNS_DIR"] = runs_before
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if failures else 0


def stop_on_sigterm() -> None:
    """Turn SIGTERM into a normal exit, so the server and a DSPy child are stopped on the way out."""
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    stop_on_sigterm()
    sys.exit(main())
