"""The whole service as separate processes: patient -> local Bot API server -> `skintriage bot` -> case row ->
Celery job -> `skintriage worker` -> answer back at the server. On the embedded defaults and on PostgreSQL + Redis.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageFilter

from bot.i18n import load_texts
from devtools.local_api import buttons
from skintriage import cases
from skintriage.db import session_factory
from skintriage.models import CaseStatus
from skintriage.settings import Settings
from skintriage.storage import make_store
from tests.factories import lesion_photo
from tests.stack import (
    PATIENT_ID,
    ROOT,
    backend,
    bot_process,
    demo_model_dir,
    healthz,
    local_api,
    stack_environment,
    worker_process,
)

__all__ = ["backend", "demo_model_dir", "local_api"]

pytestmark = pytest.mark.slow

CONSENT = "consent:yes"


def unusable_photo() -> bytes:
    """Dark and blurred: the quality gate must ask for a retake."""
    img = Image.open(io.BytesIO(lesion_photo(seed=5))).filter(ImageFilter.GaussianBlur(8)).point(lambda v: v // 10)
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def consent(client, user_id: int) -> None:
    """/start and the consent button, as a patient does."""
    client.send_command(user_id, "/start")
    intro = client.wait_for(user_id, lambda e: any(d == CONSENT for _, d in buttons(e)), timeout=30)
    client.press_button(user_id, intro["message_id"], CONSENT)
    client.wait_for(
        user_id, lambda e: e["method"] in {"sendMessage", "editMessageText"}, since=intro["seq"], timeout=30
    )


def test_photo_to_answer_through_the_real_bot_and_worker_processes(backend, tmp_path, demo_model_dir, local_api):
    name, database_url, broker_url = backend
    env = stack_environment(
        tmp_path, database_url=database_url, broker_url=broker_url, model_dir=demo_model_dir, api=local_api
    )
    client = local_api.client()
    logs = tmp_path / "logs"
    good = lesion_photo(seed=11)

    with worker_process(env, log_dir=logs) as worker, bot_process(env, client, log_dir=logs):
        report = healthz(worker.health_port)
        assert report["ok"] and report["database"] == "ok" and report["broker"] == "ok"
        assert report["models"] == "loaded"

        consent(client, PATIENT_ID)
        before = client.last_seq()
        client.send_photo(PATIENT_ID, good)
        answer = client.wait_for(PATIENT_ID, lambda e: e["method"] == "sendPhoto", since=before, timeout=180)
        after_answer = client.last_seq()

        client.send_photo(PATIENT_ID, unusable_photo())
        # The retake answer's title from the catalogue, after its case number ("...: I can't judge this photo.").
        title = load_texts(None).get("en", "result.retake_title", case_id="#")
        retake_title = re.sub(r"<[^>]+>", "", title).split("#")[-1]
        client.wait_for(
            PATIENT_ID,
            lambda e: e["method"] == "sendMessage" and retake_title in (e.get("text") or ""),
            since=after_answer,
            timeout=180,
        )
        said = client.messages(PATIENT_ID, since=before)

    # What the patient saw: an acknowledgement, then the outline photo with the answer in its caption.
    assert said[0]["method"] == "sendMessage" and said[0]["seq"] < answer["seq"]
    photo = Image.open(io.BytesIO(client.file_bytes(answer["photo"])))
    assert photo.size == Image.open(io.BytesIO(good)).size
    assert answer["caption"]

    # What the service stored about it.
    settings = Settings(DATABASE_URL=database_url, DATA_DIR=tmp_path / "data")
    with session_factory(database_url)() as session:
        user = cases.get_user(session=session, telegram_user_id=PATIENT_ID)
        first, second = sorted(cases.history(session=session, user=user), key=lambda c: c.id)
    assert first.status == CaseStatus.DONE and first.tier in {"HIGH", "MEDIUM", "LOW", "UNCERTAIN"}
    assert first.attempts == 1 and first.demo_model and first.error_code is None
    assert first.reply_message_id == answer["message_id"] and first.ack_message_id == said[0]["message_id"]
    assert answer["caption"].splitlines()[0] in first.reply_text
    assert set(first.model_versions) == {"segmentation", "classifier"}
    store = make_store(settings)
    assert store.get(first.image_key) and store.exists(first.overlay_key) and store.exists(first.mask_key)
    assert second.status == CaseStatus.REJECTED and second.tier == "RETAKE" and second.retake_reason
    assert second.delivered_at is not None and second.reply_message_id is not None


DEMO_PHOTOS = sorted((ROOT / "devtools" / "demo_photos").glob("*.jpg"))


def _run_demo(tmp_path: Path, model_dir: Path | None) -> tuple[str, Path]:
    """`skintriage demo` in a child process on embedded defaults; MODEL_DIR None: the shipped models."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update({"DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT)})
    for key in (
        "DATABASE_URL",
        "CELERY_BROKER_URL",
        "TELEGRAM_BOT_TOKEN",
        "SKINTRIAGE_ENV",
        "ALLOW_DEMO_MODELS",
        "MODEL_DIR",
    ):
        env.pop(key, None)
    if model_dir is not None:
        env["MODEL_DIR"] = str(model_dir)
    out = tmp_path / "demo-output"
    done = subprocess.run(
        [sys.executable, "-m", "skintriage.cli", "demo", "--output", str(out)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout, out


@pytest.mark.skipif((ROOT / "models" / "classifier.json").is_file(), reason="the shipped-models demo below runs it")
def test_demo_command_runs_the_simulated_patient_and_writes_the_answers(tmp_path, demo_model_dir):
    """The demo on throw-away demo models, as on a checkout without `models/`."""
    printed, out = _run_demo(tmp_path, demo_model_dir)
    _assert_the_demo_conversation(printed, out, tmp_path)


def _assert_the_demo_conversation(printed: str, out: Path, tmp_path: Path) -> None:
    """What every demo run shows: the conversation, a refused photo, the answers as photos, the database."""
    assert "patient > /start" in printed
    assert printed.count("patient > [photo ") == len(DEMO_PHOTOS)
    assert "rejected" in printed and "RETAKE" in printed
    transcript = (out / "transcript.txt").read_text()
    assert "patient > /history" in transcript
    answers = sorted(out.glob("*-answer-message-*.jpg"))
    assert len(answers) >= 4
    for path in answers:
        Image.open(path).verify()
    assert Path(tmp_path / "data" / "skintriage.sqlite").is_file()


@pytest.mark.skipif(not (ROOT / "models" / "classifier.json").is_file(), reason="no shipped models in models/")
def test_demo_serves_the_shipped_models_without_training(tmp_path):
    """A fresh clone's `make demo`: the shipped real models, no demo-model training, the kind of photo named."""
    printed, out = _run_demo(tmp_path, None)
    _assert_the_demo_conversation(printed, out, tmp_path)  # one demo run for both (CI time)
    assert "serving the trained models" in printed and "training small demo models" not in printed
    transcript = (out / "transcript.txt").read_text()
    assert "DEMO MODEL" not in transcript
    assert transcript.count("Research model:") >= 4
    assert "Judged as: an ordinary photo" in transcript and "Judged as: a dermoscopy image" in transcript
