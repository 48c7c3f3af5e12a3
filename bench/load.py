"""Load test of the whole service on this machine: N simulated patients each send M photos.

Starts the local Bot API server (in this process), `skintriage bot` and W `skintriage worker` processes
(both queues, solo pool, the first with the embedded beat) on the embedded defaults (SQLite and kombu's
filesystem broker under the work folder) or, with --services, on a fresh PostgreSQL database and a Redis
database, with demo models (trained into the work folder in about a minute) or the cards in --model-dir.
Each patient runs in a thread: /start, the consent button, then its photos one after another, each as
soon as the previous one was acknowledged. Then the script waits for every answer and reports photos
accepted, answers delivered, duplicates and lost answers (both must be 0), acknowledgement and
photo-to-answer latency (p50/p99) and worker throughput; it prints a table and, with --json-out,
writes the same as JSON. Exit code 1 when anything was duplicated or lost.

The per-patient limits (MAX_IN_FLIGHT, RATE_LIMIT_PHOTOS) are raised to M so that every photo is meant to be
accepted; photos refused anyway are counted as refused, not lost.

Usage:
  .venv/bin/python bench/load.py                                  # 50 patients x 5 photos, 1 worker, embedded
  .venv/bin/python bench/load.py --patients 3 --photos 2 --json-out load.json
  .venv/bin/python bench/load.py --services --workers 2          # PostgreSQL + Redis on 127.0.0.1
  .venv/bin/python bench/load.py --services --hold-workers       # intake alone, workers stopped until acked
  .venv/bin/python bench/load.py --services --intake-only        # no workers at all: acknowledgements only
  .venv/bin/python bench/load.py --services --intake-only --webhook   # the same, updates by webhook

Acknowledgement latency is reported twice: from the patient starting to send the photo (what the patient
waits, including the Bot API stand-in's upload and resizing, which Telegram does on its own servers) and
from the update being queued for the bot (what the bot adds). The load averages of the machine (1, 5 and
15 minutes, as `uptime` shows them) are recorded before and after each run: on a shared machine they
say how much the figures are worth.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.answers import visible  # noqa: E402
from bot.i18n import load_texts  # noqa: E402
from devtools.demo import (  # noqa: E402
    Child,
    bundled_photos,
    free_port,
    health,
    start_child,
    stop_child,
    train_demo_models,
    wait_until,
)
from devtools.local_api import LocalBotAPI, LocalBotAPIClient  # noqa: E402
from skintriage.settings import DEMO_BOT_TOKEN  # noqa: E402

DEFAULT_PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
FIRST_PATIENT = 8_000_001
CONSENT = "consent:yes"
# Everything the bot may say right after a photo; the first of these after a photo is its acknowledgement or refusal.
ACCEPTED_KEYS = ("intake.ack", "intake.delayed")
REFUSED_KEYS = (
    "intake.duplicate_open", "intake.duplicate_done", "intake.in_flight", "intake.rate_limited",
    "intake.unusable", "intake.too_big", "intake.download_failed", "intake.unavailable",
    "intake.unsupported_file", "error.unavailable", "error.generic", "consent.required",
)  # fmt: skip
CASE_NUMBER = re.compile(r"#(\d+)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=50, help="simulated patients, all at once (default 50)")
    parser.add_argument("--photos", type=int, default=5, help="photos each patient sends (default 5)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--services",
        action="store_true",
        help="PostgreSQL + Redis instead of the embedded SQLite + filesystem broker",
    )
    parser.add_argument(
        "--postgres-admin-url",
        default=DEFAULT_PG_ADMIN_URL,
        help="with --services: a database to connect to for creating (and afterwards dropping) a fresh one",
    )
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help=f"with --services: a Redis database used only by this script; it is flushed before and after "
        f"(default {DEFAULT_REDIS_URL})",
    )
    parser.add_argument(
        "--model-dir", type=Path, default=None, help="model cards to serve (default: train demo models)"
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="folder for data and logs (default: a new temp one)"
    )
    parser.add_argument(
        "--hold-workers",
        action="store_true",
        help="stop the workers (SIGSTOP) while the patients send and resume them once every photo is "
        "acknowledged, as if they ran on another machine: acknowledgement latency then measures the bot, "
        "the Bot API stand-in and the patients only, and photo-to-answer latency includes the hold",
    )
    parser.add_argument(
        "--intake-only",
        action="store_true",
        help="start no worker (no models needed): the run ends once every photo is acknowledged and measures "
        "the intake path alone; cases stay queued and answers are not checked",
    )
    parser.add_argument(
        "--webhook",
        action="store_true",
        help="the bot takes updates by webhook (python-telegram-bot's server; the Bot API stand-in POSTs them) "
        "instead of long polling",
    )
    parser.add_argument(
        "--bot-cpu",
        type=int,
        default=None,
        help="pin the bot to this CPU and this script (Bot API stand-in and patients) to the others, as when "
        "Telegram is not on the bot's machine (PostgreSQL and Redis are not moved)",
    )
    parser.add_argument("--json-out", type=Path, default=None, help="write the report as JSON here")
    parser.add_argument("--intake-timeout", type=float, default=120.0, help="seconds to wait for each acknowledgement")
    parser.add_argument("--answer-timeout", type=float, default=1800.0, help="seconds to wait for the last answer")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds to keep watching for late duplicates")
    args = parser.parse_args(argv)
    for name in ("patients", "photos", "workers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


# --- what the bot sent ------------------------------------------------------------------------


class Recorder(threading.Thread):
    """Polls the local Bot API's record of everything the bot sent, sorted by chat, for all patients at once."""

    def __init__(self, base_url: str, *, interval: float = 0.1) -> None:
        super().__init__(name="recorder", daemon=True)
        self.client = LocalBotAPIClient(base_url)
        self.interval = interval
        self.events: dict[int, list[dict[str, Any]]] = defaultdict(list)
        self.last_seq = 0
        self.changed = threading.Condition()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.poll()
            time.sleep(self.interval)

    def poll(self) -> None:
        """Fetch the events since the last poll."""
        fresh = self.client.sent(since=self.last_seq)
        if not fresh:
            return
        with self.changed:
            for event in fresh:
                self.events[event["chat_id"]].append(event)
                self.last_seq = max(self.last_seq, event["seq"])
            self.changed.notify_all()

    def wait(self, chat_id: int, predicate: Callable[[dict[str, Any]], bool], *, after: int, timeout: float) -> Any:
        """The first event of the chat after seq `after` that satisfies `predicate`, or None after the timeout."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for event in self.events.get(chat_id, []):
                    if event["seq"] > after and predicate(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.changed.wait(min(left, 1.0))

    def chat(self, chat_id: int) -> list[dict[str, Any]]:
        """A copy of the chat's events so far."""
        with self.changed:
            return list(self.events.get(chat_id, []))

    def stop(self) -> None:
        """Stop polling (after one last poll) and close the HTTP client."""
        self._stop_event.set()
        self.join(5)
        self.poll()
        self.client.close()


