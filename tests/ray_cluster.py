"""Pytest plugin: a real two-node Ray cluster on this machine's loopback interface.

``ray_cluster`` (session) starts a head node and a second worker node with ``ray start --block``
(one CPU each, dashboard off, a small object store), yields its address, and stops both by
their PIDs at the end (``ray start --block`` takes the processes it started down with it).

Loopback addresses: Ray replaces ``127.0.0.1`` given as a node address by the machine's routable
address (``ray._private.services.resolve_ip_for_localhost``), and a worker node cannot then reach
a head bound to loopback. So the head listens on ``127.0.0.2`` (also the loopback interface, and
not rewritten), the worker node joins through it and gets ``127.0.0.1`` as its address. No
traffic leaves the machine.

The workers import dlnflow from this checkout (``PYTHONPATH``), not from an installed copy, and run
at the test's own priority (Ray lowers its workers' priority to niceness 15 by default, which
starves them on a busy machine).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from server import free_port

ROOT = Path(__file__).resolve().parent.parent
HEAD_IP = "127.0.0.2"
START_TIMEOUT = 120.0
OBJECT_STORE_BYTES = 100 * 2**20


@dataclass
class RayCluster:
    """The processes of our cluster and where to reach it."""

    address: str
    temp_dir: Path
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def task_processes(self, name: str) -> list[int]:
        """PIDs of worker processes of this cluster now running task ``name`` (their title is ``ray::name``)."""
        import psutil

        found = []
        for proc in self.procs:
            try:
                children = psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            for child in children:
                try:
                    title = " ".join(child.cmdline())
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                if title.startswith(f"ray::{name}"):
                    found.append(child.pid)
        return found

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _wait_nodes(cluster: RayCluster, n: int, log: Path) -> None:
    """Until ``ray status`` sees ``n`` nodes (or the time is up)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for proc in cluster.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a ray node exited early:\n{log.read_text(errors='replace')[-3000:]}")
        out = subprocess.run([_ray_bin(), "status", "--address", cluster.address], env=cluster.env,
                             capture_output=True, text=True, timeout=60, check=False).stdout
        if out.count("node_") >= n:
            return
        time.sleep(1.0)
    raise RuntimeError(f"the ray cluster did not come up with {n} nodes:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.skip("ray is not installed: pip install 'dlnflow[ray]'")
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths have a length limit
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(":"),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_worker_niceness": "0"}
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    cluster = RayCluster(f"{HEAD_IP}:{port}", temp_dir, env)
    log = temp_dir / "nodes.log"
    common = ["--num-cpus", "1", "--object-store-memory", str(OBJECT_STORE_BYTES), "--disable-usage-stats",
              "--block"]
    head = [_ray_bin(), "start", "--head", "--node-ip-address", HEAD_IP, "--port", str(port),
            "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
            "--include-dashboard", "false", "--temp-dir", str(temp_dir), *common]
    worker = [_ray_bin(), "start", "--address", cluster.address,
              "--dashboard-agent-listen-port", str(free_port()), *common]
    try:
        with open(log, "ab") as fh:
            cluster.procs.append(subprocess.Popen(head, stdout=fh, stderr=subprocess.STDOUT, env=env))
            _wait_nodes(cluster, 1, log)
            cluster.procs.append(subprocess.Popen(worker, stdout=fh, stderr=subprocess.STDOUT, env=env))
            _wait_nodes(cluster, 2, log)
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)
