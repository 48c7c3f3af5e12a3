"""One bot and one beat per deployment: a lease row per role in the database, renewed while the process runs.

Two bots polling one token steal each other's updates (Telegram answers 409 Conflict), and two beats send
every periodic job twice. A process takes its role's row in `service_leases` when it starts, renews it every
third of LEASE_TTL_S from a thread, and deletes it when it stops. A second process refuses to start while the
row is held; it may take the role over once the lease expired (the holder died without releasing it), or at
once when the holder was a process on this host that no longer exists. The same SQL works on SQLite (the
embedded demo) and PostgreSQL, so "one per deployment" means one per database.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, insert, or_, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from skintriage.cases import database_now, owner_is_dead, worker_identity
from skintriage.exceptions import AlreadyRunning
from skintriage.models import ServiceLease

log = logging.getLogger(__name__)


def acquire(*, session: Session, name: str, holder: str, ttl_s: float, now: datetime | None = None) -> None:
    """Take the role's lease; raise AlreadyRunning, naming the holder, while another process holds it."""
    now = now or database_now(session)
    expires = now + timedelta(seconds=ttl_s)
    try:
        with session.begin_nested():
            session.execute(insert(ServiceLease).values(name=name, holder=holder, acquired_at=now, expires_at=expires))
    except IntegrityError:
        current = session.get(ServiceLease, name, populate_existing=True)
        takeover = [ServiceLease.expires_at < now, ServiceLease.holder == holder]
        if current is not None and owner_is_dead(current.holder):
            takeover.append(ServiceLease.holder == current.holder)
        taken = session.execute(
            update(ServiceLease)
            .where(ServiceLease.name == name, or_(*takeover))
            .values(holder=holder, acquired_at=now, expires_at=expires)
            .execution_options(synchronize_session=False)
        ).rowcount
        if taken != 1:
            current = session.get(ServiceLease, name, populate_existing=True)
            held_by = current.holder if current is not None else "another process"
            left_s = (current.expires_at - now).total_seconds() if current is not None else ttl_s
            raise AlreadyRunning(
                f"another {name} is already running ({held_by}); only one {name} may run per database. Stop it "
                f"first; if it died, this one can start in {max(left_s, 0):.0f} s, when its lease expires"
            ) from None


def renew(*, session: Session, name: str, holder: str, ttl_s: float) -> bool:
    """Extend the lease; False when this process no longer holds it."""
    renewed = session.execute(
        update(ServiceLease)
        .where(ServiceLease.name == name, ServiceLease.holder == holder)
        .values(expires_at=database_now(session) + timedelta(seconds=ttl_s))
        .execution_options(synchronize_session=False)
    ).rowcount
    return renewed == 1


def release(*, session: Session, name: str, holder: str) -> None:
    """Give the lease up, so the next process can start at once."""
    session.execute(delete(ServiceLease).where(and_(ServiceLease.name == name, ServiceLease.holder == holder)))


def _stop_this_process() -> None:
    # SIGTERM: python-telegram-bot and Celery beat both stop cleanly on it.
    os.kill(os.getpid(), signal.SIGTERM)


class Singleton:
    """Hold a role's lease for this process's lifetime: `start()` or AlreadyRunning, then `stop()` at exit."""

    def __init__(
        self,
        name: str,
        sessions: sessionmaker[Session],
        *,
        ttl_s: float,
        on_lost: Callable[[], None] = _stop_this_process,
    ) -> None:
        self.name = name
        self.sessions = sessions
        self.ttl_s = ttl_s
        self.holder = worker_identity()
        self.on_lost = on_lost
        self._stopped = threading.Event()

    def start(self) -> Singleton:
        """Take the lease and keep it renewed from a daemon thread; raise AlreadyRunning when it is held."""
        with self.sessions.begin() as session:
            acquire(session=session, name=self.name, holder=self.holder, ttl_s=self.ttl_s)
        log.info("%s lease taken by %s (renewed every %.0f s)", self.name, self.holder, self.ttl_s / 3)
        threading.Thread(target=self._renew_loop, name=f"{self.name}-lease", daemon=True).start()
        return self

    def _renew_loop(self) -> None:
        while not self._stopped.wait(self.ttl_s / 3):
            try:
                with self.sessions.begin() as session:
                    held = renew(session=session, name=self.name, holder=self.holder, ttl_s=self.ttl_s)
            except SQLAlchemyError as exc:
                # The database is away: keep trying; if it stays away past the TTL, another process may take over
                # and the next renewal finds the lease lost.
                log.warning("could not renew the %s lease (%s); trying again", self.name, type(exc).__name__)
                continue
            if not held:
                log.critical("the %s lease was taken over by another process; stopping this one", self.name)
                self._stopped.set()
                self.on_lost()
                return

    def stop(self) -> None:
        """Stop renewing and release the lease."""
        self._stopped.set()
        try:
            with self.sessions.begin() as session:
                release(session=session, name=self.name, holder=self.holder)
        except SQLAlchemyError as exc:
            log.warning("could not release the %s lease (%s); it expires by itself", self.name, type(exc).__name__)


def hold_or_exit(name: str, *, database_url: str, ttl_s: float) -> Singleton:
    """Take the role's lease for this process, or exit with the reason (a second bot or beat must not start)."""
    from skintriage.db import session_factory

    try:
        return Singleton(name, session_factory(database_url), ttl_s=ttl_s).start()
    except AlreadyRunning as exc:
        log.error("refusing to start: %s", exc)
        raise SystemExit(f"skintriage {name}: {exc}") from None
    except SQLAlchemyError as exc:
        raise SystemExit(
            f"skintriage {name}: cannot take the {name} lease ({type(exc).__name__}); check DATABASE_URL, and run "
            "`skintriage db upgrade` if the database is not at the latest schema"
        ) from exc
