"""The pure domain stays pure: no Faust, Kafka, Redis, HTTP client or asyncio in it.

Every module of ``scheduler/domain/`` is checked, found by listing the
folder, so a module added there is checked too; so are a few modules outside
it that other pure code and light tools import (``SUPPORT``). Checked twice:
the source of each module must not import those names (``ast``), and
importing the module in a fresh interpreter must not load them through
anything it imports in turn.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "scheduler"

DOMAIN = PACKAGE / "domain"

#: Outside the domain folder, but just as free of I/O libraries.
SUPPORT = ("clock", "settings", "metrics", "gcpace", "patches")

PURE = (
    tuple(
        sorted(
            f"domain.{path.stem}" if path.stem != "__init__" else "domain"
            for path in DOMAIN.glob("*.py")
        )
    )
    + SUPPORT
)


def _path(name: str) -> Path:
    """The file of ``scheduler.<name>``, a module or a package."""
    base = PACKAGE.joinpath(*name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def test_the_domain_folder_is_all_listed() -> None:
    assert len(PURE) > len(SUPPORT) + 10
    assert {"domain.models", "domain.state", "domain.retry", "domain.misfire"} <= set(PURE)


FORBIDDEN = frozenset({"faust", "aiokafka", "redis", "httpx", "aiohttp", "asyncio"})

#: Third-party packages allowed to load a forbidden module on their own account.
#: pydantic-settings imports asyncio in its own ``main`` (for its async CLI
#: support); our settings module uses none of it.
THIRD_PARTY_ALLOWED = {"asyncio": frozenset({"pydantic_settings"})}


# --- direct imports, from the source -------------------------------------------------------


def imported_names(source: str, module: str) -> set[str]:
    """Top-level names of every module ``source`` imports, anywhere in the file.

    Relative imports are resolved against ``module``'s package; string
    arguments of ``importlib.import_module`` and ``__import__`` count too.
    """
    package = module.rsplit(".", 1)[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                names.add(package.split(".")[0])  # inside our own package
            elif node.module:
                names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if called in ("import_module", "__import__") and isinstance(first, ast.Constant):
                names.add(str(first.value).split(".")[0])
    return names


@pytest.mark.parametrize("name", PURE)
def test_a_domain_module_imports_no_io_library_directly(name: str) -> None:
    path = _path(name)
    found = imported_names(path.read_text(encoding="utf-8"), f"scheduler.{name}")
    assert not found & FORBIDDEN, f"{path} imports {sorted(found & FORBIDDEN)}"


def test_the_source_check_sees_every_form_of_import() -> None:
    source = """
import asyncio
import redis.asyncio as aioredis
from aiokafka.errors import KafkaError
from . import cron
import importlib

def later():
    import faust
    from httpx import AsyncClient
    return importlib.import_module("aiohttp.web"), __import__("json")

if False:
    from pydantic import BaseModel
"""
    found = imported_names(source, "scheduler.domain.misfire")
    assert found >= FORBIDDEN
    assert {"scheduler", "importlib", "json", "pydantic"} <= found


# --- everything loaded, in a fresh interpreter ---------------------------------------------

PROBE = r"""
import builtins, json, sys

repo, module, forbidden = sys.argv[1], sys.argv[2], set(sys.argv[3].split(","))
sys.path.insert(0, repo)
edges = set()
original = builtins.__import__

def recording_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and name.split(".")[0] in forbidden:
        importer = (globals or {}).get("__name__", "?")
        edges.add((importer, name.split(".")[0]))
    return original(name, globals, locals, fromlist, level)

preloaded = sorted(n for n in forbidden if n in sys.modules)
builtins.__import__ = recording_import
__import__("importlib").import_module(module)
builtins.__import__ = original
print(json.dumps({
    "file": sys.modules[module].__file__,
    "preloaded": preloaded,
    "loaded": sorted(n for n in forbidden if n in sys.modules),
    "edges": sorted(edges),
}))
"""

#: The importer seen when a C extension (``_asyncio``) imports while it loads.
MACHINERY = frozenset({"importlib._bootstrap", "importlib._bootstrap_external"})

CONTROL = "scheduler.topics"
"""A Faust module: the probe must see it load faust, or the probe is blind."""


@pytest.fixture(scope="module")
def probes() -> Iterator[dict[str, dict[str, object]]]:
    """Import every module in its own fresh interpreter, all at once."""
    modules = [f"scheduler.{name}" for name in PURE] + [CONTROL]
    running = {
        module: subprocess.Popen(
            [sys.executable, "-I", "-c", PROBE, str(REPO), module, ",".join(sorted(FORBIDDEN))],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for module in modules
    }
    results: dict[str, dict[str, object]] = {}
    for module, process in running.items():
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, f"importing {module} failed:\n{err}"
        results[module] = json.loads(out.strip().splitlines()[-1])
    yield results


def violations(result: dict[str, object]) -> list[str]:
    """Forbidden modules loaded on behalf of our code, with who asked for them."""
    edges = result["edges"]
    loaded = result["loaded"]
    assert isinstance(edges, list) and isinstance(loaded, list)
    problems = []
    explained = set()
    for importer, name in edges:
        top = importer.split(".")[0]
        if top in FORBIDDEN or importer in MACHINERY:
            continue  # a forbidden package importing its own parts, or one's C extension
        explained.add(name)
        if top not in THIRD_PARTY_ALLOWED.get(name, frozenset()):
            problems.append(f"{importer} imports {name}")
    problems += [
        f"{name} is loaded, but by no import outside it" for name in loaded if name not in explained
    ]
    return problems


@pytest.mark.parametrize("name", PURE)
def test_importing_a_domain_module_loads_no_io_library(
    name: str, probes: dict[str, dict[str, object]]
) -> None:
    result = probes[f"scheduler.{name}"]
    assert result["file"] == str(_path(name))
    assert result["preloaded"] == []
    assert violations(result) == []
    loaded = result["loaded"]
    assert isinstance(loaded, list)
    assert not set(loaded) - {"asyncio"}, f"scheduler.{name} loads {loaded}"


def test_the_import_probe_sees_a_faust_module_load_faust(
    probes: dict[str, dict[str, object]],
) -> None:
    result = probes[CONTROL]
    loaded = result["loaded"]
    assert isinstance(loaded, list)
    assert {"faust", "aiokafka", "asyncio"} <= set(loaded)
    assert "scheduler.app imports faust" in violations(result)
