"""skintriage.leases: one bot and one beat per database, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import timedelta

import pytest

from skintriage import leases
from skintriage.cases import worker_identity
from skintriage.db import session_factory
from skintriage.exceptions import AlreadyRunning
from skintriage.models import ServiceLease, utcnow


def _dead_holder() -> str:
    """host:pid of a process of this host that has exited."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return f"{worker_identity().rsplit(':', 1)[0]}:{proc.stdout.strip()}"


def test_a_second_holder_is_refused_while_the_lease_is_held(db_url: str) -> None:
    sessions = session_factory(db_url)
    with sessions() as session:
        leases.acquire(session=session, name="bot", holder="host-a:100", ttl_s=30)
        with pytest.raises(AlreadyRunning) as refused:
            leases.acquire(session=session, name="bot", holder="host-b:200", ttl_s=30)
        assert "another bot is already running (host-a:100)" in str(refused.value)
        assert "only one bot may run per database" in str(refused.value)
        leases.acquire(session=session, name="beat", holder="host-b:200", ttl_s=30)  # another role is free
        leases.acquire(session=session, name="bot", holder="host-a:100", ttl_s=30)  # the holder may take it again
        assert session.get(ServiceLease, "bot", populate_existing=True).holder == "host-a:100"


def test_an_expired_or_released_lease_can_be_taken(db_url: str) -> None:
    sessions = session_factory(db_url)
    with sessions() as session:
        leases.acquire(session=session, name="beat", holder="host-a:100", ttl_s=30, now=utcnow() - timedelta(60))
        leases.acquire(session=session, name="beat", holder="host-b:200", ttl_s=30)  # expired: taken over
        assert not leases.renew(session=session, name="beat", holder="host-a:100", ttl_s=30)
        assert leases.renew(session=session, name="beat", holder="host-b:200", ttl_s=30)
        leases.release(session=session, name="beat", holder="host-a:100")  # not its own: nothing happens
        with pytest.raises(AlreadyRunning):
            leases.acquire(session=session, name="beat", holder="host-a:100", ttl_s=30)
        leases.release(session=session, name="beat", holder="host-b:200")
        leases.acquire(session=session, name="beat", holder="host-a:100", ttl_s=30)


def test_a_dead_holder_on_this_host_is_taken_over_at_once(db_url: str) -> None:
    sessions = session_factory(db_url)
    with sessions() as session:
        leases.acquire(session=session, name="bot", holder=_dead_holder(), ttl_s=600)
        leases.acquire(session=session, name="bot", holder=worker_identity(), ttl_s=30)
        assert session.get(ServiceLease, "bot", populate_existing=True).holder == worker_identity()


def test_a_singleton_that_loses_its_lease_stops_its_process(db_url: str) -> None:
    sessions = session_factory(db_url)
    lost = threading.Event()
    singleton = leases.Singleton("beat", sessions, ttl_s=3, on_lost=lost.set).start()
    with sessions() as session:
        # Another process took it over (e.g. this one was frozen past the TTL).
        session.query(ServiceLease).filter_by(name="beat").update({"holder": "elsewhere:1"})
        session.commit()
    assert lost.wait(10), "the renewal thread did not notice the lost lease"
    singleton.stop()
    with sessions() as session:
        assert session.get(ServiceLease, "beat").holder == "elsewhere:1", "stop() releases only its own lease"
