"""The whole service as real processes, and the means to break its parts, for the reliability tests.

- `service` (one per session): `skintriage bot` and `skintriage worker` subprocesses talking to the local
  Bot API server, on a fresh PostgreSQL database and a Redis server of their own, both processes logging at
  DEBUG into files the security tests read. The bad-input and security tests share it (one patient each).
- `make_service` (per test): the same with the test's settings, for the fault tests, which SIGKILL workers,
  stop Redis and cut PostgreSQL.

The machine's shared Redis (6379) and PostgreSQL (5432) are never stopped: Redis here is a `redis-server`
process the test owns (killed and restarted on the same port), and PostgreSQL is cut with `TcpProxy`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy import select as sql_select
from sqlalchemy.orm import Session

from bot.answers import visible
from bot.i18n import Texts, load_texts
from devtools.local_api import LocalBotAPI, LocalBotAPIClient
from skintriage import migrate
from skintriage.db import session_factory
from skintriage.models import Case, User
from tests.conftest import PG_ADMIN_URL, require_service
from tests.proxy import TcpProxy
from tests.stack import (
    demo_model_dir,
    free_port,
    healthz,
    spawn,
    stack_environment,
    stop_process,
    wait_for,
)

__all__ = ["TcpProxy", "demo_model_dir"]

# Looks like a real token (digits:35 characters) so the log checks would catch it in any form.
TOKEN = "7012345678:AAH-reliability_Secret-Token-0123456789"
# A sleep before each photo's analysis, honoured by tests/reliability/slow_worker.py only.
SLOW_ENV = "RELIABILITY_SLOW_PIPELINE_S"
# A sleep while composing each answer or outbox message, honoured by tests/reliability/slow_worker.py only.
SLOW_ANSWER_ENV = "RELIABILITY_SLOW_ANSWER_S"
# Where the models fail ("load" or "run"), honoured by tests/reliability/broken_worker.py only.
FAULT_ENV = "RELIABILITY_MODEL_FAULT"


# --- processes ------------------------------------------------------------------------------


def kill_hard(proc: subprocess.Popen) -> None:
    """SIGKILL the process and its children (a crash: nothing gets to clean up)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class RedisServer:
    """A `redis-server` of the test's own on a free loopback port; kill it and start it again on the same port."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        """redis:// URL of database `db`."""
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        """Start (or restart) the server, empty: no snapshot, no append-only file."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.log_dir), "--logfile", str(self.log_dir / f"redis-{self.port}.log")]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: port_open(self.port), timeout=20, what=f"redis-server on {self.port}")
        return self

    def kill(self) -> None:
        """Stop it the hard way (a crashed or unplugged Redis)."""
        if self.proc is not None:
            kill_hard(self.proc)
            self.proc = None
        wait_for(lambda: not port_open(self.port), timeout=10, what="redis-server gone")

    def client(self):  # a redis.Redis
        """A client on database 0."""
        import redis

        return redis.Redis.from_url(self.url(), socket_timeout=2)


# --- databases ------------------------------------------------------------------------------


def create_pg_database() -> str:
    """A fresh, migrated database on the machine's PostgreSQL; returns its URL."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"st_rel_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    migrate.upgrade(url)
    return url


def drop_pg_database(url: str) -> None:
    """Drop a database made by create_pg_database (ending its connections)."""
    from skintriage.db import engine_for

    engine_for.cache_clear()
    name = url.rsplit("/", 1)[1]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# --- the service ----------------------------------------------------------------------------


