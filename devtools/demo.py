"""`skintriage demo`: the whole service on embedded defaults, with a simulated patient.

What runs is the real thing: migrations on SQLite under DATA_DIR, the real bot (`skintriage bot`)
and a real Celery worker (`skintriage worker`, both queues, embedded beat) as child processes,
kombu's filesystem transport as the broker and local folders for the images. Telegram is played by
the project's local Bot API server (devtools.local_api); the demo then talks to the bot as a patient:
/start, the consent button, the bundled sample photos (one unusable on purpose), /history.
It prints the conversation and writes every image the bot sent back to a folder.

With a real TELEGRAM_BOT_TOKEN the same stack serves real Telegram instead (no simulated patient):
`skintriage demo --telegram real`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from skintriage.settings import DEMO_BOT_TOKEN, PLACEHOLDER_SECRETS, Settings, get_settings

CONSENT_CALLBACK = "consent:yes"
WORKER_READY_TIMEOUT_S = 300.0
BOT_READY_TIMEOUT_S = 90.0
ANSWER_TIMEOUT_S = 180.0
INTAKE_TIMEOUT_S = 20.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `skintriage demo`."""
    parser.add_argument(
        "--telegram",
        choices=("auto", "local", "real"),
        default="auto",
        help="local: simulated patient on the local Bot API server; real: serve real Telegram with "
        "TELEGRAM_BOT_TOKEN; auto (default): real when a real token is set, else local",
    )
    parser.add_argument(
        "--real-telegram", dest="telegram", action="store_const", const="real", help="same as --telegram real"
    )
    parser.add_argument(
        "--output", type=Path, default=Path("demo-output"), help="folder for the images the bot sends back"
    )
    parser.add_argument(
        "--photos", type=Path, default=None, help="folder of photos to send (default: the bundled samples)"
    )
    parser.add_argument(
        "--quick-models",
        action="store_true",
        help="train the demo models with the seconds-long test schedule instead of the 1-2 minute one",
    )


# --- output -----------------------------------------------------------------------------------


class Transcript:
    """Prints the conversation and keeps a copy for transcript.txt."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def say(self, who: str, text: str) -> None:
        """Print one turn, wrapped and indented under its speaker."""
        width = 100
        prefix = f"{who:<8}> "
        body = text.strip() or "(empty)"
        out: list[str] = []
        for i, paragraph in enumerate(body.splitlines() or [""]):
            wrapped = textwrap.wrap(paragraph, width - len(prefix)) or [""]
            for j, line in enumerate(wrapped):
                lead = prefix if i == 0 and j == 0 else " " * len(prefix)
                out.append(lead + line)
        for line in out:
            print(line, flush=True)
        self.lines.extend(out)

    def note(self, text: str) -> None:
        """A line from the demo itself (not part of the conversation)."""
        print(f"-- {text}", flush=True)
        self.lines.append(f"-- {text}")


# --- processes --------------------------------------------------------------------------------


@dataclass
class Child:
    """A child process of the demo and the log file it writes."""

    name: str
    process: subprocess.Popen
    log_path: Path
    log_file: Any = field(repr=False, default=None)

    def alive(self) -> bool:
        """Whether it still runs."""
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The end of its log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def start_child(name: str, argv: list[str], *, env: dict[str, str], log_dir: Path) -> Child:
    """Start `python -m skintriage.cli ARGV` with its output in LOG_DIR/NAME.log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log_file = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "skintriage.cli", *argv],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches the demo only; it stops the children in order
    )
    return Child(name, process, log_path, log_file)


def stop_child(child: Child, *, timeout: float = 30.0) -> int | None:
    """SIGTERM (a worker finishes its current job first), then SIGKILL after the timeout."""
    if child.alive():
        child.process.send_signal(signal.SIGTERM)
        try:
            child.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait(10)
    if child.log_file is not None:
        child.log_file.close()
    return child.process.returncode


def wait_until(check: Callable[[], Any], *, timeout: float, what: str, children: list[Child]) -> Any:
    """Poll `check` until it returns something truthy; fail early when a child died."""
    deadline = time.monotonic() + timeout
    while True:
        for child in children:
            if not child.alive():
                raise RuntimeError(
                    f"the {child.name} exited (code {child.process.returncode}) while waiting for {what}; "
                    f"its log ({child.log_path}) ends with:\n{child.log_tail()}"
                )
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.25)


def health(port: int) -> dict[str, Any] | None:
    """The worker's /healthz answer, or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return json.loads(response.read())
    except OSError as exc:
        body = getattr(exc, "read", None)
        if body is not None:  # HTTPError: the worker answered 503 with its report
            try:
                return json.loads(body())
            except (ValueError, OSError):
                return None
        return None


def free_port() -> int:
    """An unused TCP port on loopback."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- setup ------------------------------------------------------------------------------------