class Catalogue:
    """Recognises the bot's intake messages by the fixed start of their English text."""

    def __init__(self) -> None:
        raw = load_texts(None).catalogues["en"]

        def prefix(key: str) -> str:
            # The visible text up to the first placeholder; tags go first, so a text opening with <b> has one
            # too (an empty prefix would match every message, the questions after an acknowledgement included).
            start = visible(raw[key]).split("{")[0]
            if not start.strip():
                raise ValueError(f"the {key} text starts with a placeholder; recognise it some other way")
            return start

        self.prefixes = {key: prefix(key) for key in (*ACCEPTED_KEYS, *REFUSED_KEYS)}
        self.consent_thanks = prefix("consent.thanks")

    def intake_key(self, event: dict[str, Any]) -> str | None:
        """The catalogue key of an intake message, or None for anything else (answers, chat actions)."""
        if event["method"] != "sendMessage":
            return None
        text = event.get("text") or ""
        for key, start in self.prefixes.items():
            if text.startswith(start):
                return key
        return None


# --- the patients -----------------------------------------------------------------------------


@dataclass
class Photo:
    """One photo a patient sent and what the bot said about it."""

    patient: int
    index: int
    name: str
    sent_at: float = 0.0
    queued_at: float | None = None  # the Bot API stand-in's clock: when the update was queued for the bot
    update_id: int | None = None
    intake_key: str | None = None
    intake_at: float | None = None
    case_id: int | None = None