class Service:
    """One running service: Bot API server, bot and worker processes, database and Redis, and test helpers."""

    def __init__(self, *, tmp_path: Path, db_url: str, redis: RedisServer, model_dir: Path, **env: str) -> None:
        self.tmp_path = tmp_path
        self.log_dir = tmp_path / "logs"
        self.db_url = db_url
        self.redis = redis
        self.api = LocalBotAPI(TOKEN).start()
        self.client: LocalBotAPIClient = self.api.client()
        self.env = stack_environment(
            tmp_path,
            database_url=db_url,
            broker_url=redis.url(),
            model_dir=model_dir,
            api=self.api,
            TELEGRAM_BOT_TOKEN=TOKEN,
            **env,
        )
        self.procs: dict[str, subprocess.Popen] = {}
        self.texts: Texts = load_texts(None)
        self.sessions = session_factory(db_url)

    # processes

    def start_bot(self, name: str = "bot", **env: str) -> subprocess.Popen:
        """`skintriage bot`, returned once it long-polls the local server."""
        before = self.client.status().get("last_poll_at") or 0
        proc = spawn(name, ["bot"], {**self.env, **env}, log_dir=self.log_dir)
        self.procs[name] = proc
        wait_for(lambda: (self.client.status().get("last_poll_at") or 0) > before, timeout=120, what=name, proc=proc)
        return proc

    def start_worker(
        self,
        name: str = "worker",
        *,
        slow_s: float | None = None,
        slow_answer_s: float | None = None,
        fault: str | None = None,
        beat: bool = False,
        wait: bool = True,
        expect_models: bool = True,
        **env: str,
    ) -> subprocess.Popen:
        """`skintriage worker` (both queues, solo pool).

        slow_s makes each analysis sleep first, slow_answer_s the composing of each answer (slow_worker.py); fault
        ("load" or "run") makes its models fail with torch's out-of-memory error (broken_worker.py).
        """
        port = free_port()
        argv = ["worker", "--queues", "triage,replies", "--pool", "solo", "--hostname", f"{name}@%h"]
        if beat:
            argv.append("--beat")
        full = {**self.env, **env, "HEALTH_PORT": str(port)}
        module = "skintriage.cli"
        if slow_s is not None or slow_answer_s is not None:
            full[SLOW_ENV] = str(slow_s or 0)
            full[SLOW_ANSWER_ENV] = str(slow_answer_s or 0)
            module = "tests.reliability.slow_worker"
        if fault is not None:
            full[FAULT_ENV] = fault
            module = "tests.reliability.broken_worker"
        proc = spawn(name, argv, full, log_dir=self.log_dir, module=module)
        proc.health_port = port  # type: ignore[attr-defined]
        self.procs[name] = proc
        if wait:
            self.wait_worker(proc, expect_models=expect_models)
        return proc

    def wait_worker(self, proc: subprocess.Popen, *, expect_models: bool = True) -> dict[str, Any]:
        """Wait until the worker's /healthz reports its models loaded (or, expect_models=False, a verdict on them)."""

        def ready() -> dict[str, Any] | None:
            report = healthz(proc.health_port)  # type: ignore[attr-defined]
            if not report or report.get("broker") != "ok":
                return None
            models = str(report.get("models", ""))
            if expect_models:
                return report if models == "loaded" else None
            return report if models.startswith("unavailable") else None

        return wait_for(ready, timeout=300, what=f"{proc.name} ready", proc=proc)  # type: ignore[attr-defined]

    def stop(self, name: str) -> None:
        """Stop a process politely (SIGTERM, a worker finishes its job)."""
        proc = self.procs.pop(name, None)
        if proc is not None:
            stop_process(proc)

    def kill(self, name: str) -> None:
        """SIGKILL a process and its children."""
        proc = self.procs.pop(name, None)
        if proc is not None:
            kill_hard(proc)

    def log(self, name: str) -> str:
        """Everything a process wrote so far."""
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def assert_alive(self) -> None:
        """Every started process still runs."""
        dead = {name: proc.returncode for name, proc in self.procs.items() if proc.poll() is not None}
        assert not dead, f"processes died: {dead}\n" + "\n".join(self.log(n)[-3000:] for n in dead)

    def close(self) -> None:
        """Stop every process and the Bot API server."""
        for name in list(self.procs):
            self.stop(name)
        self.client.close()
        self.api.stop()

    # the patient's side

    def expect(self, key: str, lang: str = "en", **values: Any) -> str:
        """The exact text a patient sees for a catalogue key."""
        return visible(self.texts.get(lang, key, **values))

    def unusable(self, reason: str, lang: str = "en") -> str:
        """The bot's "I can't use this picture" text for a retake reason."""
        return visible(self.texts.get(lang, "intake.unusable", reason=self.texts.retake_reason(lang, reason)))

    def wait_text(self, chat_id: int, text: str, *, since: int, timeout: float = 30.0) -> dict[str, Any]:
        """The first message or caption equal to `text` after `since`."""
        return self.client.wait_for(
            chat_id, lambda e: text in (e.get("text"), e.get("caption")), timeout=timeout, since=since
        )

    def wait_prefix(self, chat_id: int, key: str, *, since: int, timeout: float = 30.0) -> dict[str, Any]:
        """The first message starting like catalogue text `key` (up to its first placeholder)."""
        # The raw catalogue text: Texts.get would need every placeholder filled in.
        prefix = self.texts.catalogues["en"][key].split("{")[0]
        prefix = visible(prefix.split("<")[0])
        return self.client.wait_for(
            chat_id, lambda e: (e.get("text") or e.get("caption") or "").startswith(prefix), timeout=timeout,
            since=since,
        )  # fmt: skip

    def consent(self, user_id: int, **patient: Any) -> None:
        """/start and the consent button, as the patient would."""
        since = self.client.last_seq()
        self.client.send_command(user_id, "/start", **patient)
        intro = self.client.wait_for(user_id, lambda e: bool(e.get("reply_markup")), since=since, timeout=60)
        self.client.press_button(user_id, intro["message_id"], "consent:yes", **patient)
        thanks = "\n\n".join([self.expect("consent.thanks"), self.expect("tips.photo")])
        self.wait_text(user_id, thanks, since=since, timeout=60)

    def messages(self, chat_id: int, *, since: int = 0) -> list[dict[str, Any]]:
        """The messages and photos the bot sent to a chat."""
        return self.client.messages(chat_id, since=since)

    # the database

    def session(self) -> Session:
        """A session on the service's database (use as a context manager)."""
        return self.sessions()

    def cases(self, telegram_user_id: int) -> list[Case]:
        """The patient's cases, oldest first."""
        with self.session() as session:
            return list(
                session.scalars(
                    sql_select(Case).join(User).where(User.telegram_user_id == telegram_user_id).order_by(Case.id)
                )
            )

    def case(self, case_id: int) -> Case:
        """A case row as it is now."""
        with self.session() as session:
            return session.get(Case, case_id)

    def wait_delivered(self, case_id: int, *, timeout: float = 120.0, proc_names: tuple[str, ...] = ()) -> Case:
        """Wait until the case's answer is recorded as sent."""

        def delivered() -> Case | None:
            for name in proc_names:
                if name in self.procs and self.procs[name].poll() is not None:
                    raise AssertionError(f"{name} died:\n{self.log(name)[-3000:]}")
            case = self.case(case_id)
            return case if case is not None and case.delivered_at is not None else None

        return wait_for(delivered, timeout=timeout, what=f"case {case_id} answered")

    def settle(self, *, quiet_s: float = 3.0, timeout: float = 120.0, ignore_unacked: Collection[bytes] = ()) -> None:
        """Wait until no job is queued, reserved or scheduled for a retry, and none appeared for quiet_s.

        ignore_unacked: delivery tags of jobs held by a SIGKILLed worker (Redis gives them back only after
        the visibility timeout; the sweeper has re-enqueued their work long before).
        """
        client = self.redis.client()
        ignored = set(ignore_unacked)

        def pending() -> int:
            queued = sum(client.llen(k) for k in client.scan_iter("triage*")) + sum(
                client.llen(k) for k in client.scan_iter("replies*")
            )
            return queued + len(set(client.hkeys("unacked")) - ignored)

        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        try:
            while time.monotonic() < deadline:
                if pending():
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= quiet_s:
                    return
                time.sleep(0.2)
        finally:
            client.close()
        raise AssertionError("jobs still pending after the timeout")

    def assert_answered_once(self, chat_id: int, case_id: int, *, since: int) -> list[dict[str, Any]]:
        """The patient got the case's answer exactly once after `since` (a long answer may continue in one more)."""
        case = self.case(case_id)
        assert case.delivered_at is not None and case.reply_message_id is not None, f"case {case_id} not answered"
        seen = self.messages(chat_id, since=since)
        answer_ids = [e["message_id"] for e in seen if e["message_id"] == case.reply_message_id]
        assert len(answer_ids) == 1
        first = next(e for e in self.messages(chat_id, since=since) if e["message_id"] == case.reply_message_id)
        shown = first.get("caption") or first.get("text") or ""
        # A LOW or MEDIUM answer is followed by the re-check reminder offer (a follow-up of its own, offered once).
        offers = [e for e in seen if f"reminder:yes:{case_id}" in _callbacks(e)]
        assert len(offers) <= 1, f"case {case_id}: the re-check reminder was offered {len(offers)} times"
        body = [e for e in self.messages(chat_id, since=since) if e["seq"] >= first["seq"] and e not in offers]
        expected = 1 if shown == case.reply_text else 2
        copies = [e for e in self.messages(chat_id, since=since) if (e.get("caption") or e.get("text")) == shown]
        assert len(copies) == 1, f"case {case_id}: the answer was sent {len(copies)} times"
        assert len(body) == expected, f"case {case_id}: expected {expected} answer message(s), got {body}"
        return body


