"""`python -m devtools.transcript`: record the patient's conversation from the real bot, for docs/conversation.md.

The real bot (bot.app, python-telegram-bot) polls the project's local Bot API server (devtools.local_api) in
this process, on a fresh SQLite database and image folder. A simulated patient talks to it, in English and
then in Korean; where a deployment's worker and beat would act, the script runs the worker's real tasks here
(`triage_case` with the demo models, `deliver_case`, `send_outbox`, `send_reminders`), so every message below
is what the bot and the worker really sent. Prints the exchange as the markdown of the doc; `--write PATH`
replaces the text between `<!-- transcript:en -->` / `<!-- transcript:ko -->` and their closing
`<!-- /transcript:... -->` markers in PATH.

    PYTHONPATH=. python -m devtools.transcript --models DIR --write docs/conversation.md

`--models` takes a folder of demo models (devtools.demo_models); without it, quick ones are trained first
(a few minutes on a CPU).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

PHOTOS = Path(__file__).parent / "demo_photos"
SETTLE_S = 1.5
TIMEOUT_S = 60.0


class Recorder:
    """The simulated patient: sends updates, waits for the bot to settle, and writes both sides as markdown."""

    def __init__(self, client: Any, user_id: int, lang: str) -> None:
        self.client = client
        self.user_id = user_id
        self.lang = lang
        self.seen = client.last_seq()
        self.lines: list[str] = []

    # --- the patient's side -------------------------------------------------------------------

    def patient(self, shown: str) -> None:
        self.lines += [f"**patient**: {shown}", ""]

    def note(self, text: str) -> None:
        self.lines += [f"*({text})*", ""]

    def text(self, words: str) -> None:
        self.patient(words)
        self.client.send_text(self.user_id, words, language_code=self.lang)
        self.settle()

    def photo(self, shown: str, data: bytes, **kwargs: Any) -> None:
        self.patient(f"*[{shown}]*")
        self.client.send_photo(self.user_id, data, language_code=self.lang, **kwargs)
        self.settle()

    def document(self, shown: str, data: bytes, filename: str, mime_type: str) -> None:
        self.patient(f"*[{shown}]*")
        self.client.send_document(self.user_id, data, filename, mime_type, language_code=self.lang)
        self.settle()

    def sticker(self) -> None:
        self.patient("*[sticker]*")
        self.client.send_sticker(self.user_id, language_code=self.lang)
        self.settle()

    def press(self, message: dict[str, Any], data: str) -> None:
        """Press the button with callback data `data` under a bot message."""
        label = next(text for text, d in _buttons(message) if d == data)
        pressed = f"*(presses* `[ {label} ]`*)*" if self.lang == "en" else f"*(*`[ {label} ]` *누름)*"
        self.patient(pressed)
        self.client.press_button(self.user_id, message["message_id"], data, language_code=self.lang)
        self.settle()

    # --- the bot's side -----------------------------------------------------------------------

    def settle(self, quiet_s: float = SETTLE_S) -> list[dict[str, Any]]:
        """Record what the bot does until it has been quiet for `quiet_s`; returns those events."""
        events: list[dict[str, Any]] = []
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            fresh = self.client.sent(self.user_id, since=self.seen)
            for event in fresh:
                self.seen = max(self.seen, event["seq"])
                self._record(event)
                events.append(event)
                last = time.monotonic()
            time.sleep(0.1)
        return events

    def last_with(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The latest bot event of this chat matching `predicate`."""
        matching = [e for e in self.client.sent(self.user_id) if predicate(e)]
        if not matching:
            raise LookupError("the bot sent no such message; the conversation went differently than scripted")
        return matching[-1]

    def _record(self, event: dict[str, Any]) -> None:
        method = event["method"]
        if method == "sendChatAction":
            self.lines += ["*(bot is typing…)*", ""]
        elif method in {"sendMessage", "sendPhoto", "editMessageText"}:
            head = {"sendMessage": "**bot**:", "sendPhoto": "**bot** *(sends the photo back, the spot outlined)*:",
                    "editMessageText": "**bot** (edits its message):"}[method]  # fmt: skip
            body = event.get("text") or event.get("caption") or ""
            quoted = [f"> {line}" if line else ">" for line in body.split("\n")]
            self.lines += [head, "", *quoted, ""]
            rows = (event.get("reply_markup") or {}).get("inline_keyboard") or []
            if rows:
                shown = " / ".join(" ".join(f"`[ {b['text']} ]`" for b in row) for row in rows)
                self.lines += [f"  {shown}", ""]
        elif method == "answerCallbackQuery" and event.get("text"):
            self.lines += [f"**bot** (a short notice): {event['text']}", ""]

    def markdown(self) -> str:
        """The recorded exchange, as the doc shows it."""
        return "\n".join(self.lines).rstrip() + "\n"


def _buttons(event: dict[str, Any]) -> list[tuple[str, str | None]]:
    from devtools.local_api import buttons

    return buttons(event)