@dataclass
class PatientRun:
    """One simulated patient: consent, then photos one after another."""

    user_id: int
    photos: list[tuple[str, bytes]]
    sent: list[Photo] = field(default_factory=list)
    error: str | None = None

    def run(self, base_url: str, recorder: Recorder, catalogue: Catalogue, *, intake_timeout: float) -> None:
        """Talk to the bot; any failure is recorded, never raised (the other patients carry on)."""
        client = LocalBotAPIClient(base_url)
        try:
            self._consent(client, recorder, catalogue)
            for index, (name, data) in enumerate(self.photos):
                photo = Photo(self.user_id, index, name)
                self.sent.append(photo)
                after = recorder.last_seq
                photo.sent_at = time.time()
                queued = client.send_message(self.user_id, photo_b64=base64.b64encode(data).decode(), compress=True)
                photo.update_id, photo.queued_at = queued["update_id"], queued.get("queued_at")
                said = recorder.wait(
                    self.user_id, lambda e: catalogue.intake_key(e) is not None, after=after, timeout=intake_timeout
                )
                if said is None:
                    continue  # no acknowledgement: counted as lost unless a case turns up
                photo.intake_key, photo.intake_at = catalogue.intake_key(said), said["at"]
                if photo.intake_key in ACCEPTED_KEYS:
                    match = CASE_NUMBER.search(said.get("text") or "")
                    photo.case_id = int(match.group(1)) if match else None
        except Exception as exc:  # noqa: BLE001 - reported in the summary
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            client.close()

    def _consent(self, client: LocalBotAPIClient, recorder: Recorder, catalogue: Catalogue) -> None:
        after = recorder.last_seq
        client.send_command(self.user_id, "/start")
        intro = recorder.wait(self.user_id, lambda e: bool(e.get("reply_markup")), after=after, timeout=120)
        if intro is None:
            raise TimeoutError("no introduction after /start")
        client.press_button(self.user_id, intro["message_id"], CONSENT)
        thanks = recorder.wait(
            self.user_id, lambda e: (e.get("text") or "").startswith(catalogue.consent_thanks), after=after, timeout=120
        )
        if thanks is None:
            raise TimeoutError("no thanks after the consent button")


def photo_set(count: int) -> list[tuple[str, bytes]]:
    """`count` photos: the bundled samples in turn, re-encoded once they repeat (a repeated photo reuses its case)."""
    from PIL import Image

    bundled = bundled_photos()
    photos = []
    for i in range(count):
        name, data = bundled[i % len(bundled)]
        if i >= len(bundled):
            with Image.open(io.BytesIO(data)) as img:
                out = io.BytesIO()
                img.convert("RGB").save(out, format="JPEG", quality=90 - i % 10)
                data = out.getvalue()
                name = f"{name} (copy {i // len(bundled)})"
        photos.append((name, data))
    return photos


# --- the service ------------------------------------------------------------------------------


@dataclass
class Backend:
    """Where the service keeps its data and queues, and how to clean up afterwards."""

    name: str
    database_url: str
    broker_url: str
    cleanup: Callable[[], None] = lambda: None


def embedded_backend(data_dir: Path) -> Backend:
    """SQLite and the filesystem broker under DATA_DIR (the defaults)."""
    return Backend("embedded", f"sqlite:///{(data_dir / 'skintriage.sqlite').resolve()}", "filesystem://")


def services_backend(admin_url: str, redis_url: str) -> Backend:
    """A fresh PostgreSQL database (dropped afterwards) and a flushed Redis database."""
    import redis
    from sqlalchemy import create_engine, text

    name = f"st_load_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", hide_parameters=True)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    broker = redis.Redis.from_url(redis_url)
    broker.flushdb()

    def cleanup() -> None:
        from skintriage.db import engine_for

        engine_for.cache_clear()
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", hide_parameters=True)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        broker.flushdb()
        broker.close()

    return Backend("services", admin_url.rsplit("/", 1)[0] + f"/{name}", redis_url, cleanup)


