"""Pytest plugin: a real ``redis-server`` (the Debian package) on 127.0.0.1, for the shared cache tier.

``redis_factory`` starts servers on free ports (``--save ''``: no snapshots; ``persist=True`` adds an
append-only file so that a killed server restarts with what it had), each
with an ACL user and password so that tests can check the password never leaks; every server a
test started is stopped by its PID at the end. :meth:`RedisServer.kill` stops one mid-test (SIGKILL)
and :meth:`RedisServer.start` brings it back on the same port, empty.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from server import free_port

USER = "dlnteam"
PASSWORD = "pw-Zq81-never-shown"
START_TIMEOUT = 20.0


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class RedisServer:
    """One redis-server process we own."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    persist: bool = False
    """Keep an append-only file (fsync on every write), so a killed server comes back with its data."""

    @property
    def url(self) -> str:
        return f"redis://{USER}:{PASSWORD}@127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        log = open(self.workdir / f"redis-{self.port}.log", "ab")  # noqa: SIM115 - closed with the process
        cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
               "--appendonly", "yes" if self.persist else "no", "--appendfsync", "always",
               "--dir", str(self.workdir), "--daemonize", "no",
               "--user", USER, "on", f">{PASSWORD}", "~*", "+@all", "--user", "default", "off"]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not _listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                text = (self.workdir / f"redis-{self.port}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{text}")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture()
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """``redis_factory()`` -> a started :class:`RedisServer`; all are stopped at the end of the test."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    try:
        import redis  # noqa: F401
    except ImportError:
        pytest.skip("the redis client is not installed: pip install 'dlnflow[redis]'")
    started: list[RedisServer] = []

    def make(persist: bool = False) -> RedisServer:
        folder = tmp_path / f"redis{len(started)}"
        folder.mkdir()
        server = RedisServer(folder, persist=persist)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture()
def redis_server(redis_factory: Callable[..., RedisServer]) -> RedisServer:
    return redis_factory()
