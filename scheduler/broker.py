"""A single-node Apache Kafka broker for development and tests, without Docker.

Kafka 4 runs in KRaft mode, so one JVM is both the controller and the broker
and nothing else (no ZooKeeper, no container) has to be running. The broker's
own jars come from Maven Central through ``mvn dependency:copy-dependencies``:
Maven is a one-line install on every platform, it resolves Kafka's exact
runtime dependency set from Kafka's own pom, and its ``~/.m2`` cache makes a
second fetch on the same machine nearly free.

Everything the broker writes stays under one data directory::

    <data_dir>/server.properties    rewritten on every start (ports may change)
    <data_dir>/log4j2.properties    rewritten on every start
    <data_dir>/logs/                Kafka's log.dirs: topics, offsets, metadata
    <data_dir>/broker.log           the broker's own log, INFO and up, rotated
    <data_dir>/broker.out           JVM stdout/stderr of the latest start
    <data_dir>/broker.pid           pid of the running broker

Storage is formatted only when ``logs/meta.properties`` is missing, so a
restart on the same data directory keeps every topic and committed offset.

Logging goes through log4j2 (``log4j-slf4j-impl``), the backend Kafka 4 itself
ships with; with the log4j 1.x bridge, log4j2 (pulled in by Kafka) complains on
every start that it has no configuration.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Self

from scheduler.errors import BrokerError

__all__ = [
    "DEFAULT_HEAP",
    "DEFAULT_PORT",
    "HOST",
    "KAFKA_VERSION",
    "LocalBroker",
    "default_cache_dir",
    "fetch_jars",
    "free_port",
    "is_port_free",
    "is_port_open",
    "log4j2_properties",
    "new_cluster_id",
    "render_properties",
    "require_tool",
    "server_properties",
    "wait_for_port",
]

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
HOST = "127.0.0.1"
DEFAULT_PORT = 9092
DEFAULT_HEAP = "512m"
STOP_GRACE_SECONDS = 20.0

Which = Callable[[str], str | None]
"""Looks a program up on PATH; ``shutil.which`` unless a test swaps it."""

PropertyValue = str | int | bool

_INSTALL_HINTS = {
    "java": "install a JDK 17+ (apt-get install -y openjdk-17-jre-headless)",
    "mvn": (
        "install Apache Maven (apt-get install -y maven); "
        "it is needed once, to fetch the Kafka jars from Maven Central"
    ),
}
_MARKER = ".complete"
_KAFKA_JAR = f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar"
_HEAP_RE = re.compile(r"[1-9][0-9]*[kKmMgG]?")
_TAIL_LINES = 40

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- tools and ports


def require_tool(name: str, which: Which = shutil.which) -> str:
    """Find ``name`` on PATH, or fail with what to install instead of a bare ENOENT."""
    path = which(name)
    if path is None:
        hint = _INSTALL_HINTS.get(name, f"install {name}")
        raise BrokerError(f"{name} not found on PATH: {hint}")
    return path


def free_port(host: str = HOST) -> int:
    """A port the kernel just considered free.

    Another process may take it before we bind it; callers that start a
    server on it still get a clear error from the pre-start check.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def is_port_free(port: int, host: str = HOST) -> bool:
    """Whether a server could bind ``host:port`` right now.

    SO_REUSEADDR mirrors what the JVM does, so connections of a broker that
    just stopped (TIME_WAIT) do not make its port look taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def is_port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float = 30.0, *, interval: float = 0.1) -> None:
    """Block until ``host:port`` accepts connections; ``TimeoutError`` if it never does."""
    deadline = time.monotonic() + timeout
    while not is_port_open(host, port):
        if time.monotonic() >= deadline:
            raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:g} s")
        time.sleep(interval)


# --------------------------------------------------------------------------- fetching the jars


def default_cache_dir() -> Path:
    """Per-user, per-version, so two Kafka versions never share a ``libs`` directory."""
    return Path.home() / ".cache" / "kafka-scheduler" / f"kafka-{KAFKA_VERSION}"


def _pom_text() -> str:
    return resources.files("scheduler").joinpath("broker_files", "pom.xml").read_text("utf-8")


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


# --------------------------------------------------------------------------- configuration


def new_cluster_id(token_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A Kafka cluster id, made here to save a JVM start (``StorageTool random-uuid``).

    Kafka's format is 16 random bytes in unpadded base64url. Like Kafka we
    reject ids that start with ``-``: command-line parsers read them as flags.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(token_bytes(16)).rstrip(b"=").decode("ascii")
        if not cluster_id.startswith("-"):
            return cluster_id


def _text(value: PropertyValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def server_properties(
    *,
    port: int,
    controller_port: int,
    data_dir: Path,
    extra: Mapping[str, PropertyValue] | None = None,
) -> dict[str, str]:
    """Broker settings for one node that is its own controller and sole replica.

    Every replication factor and ISR minimum is 1 because there is no second
    broker to satisfy a larger one. The log cleaner is tuned so that the
    compacted changelog topics behind Faust tables are actually compacted on
    a long-running development broker instead of growing until a 1 GiB
    segment fills. ``extra`` is applied last and wins.
    """
    listeners = f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}"
    props: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{HOST}:{controller_port}",
        "listeners": listeners,
        "advertised.listeners": listeners,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(Path(data_dir) / "logs"),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
        # Compaction only rewrites closed segments: smaller segments close sooner.
        "log.segment.bytes": str(64 * 1024 * 1024),
        "log.cleaner.enable": "true",
        "log.cleaner.backoff.ms": "1000",
        "log.cleaner.min.cleanable.ratio": "0.1",
        # The 128 MiB default would take a quarter of a 512m heap.
        "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
    }
    for key, value in (extra or {}).items():
        props[str(key)] = _text(value)
    return props


def log4j2_properties(log_file: Path) -> dict[str, str]:
    """Everything at INFO to a rotating file; only WARN and up to the console.

    The console is the terminal of ``scheduler broker`` (or ``broker.out``),
    where the broker's start-up chatter would bury the lines that matter.
    """
    pattern = "[%d] %p %m (%c)%n"
    return {
        "status": "warn",
        "name": "scheduler-local-broker",
        "appender.file.type": "RollingFile",
        "appender.file.name": "file",
        "appender.file.fileName": str(log_file),
        "appender.file.filePattern": f"{log_file}.%i",
        "appender.file.layout.type": "PatternLayout",
        "appender.file.layout.pattern": pattern,
        "appender.file.policies.type": "Policies",
        "appender.file.policies.size.type": "SizeBasedTriggeringPolicy",
        "appender.file.policies.size.size": "20MB",
        "appender.file.strategy.type": "DefaultRolloverStrategy",
        "appender.file.strategy.max": "5",
        "appender.console.type": "Console",
        "appender.console.name": "console",
        "appender.console.target": "SYSTEM_ERR",
        "appender.console.layout.type": "PatternLayout",
        "appender.console.layout.pattern": pattern,
        "appender.console.filter.threshold.type": "ThresholdFilter",
        "appender.console.filter.threshold.level": "warn",
        "rootLogger.level": "info",
        "rootLogger.appenderRef.file.ref": "file",
        "rootLogger.appenderRef.console.ref": "console",
    }


def _escape(text: str, *, key: bool) -> str:
    """Escape for ``java.util.Properties.load``, which reads ISO-8859-1.

    Anything outside printable ASCII becomes ``\\uXXXX`` so a data directory
    with a non-ASCII name reaches the JVM intact.
    """
    out: list[str] = []
    for index, char in enumerate(text):
        if char == "\\":
            out.append("\\\\")
        elif char in "\t\n\r\f":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f"}[char])
        elif char in " :=#!" and (key or (char == " " and index == 0)):
            out.append("\\" + char)
        elif not " " <= char <= "~":
            units = char.encode("utf-16-be")
            out.extend(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))
        else:
            out.append(char)
    return "".join(out)


def render_properties(props: Mapping[str, str], header: str | None = None) -> str:
    """Java properties text, one ``key=value`` a line, in the mapping's order."""
    lines = [f"# {line}" for line in (header or "").splitlines()]
    lines.extend(f"{_escape(k, key=True)}={_escape(v, key=False)}" for k, v in props.items())
    return "\n".join(lines) + "\n"


