"""bench/load.py end to end with a tiny load (3 patients x 2 photos, embedded defaults): nothing lost or doubled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stack import ROOT

pytestmark = pytest.mark.slow


def test_load_script_delivers_every_answer_once(tmp_path: Path, models: Path) -> None:
    report_path = tmp_path / "load.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    argv = [
        sys.executable, str(ROOT / "bench" / "load.py"), "--patients", "3", "--photos", "2",
        "--model-dir", str(models), "--work-dir", str(tmp_path / "work"), "--json-out", str(report_path),
    ]  # fmt: skip

    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)

    output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"bench/load.py exited {done.returncode}:\n{output}"
    report = json.loads(report_path.read_text())
    assert report["duplicates"] == 0 and report["lost"] == 0, report
    assert report["photos_sent"] == report["photos_accepted"] == report["answers_delivered"] == 6
    assert report["ack_latency_s"]["n"] == report["answer_latency_s"]["n"] == 6
    assert 0 < report["ack_latency_s"]["p50"] <= report["answer_latency_s"]["p50"]
    assert report["worker_throughput_cases_per_s"] > 0
    assert "photo-to-answer latency" in done.stdout and "lost (must be 0)" in done.stdout
