"""Run the service's real processes in tests: its environment, a Celery worker (thread or process), the bot.

The recipe (tests/worker/conftest.py wires it into fixtures):
    env = stack_environment(tmp_path, database_url=..., broker_url=..., model_dir=..., api=local_api)
    apply_environment(env, monkeypatch)         # this process sees the same settings as the children
    with worker_thread(get_app()):              # a real worker in this process (celery.contrib.testing)
        ...
    with worker_process(env, log_dir=tmp_path) as proc, bot_process(env, client, log_dir=tmp_path):
        ...                                     # `skintriage worker` and `skintriage bot` as subprocesses
Everything a child prints goes to LOG_DIR/<name>.log; failures quote the end of it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from devtools.demo import free_port
from devtools.demo import health as healthz
from skintriage.settings import DEMO_BOT_TOKEN, get_settings

__all__ = ["free_port", "healthz"]  # the demo's process helpers, shared with the tests

ROOT = Path(__file__).resolve().parent.parent
# The bot user id the simulated patients use unless a test picks its own.
PATIENT_ID = 5550001


def stack_environment(
    tmp_path: Path,
    *,
    database_url: str,
    broker_url: str,
    model_dir: Path,
    api: Any | None = None,
    allow_demo_models: bool = True,
    **extra: str,
) -> dict[str, str]:
    """The environment of one test stack: its own DATA_DIR, database, broker and Bot API server."""
    env = {
        "SKINTRIAGE_ENV": "test",
        "DATA_DIR": str(tmp_path / "data"),
        "MODEL_DIR": str(model_dir),
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "ALLOW_DEMO_MODELS": "true" if allow_demo_models else "false",
        "TELEGRAM_BOT_TOKEN": DEMO_BOT_TOKEN,
        "LOG_JSON": "false",
        "LOG_LEVEL": "INFO",
        # Short timeouts so the sweeper and the claims act within a test's lifetime when a test wants it.
        "STUCK_AFTER_S": "300",
        "KERAS_BACKEND": "tensorflow",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    if api is not None:
        env["TELEGRAM_API_BASE_URL"] = api.api_base_url
        env["TELEGRAM_FILE_BASE_URL"] = api.file_base_url
    env.update(extra)
    return env


def apply_environment(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process's Settings match the stack's environment."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()


@contextmanager
def worker_thread(app: Any, *, queues: tuple[str, ...] = ("triage", "replies")) -> Iterator[Any]:
    """A real Celery worker consuming `queues` in a thread of this process (solo pool)."""
    from celery.contrib.testing.worker import start_worker

    import worker.tasks  # noqa: F401 - registers the tasks on every app

    with start_worker(
        app,
        pool="solo",
        concurrency=1,
        perform_ping_check=False,
        queues=list(queues),
        loglevel="WARNING",
        shutdown_timeout=30,
    ) as controller:
        yield controller


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def spawn(name: str, argv: list[str], env: dict[str, str], *, log_dir: Path, module: str = "skintriage.cli"):
    """`python -m MODULE ARGV` in its own process group with the stack's environment, output to LOG_DIR/NAME.log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    full_env.update(env)
    full_env["PYTHONPATH"] = str(ROOT)
    with log_path.open("a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *argv],
            env=full_env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    proc.log_path = log_path  # type: ignore[attr-defined]
    proc.name = name  # type: ignore[attr-defined]
    return proc


@contextmanager
def child_process(name: str, argv: list[str], env: dict[str, str], *, log_dir: Path) -> Iterator[subprocess.Popen]:
    """`python -m skintriage.cli ARGV` with the stack's environment; SIGTERM then SIGKILL on exit."""
    proc = spawn(name, argv, env, log_dir=log_dir)
    try:
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen, *, timeout: float = 30.0) -> int | None:
    """Stop a child politely (a worker finishes its job on SIGTERM), then for good."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


def wait_for(check: Callable[[], Any], *, timeout: float, what: str, proc: subprocess.Popen | None = None) -> Any:
    """Poll until `check` returns something truthy; fail with the child's log if it died or time ran out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {proc.returncode}:\n{_log_tail(proc.log_path)}")
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            tail = _log_tail(proc.log_path) if proc is not None else ""
            raise AssertionError(f"{what}: not within {timeout:.0f} s\n{tail}")
        time.sleep(0.2)


@contextmanager
def worker_process(
    env: dict[str, str],
    *,
    log_dir: Path,
    queues: str = "triage,replies",
    pool: str = "solo",
    extra_args: tuple[str, ...] = (),
    wait_models: bool = True,
) -> Iterator[subprocess.Popen]:
    """`skintriage worker` as a subprocess, returned once /healthz says it is up (and its models loaded)."""
    port = free_port()
    argv = ["worker", "--queues", queues, "--pool", pool, *extra_args]
    with child_process("worker", argv, dict(env, HEALTH_PORT=str(port)), log_dir=log_dir) as proc:
        proc.health_port = port  # type: ignore[attr-defined]

        def ready() -> bool:
            report = healthz(port)
            if not report:
                return False
            return report.get("models") == "loaded" if wait_models and "triage" in queues else bool(report.get("ok"))

        wait_for(ready, timeout=240, what="worker start", proc=proc)
        yield proc


@contextmanager
def bot_process(env: dict[str, str], client: Any, *, log_dir: Path) -> Iterator[subprocess.Popen]:
    """`skintriage bot` as a subprocess, returned once it long-polls the local Bot API server."""
    with child_process("bot", ["bot"], env, log_dir=log_dir) as proc:
        wait_for(lambda: client.status().get("last_poll_at"), timeout=90, what="bot start", proc=proc)
        yield proc


_demo_models: dict[str, Path] = {}


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny real demo models (devtools.demo_models, quick schedule), trained once per test session.

    Import this fixture by name into a conftest or test module; the cache keeps it to one training
    even when several modules import it.
    """
    cached = os.environ.get("SKINTRIAGE_TEST_MODEL_DIR")  # a developer's already-trained demo models
    if cached:
        return Path(cached)
    if "dir" not in _demo_models:
        from devtools.demo import train_demo_models

        folder = tmp_path_factory.mktemp("demo-models")
        # In a child process: this one then loads the models only if a test runs a worker in it.
        train_demo_models(folder, quick=True, log_path=folder.parent / "demo-models-train.log")
        _demo_models["dir"] = folder
    return _demo_models["dir"]


@pytest.fixture(params=["embedded", "services"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    """(name, DATABASE_URL, CELERY_BROKER_URL): SQLite + filesystem broker, or the real PostgreSQL + Redis."""
    if request.param == "embedded":
        return "embedded", request.getfixturevalue("sqlite_url"), "filesystem://"
    return "services", request.getfixturevalue("pg_url"), request.getfixturevalue("redis_url")


@pytest.fixture
def local_api() -> Iterator[Any]:
    """The local Bot API server (Telegram's stand-in) on a free port."""
    from devtools.local_api import LocalBotAPI

    api = LocalBotAPI(DEMO_BOT_TOKEN).start()
    yield api
    api.stop()