def _callbacks(event: dict[str, Any]) -> list[str]:
    """The callback data of a sent message's inline buttons."""
    keyboard = (event.get("reply_markup") or {}).get("inline_keyboard") or []
    return [button.get("callback_data", "") for row in keyboard for button in row]


@pytest.fixture(scope="session")
def models(request: pytest.FixtureRequest) -> Path:
    """Demo models: trained once per session, or RELIABILITY_MODEL_DIR (a folder ensure_demo_models filled)."""
    given = os.environ.get("RELIABILITY_MODEL_DIR")
    return Path(given) if given else request.getfixturevalue("demo_model_dir")


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory, models: Path) -> Iterator[Service]:
    """The shared service: bot + worker (DEBUG logs) on PostgreSQL and a Redis of its own."""
    tmp = tmp_path_factory.mktemp("reliability-service")
    redis = RedisServer(tmp / "redis").start()
    db_url = create_pg_database()
    svc = Service(
        tmp_path=tmp,
        db_url=db_url,
        redis=redis,
        model_dir=models,
        LOG_LEVEL="DEBUG",
        STUCK_AFTER_S="60",
        SWEEP_INTERVAL_S="5",
    )
    try:
        svc.start_worker("worker", beat=True)
        svc.start_bot("bot")
        yield svc
    finally:
        svc.close()
        redis.kill()
        drop_pg_database(db_url)


@pytest.fixture
def make_service(tmp_path: Path, pg_url: str, models: Path) -> Iterator[Callable[..., Service]]:
    """make_service(**ENV) -> a Service on a fresh PostgreSQL database and its own running Redis; stopped afterwards."""
    made: list[Service] = []

    def make(*, db_url: str | None = None, **env: str) -> Service:
        redis = RedisServer(tmp_path / "redis").start()
        svc = Service(tmp_path=tmp_path, db_url=db_url or pg_url, redis=redis, model_dir=models, **env)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.close()
        svc.redis.kill()


@pytest.fixture
def pg_proxy(pg_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """A TCP proxy in front of the real PostgreSQL, and the test database's URL through it."""
    proxy = TcpProxy(5432)
    yield proxy, pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    proxy.close()


def wait(check: Callable[[], Any], *, timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll until `check()` is truthy."""
    return wait_for(check, timeout=timeout, what=what)