def child_env(args: argparse.Namespace, backend: Backend, *, data_dir: Path, model_dir: Path, api: LocalBotAPI) -> dict:
    """The environment of the bot and the workers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    env.update(
        {
            "SKINTRIAGE_ENV": "demo",
            "DATA_DIR": str(data_dir),
            "MODEL_DIR": str(model_dir),
            "DATABASE_URL": backend.database_url,
            "CELERY_BROKER_URL": backend.broker_url,
            "ALLOW_DEMO_MODELS": "true",
            "TELEGRAM_BOT_TOKEN": DEMO_BOT_TOKEN,
            "TELEGRAM_API_BASE_URL": api.api_base_url,
            "TELEGRAM_FILE_BASE_URL": api.file_base_url,
            "LOG_JSON": "false",
            "LOG_LEVEL": "INFO",
            "MAX_IN_FLIGHT": str(max(3, args.photos)),
            "RATE_LIMIT_PHOTOS": str(max(10, args.photos)),
            "KERAS_BACKEND": "tensorflow",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if args.webhook:
        port = free_port()
        env.update(
            {
                "BOT_WEBHOOK_URL": f"http://127.0.0.1:{port}/telegram",
                "BOT_WEBHOOK_PORT": str(port),
                "BOT_WEBHOOK_SECRET": uuid.uuid4().hex,
            }
        )
    return env


def start_service(env: dict, *, workers: int, log_dir: Path, client: LocalBotAPIClient) -> list[Child]:
    """W workers (the first runs beat) with their models loaded, then the bot once it polls."""
    children: list[Child] = []
    ports = []
    for i in range(1, workers + 1):
        port = free_port()
        argv = ["worker", "--queues", "triage,replies", "--pool", "solo", "--hostname", f"worker-{i}@%h"]
        if i == 1:
            argv.append("--beat")
        children.append(start_child(f"worker-{i}", argv, env=dict(env, HEALTH_PORT=str(port)), log_dir=log_dir))
        ports.append(port)

    def models_loaded() -> bool:
        reports = [health(port) for port in ports]
        for report in reports:
            if report and str(report.get("models", "")).startswith("unavailable"):
                raise RuntimeError(f"a worker cannot load the models: {report['models']}")
        return all(r and r.get("models") == "loaded" and r.get("broker") == "ok" for r in reports)

    wait_until(models_loaded, timeout=600, what="the workers loading the models", children=children)
    children.append(start_child("bot", ["bot"], env=env, log_dir=log_dir))

    def taking_updates() -> bool:
        status = client.status()
        return bool(status.get("last_poll_at") or status.get("webhook_url"))

    wait_until(taking_updates, timeout=120, what="the bot polling or its webhook set", children=children)
    return children


# --- the report -------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: list[float]) -> dict[str, Any]:
    """n, p50, p99 and max of a list of seconds."""
    rounded = {q: percentile(values, q) for q in (50, 99)}
    return {
        "n": len(values),
        "p50": round(rounded[50], 3) if values else None,
        "p99": round(rounded[99], 3) if values else None,
        "max": round(max(values), 3) if values else None,
    }


def wait_for_answers(database_url: str, case_ids: set[int], *, timeout: float, children: list[Child]) -> None:
    """Until every accepted case has its answer recorded as sent (or the timeout; the report counts the rest)."""
    from sqlalchemy import func, select

    from skintriage.db import session_factory
    from skintriage.models import Case

    def answered() -> bool:
        with session_factory(database_url).begin() as session:
            open_count = session.scalar(
                select(func.count()).select_from(Case).where(Case.id.in_(case_ids), Case.delivered_at.is_(None))
            )
        return open_count == 0

    if not case_ids:
        return
    try:
        wait_until(answered, timeout=timeout, what="every answer", children=children)
    except TimeoutError as exc:
        print(f"warning: {exc}; the report counts the unanswered cases as lost", file=sys.stderr)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (its threads included), or None without /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def load_average() -> list[float] | None:
    """The machine's 1, 5 and 15 minute load averages (what `uptime` shows), or None where /proc has none."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def build_report(
    patients: list[PatientRun],
    recorder: Recorder,
    database_url: str,
    *,
    args: argparse.Namespace,
    wall_s: float,
    load_before: list[float] | None = None,
    load_after: list[float] | None = None,
) -> dict[str, Any]:
    """Everything the table and the JSON show, from the photos sent, the bot's messages and the case rows."""
    from sqlalchemy import select

    from skintriage.db import session_factory
    from skintriage.models import Case, User

    with session_factory(database_url).begin() as session:
        rows = session.execute(select(Case, User.telegram_user_id).join(User)).all()
        cases = [(case, user_id) for case, user_id in rows]
        for case, _ in cases:
            session.expunge(case)

    photos = [photo for patient in patients for photo in patient.sent]
    by_update: dict[int, list[Case]] = defaultdict(list)
    for case, _ in cases:
        if case.source_update_id is not None:
            by_update[case.source_update_id].append(case)

    lost: list[str] = []
    duplicates: list[str] = []
    ack_latency: list[float] = []
    ack_from_queue: list[float] = []
    answer_latency: list[float] = []
    accepted = refused = delivered = 0
    for photo in photos:
        label = f"patient {photo.patient} photo {photo.index + 1} ({photo.name})"
        made = by_update.get(photo.update_id or -1, [])
        if len(made) > 1:
            duplicates.append(f"{label}: {len(made)} cases {[c.id for c in made]}")
        if photo.intake_key in REFUSED_KEYS and not made:
            refused += 1
            continue
        if not made:
            said = f"the bot said {photo.intake_key}" if photo.intake_key else "no acknowledgement"
            lost.append(f"{label}: {said} and no case")
            continue
        accepted += 1
        case = made[0]
        chat = [e for e in recorder.chat(photo.patient) if e["method"] in {"sendMessage", "sendPhoto", "sendDocument"}]
        if photo.intake_at is not None:
            ack_latency.append(photo.intake_at - photo.sent_at)
            if photo.queued_at is not None:
                ack_from_queue.append(photo.intake_at - photo.queued_at)
        else:
            lost.append(f"{label}: case {case.id} was stored but the patient was never told")
        acks = [e for e in chat if e["message_id"] == case.ack_message_id]
        if acks:
            copies = [e for e in chat if e.get("text") == acks[0].get("text")]
            if len(copies) > 1:
                duplicates.append(f"{label}: acknowledgement of case {case.id} sent {len(copies)} times")
        if args.intake_only:
            continue  # no worker: the answer is not part of this run
        answer = next((e for e in chat if case.reply_message_id and e["message_id"] == case.reply_message_id), None)
        if case.delivered_at is None or answer is None:
            lost.append(f"{label}: case {case.id} ({case.status}) has no answer")
            continue
        delivered += 1
        answer_latency.append(answer["at"] - photo.sent_at)
        shown = answer.get("caption") or answer.get("text")
        copies = [e for e in chat if (e.get("caption") or e.get("text")) == shown]
        if len(copies) > 1:
            duplicates.append(f"{label}: answer of case {case.id} sent {len(copies)} times")

    finished = [c for c, _ in cases if c.finished_at is not None and c.started_at is not None]
    window_s = None
    throughput = None
    if finished:
        window_s = (max(c.finished_at for c in finished) - min(c.started_at for c in finished)).total_seconds()
        throughput = len(finished) / window_s if window_s > 0 else None
    analysis = [c.timings_ms.get("worker_total") / 1000 for c in finished if (c.timings_ms or {}).get("worker_total")]
    statuses: dict[str, int] = defaultdict(int)
    for case, _ in cases:
        statuses[str(case.status)] += 1
    return {
        "config": {
            "patients": args.patients,
            "photos_per_patient": args.photos,
            "workers": 0 if args.intake_only else args.workers,
            "intake_only": args.intake_only,
            "bot_updates": "webhook" if getattr(args, "webhook", False) else "long polling",
            "workers_held_during_intake": args.hold_workers,
            "backend": "services" if args.services else "embedded",
            "cpu_count": os.cpu_count(),
            "bot_cpu": getattr(args, "bot_cpu", None),
        },
        "photos_sent": len(photos),
        "photos_accepted": accepted,
        "photos_refused": refused,
        "answers_delivered": delivered,
        "duplicates": len(duplicates),
        "lost": len(lost),
        "ack_latency_s": summary(ack_latency),
        "ack_from_update_queued_s": summary(ack_from_queue),
        "answer_latency_s": summary(answer_latency),
        "analysis_s": summary(analysis),
        "cases_finished": len(finished),
        "processing_window_s": round(window_s, 3) if window_s is not None else None,
        "worker_throughput_cases_per_s": round(throughput, 3) if throughput else None,
        "case_statuses": dict(statuses),
        "wall_s": round(wall_s, 1),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "patient_errors": [f"patient {p.user_id}: {p.error}" for p in patients if p.error],
        "duplicate_detail": duplicates,
        "lost_detail": lost,
    }


