"""Child processes of the bench: started in their own process group, always cleaned up.

Every process the bench starts (broker, workers, targets, peers, redis) goes
through :func:`spawn`, which puts it in a new session and remembers it, so
that :func:`stop_all` (run at exit and on SIGTERM/SIGINT) can end the whole
group of each one, children included, and nothing outlives the run.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

PYTHON = sys.executable
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

_started: list[subprocess.Popen[bytes]] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {port}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not listen on {port} within {timeout:g} s")
        time.sleep(0.05)


def spawn(
    argv: Sequence[str],
    *,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session (its own process group), output to ``log``."""
    out: IO[bytes] | int = subprocess.DEVNULL
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = log.open("ab")
    full_env = dict(os.environ if env is None else env)
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), full_env.get("PYTHONPATH", "")) if p
    )
    try:
        proc = subprocess.Popen(
            list(argv),
            env=full_env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if not isinstance(out, int):
            out.close()
    _started.append(proc)
    return proc


def kill(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, wait: float = 15) -> None:
    """Signal the process group of ``proc``; SIGKILL it if it outlives ``wait`` seconds."""
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    # A group may keep members (forked RQ work horses) after its leader died.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ValueError):
        _started.remove(proc)


def kill9(proc: subprocess.Popen[bytes]) -> None:
    """kill -9 of the whole group, the way a crashed host loses a process."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    with contextlib.suppress(ValueError):
        _started.remove(proc)


def stop_all() -> None:
    for proc in list(reversed(_started)):
        kill(proc, wait=20)


def _on_signal(signum: int, frame: object) -> None:
    stop_all()
    raise SystemExit(128 + signum)


def install_cleanup() -> None:
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


# --------------------------------------------------------------------------- /proc readings


def children(pid: int) -> list[int]:
    """Every descendant of ``pid``, from /proc (no dependency needed)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        parents.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss_bytes(pid: int, *, tree: bool = True) -> int:
    """VmRSS of ``pid`` (and of its descendants), in bytes."""
    total = 0
    for one in [pid, *(children(pid) if tree else [])]:
        try:
            with open(f"/proc/{one}/status") as handle:
                for line in handle:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


def cpu_seconds(pid: int, *, tree: bool = True) -> float:
    """utime + stime of ``pid`` (and of its live descendants), in seconds."""
    ticks = 0
    for one in [pid, *(children(pid) if tree else [])]:
        try:
            with open(f"/proc/{one}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLOCK_TICKS


def cpu_times() -> tuple[float, float]:
    """(busy, total) seconds of all cores together, from /proc/stat."""
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


class CpuWatch:
    """Machine-wide and per-process CPU between ``start`` and ``stop``, in cores used.

    A name may stand for several processes (the workers of one app): their CPU is added up.
    """

    def __init__(self, pids: dict[str, int | list[int] | None]) -> None:
        self.pids = {
            name: pid if isinstance(pid, list) else [pid] for name, pid in pids.items() if pid
        }
        self.started = time.monotonic()
        self.machine = cpu_times()
        self.procs = {name: self._seconds(name) for name in self.pids}

    def _seconds(self, name: str) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids[name])

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.started
        busy, total = cpu_times()
        out = {
            "machine_busy_pct": round(100 * (busy - self.machine[0]) / (total - self.machine[1]), 1)
        }
        for name in self.pids:
            used = self._seconds(name) - self.procs[name]
            out[f"{name}_cores"] = round(used / wall, 2) if wall > 0 else 0.0
        return out


def machine() -> dict[str, object]:
    with open("/proc/meminfo") as handle:
        total_kb = int(handle.readline().split()[1])
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cores": os.cpu_count(), "memory_gib": round(total_kb / 1024 / 1024, 1), "cpu": model}
