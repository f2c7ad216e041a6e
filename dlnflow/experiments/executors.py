"""Running a sweep's runs in parallel: a local process pool, or tasks on a Ray cluster.

A sweep's runs are independent and resumable (:mod:`dlnflow.experiments`), so they fan out:

- ``executor="local", jobs=1``: one run after the other in this process (:meth:`Sweep.run`);
- ``executor="local", jobs=N``: N worker processes on this machine, no Ray needed;
- ``executor="ray"``: one Ray task per run, on any node of the cluster at ``address`` (default:
  ``$RAY_ADDRESS``, else a Ray instance started for this command).

Each worker compiles the spec, builds the sweep's run ``index`` exactly as the driver does, and
trains it unless it finished earlier (its ``summary.json`` carries the same fingerprint). It returns
the run folder's files, which the driver writes into its own run folder when the worker's was
somewhere else (another node); then the results, the ``results`` table and the lock come out as
with a sequential sweep. Workers use the same cache settings as the driver: the local tier at the
same path on their node and the shared remote tier (``--cache-remote``), which is what lets one
worker reuse what another paid for.

A worker that dies (killed, out of memory, node lost) has its task retried by Ray (up to
:data:`RAY_RETRIES` times): the retried run replays from the cache what the dead one had paid for,
and a run that had finished is not trained again. Each run's result is taken once, by its index,
so no run is lost or counted twice. A failure inside a run (a backend error) is not retried; the
sweep stops with it, and the next invocation skips the runs that finished.

The spec (and its data) must be readable at the same path on every node: a shared checkout, or the
same checkout on every machine.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlnflow._util.files import write_atomic
from dlnflow.backends.llamacpp.backend import THREADS_ENV_VAR, threads_from_env
from dlnflow.core.errors import DlnflowError, InputError, RuntimeFault
from dlnflow.experiments.matrix import Matrix
from dlnflow.experiments.sweep import Predictor, RunState, Sweep
from dlnflow.runtime.remote import remote_from_env
from dlnflow.spec.compiler import compile_spec

EXECUTORS = ("local", "ray")
RAY_RETRIES = 3
RUN_FILES = ("summary.json", "log.jsonl")
"""What a worker sends back from its run folder."""

Listener = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class RunJob:
    """Everything a worker needs to train run ``index`` of a sweep (plain, picklable data)."""

    spec: str
    matrix: Matrix
    index: int
    cache_dir: str
    cache_mode: str
    cache_remote: str
    predict: bool = True
    predictor: Predictor | None = None
    """Called before the run is trained for its predicted calls and tokens (a module-level function,
    so it travels to the worker by name)."""
    threads: int = 0
    """CPU threads of the embedded model in the worker (its share of the cores; 0: the worker's own
    default). A spec's ``n_threads`` still wins."""


@dataclass
class RunOutcome:
    """What came back from one run: its folder's files, and where it ran."""

    index: int
    files: dict[str, str]
    already_finished: bool
    host: str = ""
    pid: int = 0
    usage: dict[str, Any] = field(default_factory=dict)


def train_job(job: RunJob) -> RunOutcome:
    """Train one run of a sweep (in a worker process); a run that finished earlier is not retrained."""
    if job.threads:
        os.environ[THREADS_ENV_VAR] = str(job.threads)  # this worker process only
    sweep = Sweep(compile_spec(job.spec), job.matrix, Path(job.cache_dir), job.cache_mode,
                  predict=job.predictor, cache_remote=job.cache_remote)
    state = sweep.states[job.index]
    finished = state.summary is not None
    usage: dict[str, Any] = {}
    if not finished:
        try:
            usage = sweep._train(state, None, job.predict, None)  # no tracker: workers are not logged
        finally:
            state.net.close()
    files = {name: (state.run_dir / name).read_text(encoding="utf-8")
             for name in RUN_FILES if (state.run_dir / name).is_file()}
    return RunOutcome(job.index, files, finished, socket.gethostname(), os.getpid(), usage)


# -- the driver side ---------------------------------------------------------------------------------
def check_executor(executor: str, jobs: int, address: str | None, budget_given: bool) -> None:
    """Refuse combinations that cannot work, before anything runs (exit 2)."""
    if executor not in EXECUTORS:
        raise InputError(f"unknown executor {executor!r}; use one of: {', '.join(EXECUTORS)}")
    if jobs < 1:
        raise InputError(f"--jobs {jobs}: give at least 1")
    if address and executor != "ray":
        raise InputError("--address names a Ray cluster; add --executor ray")
    if budget_given and (executor == "ray" or jobs > 1):
        raise InputError("a budget for the whole command (--max-calls / --max-tokens) needs the runs one after "
                         "the other; drop it, or use train.budget in the spec (it limits each run)")


