"""The container files (Dockerfile, .dockerignore, compose.yaml), checked without Docker.

No Docker engine runs here or in CI, so these tests parse the files and check
what would break a build or a ``docker compose up``: unpinned or mismatched
base images, a stage reference that does not exist, a COPY'd file missing
from the repository or dropped by .dockerignore, a root user, a port, an
environment variable or a subcommand the code does not have, a broker
address the Kafka service does not advertise, an undeclared volume, an image
that would need the development tools (``scheduler/devtools``) it leaves out.
compose.yaml is also validated against the Compose specification's schema
(shipped by ``check-jsonschema``, offline), and each property that lets
``docker compose up --scale worker=N`` work is checked on its own: no host
port on the worker, the entrypoint (run for real, with stand-ins) binding and
advertising the container's hostname, no fixed identity, one anonymous cache
volume per replica, the proxy that publishes the web view.
"""

from __future__ import annotations

import argparse
import base64
import http.server
import json
import os
import posixpath
import re
import shlex
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cache
from itertools import takewhile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from check_jsonschema.builtin_schemas import get_builtin_schema

from scheduler.cli import EXIT_BAD_INPUT, _parser
from scheduler.devtools.broker import KAFKA_VERSION
from scheduler.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "compose.yaml"

KEYWORDS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME",
    "WORKDIR",
}  # fmt: skip


# -- a small Dockerfile parser ----------------------------------------------


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    flags: tuple[tuple[str, str], ...]
    """Leading ``--name=value`` options, in order (``RUN`` may repeat ``--mount``)."""
    rest: str
    """The arguments after the flags, continuation lines joined."""

    def flag(self, name: str) -> str | None:
        return next((value for key, value in self.flags if key == name), None)

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, or None for shell form."""
        text = self.rest
        if self.keyword == "HEALTHCHECK":
            keyword, _, text = text.partition(" ")
            if keyword.upper() != "CMD":
                return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
        return None


@dataclass(frozen=True)
class Stage:
    index: int
    image: str
    """The FROM reference with build-arg defaults substituted."""
    name: str | None
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            values.update(parse_env(instruction.rest))
        return values


_FLAG = re.compile(r"--([A-Za-z][\w-]*)(?:=(\S*))?(?:\s+|$)")
_DIRECTIVE = re.compile(r"#\s*([A-Za-z]+)\s*=\s*(\S+)\s*$")


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order: comments dropped, continuation lines joined.

    Follows Docker's rules: parser directives (``# syntax=``, ``# escape=``)
    only at the top, comment and blank lines inside a continuation skipped.
    """
    escape = "\\"
    lines = text.splitlines()
    for raw in lines:
        match = _DIRECTIVE.match(raw.strip())
        if not match:
            break
        if match.group(1).lower() == "escape":
            escape = match.group(2)
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not parts:
            start = number
        if stripped.endswith(escape):
            parts.append(stripped[: -len(escape)].strip())
            continue
        parts.append(stripped)
        instructions.append(_instruction(start, " ".join(p for p in parts if p)))
        parts = []
    if parts:
        raise ValueError(f"Dockerfile ends inside the continuation begun on line {start}")
    return instructions


def _instruction(line: int, text: str) -> Instruction:
    keyword, _, args = text.partition(" ")
    args = args.strip()
    flags = []
    while match := _FLAG.match(args):
        flags.append((match.group(1), match.group(2) or ""))
        args = args[match.end() :]
    return Instruction(line, keyword.upper(), tuple(flags), args.strip())


def parse_env(rest: str) -> dict[str, str]:
    """``ENV a=1 b="two words"``, or the legacy ``ENV name value``."""
    words = shlex.split(rest)
    if words and "=" not in words[0]:
        return {words[0]: rest.partition(" ")[2].strip()}
    return dict(word.split("=", 1) for word in words)


def _substitute(text: str, args: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return args.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, text)