def print_table(report: dict[str, Any]) -> None:
    """The report as a two-column table."""
    config = report["config"]

    def latency(key: str) -> str:
        s = report[key]
        if not s["n"]:
            return "-"
        return f"p50 {s['p50']:.2f} s, p99 {s['p99']:.2f} s, max {s['max']:.2f} s (n={s['n']})"

    throughput = report["worker_throughput_cases_per_s"]
    rows = [
        ("setup", f"{config['patients']} patients x {config['photos_per_patient']} photos, "
                  f"{config['workers']} worker(s), {config['bot_updates']}"
                  f"{' held until every photo was acknowledged' if config['workers_held_during_intake'] else ''}, "
                  f"{config['backend']}, {config['cpu_count']} CPUs"
                  f"{'' if config.get('bot_cpu') is None else ', the bot alone on CPU ' + str(config['bot_cpu'])}"),
        ("photos sent", str(report["photos_sent"])),
        ("photos accepted", str(report["photos_accepted"])),
        ("photos refused at intake", str(report["photos_refused"])),
        ("answers delivered", str(report["answers_delivered"])),
        ("duplicates (must be 0)", str(report["duplicates"])),
        ("lost (must be 0)", str(report["lost"])),
        ("acknowledgement latency", latency("ack_latency_s")),
        ("  from the update queued", latency("ack_from_update_queued_s")),
        ("photo-to-answer latency", latency("answer_latency_s")),
        ("analysis time per case", latency("analysis_s")),
        ("worker throughput", f"{throughput:.2f} cases/s over {report['processing_window_s']:.1f} s"
                              if throughput else "-"),
        ("case statuses", ", ".join(f"{k} {v}" for k, v in sorted(report["case_statuses"].items())) or "-"),
        ("wall time", f"{report['wall_s']:.1f} s"),
        ("load average before/after", f"{report['load_average_before']} / {report['load_average_after']}"),
    ]  # fmt: skip
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    cpu = report.get("cpu_s_during_intake") or {}
    print(
        f"{'CPU s while sending'.ljust(width)}  bot {cpu.get('bot')}, Bot API stand-in + patients "
        f"{cpu.get('bot_api_and_patients')}"
    )
    for line in report["patient_errors"] + report["duplicate_detail"] + report["lost_detail"]:
        print(f"  ! {line}")


