"""Kafka's broker jars from Maven Central, fetched once into a per-user cache.

``pom.xml``, beside this module, names Kafka and the logging backend;
:func:`fetch_jars` runs ``mvn dependency:copy-dependencies`` on a copy of it
and renames the finished ``libs`` directory into place, marked with the
pom's hash, so neither an interrupted fetch nor one made from an older pom
passes for a usable install. :func:`require_tool` turns a missing ``java``
or ``mvn`` into what to install.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

from scheduler.domain.errors import BrokerError

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"

Which = Callable[[str], str | None]
"""Looks a program up on PATH; ``shutil.which`` unless a test swaps it."""

_INSTALL_HINTS = {
    "java": "install a JDK 17+ (apt-get install -y openjdk-17-jre-headless)",
    "mvn": (
        "install Apache Maven (apt-get install -y maven); "
        "it is needed once, to fetch the Kafka jars from Maven Central"
    ),
}
_MARKER = ".complete"
_KAFKA_JAR = f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar"
_TAIL_LINES = 40

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- tools


def require_tool(name: str, which: Which = shutil.which) -> str:
    """Find ``name`` on PATH, or fail with what to install instead of a bare ENOENT."""
    path = which(name)
    if path is None:
        hint = _INSTALL_HINTS.get(name, f"install {name}")
        raise BrokerError(f"{name} not found on PATH: {hint}")
    return path


# --------------------------------------------------------------------------- fetching the jars


def default_cache_dir() -> Path:
    """Per-user, per-version, so two Kafka versions never share a ``libs`` directory."""
    return Path.home() / ".cache" / "kafka-scheduler" / f"kafka-{KAFKA_VERSION}"


def _pom_text() -> str:
    return resources.files("scheduler.devtools.broker").joinpath("pom.xml").read_text("utf-8")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _is_complete(libs: Path, digest: str) -> bool:
    """A ``libs`` directory counts only if a fetch of this very pom finished into it.

    Comparing the pom's hash means editing the dependency list (say, the
    logging backend) refreshes an old cache instead of silently reusing it.
    """
    marker = libs / _MARKER
    try:
        return marker.read_text("utf-8").strip() == digest
    except OSError:
        return False


@contextlib.contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """Serialise fetches across processes: Maven 3's local repository is not safe for that."""
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _swap_in(new: Path, target: Path) -> None:
    """Rename ``new`` onto ``target``: readers see the old tree or the new one, never half."""
    if target.exists():
        stale = target.with_name(f".stale-{secrets.token_hex(4)}")
        target.rename(stale)
        new.rename(target)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        new.rename(target)


def fetch_jars(
    cache_dir: Path | None = None,
    *,
    which: Which = shutil.which,
    timeout: float = 600.0,
) -> Path:
    """Return ``<cache_dir>/libs`` holding Kafka and its runtime jars, fetching them once.

    Maven writes into a staging directory beside the cache; only a finished,
    checked copy is renamed into place, so an interrupted fetch leaves
    nothing that a later start could mistake for a usable install.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    libs = cache / "libs"
    pom = _pom_text()
    digest = _digest(pom)
    if _is_complete(libs, digest):
        return libs

    # Maven runs on the JVM too; asking for java first gives the more useful hint.
    require_tool("java", which)
    mvn = require_tool("mvn", which)
    cache.mkdir(parents=True, exist_ok=True)
    with _exclusive(cache / ".lock"):
        if _is_complete(libs, digest):  # another process fetched while we waited
            return libs
        started = time.monotonic()
        staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache))
        try:
            pom_file = staging / "pom.xml"
            pom_file.write_text(pom, "utf-8")
            out = staging / "libs"
            command = [
                mvn,
                "-q",
                "-B",
                "-Dstyle.color=never",
                "-f",
                str(pom_file),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={out}",
                "-DincludeScope=runtime",
            ]
            try:
                done = subprocess.run(
                    command,
                    cwd=staging,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise BrokerError(
                    f"Maven did not finish fetching Kafka {KAFKA_VERSION} within {timeout:g} s"
                ) from exc
            if done.returncode != 0:
                raise BrokerError(
                    f"Maven could not fetch Kafka {KAFKA_VERSION} (exit {done.returncode}); "
                    f"is Maven Central reachable?\n{_tail(done.stdout + done.stderr)}"
                )
            jars = sorted(out.glob("*.jar"))
            if not (out / _KAFKA_JAR).is_file():
                raise BrokerError(
                    f"Maven finished but {_KAFKA_JAR} is not among the {len(jars)} jars "
                    f"it copied to {out}"
                )
            (out / _MARKER).write_text(f"{digest}\n", "utf-8")
            _swap_in(out, libs)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info(
            "fetched %d Kafka %s jars into %s in %.1f s",
            len(jars),
            KAFKA_VERSION,
            libs,
            time.monotonic() - started,
        )
    return libs


# --------------------------------------------------------------------------- failure output


def _tail(text: str, lines: int = _TAIL_LINES) -> str:
    """The end of a tool's output, for an error message (Maven's here, Kafka's in process.py)."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _java_hint(text: str) -> str:
    """What to install when Kafka's output shows a Java older than its jars."""
    if "UnsupportedClassVersionError" in text:
        return f"\n(Kafka {KAFKA_VERSION} needs Java 17 or newer: {_INSTALL_HINTS['java']})"
    return ""