def parse_stages(instructions: list[Instruction]) -> list[Stage]:
    """Build stages: ARGs before the first FROM are the defaults FROM may use."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    current: list[Instruction] = []
    header: tuple[str, str | None] | None = None
    for instruction in instructions:
        if instruction.keyword == "FROM":
            if header is not None:
                stages.append(Stage(len(stages), header[0], header[1], tuple(current)))
            words = instruction.rest.split()
            assert len(words) in (1, 3), f"line {instruction.line}: FROM {instruction.rest}"
            if len(words) == 3:
                assert words[1].upper() == "AS", f"line {instruction.line}: FROM ... AS name"
            header = (_substitute(words[0], global_args), words[2] if len(words) == 3 else None)
            current = []
        elif header is None:
            assert instruction.keyword == "ARG", f"line {instruction.line}: before any FROM"
            name, _, default = instruction.rest.partition("=")
            global_args[name.strip()] = default.strip().strip('"')
        else:
            current.append(instruction)
    assert header is not None, "the Dockerfile has no FROM"
    stages.append(Stage(len(stages), header[0], header[1], tuple(current)))
    return stages


def split_image(reference: str) -> tuple[str, str | None, str | None]:
    """``registry:5000/name:tag@sha256:...`` into name, tag, digest."""
    reference, _, digest = reference.partition("@")
    slash = reference.rfind("/")
    colon = reference.rfind(":")
    if colon > slash:
        return reference[:colon], reference[colon + 1 :], digest or None
    return reference, None, digest or None


# -- .dockerignore, with Docker's matching rules --------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax (Go's filepath.Match plus ``**``).

    fnmatch alone does not do: its ``*`` crosses ``/``, Docker's does not.
    """
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                out.append("(?:.*/)?")
                i += 1
            else:
                out.append(".*")
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and "]" in pattern[i + 1 :]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body[:1] in ("!", "^") else body) + "]")
            i = end + 1
            continue
        elif char == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out) + r"\Z")


@dataclass(frozen=True)
class DockerIgnore:
    rules: tuple[tuple[bool, re.Pattern[str]], ...]
    """(is an exception ``!``, pattern), in file order: the last match wins."""

    @classmethod
    def parse(cls, text: str) -> DockerIgnore:
        rules = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = posixpath.normpath(line.lstrip("!").strip()).lstrip("/")
            rules.append((negate, _pattern_regex(pattern)))
        return cls(tuple(rules))

    def excluded(self, path: str) -> bool:
        """Whether ``path`` (relative to the context) is left out of the build context."""
        parts = Path(path).parts
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        excluded = False
        for negate, regex in self.rules:
            # A pattern matching a directory drops everything under it.
            if any(regex.match(candidate) for candidate in candidates):
                excluded = not negate
        return excluded


# -- the files, parsed once -------------------------------------------------


@cache
def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@cache
def stages() -> list[Stage]:
    return parse_stages(dockerfile())


def final() -> Stage:
    return stages()[-1]


@cache
def dockerignore() -> DockerIgnore:
    return DockerIgnore.parse(DOCKERIGNORE.read_text(encoding="utf-8"))


@cache
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict), "compose.yaml is not a mapping"
    return loaded


@cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"compose.yaml has no service {name!r}"
    return dict(services[name])


def environment(svc: dict[str, Any]) -> dict[str, str]:
    """A service's environment, from the mapping or the ``NAME=value`` list form."""
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def cli_subcommands() -> set[str]:
    parser = _parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("the scheduler CLI has no subcommands")


def default_web_port() -> int:
    port = Settings.model_fields["web_port"].default
    assert isinstance(port, int)
    return port


def settings_field(env_name: str) -> str:
    return env_name.removeprefix("SCHEDULER_").lower()


def copy_sources(instruction: Instruction) -> list[str]:
    """The source arguments of a COPY/ADD (all but the destination)."""
    words = instruction.exec_form() or shlex.split(instruction.rest)
    assert len(words) >= 2, f"line {instruction.line}: COPY needs a source and a destination"
    return words[:-1]


def stage_references(instruction: Instruction) -> list[str]:
    """Stages an instruction reads: ``COPY --from=X`` and ``RUN --mount=...,from=X``."""
    refs = []
    if instruction.keyword in ("COPY", "ADD") and instruction.flag("from") is not None:
        refs.append(str(instruction.flag("from")))
    for key, value in instruction.flags:
        if key == "mount":
            options = dict(part.split("=", 1) for part in value.split(",") if "=" in part)
            if "from" in options:
                refs.append(options["from"])
    return refs


# -- the parsers themselves -------------------------------------------------


def test_parser_joins_continuations_and_skips_comments() -> None:
    parsed = parse_dockerfile(
        "# syntax=docker/dockerfile:1\n"
        "FROM python:3.11-slim AS base\n"
        "RUN a \\\n"
        "    # a comment inside the continuation\n"
        "    && b\n"
        "COPY --from=base --chown=1:1 /x /y\n"
        'ENV A=1 B="two words"\n'
    )
    assert [i.keyword for i in parsed] == ["FROM", "RUN", "COPY", "ENV"]
    assert parsed[1].rest == "a && b"
    assert parsed[2].flags == (("from", "base"), ("chown", "1:1"))
    assert parse_env(parsed[3].rest) == {"A": "1", "B": "two words"}
    assert split_image("registry:5000/a/b:1.2@sha256:ab") == (
        "registry:5000/a/b",
        "1.2",
        "sha256:ab",
    )
    assert split_image("python") == ("python", None, None)