def _has_button(prefix: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: any(d and d.startswith(prefix) for _, d in _buttons(e))


class Service:
    """The worker's side, run here as the reply queue and beat would."""

    def __init__(self, settings: Any, recorders: dict[int, Recorder]) -> None:
        import worker.celery_app  # noqa: F401 - registers the tasks' app

        self.settings = settings
        self.recorders = recorders

    def _sessions(self) -> Any:
        from skintriage.db import session_factory

        return session_factory(self.settings.resolved_database_url)

    def answer(self, recorder: Recorder, note: str) -> None:
        """Analyse every open case of the chat and send their answers, then the outbox messages they queued."""
        from sqlalchemy import select

        from skintriage.models import Case, CaseStatus, User
        from worker.tasks import deliver_case, triage_case

        recorder.note(note)
        with self._sessions().begin() as session:
            ids = list(
                session.scalars(
                    select(Case.id)
                    .join(User)
                    .where(User.telegram_user_id == recorder.user_id, Case.status != CaseStatus.DONE,
                           Case.delivered_at.is_(None))
                    .order_by(Case.id)
                )
            )  # fmt: skip
        for case_id in ids:
            triage_case.apply(args=[case_id])
        for case_id in ids:
            deliver_case.apply(args=[case_id])
        recorder.settle()
        self.outbox(recorder)

    def outbox(self, recorder: Recorder) -> None:
        """Send the chat's queued outbox messages (the reminder's offer, follow-ups), as the reply queue would."""
        from sqlalchemy import select

        from skintriage.models import OutboxMessage
        from worker.tasks import send_outbox

        with self._sessions().begin() as session:
            ids = list(
                session.scalars(
                    select(OutboxMessage.id)
                    .where(OutboxMessage.chat_id == recorder.user_id, OutboxMessage.sent_at.is_(None))
                    .order_by(OutboxMessage.id)
                )
            )
        for message_id in ids:
            send_outbox.apply(args=[message_id])
        if ids:
            recorder.settle()

    def months_later(self, recorder: Recorder, note: str) -> None:
        """Make the chat's reminders due (as months passing would) and run beat's reminder job and the outbox."""
        from sqlalchemy import select, update

        from skintriage.models import RecheckReminder, User, utcnow
        from worker.tasks import send_reminders

        recorder.note(note)
        with self._sessions().begin() as session:
            user_id = session.scalar(select(User.id).where(User.telegram_user_id == recorder.user_id))
            session.execute(update(RecheckReminder).where(RecheckReminder.user_id == user_id).values(next_at=utcnow()))
        send_reminders.apply()
        self.outbox(recorder)


def photo(name: str) -> bytes:
    """A bundled demo photo (devtools/demo_photos, licences in its README)."""
    return (PHOTOS / name).read_bytes()


def reframed(data: bytes) -> bytes:
    """The same spot photographed again: the photo cropped a little (other bytes, so not a duplicate)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        box = (width // 20, height // 20, width - width // 40, height - height // 40)
        out = io.BytesIO()
        image.crop(box).save(out, format="JPEG", quality=92)
    return out.getvalue()


def english(p: Recorder, svc: Service) -> None:
    """The English conversation: consent, a photo and its questions, words, the answer, a reminder, the same
    spot again, /history, /delete."""
    p.patient("/start")
    p.client.send_command(p.user_id, "/start", language_code="en")
    p.settle()
    p.press(p.last_with(_has_button("consent:")), "consent:yes")
    p.photo("photo of a mole", photo("2-nv-ISIC_0024693.jpg"))
    for data in ("site:other", "change:no", "symptoms:none", "age:adult"):
        question = p.last_with(_has_button("q:"))
        p.press(question, next(d for _, d in _buttons(question) if d and d.endswith(data)))
    p.photo("the same photo again", photo("2-nv-ISIC_0024693.jpg"))
    p.text("is it cancer?")
    p.document("report.pdf", b"%PDF-1.4 not an image", "report.pdf", "application/pdf")
    p.sticker()
    svc.answer(p, "the worker analyses the photo with the demo models; the reply queue sends the answer")
    offer = [e for e in p.client.sent(p.user_id) if _has_button("reminder:yes")(e)]
    if offer:
        p.press(offer[-1], next(d for _, d in _buttons(offer[-1]) if d and d.startswith("reminder:yes")))
        p.patient("/reminders")
        p.client.send_command(p.user_id, "/reminders", language_code="en")
        p.settle()
    p.photo("a new photo of the same mole, a month later", reframed(photo("2-nv-ISIC_0024693.jpg")))
    spot = p.last_with(_has_button("spot:"))
    p.press(spot, _buttons(spot)[0][1])
    question = p.last_with(_has_button("q:"))
    p.press(question, next(d for _, d in _buttons(question) if d and d.endswith(":skip")))
    p.text("it has been itching and it grew this summer")
    svc.answer(p, "the worker analyses the new photo; the reply queue sends its answer")
    p.patient("/history")
    p.client.send_command(p.user_id, "/history", language_code="en")
    p.settle()
    p.patient("/delete")
    p.client.send_command(p.user_id, "/delete", language_code="en")
    p.settle()
    p.press(p.last_with(_has_button("delete:yes")), "delete:yes")


def korean(p: Recorder, svc: Service) -> None:
    """The Korean conversation: consent, a photo file with warning words in its caption, the questions, the
    answer, a re-check reminder that comes due and is stopped."""
    p.patient("/start")
    p.client.send_command(p.user_id, "/start", language_code="ko")
    p.settle()
    p.press(p.last_with(_has_button("consent:")), "consent:yes")
    p.document("점 사진 파일: IMG_0042.JPG", photo("3-bkl-ISIC_0027419.jpg"), "IMG_0042.JPG", "image/jpeg")
    for data in ("site:other", "change:unknown", "symptoms:skip", "age:adult"):
        question = p.last_with(_has_button("q:"))
        p.press(question, next(d for _, d in _buttons(question) if d and d.endswith(data)))
    svc.answer(p, "워커가 데모 모델로 사진을 분석하고, 답변 큐가 결과를 보냅니다")
    offer = [e for e in p.client.sent(p.user_id) if _has_button("reminder:yes")(e)]
    if offer:
        p.press(offer[-1], next(d for _, d in _buttons(offer[-1]) if d and d.startswith("reminder:yes")))
        svc.months_later(p, "3개월 뒤: beat의 알림 작업이 때가 된 알림을 보냅니다")
        due = p.last_with(_has_button("reminder:stop"))
        p.press(due, next(d for _, d in _buttons(due) if d and d.startswith("reminder:stop")))
    p.text("그런데 점에서 피가 나요")
    p.patient("/reminders")
    p.client.send_command(p.user_id, "/reminders", language_code="ko")
    p.settle()


def record(models: Path, workdir: Path) -> dict[str, str]:
    """Run both conversations; {language: markdown}."""
    from devtools.local_api import LocalBotAPI

    api = LocalBotAPI("123456:TRANSCRIPT-local-bot-api-token").start()
    env = {
        "SKINTRIAGE_ENV": "development",
        "DATA_DIR": str(workdir / "data"),
        "MODEL_DIR": str(models),
        "DATABASE_URL": f"sqlite:///{workdir / 'transcript.sqlite'}",
        "ALLOW_DEMO_MODELS": "true",
        "GRADCAM": "false",
        "LOG_JSON": "false",
        "TELEGRAM_BOT_TOKEN": api.token,
        "TELEGRAM_API_BASE_URL": api.api_base_url,
        "TELEGRAM_FILE_BASE_URL": api.file_base_url,
    }
    os.environ.update(env)
    from bot.app import build_application
    from bot.background import BotThread
    from skintriage import migrate
    from skintriage.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    migrate.upgrade(settings.resolved_database_url)
    # The script runs the triage itself (Service.answer): the bot's enqueue only has to succeed.
    runner = BotThread(build_application(settings, enqueue=lambda case_id: True)).start()
    client = api.client()
    try:
        recorders = {1001: Recorder(client, 1001, "en"), 1002: Recorder(client, 1002, "ko")}
        svc = Service(settings, recorders)
        try:
            english(recorders[1001], svc)
            korean(recorders[1002], svc)
        except LookupError:
            for recorder in recorders.values():  # what happened so far, to see where it went differently
                sys.stderr.write(recorder.markdown())
            raise
        return {"en": recorders[1001].markdown(), "ko": recorders[1002].markdown()}
    finally:
        runner.stop()
        client.close()
        api.stop()


def replace_sections(document: str, sections: dict[str, str], command: str) -> str:
    """The document with each `<!-- transcript:LANG -->` ... `<!-- /transcript:LANG -->` block replaced."""
    for lang, markdown in sections.items():
        pattern = re.compile(rf"(<!-- transcript:{lang} -->\n).*?(<!-- /transcript:{lang} -->)", re.DOTALL)
        if not pattern.search(document):
            raise ValueError(f"no <!-- transcript:{lang} --> ... <!-- /transcript:{lang} --> block; add the markers")
        body = f"*Recorded on {date.today().isoformat()} with `{command}`.*\n\n{markdown}\n"
        document = pattern.sub(lambda m, body=body: m.group(1) + "\n" + body + m.group(2), document)
    return document


def main(argv: list[str] | None = None) -> int:
    """Record the conversations; print them, or write them into the doc."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=None, help="folder of demo models (default: train quick ones)")
    parser.add_argument("--write", type=Path, default=None, help="the doc whose transcript blocks to replace")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="skintriage-transcript-") as tmp:
        workdir = Path(tmp)
        models = args.models
        if models is None:
            from devtools.demo import train_demo_models

            models = workdir / "models"
            train_demo_models(models, quick=True, log_path=workdir / "train.log")
        sections = record(models, workdir)
    if args.write is None:
        for lang, markdown in sections.items():
            print(f"<!-- transcript:{lang} -->\n{markdown}")
        return 0
    models_arg = " --models DIR" if args.models is not None else ""  # DIR: quick demo models (devtools.demo)
    command = f"PYTHONPATH=. python -m devtools.transcript{models_arg} --write {args.write}"
    args.write.write_text(replace_sections(args.write.read_text(encoding="utf-8"), sections, command), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
