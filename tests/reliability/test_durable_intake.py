"""A bot killed between fetching a photo and saving its case: the photo's message was recorded before the
download, so the next bot start tells the patient it was not saved (Telegram already counted it delivered)."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import select

from skintriage.models import PendingIntake
from tests.factories import lesion_photo
from tests.reliability.conftest import wait

_patients = itertools.count(7_300_001)


def _pending(svc) -> list[tuple[int, int]]:
    with svc.session() as session:
        return [(p.chat_id, p.message_id) for p in session.scalars(select(PendingIntake))]


@pytest.mark.slow
def test_bot_killed_mid_download_tells_the_patient_at_its_next_start(make_service) -> None:
    svc = make_service()
    svc.start_bot()
    user_id = next(_patients)
    svc.consent(user_id)

    since = svc.client.last_seq()
    svc.client.send_photo(user_id, lesion_photo(seed=31), download_delay_s=120)  # a very slow network
    wait(lambda: _pending(svc), timeout=60, what="the photo's intake recorded before its download")
    svc.kill("bot")  # SIGKILL mid-download: Telegram already counts the update as delivered
    assert svc.cases(user_id) == [], "nothing was saved"
    assert not [m for m in svc.messages(user_id, since=since) if m.get("text")], "the patient heard nothing yet"

    svc.start_bot("bot-again")
    told = svc.wait_text(user_id, svc.expect("intake.interrupted"), since=since, timeout=90)
    assert told
    wait(lambda: not _pending(svc), timeout=30, what="the intake record settled")

    # The patient sends it again: an ordinary case.
    svc.client.send_photo(user_id, lesion_photo(seed=31))
    ack = svc.wait_prefix(user_id, "intake.ack", since=told["seq"], timeout=60)
    (case,) = svc.cases(user_id)
    assert ack["text"] == svc.expect("intake.ack", case_id=case.id)
    wait(lambda: not _pending(svc), timeout=30, what="an answered photo leaves no record")
    svc.assert_alive()
