"""`skintriage triage` on a bundled photo, random bytes and a missing file; the JSON checked by its schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from PIL import Image

from ml.triage.cli import SCHEMA_FILE, format_summary
from skintriage import cli
from skintriage.settings import get_settings
from tests.stack import ROOT, demo_model_dir

__all__ = ["demo_model_dir"]

PHOTO = ROOT / "devtools" / "demo_photos" / "1-mel-ISIC_0025964.jpg"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    """The shipped schema, itself checked against the JSON Schema meta-schema."""
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def triaged(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One `skintriage triage --json` run in a child process: the photo twice, random bytes, a missing file.

    A child process because loading the pipeline in a process that already imported TensorFlow
    (other ML tests do) is refused by ml.triage.pipeline.configure_runtime.
    """
    tmp = tmp_path_factory.mktemp("triage-cli")
    noise = tmp / "noise.jpg"
    noise.write_bytes(os.urandom(4096))
    out = tmp / "out"
    files = [PHOTO, PHOTO, noise, tmp / "missing.jpg"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(
        {
            "KERAS_BACKEND": "tensorflow",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONPATH": str(ROOT),
            "ALLOW_DEMO_MODELS": "false",
        }
    )
    argv = [
        "triage",
        *map(str, files),
        "--json",
        "--model-dir",
        str(demo_model_dir),
        "--allow-demo",
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--threads",
        "1",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "skintriage.cli", *argv], env=env, cwd=tmp, capture_output=True, text=True, timeout=300
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return {"proc": proc, "records": lines, "files": files, "out": out}


@pytest.mark.slow
def test_every_line_matches_the_schema_and_the_inputs(triaged, validator):
    proc, records = triaged["proc"], triaged["records"]
    assert len(records) == len(triaged["files"]), proc.stderr[-3000:]
    for record in records:
        validator.validate(record)
    assert [r["file"] for r in records] == [str(f) for f in triaged["files"]]


@pytest.mark.slow
def test_the_photo_is_triaged_with_overlay_and_mask_at_its_own_size(triaged):
    record = triaged["records"][0]
    assert record["status"] == "triaged" and record["demo_model"] is True
    assert record["tier"] in {"HIGH", "MEDIUM", "LOW", "UNCERTAIN"}, record
    assert set(record["probabilities"]) == {"MEL", "NV", "OTHER"}
    assert abs(sum(record["probabilities"].values()) - 1) < 1e-4
    assert record["model_versions"]["segmentation"].startswith("unet@")
    assert record["timings_ms"]["total"] >= record["timings_ms"]["segment"] > 0
    with Image.open(PHOTO) as photo:
        size = photo.size
    with Image.open(record["overlay_jpeg"]) as overlay:
        assert overlay.format == "JPEG" and overlay.size == size
    with Image.open(record["mask_png"]) as mask:
        assert mask.format == "PNG" and mask.size == size
        assert mask.mode == "L" and sum(1 for v in mask.getdata() if v) == record["lesion_area_px"]
    assert (record["image_width"], record["image_height"]) == size
    measurements = record["measurements"]
    assert measurements["area_px"] == record["lesion_area_px"]
    assert measurements["colour_count"] == len(measurements["colours"])
    assert Path(record["overlay_jpeg"]).parent == triaged["out"]
    assert Path(record["overlay_jpeg"]).name == f"{PHOTO.stem}.overlay.jpg"


@pytest.mark.slow
def test_a_second_input_with_the_same_name_does_not_overwrite_the_first(triaged):
    first, second = triaged["records"][:2]
    assert Path(second["overlay_jpeg"]).name == f"{PHOTO.stem}-2.overlay.jpg"
    assert Path(first["mask_png"]).is_file() and Path(second["mask_png"]).is_file()
    assert second["tier"] == first["tier"]


@pytest.mark.slow
def test_random_bytes_are_a_retake_not_a_crash(triaged):
    record = triaged["records"][2]
    assert record["status"] == "triaged"
    assert record["tier"] == "RETAKE" and record["retake_reason"] == "unreadable"
    assert record["overlay_jpeg"] is None and record["mask_png"] is None
    assert record["measurements"] is None


@pytest.mark.slow
def test_a_missing_file_is_reported_and_the_exit_status_says_so(triaged):
    proc, record = triaged["proc"], triaged["records"][3]
    assert record == {"file": str(triaged["files"][3]), "status": "error", "error": record["error"]}
    assert "does not exist" in record["error"]
    assert proc.returncode == 1
    assert "1 of 4 file(s) could not be read" in proc.stderr


def test_a_model_dir_without_cards_fails_with_how_to_get_models(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["triage", str(PHOTO), "--model-dir", str(tmp_path / "nothing"), "--allow-demo"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"no model card at {tmp_path / 'nothing'}" in err
    assert "skintriage train-segmentation" in err


@pytest.mark.slow
def test_demo_models_are_refused_unless_allowed(demo_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALLOW_DEMO_MODELS", "false")
    monkeypatch.setenv("MODEL_DIR", str(demo_model_dir))
    get_settings.cache_clear()
    try:
        code = cli.main(["triage", str(PHOTO)])  # --model-dir and --allow-demo from the settings
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert code == 2
    assert "is a demo model" in err and "ALLOW_DEMO_MODELS=true" in err


def test_human_summary_names_tier_reason_and_files():
    base = {
        "file": "a.jpg",
        "status": "triaged",
        "probabilities": {},
        "mel_threshold": 0.4,
        "quality_flags": [],
        "lesion_area_px": None,
        "overlay_jpeg": None,
        "mask_png": None,
        "timings_ms": {"decode": 2.0, "quality": 0.0, "segment": 0.0, "classify": 0.0, "overlay": 0.0, "total": 2.5},
    }
    retake = format_summary({**base, "tier": "RETAKE", "retake_reason": "blurry", "decision": "retake: blurry"})
    assert retake.splitlines()[0] == "a.jpg: RETAKE (blurry)"
    done = format_summary(
        {
            **base,
            "tier": "HIGH",
            "label": "MEL",
            "decision": "P(MEL)=0.9",
            "retake_reason": None,
            "probabilities": {"MEL": 0.9, "NV": 0.05, "OTHER": 0.05},
            "lesion_area_px": 1200,
            "lesion_diameter_px": 41.0,
            "image_width": 600,
            "image_height": 450,
            "overlay_jpeg": "o/a.overlay.jpg",
            "mask_png": "o/a.mask.png",
            "measurements": {
                "asymmetry_major_axis": 0.31,
                "asymmetry_minor_axis": 0.05,
                "compactness": 1.42,
                "convexity_ratio": 1.03,
                "colour_count": 2,
                "colours": ["light_brown", "dark_brown"],
                "diameter_share": 0.25,
            },
        }
    )
    assert "measurements: asymmetry 0.31/0.05, compactness 1.42, convexity 1.03" in done
    assert "colours 2 (light_brown, dark_brown), diameter 25% of the longer side" in done
    assert "a.jpg: HIGH (MEL)" in done and "MEL 0.900" in done and "1,200 px" in done and "o/a.overlay.jpg" in done
    assert format_summary({"file": "b.jpg", "status": "error", "error": "b.jpg does not exist"}) == (
        "b.jpg: error: b.jpg does not exist"
    )
