"""The `skintriage` command: one entry point, subcommands implemented in their own modules.

Each module named below exposes `add_arguments(parser)` and `main(args) -> int` and is imported
only when its subcommand runs, so `skintriage bot` never imports torch or TensorFlow. The `demo` and
`local-bot-api` commands live in `devtools/`, which the service packages never import (tests/test_layers.py)
and the service images leave out; they need the `demo` extra.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

# What `demo` and `local-bot-api` say where devtools or its extra is missing (the service images leave both out).
DEVTOOLS_HINT = "this command is a development tool: from a source checkout run `pip install -e '.[demo]'`"

# (command path, module, help). A path with a space is a subcommand of a group.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("bot", "bot.run", "run the Telegram bot (long polling)"),
    ("worker", "worker.run", "run a Celery worker (triage and/or reply queues)"),
    ("beat", "worker.beat", "run the periodic jobs (sweeper, retention)"),
    ("demo", "devtools.demo", "run the whole service on embedded defaults with a simulated patient"),
    ("local-bot-api", "devtools.local_api", "serve the local Telegram Bot API stand-in"),
    ("console", "console.run", "serve the operator console"),
    ("operator add", "console.operators", "create an operator (password prompted)"),
    ("db upgrade", "skintriage.dbcli", "apply migrations up to head"),
    ("db downgrade", "skintriage.dbcli", "revert migrations"),
    ("db current", "skintriage.dbcli", "show the database's revision"),
    ("sweep", "worker.sweeper", "re-enqueue stuck cases once and exit"),
    ("purge-images", "worker.retention", "delete images past the retention period once and exit"),
    ("triage", "skintriage.triage_command", "run the triage pipeline on image files"),
    ("data check", "ml.data.check", "check a HAM10000 folder and report every problem"),
    ("train-segmentation", "ml.segmentation.train", "train the U-Net"),
    ("evaluate-segmentation", "ml.segmentation.evaluate", "evaluate the U-Net and the Otsu baseline"),
    ("train-classifier", "ml.classification.train", "train the ResNet50 classifier"),
    ("evaluate-classifier", "ml.classification.evaluate", "evaluate the classifier"),
    ("train-modality", "ml.triage.train_modality", "fit the dermoscopic / clinical / not-skin photo check"),
    ("ship-models", "ml.ship_models", "copy trained models into the repository's models/ in compact form"),
)


def build_parser(load_arguments: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Build the parser; only the chosen command's module is imported to add its arguments."""
    parser = argparse.ArgumentParser(prog="skintriage", description="Skin lesion triage service")
    subs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    chosen = " ".join(load_arguments or [])
    for path, module, help_text in COMMANDS:
        parts = path.split(" ")
        if len(parts) == 2:
            group, name = parts
            if group not in groups:
                gp = subs.add_parser(group, help=f"{group} commands")
                groups[group] = gp.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
            sub = groups[group].add_parser(name, help=help_text)
        else:
            sub = subs.add_parser(path, help=help_text)
        sub.set_defaults(_module=module, _path=path)
        if chosen == path:
            _load(module).add_arguments(sub)
    return parser


def _load(module: str) -> ModuleType:
    """Import a command's module; a missing development tool exits with how to install it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if module.startswith("devtools.") and (exc.name or "").split(".")[0] in {"devtools", "aiohttp"}:
            raise SystemExit(f"skintriage: {exc}; {DEVTOOLS_HINT}") from exc
        raise


def _command_path(argv: Sequence[str]) -> list[str]:
    paths = {p for p, _, _ in COMMANDS}
    words = [a for a in argv if not a.startswith("-")][:2]
    if len(words) == 2 and " ".join(words) in paths:
        return words
    if words and words[0] in paths:
        return words[:1]
    return []


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen subcommand."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_path(argv))
    args = parser.parse_args(argv)
    module = _load(args._module)
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
