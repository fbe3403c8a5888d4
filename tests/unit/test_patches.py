"""The fence around our adjustments of faust-streaming, mode and aiokafka (``scheduler.patches``).

An upgrade of one of those libraries must not silently undo an adjustment.
So: every private name a module of ``scheduler/patches/`` replaces or uses
must still exist upstream (looked up in a fresh interpreter, before anything
is installed); nothing outside that package touches a library's private
names; the versions it was written for are the ones pinned and installed;
and on any other version the worker refuses to start, saying which and what
to do.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from scheduler import patches

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "scheduler"

# --- every listed name still exists upstream ------------------------------------------------

RESOLVE = r"""
import importlib, inspect, json, sys

def source_assigns(cls, attr):
    # An instance attribute: assigned as self.<attr> in the class or a base.
    for klass in getattr(cls, "__mro__", (cls,)):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        if f"self.{attr} =" in source or f"self.{attr}:" in source:
            return True
    return False

def resolve(spec):
    module_name, _, qualname = spec.partition(":")
    owner = importlib.import_module(module_name)
    *path, last = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    return hasattr(owner, last) or (isinstance(owner, type) and source_assigns(owner, last))

sys.path.insert(0, sys.argv[1])
import scheduler.patches as patches
missing, checked = [], []
for module in patches.modules():
    for spec in (*module.REPLACES, *module.USES):
        checked.append(spec)
        try:
            found = resolve(spec)
        except Exception as exc:
            found = False
        if not found:
            missing.append(f"{module.__name__}: {spec}")
print(json.dumps({"installed": patches._installed, "checked": checked, "missing": missing}))
"""


def _resolve_in_a_fresh_interpreter(probe: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-I", "-c", probe, str(REPO)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture(scope="module")
def upstream_names() -> dict[str, object]:
    """Each module's listed names, looked up in a fresh interpreter with nothing installed."""
    return _resolve_in_a_fresh_interpreter(RESOLVE)


def test_every_name_a_patch_replaces_or_uses_still_exists_upstream(
    upstream_names: dict[str, object],
) -> None:
    assert upstream_names["installed"] is False  # looked up before anything was replaced
    assert upstream_names["missing"] == []


def test_the_lookup_sees_a_name_that_is_gone() -> None:
    probe = RESOLVE.replace("for module in patches.modules():", "for module in [FAKE]:")
    probe = probe.replace(
        "import scheduler.patches as patches",
        "import scheduler.patches as patches, types\n"
        "FAKE = types.SimpleNamespace(__name__='fake', REPLACES=("
        "'faust.transport.consumer:Consumer.wait_first',"
        "'faust.transport.consumer:Consumer._no_such_thing',"
        "'aiokafka.consumer.fetcher:Fetcher._fetch_max_wait_ms'), USES=())",
    )
    result = _resolve_in_a_fresh_interpreter(probe)
    assert result["missing"] == ["fake: faust.transport.consumer:Consumer._no_such_thing"]


def test_every_patch_module_says_what_it_changes_and_lists_its_names() -> None:
    for module in patches.modules():
        assert module.__doc__, module.__name__
        assert callable(module.install), module.__name__
        assert isinstance(module.REPLACES, tuple) and isinstance(module.USES, tuple)
        if module.REPLACES:
            for word in ("Upstream", "Ours", "Why"):
                assert word in module.__doc__, f"{module.__name__} docstring lacks {word!r}"
    listed = {path.stem for path in (PACKAGE / "patches").glob("*.py")} - {"__init__"}
    assert listed == set(patches.MODULES)


def test_fausts_per_record_callback_still_has_the_name_the_inline_delivery_looks_for() -> None:
    """``inline_delivery`` recognises Faust's callback by name: if Faust renamed it, the
    adjustment would silently stop applying."""
    from faust.transport.conductor import Conductor

    from scheduler.patches.inline_delivery import ON_MESSAGE

    nested = [
        const.co_qualname
        for const in Conductor._compile_message_handler.__code__.co_consts
        if hasattr(const, "co_qualname")
    ]
    assert nested and all(name.endswith(ON_MESSAGE) for name in nested), nested