def test_dockerignore_matching_follows_docker() -> None:
    rules = DockerIgnore.parse("*.egg-info\n**/__pycache__\nbench\n!bench/keep.txt\n")
    assert rules.excluded("kafka_scheduler.egg-info/PKG-INFO")
    assert not rules.excluded("scheduler/x.egg-info")  # `*` stops at `/`
    assert rules.excluded("scheduler/streams/__pycache__/a.pyc")
    assert rules.excluded("bench/out.json")
    assert not rules.excluded("bench/keep.txt")
    assert not rules.excluded("scheduler/cli.py")


# -- Dockerfile -------------------------------------------------------------


def test_dockerfile_parses_into_known_instructions() -> None:
    instructions = dockerfile()
    unknown = {i.keyword for i in instructions} - KEYWORDS
    assert not unknown, f"unknown Dockerfile instructions: {unknown}"
    assert len(stages()) >= 2, "expected a builder stage and a runtime stage"


def test_base_images_are_pinned() -> None:
    names: set[str] = set()
    for stage in stages():
        if stage.image not in names:
            assert "$" not in stage.image, f"FROM {stage.image}: a build arg without a default"
            _, tag, digest = split_image(stage.image)
            assert tag or digest, f"FROM {stage.image} has no tag"
            assert tag != "latest", f"FROM {stage.image} uses :latest"
        if stage.name:
            assert stage.name not in names, f"two stages named {stage.name}"
            names.add(stage.name)


def test_builder_and_runtime_share_the_interpreter_pyproject_wants() -> None:
    """Wheels built in one stage are installed in the other: same Python, or no install."""
    builder = next(s for s in stages() if any("pip wheel" in r.rest for r in s.all("RUN")))
    assert builder.image == final().image, (builder.image, final().image)
    name, tag, _ = split_image(final().image)
    assert name.endswith("python"), final().image
    match = re.match(r"(\d+)\.(\d+)", tag or "")
    assert match, f"{final().image}: the tag does not name a Python version"
    needed = re.search(r">=\s*(\d+)\.(\d+)", pyproject()["project"]["requires-python"])
    assert needed
    have = (int(match.group(1)), int(match.group(2)))
    assert have >= (int(needed.group(1)), int(needed.group(2))), (have, needed.group(0))


def test_stage_references_exist() -> None:
    seen: set[str] = set()
    for stage in stages():
        for instruction in stage.instructions:
            for ref in stage_references(instruction):
                assert ref in seen, f"line {instruction.line}: no earlier stage named {ref!r}"
        if stage.name:
            seen.add(stage.name)


def test_copied_files_exist_and_are_not_dockerignored() -> None:
    ignore = dockerignore()
    copied = 0
    for stage in stages():
        for instruction in stage.all("COPY") + stage.all("ADD"):
            if instruction.flag("from") is not None:
                continue
            for source in copy_sources(instruction):
                matches = sorted(ROOT.glob(source.lstrip("/")))
                assert matches, f"line {instruction.line}: COPY {source}: no such file"
                for path in matches:
                    files = [path] if path.is_file() else sorted(path.rglob("*"))
                    for file in files:
                        if not file.is_file() or "__pycache__" in file.parts:
                            continue
                        relative = file.relative_to(ROOT).as_posix()
                        assert not ignore.excluded(relative), (
                            f"line {instruction.line}: {relative} is excluded by .dockerignore"
                        )
                        copied += 1
    assert copied, "the Dockerfile copies nothing from the build context"


def test_the_wheel_is_built_from_everything_it_needs() -> None:
    """pyproject.toml, its readme and every package it names are copied before `pip wheel`."""
    builder = next(s for s in stages() if any("pip wheel" in r.rest for r in s.all("RUN")))
    copied: set[str] = set()
    for instruction in builder.instructions:
        if instruction.keyword == "RUN" and "pip wheel" in instruction.rest:
            break
        if instruction.keyword == "COPY" and instruction.flag("from") is None:
            copied.update(
                Path(source).as_posix().strip("/") for source in copy_sources(instruction)
            )
    project = pyproject()
    needed = {"pyproject.toml", project["project"]["readme"]}
    includes = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {
        path.name
        for path in ROOT.iterdir()
        if (path / "__init__.py").is_file() and any(fnmatchcase(path.name, p) for p in includes)
    }
    assert packages, f"no top-level package matches {includes}"
    missing = needed | packages
    missing -= copied
    assert not missing, f"copied before `pip wheel` are {sorted(copied)}; missing {sorted(missing)}"