def ensure_models(settings: Settings, *, quick: bool, out: Transcript) -> bool:
    """Use the cards in MODEL_DIR, or train demo models there; returns True when they are demo models."""
    from ml.modelcard import CLASSIFIER_CARD, SEGMENTATION_CARD, ModelCard, ModelCardError

    model_dir = settings.model_dir
    cards = [model_dir / SEGMENTATION_CARD, model_dir / CLASSIFIER_CARD]
    if not all(card.is_file() for card in cards):
        out.note(f"no model cards in {model_dir}: training small demo models on synthetic data (a minute or two)")
        started = time.monotonic()
        train_demo_models(model_dir, quick=quick, log_path=settings.data_dir.resolve() / "demo-logs" / "train.log")
        out.note(f"demo models ready in {time.monotonic() - started:.0f} s")
    try:
        demo = any(ModelCard.load(card).demo for card in cards)
    except ModelCardError as exc:
        raise SystemExit(f"error: {exc}") from exc
    if demo:
        out.note("serving DEMO models: every answer says it is not for medical use")
    else:
        out.note(f"serving the trained models in {model_dir}")
    return demo


def train_demo_models(model_dir: Path, *, quick: bool, log_path: Path) -> None:
    """Run devtools.demo_models.ensure_demo_models in a child process, so this one never loads TensorFlow or torch."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    code = (
        "import sys, logging; from ml.frameworks import load_torch_first; load_torch_first(); "
        "logging.basicConfig(level=logging.INFO); "
        "from pathlib import Path; from devtools.demo_models import ensure_demo_models; "
        "ensure_demo_models(Path(sys.argv[1]), quick=sys.argv[2] == 'quick')"
    )
    with log_path.open("w") as log:
        done = subprocess.run(
            [sys.executable, "-c", code, str(model_dir), "quick" if quick else "full"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    if done.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"training the demo models failed (exit {done.returncode}); {log_path} ends with:\n{tail}")


def child_environment(settings: Settings, *, demo_models: bool, telegram: str, api: Any | None) -> dict[str, str]:
    """The environment of the bot and the worker: the embedded defaults made explicit and absolute."""
    env = dict(os.environ)
    env.update(
        {
            "SKINTRIAGE_ENV": "demo",
            "DATA_DIR": str(settings.data_dir.resolve()),
            "MODEL_DIR": str(settings.model_dir.resolve()),
            "DATABASE_URL": settings.resolved_database_url,
            "CELERY_BROKER_URL": settings.celery_broker_url,
            "ALLOW_DEMO_MODELS": "true" if demo_models else "false",
            "LOG_JSON": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if telegram == "local":
        env.update(
            {
                "TELEGRAM_BOT_TOKEN": DEMO_BOT_TOKEN,
                "TELEGRAM_API_BASE_URL": api.api_base_url,
                "TELEGRAM_FILE_BASE_URL": api.file_base_url,
            }
        )
    return env


def real_token(settings: Settings) -> bool:
    """Whether TELEGRAM_BOT_TOKEN holds something other than the demo token or a placeholder."""
    token = settings.telegram_bot_token.get_secret_value()
    return token not in PLACEHOLDER_SECRETS and token != DEMO_BOT_TOKEN


def bundled_photos() -> list[tuple[str, bytes]]:
    """The sample photos shipped with the package, in order."""
    folder = resources.files("devtools") / "demo_photos"
    items = sorted((p for p in folder.iterdir() if p.name.endswith(".jpg")), key=lambda p: p.name)
    return [(p.name, p.read_bytes()) for p in items]


def folder_photos(folder: Path) -> list[tuple[str, bytes]]:
    """Photos from a folder given on the command line."""
    items = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp", ".heic"})
    if not items:
        raise SystemExit(f"error: no .jpg/.png/.webp/.heic photos in {folder}")
    return [(p.name, p.read_bytes()) for p in items]


# --- the simulated patient --------------------------------------------------------------------


class Patient:
    """Talks to the bot through the local Bot API server and prints both sides."""

    def __init__(self, *, client: Any, user_id: int, settings: Settings, output: Path, out: Transcript) -> None:
        self.client = client
        self.user_id = user_id
        self.settings = settings
        self.output = output
        self.out = out
        self.seen = client.last_seq()
        self.saved: list[Path] = []

    def show_new(self) -> list[dict[str, Any]]:
        """Print what the bot did since the last look; returns those events."""
        events = self.client.sent(self.user_id, since=self.seen)
        for event in events:
            self.seen = max(self.seen, event["seq"])
            self._show(event)
        return events

    def _show(self, event: dict[str, Any]) -> None:
        method = event["method"]
        if method == "sendMessage":
            self.out.say("bot", event.get("text") or "")
            if event.get("reply_markup"):
                self.out.say("", self._buttons(event))
        elif method == "sendPhoto":
            path = self._save_photo(event)
            self.out.say("bot", f"[photo, saved to {path}]\n{event.get('caption') or ''}")
        elif method in {"editMessageText", "editMessageCaption"}:
            self.out.say("bot", f"(edits a message) {event.get('text') or event.get('caption') or ''}")
        elif method == "sendDocument":
            self.out.say("bot", f"[document] {event.get('caption') or ''}")

    @staticmethod
    def _buttons(event: dict[str, Any]) -> str:
        from devtools.local_api import buttons

        return "  ".join(f"[ {text} ]" for text, _ in buttons(event))

    def _save_photo(self, event: dict[str, Any]) -> Path:
        data = self.client.file_bytes(event["photo"])  # the largest size Telegram would show
        path = self.output / f"{len(self.saved) + 1:02d}-answer-message-{event.get('message_id', 'x')}.jpg"
        path.write_bytes(data)
        self.saved.append(path)
        return path

    def wait_for_reply(self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for a bot event matching `predicate`, printing everything on the way."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.show_new():
                if predicate(event):
                    return event
            if time.monotonic() > deadline:
                raise TimeoutError(f"the bot did not answer within {timeout:.0f} s")
            time.sleep(0.2)

    def settle(self, quiet_s: float = 1.5) -> None:
        """Print until the bot has been quiet for a moment."""
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            if self.show_new():
                last = time.monotonic()
            time.sleep(0.2)

    def start_and_consent(self) -> None:
        """/start, then press the consent button under the introduction."""
        from devtools.local_api import buttons

        self.out.say("patient", "/start")
        self.client.send_command(self.user_id, "/start")
        intro = self.wait_for_reply(lambda e: any(d == CONSENT_CALLBACK for _, d in buttons(e)))
        label = next(text for text, data in buttons(intro) if data == CONSENT_CALLBACK)
        self.out.say("patient", f"(presses [ {label} ])")
        self.client.press_button(self.user_id, intro["message_id"], CONSENT_CALLBACK)
        self.wait_for_reply(lambda e: e["method"] in {"sendMessage", "editMessageText"})
        self.settle()

    def send_photo(self, name: str, data: bytes) -> Any:
        """Send one photo and wait until its case was answered (or the bot refused it at intake)."""
        before = self._case_ids()
        self.out.say("patient", f"[photo {name}]")
        self.client.send_photo(self.user_id, data)
        started = time.monotonic()
        while True:
            self.show_new()
            case = self._new_case(before)
            if case is not None and case.delivered_at is not None:
                break
            waited = time.monotonic() - started
            if case is None and waited > INTAKE_TIMEOUT_S:
                break  # no case: the bot refused the photo at intake and said why
            if waited > ANSWER_TIMEOUT_S:
                raise TimeoutError(f"no answer for {name} within {ANSWER_TIMEOUT_S:.0f} s")
            time.sleep(0.3)
        self.settle()
        return case

    def command(self, text: str) -> None:
        """Send a command and print the answer."""
        self.out.say("patient", text)
        self.client.send_command(self.user_id, text)
        self.wait_for_reply(lambda e: e["method"] in {"sendMessage", "sendPhoto"})
        self.settle()

    def _case_ids(self) -> set[int]:
        return {c.id for c in self._cases()}

    def _new_case(self, before: set[int]) -> Any:
        fresh = [c for c in self._cases() if c.id not in before]
        return fresh[0] if fresh else None

    def _cases(self) -> list[Any]:
        from skintriage import cases
        from skintriage.db import session_factory

        with session_factory(self.settings.resolved_database_url).begin() as session:
            user = cases.get_user(session=session, telegram_user_id=self.user_id)
            return [] if user is None else cases.history(session=session, user=user, limit=100)


# --- main -------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    """Run the demo; returns 0 when every photo got its answer."""
    from skintriage import migrate
    from skintriage.logconfig import configure_logging

    settings = get_settings()
    # The demo's own output is the conversation; the children log to files.
    configure_logging("WARNING", json_lines=False)
    out = Transcript()
    mode = args.telegram
    if mode == "auto":
        mode = "real" if real_token(settings) else "local"
    if mode == "real" and not real_token(settings):
        raise SystemExit("error: --telegram real needs TELEGRAM_BOT_TOKEN set to the token @BotFather gave you")

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    out.note(
        f"data: {settings.data_dir.resolve()} (database {url.split('://')[0]}, broker {settings.celery_broker_url})"
    )
    migrate.upgrade(url)
    out.note(f"database at revision {migrate.current(url)}")
    demo_models = ensure_models(settings, quick=args.quick_models, out=out)

    log_dir = settings.data_dir.resolve() / "demo-logs"
    children: list[Child] = []
    api = None
    try:
        if mode == "local":
            from devtools.local_api import LocalBotAPI

            api = LocalBotAPI(DEMO_BOT_TOKEN).start()
            out.note(f"local Bot API server on {api.base_url} (stands in for Telegram)")
        env = child_environment(settings, demo_models=demo_models, telegram=mode, api=api)
        worker_env = dict(env, HEALTH_PORT=str(free_port()))
        worker = start_child(
            "worker",
            ["worker", "--queues", "triage,replies", "--pool", "solo", "--beat"],
            env=worker_env,
            log_dir=log_dir,
        )
        children.append(worker)
        out.note(f"started the Celery worker (pid {worker.process.pid}); logs in {log_dir}")
        port = int(worker_env["HEALTH_PORT"])

        def worker_ready() -> bool:
            report = health(port)
            if report and str(report.get("models", "")).startswith("unavailable"):
                raise RuntimeError(f"the worker cannot load the models: {report['models']}")
            return bool(report and report.get("models") == "loaded")

        wait_until(
            worker_ready, timeout=WORKER_READY_TIMEOUT_S, what="the worker loading the models", children=children
        )
        out.note("worker ready: models loaded")
        bot = start_child("bot", ["bot"], env=env, log_dir=log_dir)
        children.append(bot)
        out.note(f"started the bot (pid {bot.process.pid})")

        if mode == "real":
            out.note("serving real Telegram: message your bot from the Telegram app. Ctrl-C stops everything.")
            try:
                while all(child.alive() for child in children):
                    time.sleep(1)
            except KeyboardInterrupt:
                out.note("stopping")
            return 0

        client = api.client()
        wait_until(
            lambda: client.status().get("last_poll_at"),
            timeout=BOT_READY_TIMEOUT_S,
            what="the bot polling",
            children=children,
        )
        out.note("bot is polling; the simulated patient starts talking\n")
        return converse(client, settings=settings, photos=_photos(args), output=args.output, out=out, children=children)
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        out.note("interrupted; stopping")
        return 130
    finally:
        for child in reversed(children):
            code = stop_child(child)
            out.note(f"{child.name} stopped (exit code {code})")
        if api is not None:
            api.stop()


def _photos(args: argparse.Namespace) -> list[tuple[str, bytes]]:
    return folder_photos(args.photos) if args.photos else bundled_photos()


def converse(
    client: Any,
    *,
    settings: Settings,
    photos: list[tuple[str, bytes]],
    output: Path,
    out: Transcript,
    children: list[Child],
) -> int:
    """The simulated patient's visit; prints it, writes the images and a summary, returns the exit code."""
    output.mkdir(parents=True, exist_ok=True)
    for old in output.glob("*-answer-message-*.jpg"):
        old.unlink()
    user_id = 100_000 + int(time.time()) % 900_000  # a new patient each run (rate limits are per patient)
    patient = Patient(client=client, user_id=user_id, settings=settings, output=output, out=out)
    patient.start_and_consent()
    answered = []
    for name, data in photos:
        if not all(child.alive() for child in children):
            raise RuntimeError("a child process died; see its log in DATA_DIR/demo-logs")
        case = patient.send_photo(name, data)
        answered.append((name, case))
    patient.command("/history")

    print()
    out.note("cases stored in the database:")
    rows = [("photo", "case", "status", "tier", "label", "P(MEL)", "answered", "demo model")]
    for name, case in answered:
        if case is None:
            rows.append((name, "-", "refused at intake", "", "", "", "", ""))
            continue
        rows.append(
            (
                name,
                str(case.id),
                case.status,
                case.tier or "",
                case.label or "",
                f"{case.prob_mel:.2f}" if case.prob_mel is not None else "",
                "yes" if case.delivered_at else "no",
                "yes" if case.demo_model else "no",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.note("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    (output / "transcript.txt").write_text("\n".join(out.lines) + "\n")
    out.note(f"{len(patient.saved)} images the bot sent back, and transcript.txt, are in {output.resolve()}")
    unanswered = [name for name, case in answered if case is not None and case.delivered_at is None]
    if unanswered:
        print(f"error: no answer for {unanswered}", file=sys.stderr)
        return 1
    return 0