def test_installing_replaces_what_each_module_says() -> None:
    from aiokafka.client import AIOKafkaClient
    from aiokafka.producer.message_accumulator import MessageAccumulator
    from faust.tables.manager import TableManager
    from faust.tables.recovery import Recovery
    from faust.transport.conductor import Conductor
    from faust.transport.consumer import Consumer
    from faust.transport.producer import ProducerBuffer

    import scheduler.app  # noqa: F401  (installs)

    installed = {
        Consumer.wait_first: "scheduler.patches.inline_delivery",
        Consumer.on_buffer_drop: "scheduler.patches.wake_fetch",
        Consumer.verify_all_partitions_active: "scheduler.patches.livelock",
        Consumer._wait_next_records: "scheduler.patches.changelog_feed",
        Conductor._build_handler: "scheduler.patches.changelog_feed",
        TableManager.on_start: "scheduler.patches.table_manager",
        AIOKafkaClient._wait_on_metadata: "scheduler.patches.topic_metadata",
        MessageAccumulator.add_batch: "scheduler.patches.accumulator",
    }
    for function, module in installed.items():
        assert function.__module__ == module, function
    assert Recovery._slurp_changelogs.fun.__module__ == "scheduler.patches.recovery"
    from faust.transport.drivers import aiokafka as driver

    from scheduler.patches.consumer import Consumer as OurConsumer

    assert driver.aiokafka.AIOKafkaConsumer is OurConsumer  # what Faust's driver builds
    assert driver.Consumer._new_consumer_thread.__module__ == "scheduler.patches.consumer_thread"
    assert ProducerBuffer.max_messages == 100_000
    assert patches._installed


# --- nothing outside the package reaches into a library ------------------------------------


def private_reaches(source: str) -> list[str]:
    """``x._name`` where ``x`` is not ``self`` or ``cls``: a reach into someone's privates."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or name.startswith("__"):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_outside_the_patches_package_touches_a_private_name() -> None:
    reaches = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "patches") in path.parents:
            continue
        found = private_reaches(path.read_text(encoding="utf-8"))
        if found:
            reaches[str(path.relative_to(REPO))] = found
    assert reaches == {}


def test_the_fence_check_sees_a_reach() -> None:
    source = "def f(self, table):\n    self._ok = 1\n    return table.data._db_for_partition(0)\n"
    assert private_reaches(source) == ["3: table.data._db_for_partition"]


# --- versions: written for, pinned, installed, and refused otherwise -----------------------


def test_the_pins_are_the_versions_the_patches_were_written_for() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    pins = {}
    for requirement in project["project"]["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^,;\s]+)", requirement)
        if match:
            pins[match.group(1)] = match.group(2)
    for package, version in patches.WRITTEN_FOR.items():
        assert pins.get(package) == version, package


def test_the_installed_versions_are_the_ones_written_for() -> None:
    assert patches.version_problems() == []


def test_another_version_is_refused_with_what_to_do() -> None:
    installed = dict(patches.WRITTEN_FOR, aiokafka="0.14.1")
    with pytest.raises(patches.UntestedVersion) as refused:
        patches.check_versions(installed)
    message = str(refused.value)
    assert "aiokafka 0.14.1, written for 0.14.0" in message
    assert "pip install" in message and "'aiokafka==0.14.0'" in message
    assert "tests/unit/test_patches.py" in message and "WRITTEN_FOR" in message
    missing = dict(patches.WRITTEN_FOR)
    del missing["mode-streaming"]
    assert patches.version_problems(missing) == ["mode-streaming is missing, written for 0.7.1"]
    patches.check_versions(dict(patches.WRITTEN_FOR))  # the right ones pass


def _shadowing(tmp_path: Path, package: str, version: str) -> dict[str, str]:
    """An environment in which ``package`` reports ``version`` (a dist-info ahead on the path)."""
    dist = tmp_path / f"{package.replace('-', '_')}-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n", encoding="utf-8"
    )
    import os

    return {**os.environ, "PYTHONPATH": str(tmp_path)}


def test_a_worker_on_another_version_refuses_to_start_and_says_why(tmp_path: Path) -> None:
    env = _shadowing(tmp_path, "faust-streaming", "0.15.4")
    done = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "worker", "--broker", "kafka://127.0.0.1:1"],
        cwd=tmp_path,
        env={**env, "SCHEDULER_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "faust-streaming 0.15.4, written for 0.15.3" in done.stderr
    assert "refuses to start" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()  # nothing was started