def test_runtime_installs_only_the_builder_wheels() -> None:
    builder = next(s for s in stages() if any("pip wheel" in r.rest for r in s.all("RUN")))
    wheel_run = next(r for r in builder.all("RUN") if "pip wheel" in r.rest)
    wheel_dir = re.search(r"(?:--wheel-dir[= ]|-w\s+)(\S+)", wheel_run.rest)
    assert wheel_dir, "pip wheel without --wheel-dir"
    installs = [r for r in final().all("RUN") if "pip install" in r.rest]
    assert installs, "the runtime stage installs nothing"
    for run in installs:
        assert "--no-index" in run.rest, "the runtime must install from the wheels only"
        assert f"--find-links={wheel_dir.group(1)}" in run.rest or (
            f"--find-links {wheel_dir.group(1)}" in run.rest
        )
        mounted = builder.name in stage_references(run)
        copied = any(builder.name == c.flag("from") for c in final().all("COPY"))
        assert mounted or copied, "the wheels are neither mounted nor copied from the builder"


WITHOUT_DEVTOOLS = "import sys; sys.modules['scheduler.devtools'] = None\n"
"""Prepended to ``python -c`` code: ``scheduler.devtools`` cannot be imported, as in the image."""
SCHEDULER = "import sys; from scheduler.cli import main; sys.exit(main(sys.argv[1:]))"
"""The ``scheduler`` command, run as ``python -c`` so that the prelude applies."""


def test_the_builder_drops_the_development_tools_before_the_wheel() -> None:
    assert (ROOT / "scheduler" / "devtools" / "__init__.py").is_file()
    builder = next(s for s in stages() if any("pip wheel" in r.rest for r in s.all("RUN")))
    dropped: set[str] = set()
    for run in builder.all("RUN"):
        before, wheel, _ = run.rest.partition("pip wheel")
        for command in re.split(r"&&|;", before):
            words = shlex.split(command)
            if words[:1] == ["rm"]:
                dropped.update(posixpath.normpath(w) for w in words[1:] if not w.startswith("-"))
        if wheel:
            break
    assert "scheduler/devtools" in dropped, f"before `pip wheel` the builder removes {dropped}"


def runtime_checks() -> list[list[str]]:
    """The commands run after the runtime's ``pip install``, output redirections dropped."""
    install = next(r for r in final().all("RUN") if "pip install" in r.rest)
    commands: list[list[str]] = [[]]
    for word in shlex.split(install.rest):
        if word == "&&":
            commands.append([])
        else:
            commands[-1].append(word)
    return [list(takewhile(lambda w: not w.startswith(">"), c)) for c in commands[1:]]


def run_without_devtools(tmp_path: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
    # No java on PATH: should scheduler.devtools be importable after all, a broker
    # command fails its preflight instead of starting Kafka.
    env.update(PATH=str(tmp_path), SCHEDULER_DATA_DIR=str(tmp_path / "data"))
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_DEVTOOLS + code, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_image_checks_pass_without_the_development_tools(tmp_path: Path) -> None:
    checks = runtime_checks()
    assert any(c[:2] == ["python", "-c"] for c in checks), checks
    assert any(c[:1] == ["scheduler"] for c in checks), checks
    for words in checks:
        if words[:1] == ["scheduler"]:
            result = run_without_devtools(tmp_path, SCHEDULER, *words[1:])
        else:
            assert words[:2] == ["python", "-c"], f"an unexpected check: {shlex.join(words)}"
            result = run_without_devtools(tmp_path, words[2], *words[3:])
        assert result.returncode == 0, f"{shlex.join(words)}:\n{result.stderr}"


@pytest.mark.parametrize("command", ["broker", "dev"])
def test_the_local_broker_commands_say_the_image_leaves_them_out(
    tmp_path: Path, command: str
) -> None:
    result = run_without_devtools(tmp_path, SCHEDULER, command)
    assert result.returncode == EXIT_BAD_INPUT, result.stderr
    assert result.stderr.startswith(
        "scheduler: the local Kafka broker (`scheduler dev`, `scheduler broker`) is a "
        "development tool, not part of this installation"
    ), result.stderr
    assert "Traceback" not in result.stderr


def test_runtime_runs_as_a_non_root_user() -> None:
    users = final().all("USER")
    assert users, "the runtime stage has no USER: it would run as root"
    user = users[-1].rest.split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1].rest}"
    if user.isdigit():
        runs = " ".join(r.rest for r in final().all("RUN"))
        assert f"--uid {user}" in runs, f"USER {user}, but no RUN creates uid {user}"


def test_runtime_environment() -> None:
    env = final().env()
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"
    ours = {name: value for name, value in env.items() if name.startswith("SCHEDULER_")}
    unknown = [name for name in ours if settings_field(name) not in Settings.model_fields]
    assert not unknown, f"not Settings fields: {unknown}"
    Settings.model_validate({settings_field(name): value for name, value in ours.items()})
    # Binding 127.0.0.1 inside a container makes a published port reach nothing.
    assert ours.get("SCHEDULER_WEB_HOST") == "0.0.0.0"


