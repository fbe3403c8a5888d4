"""The broker's process: free ports, the JVM that :class:`LocalBroker` runs, and the exit hook.

:class:`LocalBroker` fetches the jars (:mod:`.jars`), writes the properties
(:mod:`.properties`) into its data directory, formats the storage on a first
start and runs Kafka in its own session; the files it keeps there are listed
in the package's docstring. A broker still running when Python exits is
stopped by an ``atexit`` hook.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Self

from scheduler.devtools.broker.jars import (
    KAFKA_VERSION,
    Which,
    _java_hint,
    _tail,
    fetch_jars,
    require_tool,
)
from scheduler.devtools.broker.properties import (
    HOST,
    PropertyValue,
    _text,
    log4j2_properties,
    new_cluster_id,
    render_properties,
    server_properties,
)
from scheduler.domain.errors import BrokerError

DEFAULT_PORT = 9092
DEFAULT_HEAP = "512m"
STOP_GRACE_SECONDS = 20.0

_HEAP_RE = re.compile(r"[1-9][0-9]*[kKmMgG]?")

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- ports


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
        extra_properties: Mapping[str, PropertyValue | None] | None = None,
        controller_port: int | None = None,
        which: Which = shutil.which,
        format_args: Sequence[str] = (),
        cluster_id: str | None = None,
        standalone: bool = True,
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
        #: Added to ``StorageTool format`` (SCRAM users: ``--add-scram ...``).
        self.format_args = list(format_args)
        #: Set for the nodes of one cluster, which are formatted with the same id.
        self.cluster_id = cluster_id
        #: A single node elects itself (``--standalone``); a cluster's nodes list
        #: their voters in ``controller.quorum.voters`` instead.
        self.standalone = standalone
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
        header = (
            f"Written by scheduler.devtools.broker for Kafka {KAFKA_VERSION}; "
            "rewritten on each start."
        )
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
        cluster_id = self.cluster_id or new_cluster_id()
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
            *(["--standalone"] if self.standalone else []),
            *self.format_args,
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
