"""The real bot on PostgreSQL behind a proxy that stalls: a database that hangs costs the patient seconds.

The bot answers as it does when PostgreSQL refuses connections ("your photo could not be saved, send it
again"; "temporarily unavailable" for a command), within a few seconds instead of never; once the database
answers again the same photo starts a case as usual.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.factories import lesion_photo
from tests.proxy import TcpProxy

pytestmark = pytest.mark.postgres

FAST = {"DB_CONNECT_TIMEOUT_S": 2, "DB_STATEMENT_TIMEOUT_S": 1, "DB_ANSWER_TIMEOUT_S": 2}


@pytest.fixture
def pg_proxy(pg_url: str) -> Iterator[tuple[TcpProxy, str]]:
    proxy = TcpProxy(5432)
    yield proxy, pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    proxy.close()


@pytest.mark.slow
def test_a_hung_database_gets_the_refused_answer_in_seconds_and_the_photo_is_taken_once_it_answers(
    start_bot, pg_proxy
) -> None:
    proxy, url = pg_proxy
    h = start_bot(database_url=url, **FAST)
    patient = 6201
    h.consent(patient)  # the bot's pool now holds connections through the proxy

    proxy.stall()
    since = h.patient.last_seq()
    started = time.monotonic()
    h.patient.send_photo(patient, lesion_photo(seed=3))
    h.wait_text(patient, h.expect("en", "intake.unavailable"), since=since, timeout=60)
    took = time.monotonic() - started
    assert took < 15, f"the patient waited {took:.1f} s"
    h.patient.send_command(patient, "/history")
    h.wait_text(patient, h.expect("en", "error.unavailable"), since=since, timeout=60)

    proxy.restore()
    assert h.cases(patient) == []  # nothing was committed, as the answer said
    since = h.patient.last_seq()
    h.patient.send_photo(patient, lesion_photo(seed=3))  # sent again, as asked
    (case,) = _eventually(lambda: h.cases(patient))
    h.wait_text(patient, h.expect("en", "intake.ack", case_id=case.id), since=since, timeout=60)


def _eventually(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)
    return value