def test_data_dir_is_a_volume_the_user_owns() -> None:
    data_dir = final().env().get("SCHEDULER_DATA_DIR")
    assert data_dir and data_dir.startswith("/"), "SCHEDULER_DATA_DIR must be absolute"
    volumes = [v for i in final().all("VOLUME") for v in (i.exec_form() or i.rest.split())]
    assert data_dir in volumes, f"{data_dir} is not a VOLUME ({volumes})"
    # Changes after VOLUME are discarded: the chown must come before it.
    volume_line = next(i.line for i in final().all("VOLUME"))
    prepared = [
        r
        for r in final().all("RUN")
        if r.line < volume_line and data_dir in r.rest and "chown" in r.rest
    ]
    assert prepared, f"no RUN before VOLUME creates and chowns {data_dir}"


def test_exposes_the_default_web_port() -> None:
    exposed = {p.split("/")[0] for i in final().all("EXPOSE") for p in i.rest.split()}
    assert str(default_web_port()) in exposed, exposed
    port = final().env().get("SCHEDULER_WEB_PORT")
    assert port in (None, str(default_web_port()))


def test_entrypoint_is_the_scheduler_command_and_cmd_a_subcommand() -> None:
    entrypoints = final().all("ENTRYPOINT")
    assert entrypoints, "no ENTRYPOINT"
    entrypoint = entrypoints[-1].exec_form()
    assert entrypoint, "ENTRYPOINT must be exec form (a JSON array): signals reach the worker"
    assert entrypoint[0] == "scheduler"
    assert "scheduler" in pyproject()["project"]["scripts"]
    cmds = final().all("CMD")
    assert cmds, "no CMD"
    cmd = cmds[-1].exec_form()
    assert cmd, "CMD must be exec form (a JSON array)"
    assert cmd[0] in cli_subcommands(), f"scheduler has no subcommand {cmd[0]!r}"


def healthcheck_argv() -> list[str]:
    checks = final().all("HEALTHCHECK")
    assert len(checks) == 1, "the runtime stage needs exactly one HEALTHCHECK"
    argv = checks[0].exec_form()
    assert argv, "HEALTHCHECK must be `CMD [...]` in exec form"
    return argv


def test_healthcheck_calls_the_health_endpoint_with_python() -> None:
    argv = healthcheck_argv()
    assert argv[:2] == ["python", "-c"], "slim images have no curl: use python's urllib"
    code = argv[2]
    compile(code, "<HEALTHCHECK>", "exec")
    assert "urllib" in code
    assert "/health" in code
    assert "127.0.0.1" in code


@pytest.fixture
def health_server() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 200 if self.path == "/health" else 404
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"status": "ok", "ready": false}')

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _run_healthcheck(port: int) -> int:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["SCHEDULER_WEB_PORT"] = str(port)
    argv = healthcheck_argv()
    result = subprocess.run(
        [sys.executable, *argv[1:]], env=env, capture_output=True, timeout=30, check=False
    )
    return result.returncode


def test_healthcheck_passes_on_a_live_health_endpoint(health_server: int) -> None:
    assert _run_healthcheck(health_server) == 0


def test_healthcheck_fails_when_nothing_listens() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert _run_healthcheck(port) != 0


# -- .dockerignore ----------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        ".git/config",
        ".venv/bin/python",
        "scheduler-data/scheduler-data/v1/tables/x.db",
        "scheduler/__pycache__/cli.cpython-311.pyc",
        ".pytest_cache/v/cache/nodeids",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/CACHEDIR.TAG",
        ".hypothesis/examples/x",
        "kafka_scheduler.egg-info/PKG-INFO",
        "tests/unit/test_cron.py",
        "bench/results.json",
        ".env",
        "deploy/k8s/secrets/web-tokens",
    ],
)
def test_dockerignore_keeps_local_state_out(path: str) -> None:
    assert dockerignore().excluded(path), f"{path} would be sent to the Docker daemon"


# -- compose.yaml -----------------------------------------------------------


def test_compose_services_and_images() -> None:
    services = compose().get("services")
    assert isinstance(services, dict)
    assert {"kafka", "redis", "worker"} <= set(services)
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, f"{name}: neither image nor build"
        if "image" in svc and "build" not in svc:
            _, tag, digest = split_image(svc["image"])
            assert (tag or digest) and tag != "latest", f"{name}: image {svc['image']} not pinned"


def test_kafka_is_the_version_the_local_broker_runs() -> None:
    assert service("kafka")["image"] == f"apache/kafka:{KAFKA_VERSION}"


