"""Fixtures for the worker's tests: a stack (database, broker, Bot API server, demo models) and a real worker.

Every test that takes `stack` runs twice: on the embedded defaults (SQLite + kombu's filesystem
transport) and on the real PostgreSQL + Redis of this machine.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from celery.signals import task_postrun, task_received

from devtools.local_api import LocalBotAPI, LocalBotAPIClient
from skintriage import cases
from skintriage.db import session_factory
from skintriage.settings import Settings, get_settings
from skintriage.storage import ImageStore, make_store
from tests.factories import lesion_photo
from tests.stack import (
    PATIENT_ID,
    apply_environment,
    backend,
    demo_model_dir,
    local_api,
    stack_environment,
    worker_thread,
)

__all__ = ["backend", "demo_model_dir", "local_api"]  # fixtures shared with tests/test_end_to_end.py


@dataclass
class TaskLog:
    """Counts the jobs this process's worker received and finished (celery signals)."""

    received: dict[str, int] = field(default_factory=dict)
    finished: dict[str, list[Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_received(self, request: Any = None, **_: Any) -> None:
        with self.lock:
            name = request.name if request is not None else "?"
            self.received[name] = self.received.get(name, 0) + 1

    def on_finished(self, task: Any = None, retval: Any = None, **_: Any) -> None:
        with self.lock:
            self.finished.setdefault(task.name, []).append(retval)

    def results(self, name: str) -> list[Any]:
        """Return values of the finished runs of a task (short name, e.g. "triage_case")."""
        with self.lock:
            return list(self.finished.get(f"worker.tasks.{name}", []))

    def idle(self) -> bool:
        """True when every job received so far has finished."""
        with self.lock:
            done = sum(len(v) for v in self.finished.values())
            return sum(self.received.values()) == done


@dataclass
class Stack:
    """One test's service: settings, store, Bot API server with its patient client, and helpers."""

    settings: Settings
    env: dict[str, str]
    api: LocalBotAPI
    client: LocalBotAPIClient
    store: ImageStore
    tmp_path: Path
    backend: str

    def session(self):  # a Session
        """A new session on the stack's database."""
        return session_factory(self.settings.resolved_database_url)()

    def new_case(self, *, photo: bytes | None = None, user_id: int = PATIENT_ID, enqueue: bool = False) -> int:
        """A committed case for a consenting patient the local server knows (as after the bot's intake)."""
        from worker.enqueue import enqueue_triage

        # The Bot API only knows chats that wrote to the bot; Telegram answers "chat not found" otherwise.
        self.client.send_text(user_id, "hello")
        with self.session() as session:
            user = cases.get_or_create_user(session=session, telegram_user_id=user_id, chat_id=user_id, language="en")
            cases.record_consent(session=session, user=user, version="test")
            image = self.store.put(photo or lesion_photo(seed=user_id % 97))
            case = cases.create_case(session=session, user=user, image=image)
            session.commit()
            case_id = case.id
        if enqueue:
            assert enqueue_triage(case_id)
            with self.session() as session:
                cases.mark_queued(session=session, case_id=case_id)
                session.commit()
        return case_id

    def case(self, case_id: int) -> Any:
        """The case row as it is now."""
        with self.session() as session:
            return cases.get_case(session=session, case_id=case_id)


@pytest.fixture
def stack(
    backend: tuple[str, str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    local_api: LocalBotAPI,
    demo_model_dir: Path,
) -> Iterator[Stack]:
    """Settings for one stack in this process (the worker thread reads them too)."""
    name, database_url, broker_url = backend
    env = stack_environment(
        tmp_path, database_url=database_url, broker_url=broker_url, model_dir=demo_model_dir, api=local_api
    )
    apply_environment(env, monkeypatch)
    settings = get_settings()
    client = local_api.client()
    yield Stack(settings, env, local_api, client, make_store(settings), tmp_path, name)
    client.close()
    get_settings.cache_clear()


@pytest.fixture
def task_log() -> Iterator[TaskLog]:
    """Counts jobs received and finished by the worker thread."""
    log = TaskLog()
    task_received.connect(log.on_received, weak=False)
    task_postrun.connect(log.on_finished, weak=False)
    yield log
    task_received.disconnect(log.on_received)
    task_postrun.disconnect(log.on_finished)


@pytest.fixture
def worker(stack: Stack) -> Iterator[Any]:
    """A real Celery worker (solo pool, both queues) in a thread, on the stack's broker."""
    from worker.celery_app import get_app

    with worker_thread(get_app(stack.settings)) as controller:
        yield controller
