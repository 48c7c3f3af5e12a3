"""`skintriage triage`: ml.triage.cli with its defaults (MODEL_DIR, ALLOW_DEMO_MODELS, the policy) from Settings.

The glue lives here, on the domain side, so that ml/ never imports the domain package (the `ml-pure`
import-linter contract in pyproject.toml): ml.triage.cli takes the settings as an argument.
"""

from __future__ import annotations

import argparse
import sys

from ml.triage import cli as triage_cli
from skintriage.settings import get_settings

add_arguments = triage_cli.add_arguments


def main(args: argparse.Namespace) -> int:
    """Entry point of `skintriage triage`: read the settings, then run ml.triage.cli."""
    try:
        settings = get_settings()
    except ValueError as exc:  # pydantic's ValidationError: a setting that cannot be parsed
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return triage_cli.main(args, settings)