def run_sweep(sweep: Sweep, executor: str | None = None, jobs: int | None = None, address: str | None = None,
              listen: Listener | None = None, predict: bool = True) -> list[RunState]:
    """Train every unfinished run of ``sweep`` on ``executor`` (``jobs`` > 1 or Ray: in parallel).

    Unset arguments come from the spec's ``experiments`` section (``executor``, ``jobs``,
    ``address``). ``listen`` hears ``skip``, ``start`` and ``done`` events as :meth:`Sweep.run`
    sends them. With ``executor="local"`` and ``jobs=1`` this is :meth:`Sweep.run`.
    """
    settings = sweep.base.experiments
    executor = executor or settings.executor
    jobs = jobs or settings.jobs
    address = address or (settings.address if executor == "ray" else None)
    check_executor(executor, jobs, address, budget_given=False)
    if executor == "local" and jobs == 1:
        return sweep.run(listen=listen, predict=predict)
    tell = listen or (lambda event: None)
    pending = []
    for s in sweep.states:
        if s.summary is not None:
            s.skipped = True
            tell({"event": "skip", "run": s})
        else:
            pending.append(s)
    if not pending:
        return sweep.states
    remote = sweep.cache_remote
    if remote is None:
        remote = remote_from_env()
    threads = worker_threads(executor, min(jobs, len(pending)))
    work = [RunJob(str(sweep.base.spec_path.absolute()), sweep.matrix, s.index, str(sweep.cache_dir.absolute()),
                   sweep.cache_mode, remote or "", predict, sweep.predict, threads) for s in pending]
    for s in pending:
        tell({"event": "start", "run": s})

    def done(outcome: RunOutcome) -> None:
        state = sweep.states[outcome.index]
        adopt(state, outcome)
        tell({"event": "done", "run": state, "host": outcome.host, "pid": outcome.pid})

    if executor == "ray":
        run_on_ray(work, address, done)
    else:
        run_in_processes(work, jobs, done)
    return sweep.states


def worker_threads(executor: str, workers: int) -> int:
    """CPU threads for each worker's embedded model: ``$DLNFLOW_THREADS`` when the user set it; on
    Ray one (each task reserves one CPU); locally this machine's cores shared among the workers.
    Without this every worker would start a thread per core, and on a small machine the parallel
    sweep would run slower than the sequential one.

    >>> worker_threads("ray", 4)
    1
    """
    chosen = threads_from_env()  # a bad value is refused here, before any worker starts
    if chosen is not None:
        return chosen
    if executor == "ray":
        return 1
    return max(1, len(os.sched_getaffinity(0)) // max(1, workers))


def adopt(state: RunState, outcome: RunOutcome) -> None:
    """Take a worker's result: write its files into this run folder where they differ, read the summary."""
    if "summary.json" not in outcome.files:
        raise RuntimeFault(f"run {state.index + 1} ({state.point.label}) came back without a summary")
    for name, text in outcome.files.items():
        target = state.run_dir / name
        try:
            same = target.read_text(encoding="utf-8") == text
        except OSError:
            same = False
        if not same:
            write_atomic(target, text)
    summary = json.loads(outcome.files["summary.json"])
    if summary.get("config", {}).get("fingerprint") != state.fingerprint:
        raise RuntimeFault(f"run {state.index + 1} ({state.point.label}) came back with another fingerprint: "
                           "the worker read a different spec or data; give every node the same checkout")
    state.summary = summary
    state.worker = f"{outcome.host}:{outcome.pid}"


def run_in_processes(work: Iterable[RunJob], jobs: int, done: Callable[[RunOutcome], None]) -> None:
    """``jobs`` worker processes on this machine (spawned, so no model state is forked)."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {pool.submit(train_job, job) for job in work}
        try:
            while futures:
                finished, futures = wait(futures, return_when=FIRST_COMPLETED)
                for fut in finished:
                    done(fut.result())
        except BrokenProcessPool as exc:
            raise RuntimeFault("a worker process died during the sweep; finished runs are kept: run the same "
                               "command again to train the rest") from exc
        finally:
            for fut in futures:
                fut.cancel()


def run_on_ray(work: Iterable[RunJob], address: str | None, done: Callable[[RunOutcome], None]) -> None:
    """One Ray task per run; a task whose worker dies is retried by Ray. Without ``address`` (and
    ``$RAY_ADDRESS``) Ray starts an instance on this machine for the command."""
    ray = _import_ray()
    with _stdout_to_stderr():
        _ray_loop(ray, work, address, done)


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 to stderr while Ray runs: its driver prints cluster events (a worker
    died, a task is retried) on stdout, which belongs to the command's result (``--json``)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _ray_loop(ray: Any, work: Iterable[RunJob], address: str | None, done: Callable[[RunOutcome], None]) -> None:
    try:
        ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING", configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RuntimeFault(f"cannot reach the Ray cluster at {address or os.environ.get('RAY_ADDRESS')}: "
                           f"{str(exc).splitlines()[0]}; start one with `ray start --head` or check "
                           "--address") from None
    try:
        task = ray.remote(max_retries=RAY_RETRIES, retry_exceptions=False, num_cpus=1)(train_job)
        pending = [task.remote(job) for job in work]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                done(_ray_result(ray, ref))
    finally:
        ray.shutdown()


def _ray_result(ray: Any, ref: Any) -> RunOutcome:
    try:
        outcome: RunOutcome = ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, DlnflowError):
            raise cause from None
        raise RuntimeFault(f"a run failed on the Ray cluster: {str(exc).splitlines()[0]}") from None
    except ray.exceptions.RayError as exc:
        raise RuntimeFault(f"a run was lost on the Ray cluster after {RAY_RETRIES} retries: "
                           f"{str(exc).splitlines()[0]}; finished runs are kept: run the same command again") from None
    return outcome


def _import_ray() -> Any:
    try:
        import ray  # optional: pip install 'dlnflow[ray]'
    except ImportError:
        raise InputError("--executor ray needs Ray: pip install 'dlnflow[ray]'") from None
    return ray