def test_depends_on_names_services_with_healthchecks() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        depends = svc.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {target: {} for target in depends}
        for target, options in depends.items():
            assert target in services, f"{name} depends on unknown service {target!r}"
            condition = (options or {}).get("condition", "service_started")
            assert condition in (
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            ), condition
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
    worker = service("worker")["depends_on"]
    assert worker["kafka"]["condition"] == "service_healthy"


def _mounts(svc: dict[str, Any]) -> list[tuple[str | None, str, str]]:
    """(source, target, type) of each volume entry, short or long syntax."""
    out = []
    for entry in svc.get("volumes") or []:
        if isinstance(entry, dict):
            out.append((entry.get("source"), entry["target"], entry.get("type", "volume")))
            continue
        parts = str(entry).split(":")
        if len(parts) == 1:
            out.append((None, parts[0], "volume"))
        else:
            source = parts[0]
            kind = "bind" if source.startswith(("/", ".", "~", "$")) else "volume"
            out.append((source, parts[1], kind))
    return out


def test_named_volumes_are_declared_and_used() -> None:
    declared = set(compose().get("volumes") or {})
    used = set()
    for name, svc in compose()["services"].items():
        for source, _, kind in _mounts(svc):
            if kind == "volume" and source:
                assert source in declared, f"{name}: volume {source!r} is not declared"
                used.add(source)
    assert declared == used, f"declared but unused: {declared - used}"


