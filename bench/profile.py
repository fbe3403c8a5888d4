"""py-spy on a running worker, and a text summary of where its samples went.

py-spy samples the process from outside (``--nonblocking``: it does not
pause the worker to read its stacks, so the measured numbers are not
slowed by the profiler, at the price of an occasional torn stack). Output
is speedscope JSON (open it at https://www.speedscope.app, or with
``speedscope FILE``); the same file is read back here to name the top
frames in RESULTS.md, so the bottleneck is readable without a viewer.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import procs

RATE = 100


class Profiler:
    """``py-spy record`` attached to ``pid`` until :meth:`stop`."""

    def __init__(self, pid: int, path: Path, log: Path, max_seconds: int = 1800) -> None:
        self.path = path
        self.started = time.monotonic()
        self.wall_s = 0.0
        self.error: str | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self.proc: subprocess.Popen[bytes] | None = procs.spawn(
            [
                str(procs.BIN / "py-spy"),
                "record",
                "--pid",
                str(pid),
                "--format",
                "speedscope",
                "--output",
                str(path),
                "--rate",
                str(RATE),
                "--nonblocking",
                "--duration",
                str(max_seconds),
            ],
            log=log,
        )

    def stop(self) -> Path | None:
        """Stop sampling (py-spy writes its file on SIGINT); the file, if there is one."""
        proc = self.proc
        if proc is None:
            return self.path if self.path.exists() else None
        self.proc = None
        self.wall_s = time.monotonic() - self.started
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                procs.kill(proc)
        procs.kill(proc)
        if not self.path.exists():
            self.error = f"py-spy wrote no profile (exit {proc.returncode})"
            return None
        return self.path


def _package(file: str) -> str:
    """A frame's file as the package it belongs to: ``faust``, ``scheduler``, ``stdlib:json``."""
    parts = Path(file).parts
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1 :]
        return rest[0].removesuffix(".py") if rest else file
    if "scheduler" in parts and "work" in parts:
        return "scheduler"
    for marker in ("lib", "Lib"):
        if marker in parts:
            rest = parts[parts.index(marker) + 1 :]
            if rest and rest[0].startswith("python") and len(rest) > 1:
                return "stdlib:" + rest[1].removesuffix(".py")
    return Path(file).name or file


#: Frames every sample passes through (the command and the event loop's entry): no signal.
_ENTRY = {"<module>", "main", "cmd_worker", "run", "execute_from_commandline"}


def summarize(path: Path, top: int = 12) -> dict[str, Any]:
    """Self time by function, time by package of the leaf, and our own code's inclusive time.

    Percentages are of the samples in which the worker was not idle (py-spy
    leaves out samples of a thread waiting in the selector).
    """
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]

    def function(index: int) -> tuple[str, str]:
        frame = frames[index]
        return frame.get("name", "?"), frame.get("file", "")

    leaf: Counter[tuple[str, str]] = Counter()
    package: Counter[str] = Counter()
    own: Counter[tuple[str, str]] = Counter()
    samples = 0
    seconds = 0.0
    for profile in data["profiles"]:
        weights = profile.get("weights") or [1 / RATE] * len(profile["samples"])
        for stack, weight in zip(profile["samples"], weights, strict=False):
            if not stack:
                continue
            samples += 1
            seconds += weight
            leaf[function(stack[-1])] += 1
            package[_package(function(stack[-1])[1])] += 1
            for name, file in {function(i) for i in stack}:
                if _package(file) == "scheduler" and name not in _ENTRY:
                    own[(name, file)] += 1

    def label(key: tuple[str, str]) -> str:
        name, file = key
        return f"{name} ({_package(file)}: {Path(file).name or '?'})"

    def share(count: int) -> float:
        return round(100 * count / samples, 1) if samples else 0.0

    return {
        "samples": samples,
        "seconds_sampled": round(seconds, 1),
        "self": [{"frame": label(k), "pct": share(c)} for k, c in leaf.most_common(top)],
        "packages": [{"package": p, "pct": share(c)} for p, c in package.most_common(top)],
        "scheduler_inclusive": [
            {"frame": label(k), "pct": share(c)} for k, c in own.most_common(top)
        ],
    }
