"""The service packages never import the development tools (devtools/) nor their dependency aiohttp.

Walks every module of the service packages with `ast`, so an import hidden inside a function counts
too. The CLI names the devtools commands' modules as strings and imports them only when the command
runs; ALLOWED_NAMES lists those places, and nothing else may name a devtools module.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICE_PACKAGES = ("bot", "worker", "ml", "console", "skintriage", "migrations")
DEV_ONLY = {"devtools", "aiohttp"}
DEVTOOLS_MODULE = re.compile(r"devtools(\.[A-Za-z_]\w*)+")
# (module file, string naming a devtools module): the lazy, string-named imports allowed.
ALLOWED_NAMES = {
    ("skintriage/cli.py", "devtools.demo"),
    ("skintriage/cli.py", "devtools.local_api"),
}


def service_modules() -> list[Path]:
    """Every Python file of the service packages."""
    files = [p for pkg in SERVICE_PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(files) > 50, "the walk found too few modules; did the layout change?"
    return files


def imported_roots(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level package) of every import statement in the tree, nested ones included."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def test_service_packages_never_import_devtools_or_aiohttp() -> None:
    offences = []
    for path in service_modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(ROOT).as_posix()
        offences += [f"{rel}:{line} imports {root}" for line, root in imported_roots(tree) if root in DEV_ONLY]
    assert not offences, "move the code into devtools/ or out of it:\n" + "\n".join(offences)


def test_only_the_cli_names_devtools_modules_and_only_those_listed() -> None:
    named = set()
    for path in service_modules():
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and DEVTOOLS_MODULE.fullmatch(node.value):
                named.add((rel, node.value))
    assert named == ALLOWED_NAMES


@pytest.mark.parametrize("rel, name", sorted(ALLOWED_NAMES))
def test_the_allowed_devtools_modules_exist(rel: str, name: str) -> None:
    assert (ROOT / (name.replace(".", "/") + ".py")).is_file()


def test_aiohttp_is_a_dev_extra_not_a_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = [d for d in project["dependencies"] if d.split(">")[0].split("=")[0].split("[")[0].strip() == "aiohttp"]
    assert runtime == []
    assert any(d.startswith("aiohttp") for d in project["optional-dependencies"]["demo"])


# The same rooms, checked by the tools of `make lint` / `make test` (pyproject.toml: [tool.importlinter],
# [tool.deptry]); run here too so a plain `pytest` catches a new forbidden import or undeclared dependency.
TOOLS = {
    "lint-imports": ["lint-imports", "--no-cache"],
    "deptry": ["deptry", "."],
}


def _tool(name: str) -> str:
    """The tool's executable next to this interpreter (the venv's bin/) or on PATH; skip when missing, not on CI."""
    local = Path(sys.executable).with_name(name)
    found = str(local) if local.is_file() else shutil.which(name)
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{name} is not installed; CI must run it: pip install -e '.[test]'")
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return found


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_import_contracts_and_declared_dependencies_hold(name: str) -> None:
    command = [_tool(name), *TOOLS[name][1:]]
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"`{' '.join(TOOLS[name])}` failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"


# What the CPU image (docker/Dockerfile.cpu) runs: the bot, the reply sender, beat, the console, migrations.
CPU_ROLE_MODULES = (
    "skintriage.cli", "bot.run", "bot.app", "bot.handlers", "bot.delivery", "console.run", "console.app",
    "console.charts", "console.safety", "worker.run", "worker.beat", "worker.tasks", "worker.sweeper",
    "worker.retention", "worker.booking", "skintriage.migrate",
)  # fmt: skip
MODEL_STACK_MODULES = ("torch", "torchvision", "tensorflow", "keras", "cv2", "pytorch_grad_cam", "safetensors", "tqdm")
_BLOCK_AND_IMPORT = """
import importlib, importlib.abc, sys
blocked = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is not installed in the CPU image")
sys.meta_path.insert(0, Block())
for module in sys.argv[2:]:
    importlib.import_module(module)
"""


def test_the_cpu_roles_import_without_the_model_stack() -> None:
    # As in the CPU image, where the `worker`, `cpu` and `train` extras are not installed.
    command = [sys.executable, "-c", _BLOCK_AND_IMPORT, ",".join(MODEL_STACK_MODULES), *CPU_ROLE_MODULES]
    proc = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
