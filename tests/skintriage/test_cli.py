"""The `skintriage` command's entry point: devtools commands stay lazy and say how to install what is missing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from skintriage import cli


def test_the_service_commands_load_no_devtools() -> None:
    code = (
        "import sys; from skintriage.cli import build_parser; build_parser(['bot']); build_parser(['console']); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('devtools', 'aiohttp')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("missing", ["aiohttp", "devtools"])
def test_a_devtools_command_without_its_extra_says_how_to_install_it(monkeypatch, missing: str) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] in ("devtools", missing)]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, missing, None)  # import of it now fails like a missing package
    with pytest.raises(SystemExit, match=r"pip install -e '\.\[demo\]'"):
        cli.main(["local-bot-api", "--port", "0"])