def _tail(text: str, lines: int = _TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _java_hint(text: str) -> str:
    if "UnsupportedClassVersionError" in text:
        return f"\n(Kafka {KAFKA_VERSION} needs Java 17 or newer: {_INSTALL_HINTS['java']})"
    return ""


# --------------------------------------------------------------------------- the broker


_running: set[LocalBroker] = set()


@atexit.register
def _stop_running_brokers() -> None:
    """The JVM runs in its own session, so nothing else stops it when Python exits."""
    for broker in list(_running):
        broker.stop()


class _StopRequested(BaseException):
    """Raised from a signal handler; a BaseException so ``except Exception`` cannot swallow it."""


class LocalBroker:
    """One Kafka broker process on 127.0.0.1, owned by this object.

    The JVM gets its own process group so that Ctrl-C in a terminal reaches
    us first and the broker is stopped by us, cleanly, rather than killed
    half-way through writing its logs. A broker still running when the
    interpreter exits is stopped by an ``atexit`` hook; one orphaned by a
    SIGKILL of Python is reported by the next start on the same data
    directory, not killed behind the operator's back.
    """

    def __init__(
        self,
        *,
        port: int = DEFAULT_PORT,
        data_dir: str | os.PathLike[str],
        cache_dir: str | os.PathLike[str] | None = None,
        heap: str = DEFAULT_HEAP,
        extra_properties: Mapping[str, PropertyValue] | None = None,
        controller_port: int | None = None,
        which: Which = shutil.which,
    ) -> None:
        for name, value in (("port", port), ("controller_port", controller_port)):
            if value is not None and not 1 <= value <= 65535:
                raise BrokerError(f"{name} must be between 1 and 65535, got {value!r}")
        if controller_port is not None and controller_port == port:
            raise BrokerError(f"controller_port must differ from port, both are {port}")
        if not _HEAP_RE.fullmatch(heap):
            raise BrokerError(f"heap must be a JVM size such as 512m or 2g, got {heap!r}")
        self.port = port
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.heap = heap
        self.extra_properties = dict(extra_properties or {})
        self.requested_controller_port = controller_port
        self.controller_port: int | None = None
        """The port the controller listener got at the latest start."""
        self._which = which
        self._process: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None
        self._log_offset = 0

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running else "stopped"
        return f"<LocalBroker {self.bootstrap} {state} data_dir={str(self.data_dir)!r}>"

    # ------------------------------------------------------------------ addresses and files

    @property
    def bootstrap(self) -> str:
        """``host:port`` for Kafka clients such as aiokafka."""
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """The broker in the form ``SCHEDULER_BROKER`` and Faust expect."""
        return f"kafka://{self.bootstrap}"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def output_file(self) -> Path:
        return self.data_dir / "broker.out"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    @property
    def log_dir(self) -> Path:
        """Kafka's first ``log.dirs`` entry, where ``meta.properties`` marks formatted storage."""
        configured = self.extra_properties.get("log.dirs")
        if configured is None:
            return self.data_dir / "logs"
        return Path(_text(configured).split(",")[0])

    @property
    def is_formatted(self) -> bool:
        return (self.log_dir / "meta.properties").is_file()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # ------------------------------------------------------------------ lifecycle

    def ensure_jars(self) -> Path:
        """The directory of broker jars, fetched on first use."""
        return fetch_jars(self.cache_dir, which=self._which)

    def start(self, timeout: float = 60.0) -> None:
        """Start the broker and return once it accepts connections.

        ``timeout`` covers only the JVM's start-up, not a first fetch of the
        jars, whose duration depends on the network rather than on Kafka.
        """
        if self.is_running:
            raise BrokerError(f"the broker on {self.bootstrap} is already running (pid {self.pid})")
        java = require_tool("java", self._which)
        libs = self.ensure_jars()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._check_free(self.port, "port")
        self.controller_port = self._choose_controller_port()

        props = server_properties(
            port=self.port,
            controller_port=self.controller_port,
            data_dir=self.data_dir,
            extra=self.extra_properties,
        )
        header = f"Written by scheduler.broker for Kafka {KAFKA_VERSION}; rewritten on each start."
        self.properties_file.write_text(render_properties(props, header), "latin-1")
        log4j_file = self.data_dir / "log4j2.properties"
        log4j_file.write_text(
            render_properties(log4j2_properties(self.log_file), header), "latin-1"
        )
        log4j_flag = f"-Dlog4j2.configurationFile={log4j_file}"
        classpath = f"{libs}/*"

        if not self.is_formatted:
            self._format(java, classpath, log4j_flag)

        command = [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            # The JVM options Kafka's own kafka-server-start.sh uses.
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
            log4j_flag,
            "-cp",
            classpath,
            "kafka.Kafka",
            str(self.properties_file),
        ]
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        self._out = self.output_file.open("wb")
        started = time.monotonic()
        try:
            self._process = subprocess.Popen(
                command,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except BaseException:
            self._out.close()
            self._out = None
            raise
        _running.add(self)
        self.pid_file.write_text(f"{self._process.pid}\n", "ascii")
        try:
            self._wait_until_listening(timeout)
        except BaseException:
            self.stop()
            raise
        log.info(
            "Kafka %s listening on %s after %.1f s (pid %d, data in %s)",
            KAFKA_VERSION,
            self.bootstrap,
            time.monotonic() - started,
            self._process.pid,
            self.data_dir,
        )

    def stop(self, timeout: float = STOP_GRACE_SECONDS) -> None:
        """Ask the broker to shut down (SIGTERM), and SIGKILL it after ``timeout`` seconds.

        A clean shutdown matters: it flushes the logs and writes the
        checkpoints that spare the next start a recovery scan.
        """
        process = self._process
        if process is None:
            return
        try:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning(
                        "Kafka (pid %d) ignored SIGTERM for %g s; killing it", process.pid, timeout
                    )
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        finally:
            self._process = None
            _running.discard(self)
            if self._out is not None:
                self._out.close()
                self._out = None
            self.pid_file.unlink(missing_ok=True)

    def run_foreground(self, timeout: float = 60.0) -> None:
        """Serve until SIGTERM or SIGINT, then stop the broker cleanly and return.

        This is ``scheduler broker``. Signals are turned into an exception so
        that one arriving during a fetch or the start-up wait still ends in
        ``stop()``; a broker that dies on its own raises ``BrokerError``.
        """
        if threading.current_thread() is not threading.main_thread():
            raise BrokerError(
                "run_foreground() handles SIGTERM and SIGINT, so it needs the main thread"
            )

        def request_stop(signum: int, frame: FrameType | None) -> None:
            raise _StopRequested(signum)

        previous: dict[signal.Signals, Any] = {
            sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            self.start(timeout)
            print(
                f"Kafka {KAFKA_VERSION} listening on {self.bootstrap} (data in {self.data_dir})",
                flush=True,
            )
            while True:
                process = self._process
                if process is None:
                    return
                try:
                    code = process.wait(0.5)
                except subprocess.TimeoutExpired:
                    continue
                raise BrokerError(
                    f"Kafka exited unexpectedly with code {code}; {self._failure_context()}"
                )
        except _StopRequested:
            pass
        finally:
            # A second Ctrl-C must not cut the clean shutdown short.
            for sig in previous:
                signal.signal(sig, signal.SIG_IGN)
            try:
                self.stop()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ internals

    def _check_free(self, port: int, name: str) -> None:
        if is_port_free(port):
            return
        message = f"{HOST}:{port} ({name}) is already in use"
        orphan = self._orphan_pid()
        if orphan is not None:
            message += (
                f"; {self.pid_file} names pid {orphan}, which is still running: probably a "
                f"broker from an earlier run on this data directory (stop it with: kill {orphan})"
            )
        raise BrokerError(message)

    def _orphan_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text("ascii").strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def _choose_controller_port(self) -> int:
        """The requested port, else ``port + 1`` when free, else any free port.

        Changing it between starts is safe: a single voter elects itself
        without contacting anyone, and the broker registers its new endpoints.
        """
        if self.requested_controller_port is not None:
            self._check_free(self.requested_controller_port, "controller_port")
            return self.requested_controller_port
        candidate = self.port + 1
        if candidate <= 65535 and is_port_free(candidate):
            return candidate
        while True:
            candidate = free_port()
            if candidate != self.port:
                return candidate

    def _format(self, java: str, classpath: str, log4j_flag: str) -> None:
        cluster_id = new_cluster_id()
        command = [
            java,
            log4j_flag,
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.properties_file),
            "--standalone",
        ]
        started = time.monotonic()
        try:
            done = subprocess.run(
                command,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"formatting Kafka storage in {self.log_dir} hung") from exc
        if done.returncode != 0:
            output = done.stdout + done.stderr
            raise BrokerError(
                f"formatting Kafka storage in {self.log_dir} failed (exit {done.returncode}):\n"
                f"{_tail(output)}{_java_hint(output)}"
            )
        log.info(
            "formatted Kafka storage in %s as cluster %s in %.1f s",
            self.log_dir,
            cluster_id,
            time.monotonic() - started,
        )

    def _wait_until_listening(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while True:
            code = self._process.poll()
            if code is not None:
                raise BrokerError(
                    f"Kafka exited with code {code} before listening on {self.bootstrap}; "
                    f"{self._failure_context()}"
                )
            if is_port_open(HOST, self.port):
                return
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"Kafka did not listen on {self.bootstrap} within {timeout:g} s; "
                    f"{self._failure_context()}"
                )
            time.sleep(0.1)

    def _failure_context(self) -> str:
        """The end of what this start wrote: the JVM's own output first, else the log."""
        if self._out is not None:
            self._out.flush()
        for path, offset in ((self.output_file, 0), (self.log_file, self._log_offset)):
            try:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    text = handle.read().decode("utf-8", "replace")
            except OSError:
                continue
            if text.strip():
                return f"last lines of {path}:\n{_tail(text)}{_java_hint(text)}"
        return f"it wrote nothing; see {self.log_file}"
