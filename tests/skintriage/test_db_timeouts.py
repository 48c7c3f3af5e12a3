"""Bounded waits on PostgreSQL: a server that hangs instead of refusing costs seconds, and nothing is lost.

A `TcpProxy` sits between the engine and the real PostgreSQL; `stall()` keeps the connections open and
forwards nothing, as a frozen server or a half-dead network path would. Every operation runs in a thread
with a generous limit, so a regression fails the test instead of hanging it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from skintriage import cases
from skintriage.db import make_engine
from skintriage.models import Case, CaseStatus
from skintriage.settings import Settings
from skintriage.storage import LocalImageStore
from tests.factories import lesion_photo
from tests.proxy import TcpProxy

pytestmark = pytest.mark.postgres

# Small limits so the test is quick; the defaults are 5 s, 20 s and 25 s.
FAST = {"DB_CONNECT_TIMEOUT_S": 2, "DB_STATEMENT_TIMEOUT_S": 1, "DB_ANSWER_TIMEOUT_S": 2}
HANG_LIMIT_S = 30.0  # far beyond any bound: reaching it means the wait was not bounded


@pytest.fixture
def proxy(pg_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """A proxy in front of the real PostgreSQL and the test database's URL through it."""
    tcp = TcpProxy(5432)
    yield tcp, pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{tcp.port}")
    tcp.close()


def timed(call: Callable[[], Any], tcp: TcpProxy) -> tuple[BaseException | None, float]:
    """Run `call` in a thread; (the exception it raised or None, seconds it took).

    If it hangs, the proxy cuts the connections (so the thread and the test's cleanup end) and the test fails.
    """
    outcome: dict[str, BaseException | None] = {"error": None}

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_LIMIT_S)
    hung = thread.is_alive()
    if hung:
        tcp.cut()
        thread.join(30)
    assert not hung, f"still waiting after {HANG_LIMIT_S:.0f} s: the wait is not bounded"
    return outcome["error"], time.monotonic() - started


def select_one(engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


@pytest.mark.slow
def test_a_pooled_connection_to_a_hung_server_fails_in_seconds_and_the_pool_recovers(proxy) -> None:
    tcp, url = proxy
    engine = make_engine(url, settings=Settings(**FAST))
    select_one(engine)  # a pooled connection, as the bot and the worker hold them

    tcp.stall()
    error, took = timed(lambda: select_one(engine), tcp)
    assert isinstance(error, OperationalError), error
    # The pre-ping waits DB_ANSWER_TIMEOUT_S, then one fresh connection waits DB_CONNECT_TIMEOUT_S.
    assert took < 8, f"took {took:.1f} s"
    assert "timeout" in str(error).lower() or "did not answer" in str(error)

    tcp.restore()
    error, took = timed(lambda: select_one(engine), tcp)
    assert error is None and took < 5
    engine.dispose()


def test_a_statement_on_a_hung_server_fails_in_seconds_and_the_transaction_is_not_half_done(proxy, pg_url) -> None:
    tcp, url = proxy
    engine = make_engine(url, settings=Settings(**FAST))
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE stall_probe (n int)"))
        conn.commit()
        conn.execute(text("INSERT INTO stall_probe VALUES (1)"))
        tcp.stall()
        error, took = timed(lambda: conn.execute(text("INSERT INTO stall_probe VALUES (2)")), tcp)
        assert isinstance(error, OperationalError) and error.connection_invalidated, error
        assert "PostgreSQL did not answer within 2 s" in str(error)
        assert took < 4, f"took {took:.1f} s"
    tcp.restore()
    direct = make_engine(pg_url, settings=Settings(**FAST))
    with direct.connect() as conn:
        # The server never saw a commit: neither row was written.
        assert conn.execute(text("SELECT count(*) FROM stall_probe")).scalar() == 0
    select_one(engine)
    engine.dispose()
    direct.dispose()


def test_connecting_to_a_hung_server_gives_up_after_the_connect_timeout(proxy) -> None:
    tcp, url = proxy
    tcp.stall()
    engine = make_engine(url, settings=Settings(**FAST))
    error, took = timed(lambda: select_one(engine), tcp)
    assert isinstance(error, OperationalError), error
    assert "timeout" in str(error).lower()
    assert took < 5, f"took {took:.1f} s"
    assert tcp.stalled_connections >= 1
    engine.dispose()


@pytest.mark.slow
def test_the_worker_claim_on_a_hung_server_is_a_transient_error_and_the_case_waits(proxy, pg_url, tmp_path) -> None:
    from worker.failures import Failure, classify

    tcp, url = proxy
    direct = sessionmaker(make_engine(pg_url), expire_on_commit=False)
    with direct() as session:
        user = cases.get_or_create_user(session=session, telegram_user_id=2101, chat_id=2101, language="en")
        store = LocalImageStore(tmp_path / "images")
        case = cases.create_case(session=session, user=user, image=store.put(lesion_photo(64, 48)))
        session.commit()
    worker_sessions = sessionmaker(make_engine(url, settings=Settings(**FAST)), expire_on_commit=False)
    with worker_sessions() as session:
        session.execute(text("SELECT 1"))  # the worker's pool already holds a connection

    tcp.stall()

    def claim() -> None:
        with worker_sessions() as session:
            cases.claim_for_processing(session=session, case_id=case.id, max_attempts=3, stale_after_s=300)

    error, took = timed(claim, tcp)
    assert isinstance(error, OperationalError), error
    assert classify(error) is Failure.TRANSIENT, "the task retries transient errors: a hung database must be one"
    assert took < 8, f"took {took:.1f} s"
    with direct() as session:
        row = session.get(Case, case.id)
        assert (row.status, row.attempts, row.processing_owner) == (CaseStatus.RECEIVED, 0, None)

    tcp.restore()  # the retry (or the sweeper) claims it as usual
    with worker_sessions() as session:
        claimed = cases.claim_for_processing(session=session, case_id=case.id, max_attempts=3, stale_after_s=300)
        assert claimed.outcome == cases.Claim.CLAIMED


def test_statements_are_cancelled_by_the_server_after_the_statement_timeout_except_in_migrations(pg_url) -> None:
    settings = Settings(**FAST)
    engine = make_engine(pg_url, settings=settings)
    with engine.connect() as conn:
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "1s"
        started = time.monotonic()
        with pytest.raises(OperationalError, match="statement timeout"):
            conn.execute(text("SELECT pg_sleep(5)"))
        assert time.monotonic() - started < 3
    migrations = make_engine(pg_url, migrations=True, settings=settings)
    with migrations.connect() as conn:
        assert conn.execute(text("SHOW statement_timeout")).scalar() == "0"
    engine.dispose()
    migrations.dispose()


def test_an_answer_timeout_not_above_the_statement_timeout_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="DB_ANSWER_TIMEOUT_S=25"):
        Settings(DB_STATEMENT_TIMEOUT_S=20, DB_ANSWER_TIMEOUT_S=20)
