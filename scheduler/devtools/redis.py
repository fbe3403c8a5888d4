"""A throwaway ``redis-server`` on 127.0.0.1, for tests, the fault suite and the bench.

Nothing is persisted (no RDB snapshots, no append-only file) unless asked:
each one starts empty and is gone when stopped. The fault suite asks for an
append-only file written on every command, so a ``redis-server`` it kills
with -9 comes back with everything it acknowledged.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

#: Every write appended to a file and synced before it is answered.
PERSIST = ("--appendonly", "yes", "--appendfsync", "always")


def command(port: int, workdir: Path, persist: bool = False) -> list[str]:
    """The ``redis-server`` command line for ``port``: nothing persisted, or every write."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: run scripts/system-deps (apt-get install)")
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        *(PERSIST if persist else ("--appendonly", "no")),
        "--dir",
        str(workdir),
    ]


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Return once ``port`` accepts connections; raise if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)


class RedisServer:
    """One ``redis-server`` process owned by this object."""

    def __init__(self, port: int, workdir: Path, persist: bool = False) -> None:
        self.port = port
        self.workdir = workdir
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            command(self.port, self.workdir, self.persist),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_listening(self.port, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