@pytest.mark.parametrize("name", ["kafka", "redis"])
def test_healthchecks_exist(name: str) -> None:
    check = service(name).get("healthcheck")
    assert check and not check.get("disable"), f"{name} has no healthcheck"
    test = check["test"]
    if isinstance(test, list):
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, test
    else:
        assert str(test).strip(), test


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` into {NAME: (host, port)}."""
    out = {}
    for item in value.split(","):
        name, _, address = item.strip().partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def test_kafka_kraft_single_node_config() -> None:
    kafka = service("kafka")
    env = environment(kafka)
    roles = set(env["KAFKA_PROCESS_ROLES"].split(","))
    assert roles == {"broker", "controller"}
    listeners = _listeners(env["KAFKA_LISTENERS"])
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    controllers = env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(",")
    assert set(listeners) <= set(protocols), "a listener has no security protocol"
    assert set(advertised) <= set(listeners), "an advertised listener is not a listener"
    for name in controllers:
        assert name in listeners and name not in advertised
    assert env.get("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT") in advertised
    node, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert node == str(env["KAFKA_NODE_ID"])
    voter_host, _, voter_port = voter.rpartition(":")
    assert voter_host in ("kafka", kafka.get("hostname")), voter_host
    assert int(voter_port) in {listeners[name][1] for name in controllers}
    # One broker: a replication factor above 1 leaves internal topics uncreatable.
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    for key, value in env.items():
        if key.endswith(("_REPLICATION_FACTOR", "_MIN_ISR", "MIN_INSYNC_REPLICAS")):
            assert value == "1", f"{key}={value} on a single broker"
    assert env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    if "CLUSTER_ID" in env:
        raw = base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")
        assert len(raw) == 16 and not env["CLUSTER_ID"].startswith("-"), "not a Kafka Uuid"
    # The log directory is on the named volume, or data dies with the container.
    targets = {target for _, target, _ in _mounts(kafka)}
    assert env["KAFKA_LOG_DIRS"] in targets


def test_worker_environment_names_are_settings_fields() -> None:
    env = environment(service("worker"))
    assert env
    for name in env:
        assert name.startswith("SCHEDULER_"), name
        assert settings_field(name) in Settings.model_fields, f"{name} is not a Settings field"
    Settings.model_validate({settings_field(name): value for name, value in env.items()})


def test_worker_broker_is_an_advertised_kafka_listener() -> None:
    env = environment(service("worker"))
    bootstrap = Settings(broker=env["SCHEDULER_BROKER"]).bootstrap_servers.split(",")
    kafka = service("kafka")
    kafka_env = environment(kafka)
    advertised = _listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    listeners = _listeners(kafka_env["KAFKA_LISTENERS"])
    protocols = dict(
        item.split(":") for item in kafka_env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    for server in bootstrap:
        host, _, port = server.rpartition(":")
        assert host in ("kafka", kafka.get("hostname")), f"{host} is not the kafka service"
        names = [name for name, address in advertised.items() if address == (host, int(port))]
        assert names, f"{server} is not among the advertised listeners {advertised}"
        for name in names:
            assert listeners[name][1] == int(port), f"{name} listens on {listeners[name]}"
            assert protocols[name] == "PLAINTEXT", "the worker speaks PLAINTEXT"
    healthcheck = " ".join(map(str, kafka["healthcheck"]["test"]))
    check_port = re.search(r"--bootstrap-server\s+\S+:(\d+)", healthcheck)
    assert check_port and int(check_port.group(1)) in {p for _, p in listeners.values()}


def _container_ports(svc: dict[str, Any]) -> set[int]:
    out = set()
    for entry in svc.get("ports") or []:
        if isinstance(entry, dict):
            out.add(int(entry["target"]))
        else:
            out.add(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return out


def _published(svc: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(host address, host port, container port) of each published port."""
    out = []
    for entry in svc.get("ports") or []:
        if isinstance(entry, dict):
            host = (str(entry.get("host_ip", "")), str(entry.get("published", "")))
            out.append((*host, int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        parts = [""] * (3 - len(parts)) + parts
        out.append((parts[0], parts[1], int(parts[2])))
    return out


def compose_unescape(value: str) -> str:
    """What the container gets of a Compose string with no variables: ``$$`` is ``$``."""
    assert "$" not in value.replace("$$", ""), f"{value!r} interpolates a variable of the host"
    return value.replace("$$", "$")


def worker_web_port() -> int:
    env = environment(service("worker"))
    return int(env.get("SCHEDULER_WEB_PORT", final().env().get("SCHEDULER_WEB_PORT", "6066")))


@cache
def compose_schema_errors() -> list[str]:
    return schema_errors(compose())


def schema_errors(document: dict[str, Any]) -> list[str]:
    """Where ``document`` breaks the Compose specification (the schema check-jsonschema ships)."""
    schema = get_builtin_schema("vendor.compose-spec")
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_compose_file_follows_the_compose_specification() -> None:
    assert compose_schema_errors() == []


def test_the_compose_schema_check_catches_mistakes() -> None:
    """The check above could fail: a misspelt key and a wrong type are both refused."""
    broken = json.loads(json.dumps(compose()))
    broken["services"]["worker"]["stop_grace_periods"] = "10s"
    broken["services"]["web"]["ports"] = "127.0.0.1:6066:6066"
    errors = schema_errors(broken)
    assert any("stop_grace_periods" in error for error in errors), errors
    assert any(error.startswith("services/web/ports") for error in errors), errors


def test_workers_publish_no_host_port() -> None:
    """One host port can be bound by one replica: `--scale worker=3` would fail on it."""
    worker = service("worker")
    assert not worker.get("ports"), f"worker publishes {worker['ports']}"
    exposed = {p.split("/")[0] for i in final().all("EXPOSE") for p in i.rest.split()}
    assert str(worker_web_port()) in exposed


def test_workers_have_no_fixed_identity() -> None:
    """Nothing in the service gives two replicas the same name, address or member id."""
    worker = service("worker")
    for key in ("container_name", "hostname", "mac_address"):
        assert key not in worker, f"every replica would get {key}={worker[key]!r}"
    env = environment(worker)
    assert "SCHEDULER_INSTANCE_ID" not in env, "every replica would share one member id"
    assert "SCHEDULER_WEB_HOST" not in env, "the entrypoint sets it per container"
    assert "SCHEDULER_WEB_HOST" not in final().env() or (
        final().env()["SCHEDULER_WEB_HOST"] == "0.0.0.0"
    )
    deploy = worker.get("deploy") or {}
    assert deploy.get("mode", "replicated") == "replicated"


def test_the_member_id_of_a_replica_is_its_hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    """With SCHEDULER_INSTANCE_ID unset, each container's id is its own hostname."""
    monkeypatch.setattr(socket, "gethostname", lambda: "3f2a9c1d0b7e")
    settings = Settings(web_port=worker_web_port())
    assert settings.group_instance_id == f"3f2a9c1d0b7e-{worker_web_port()}"


def _entrypoint_run(tmp_path: Path, hostname: str) -> tuple[str, list[str]]:
    """Run the worker's Compose entrypoint with stand-ins for ``hostname`` and ``scheduler``.

    Returns the SCHEDULER_WEB_HOST the ``scheduler`` command saw and its arguments.
    """
    worker = service("worker")
    entrypoint = worker["entrypoint"]
    argv = [compose_unescape(str(word)) for word in entrypoint]
    command = worker["command"]
    argv += command if isinstance(command, list) else shlex.split(command)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "hostname").write_text(f"#!/bin/sh\necho {hostname}\n")
    (bin_dir / "scheduler").write_text(
        "#!/bin/sh\n"
        'printf "%s\\n" "$SCHEDULER_WEB_HOST" "$$"\n'
        'for arg in "$@"; do printf "%s\\n" "$arg"; done\n'
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SCHEDULER_WEB_HOST": "0.0.0.0"}
    # Prints its pid, then becomes the entrypoint: as the container runtime starts it.
    runner = "import os, sys\nprint(os.getpid(), flush=True)\nos.execvp(sys.argv[1], sys.argv[1:])"
    result = subprocess.run(
        [sys.executable, "-c", runner, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    pid, web_host, scheduler_pid, *args = result.stdout.splitlines()
    # `exec`: the worker is the container's main process and gets its SIGTERM.
    assert scheduler_pid == pid, "the entrypoint must exec scheduler, not run it as a child"
    return web_host, args


def test_the_entrypoint_binds_and_advertises_the_container_hostname(tmp_path: Path) -> None:
    worker = service("worker")
    assert worker["entrypoint"][0] in ("sh", "/bin/sh"), "the image has no bash"
    web_host, args = _entrypoint_run(tmp_path, "3f2a9c1d0b7e")
    assert web_host == "3f2a9c1d0b7e"
    assert args == ["worker"], args
    assert args[0] in cli_subcommands()
    settings = Settings(web_host=web_host, web_port=worker_web_port())
    assert settings.web_url == f"http://3f2a9c1d0b7e:{worker_web_port()}"


def test_worker_is_built_from_the_dockerfile() -> None:
    worker = service("worker")
    build = worker["build"]
    context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
    dockerfile_name = (
        "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    )
    assert (context / dockerfile_name).resolve() == DOCKERFILE


def test_each_worker_has_its_own_cache_volume() -> None:
    """An anonymous volume at the data dir: one per replica, never shared (RocksDB locks it)."""
    worker = service("worker")
    data_dir = environment(worker).get("SCHEDULER_DATA_DIR", final().env()["SCHEDULER_DATA_DIR"])
    mounts = {target: (source, kind) for source, target, kind in _mounts(worker)}
    assert data_dir in mounts, f"{data_dir} is not mounted: {mounts}"
    source, kind = mounts[data_dir]
    assert kind == "volume" and source is None, f"{data_dir} is {kind} {source!r}: shared"


def _duration_seconds(text: str) -> float:
    """A Compose duration (``1m30s``, ``10s``, ``500ms``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def test_stop_grace_period_fits_within_the_session_timeout() -> None:
    """Long enough for Faust's shutdown, no longer than the group waits for a silent member."""
    worker = service("worker")
    grace = _duration_seconds(str(worker["stop_grace_period"]))
    timeout = float(
        environment(worker).get(
            "SCHEDULER_SESSION_TIMEOUT", Settings.model_fields["session_timeout"].default
        )
    )
    assert 5 <= grace <= timeout, (grace, timeout)


def test_the_proxy_publishes_the_web_view_on_loopback() -> None:
    web = service("web")
    name, tag, digest = split_image(web["image"])
    assert name == "caddy" and (tag or digest)
    published = _published(web)
    assert published == [("127.0.0.1", "6066", 6066)], published
    argv = web["command"] if isinstance(web["command"], list) else shlex.split(web["command"])
    assert argv[:2] == ["caddy", "reverse-proxy"], argv
    options = dict(zip(argv[2::2], argv[3::2], strict=True))
    # A port without a host name: Caddy serves plain HTTP, no certificate.
    assert options["--from"] == f":{published[0][2]}"
    assert options["--to"] == f"worker:{worker_web_port()}"
    assert "worker" in (web.get("depends_on") or {})


def test_the_compiled_lane_is_built_in_its_own_stage_and_installed() -> None:
    """native/ is built by maturin with a Rust new enough for its Cargo.toml, on the
    Python image's Debian, from its lock file; the runtime installs and imports it."""
    native = next(s for s in stages() if s.name == "native")
    builds = [r.rest for r in native.all("RUN") if "maturin build" in r.rest]
    assert builds and "--locked" in builds[0], builds
    name, tag, _ = split_image(native.image)
    assert name.endswith("rust") and tag, native.image
    wanted = tomllib.loads((ROOT / "native" / "Cargo.toml").read_text())["package"]["rust-version"]
    have = re.match(r"(\d+)\.(\d+)", tag)
    assert have and (int(have[1]), int(have[2])) >= tuple(map(int, wanted.split("."))), (
        tag,
        wanted,
    )
    debian = split_image(final().image)[1].rsplit("-", 1)[-1]
    assert tag.endswith(debian), (native.image, final().image)
    builder = next(s for s in stages() if any("pip wheel" in r.rest for r in s.all("RUN")))
    assert any(c.flag("from") == "native" for c in builder.all("COPY"))
    install = next(r.rest for r in final().all("RUN") if "pip install" in r.rest)
    assert "/wheels/scheduler_fastlane-*.whl" in install
    assert "import faust, rocksdict, scheduler_fastlane" in install