# --- main -------------------------------------------------------------------------------------


def pin_bot(bot_pid: int, cpu: int) -> None:
    """The bot on `cpu` alone (threads included), this process and its threads on every other CPU."""
    others = os.sched_getaffinity(0) - {cpu}
    if cpu not in os.sched_getaffinity(0) or not others:
        raise SystemExit(f"--bot-cpu {cpu}: needs that CPU and at least one other ({sorted(os.sched_getaffinity(0))})")
    for tid in os.listdir(f"/proc/{bot_pid}/task"):
        os.sched_setaffinity(int(tid), {cpu})
    for tid in os.listdir(f"/proc/{os.getpid()}/task"):
        os.sched_setaffinity(int(tid), others)


def signal_group(children: list[Child], signum: int) -> None:
    """Send a signal to each live child's process group (a worker and its embedded beat)."""
    for child in children:
        if child.alive():
            os.killpg(child.process.pid, signum)


def main(argv: list[str] | None = None) -> int:
    """Run the load; returns 0 when nothing was duplicated or lost."""
    from skintriage import migrate
    from skintriage.logconfig import configure_logging

    args = parse_args(argv)
    configure_logging("WARNING", json_lines=False)
    work = (args.work_dir or Path(tempfile.mkdtemp(prefix="skintriage-load-"))).resolve()
    data_dir, log_dir = work / "data", work / "logs"
    data_dir.mkdir(parents=True, exist_ok=True)
    print(f"work folder (data and logs): {work}", flush=True)
    model_dir = args.model_dir.resolve() if args.model_dir else work / "models"
    if not args.intake_only and not (model_dir / "classifier.json").is_file():
        print(f"training demo models into {model_dir} ...", flush=True)
        train_demo_models(model_dir, quick=True, log_path=log_dir / "train-models.log")

    backend = services_backend(args.postgres_admin_url, args.redis_url) if args.services else embedded_backend(data_dir)
    api = LocalBotAPI(DEMO_BOT_TOKEN).start()
    client = api.client()
    recorder = Recorder(api.base_url)
    children: list[Child] = []
    try:
        migrate.upgrade(backend.database_url)
        env = child_env(args, backend, data_dir=data_dir, model_dir=model_dir, api=api)
        workers_to_start = 0 if args.intake_only else args.workers
        print(f"starting {workers_to_start} worker(s) and the bot on {backend.name} ...", flush=True)
        children = start_service(env, workers=workers_to_start, log_dir=log_dir, client=client)
        recorder.start()
        catalogue = Catalogue()
        photos = photo_set(args.photos)
        patients = [PatientRun(FIRST_PATIENT + i, photos) for i in range(args.patients)]
        threads = [
            threading.Thread(
                target=p.run, args=(api.base_url, recorder, catalogue), kwargs={"intake_timeout": args.intake_timeout},
                name=f"patient-{p.user_id}", daemon=True,
            )
            for p in patients
        ]  # fmt: skip
        workers = [child for child in children if child.name.startswith("worker-")]
        if args.hold_workers:
            signal_group(workers, signal.SIGSTOP)
        print(f"{args.patients} patients sending {args.photos} photos each ...", flush=True)
        load_before = load_average()
        bot_pid = next(child.process.pid for child in children if child.name == "bot")
        if args.bot_cpu is not None:
            pin_bot(bot_pid, args.bot_cpu)
        cpu_before = cpu_seconds(bot_pid), cpu_seconds(os.getpid())
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if args.hold_workers:
            print("every photo acknowledged; resuming the workers ...", flush=True)
            signal_group(workers, signal.SIGCONT)
        load_after = load_average()
        cpu_after = cpu_seconds(bot_pid), cpu_seconds(os.getpid())
        cpu_used = [
            None if a is None or b is None else round(b - a, 2) for a, b in zip(cpu_before, cpu_after, strict=True)
        ]
        accepted = {photo.case_id for p in patients for photo in p.sent if photo.case_id is not None}
        if not args.intake_only:
            wait_for_answers(backend.database_url, accepted, timeout=args.answer_timeout, children=children)
        time.sleep(args.settle)  # late duplicates would show up now
        recorder.stop()
        wall_s = time.monotonic() - started
        report = build_report(
            patients, recorder, backend.database_url, args=args, wall_s=wall_s, load_before=load_before,
            load_after=load_after,
        )  # fmt: skip
        report["cpu_s_during_intake"] = {"bot": cpu_used[0], "bot_api_and_patients": cpu_used[1]}
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        signal_group(children, signal.SIGCONT)  # a held worker must be running to stop politely
        for child in reversed(children):
            stop_child(child)
        client.close()
        api.stop()
        backend.cleanup()

    print()
    print_table(report)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nJSON written to {args.json_out}")
    return 1 if report["duplicates"] or report["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
