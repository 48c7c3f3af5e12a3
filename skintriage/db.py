"""Engine and session factory, one per database URL and process."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from skintriage.settings import Settings, get_settings


class AnswerBoundedConnection(psycopg.Connection):
    """A psycopg connection that stops waiting for a server that does not answer, and closes itself.

    libpq has no read timeout: a server (or a network path) that accepted the connection and then went
    silent would hold the caller forever, since the server's statement_timeout never fires for a query
    the server never saw. After `answer_timeout_s` without an answer the connection is closed and an
    OperationalError raised, which SQLAlchemy treats as a disconnect (the pool drops the connection) and
    the bot and the worker handle as they handle a refused connection.
    """

    answer_timeout_s: float | None = None

    def wait(self, gen: Any, interval: float | None = None, timeout: float | None = None) -> Any:
        """psycopg's wait for the server, with the answer timeout unless the caller gave its own."""
        options: dict[str, Any] = {} if interval is None else {"interval": interval}
        bound = timeout if timeout is not None else self.answer_timeout_s
        try:
            return super().wait(gen, timeout=bound, **options)
        except psycopg.errors._WaitTimeout as exc:  # psycopg's own signal that the timeout expired
            # The protocol state is unknown: this connection can never be used again.
            self.pgconn.finish()
            raise psycopg.OperationalError(
                f"PostgreSQL did not answer within {bound:g} s; the connection was closed. Check that the "
                "server is up and not overloaded (the limit is DB_ANSWER_TIMEOUT_S)"
            ) from exc


def postgres_connect_args(settings: Settings, *, migrations: bool = False) -> dict[str, Any]:
    """libpq parameters that bound connecting, statements and dead peers (see the Settings' bounded waits)."""
    args: dict[str, Any] = {
        "connect_timeout": settings.db_connect_timeout_s,
        "keepalives": 1,
        "keepalives_idle": settings.db_keepalives_idle_s,
        "keepalives_interval": settings.db_keepalives_interval_s,
        "keepalives_count": settings.db_keepalives_count,
    }
    if settings.db_statement_timeout_s and not migrations:
        args["options"] = f"-c statement_timeout={round(settings.db_statement_timeout_s * 1000)}"
    return args


def make_engine(url: str, *, migrations: bool = False, settings: Settings | None = None) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and foreign keys so several processes can share it.

    PostgreSQL engines get the bounded waits of the settings (connect, statement, answer and pool timeouts,
    TCP keepalives); `migrations=True` leaves statements unbounded, since a migration may rewrite a table.

    Every engine hides SQL parameters from its errors: they carry Telegram user and chat ids, and an error's
    text ends up in tracebacks in the logs.
    """
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            from pathlib import Path

            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, hide_parameters=True, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    settings = settings or get_settings()
    engine = create_engine(
        url,
        hide_parameters=True,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        pool_timeout=settings.db_pool_timeout_s,
        connect_args=postgres_connect_args(settings, migrations=migrations),
    )
    if url.startswith("postgresql+psycopg:") and not migrations:
        answer_timeout_s = settings.db_answer_timeout_s

        @event.listens_for(engine, "do_connect")
        def _answer_bounded(_dialect, _record, cargs, cparams):
            conn = AnswerBoundedConnection.connect(*cargs, **cparams)
            conn.answer_timeout_s = answer_timeout_s
            return conn

    return engine


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """Cached engine for a URL."""
    return make_engine(url)


def session_factory(url: str | None = None) -> sessionmaker[Session]:
    """A sessionmaker bound to the configured (or given) database.

    A unit of work is `with session_factory(url).begin() as session:`: it commits when the block ends and
    rolls back when it raises. Services never commit; their callers decide where a transaction ends.
    """
    return sessionmaker(engine_for(url or get_settings().resolved_database_url), expire_on_commit=False)
