"""ml.frameworks: torch loads before TensorFlow, or the process is told why it cannot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.slow
def test_torch_first_then_tensorflow_then_a_torchvision_op_runs():
    done = _run(
        "from ml.frameworks import load_torch_first; load_torch_first(); import tensorflow, torch, torchvision; "
        "b = torch.tensor([[0., 0., 1., 1.]]); print(torchvision.ops.nms(b, torch.ones(1), 0.5).tolist())"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[0]"


@pytest.mark.slow
def test_tensorflow_first_is_refused_with_how_to_fix_instead_of_crashing():
    done = _run(
        "import tensorflow\n"
        "from ml.errors import ModelUnavailableError\nfrom ml.frameworks import load_torch_first\n"
        "try:\n    load_torch_first()\nexcept ModelUnavailableError as exc:\n    print(exc)\n"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "load_torch_first() before importing keras/tensorflow" in done.stdout
