"""Bad input through the real bot and worker: every file and malformed update gets a clear answer,
the processes stay up, and the database holds exactly the cases it should.

One patient per input, on the shared service (PostgreSQL, Redis, `skintriage bot`, `skintriage worker`).
"""

from __future__ import annotations

import itertools

import pytest

from skintriage.models import CaseStatus
from tests.factories import lesion_photo
from tests.reliability.corpus import BAD_FILES, BAD_UPDATES, TELEGRAM_BOT_DOWNLOAD_LIMIT, BadFile, BadUpdate

pytestmark = pytest.mark.slow

_patients = itertools.count(7_100_001)


def _send(service, user_id: int, item: BadFile, data: bytes) -> None:
    if item.send_as == "photo":
        service.client.send_photo(user_id, data)
    else:
        service.client.send_document(user_id, data, item.file_name, item.mime_type)


@pytest.mark.parametrize("item", BAD_FILES, ids=[f.name for f in BAD_FILES])
def test_bad_file_gets_a_clear_answer_and_the_right_cases(service, item: BadFile) -> None:
    user_id = next(_patients)
    service.consent(user_id)
    data = item.make()
    downloads = service.client.status()["calls"].get("getFile", 0)
    since = service.client.last_seq()

    _send(service, user_id, item, data)

    if not item.makes_case:
        if item.reply_key == "intake.unusable":
            expected = service.unusable(item.reason)
        elif item.reply_key == "intake.too_big":
            size_mb = f"{len(data) / 1024 / 1024:.0f}"
            expected = service.expect("intake.too_big", size_mb=size_mb, limit_mb="20")
        else:
            expected = service.expect(item.reply_key)
        service.wait_text(user_id, expected, since=since)
        # Nothing else follows: the chat's later updates are handled in order, so a sticker's answer closes it.
        service.client.send_sticker(user_id)
        service.wait_text(user_id, service.expect("other.sticker"), since=since)
        assert [m.get("text") for m in service.messages(user_id, since=since)] == [
            expected,
            service.expect("other.sticker"),
        ]
        assert service.cases(user_id) == []
        if len(data) > TELEGRAM_BOT_DOWNLOAD_LIMIT:
            assert service.client.status()["calls"].get("getFile", 0) == downloads, "an oversized file was downloaded"
        service.assert_alive()
        return

    ack = service.wait_prefix(user_id, "intake.ack", since=since, timeout=60)
    (case,) = service.cases(user_id)
    assert ack["text"] == service.expect("intake.ack", case_id=case.id)
    case = service.wait_delivered(case.id, proc_names=("worker", "bot"))
    assert case.status in item.statuses, f"{item.name}: case ended {case.status} ({case.error_code})"
    assert case.attempts == 1
    if item.retake_reason:
        assert case.retake_reason == item.retake_reason
    if case.status == CaseStatus.DONE:
        assert case.overlay_key and case.tier in {"HIGH", "MEDIUM", "LOW", "UNCERTAIN"}
    if item.check:
        item.check(case)
    service.settle()
    service.assert_answered_once(user_id, case.id, since=ack["seq"])
    assert len(service.cases(user_id)) == 1
    service.assert_alive()


@pytest.mark.parametrize("item", BAD_UPDATES, ids=[u.name for u in BAD_UPDATES])
def test_malformed_update_is_answered_or_skipped_and_the_bot_carries_on(service, item: BadUpdate) -> None:
    user_id = next(_patients)
    service.consent(user_id)
    since = service.client.last_seq()
    cases_before = service.cases(user_id)

    service.client.inject_update(item.build(user_id, 900 + since))

    if item.reply_key is not None:
        service.wait_text(user_id, service.expect(item.reply_key), since=since)
    # The bot still answers the same patient afterwards (it neither crashed nor stalled on the update).
    service.client.send_sticker(user_id)
    service.wait_text(user_id, service.expect("other.sticker"), since=since)
    texts = [m.get("text") for m in service.messages(user_id, since=since)]
    expected = ([service.expect(item.reply_key)] if item.reply_key else []) + [service.expect("other.sticker")]
    assert texts == expected
    assert service.cases(user_id) == cases_before
    service.assert_alive()


def test_after_the_whole_corpus_a_normal_photo_is_still_answered(service) -> None:
    user_id = next(_patients)
    service.consent(user_id)
    since = service.client.last_seq()

    service.client.send_photo(user_id, lesion_photo(seed=77))

    ack = service.wait_prefix(user_id, "intake.ack", since=since, timeout=60)
    (case,) = service.cases(user_id)
    case = service.wait_delivered(case.id, proc_names=("worker", "bot"))
    assert case.status == CaseStatus.DONE
    service.settle()
    service.assert_answered_once(user_id, case.id, since=ack["seq"])
    service.assert_alive()


def test_logs_hold_no_token_names_texts_or_photos(service) -> None:
    """After the whole corpus (and a patient with a distinctive name and story), the logs are clean."""
    user_id = next(_patients)
    service.consent(user_id)
    since = service.client.last_seq()
    name, story = "Zebediah-Quixote", "my mole itches since the wedding in Busan"
    service.client.send_message(user_id, text=story, first_name=name)
    service.client.send_photo(user_id, lesion_photo(seed=78), caption=story, first_name=name)
    ack = service.wait_prefix(user_id, "intake.ack", since=since, timeout=60)
    (case,) = service.cases(user_id)
    service.wait_delivered(case.id, proc_names=("worker", "bot"))
    service.settle()

    from tests.reliability.conftest import TOKEN

    for name_of_proc, proc in service.procs.items():
        text = proc.log_path.read_text(errors="replace")
        assert text, f"{name_of_proc} wrote no log at all"
        for secret in (TOKEN, TOKEN.split(":")[1], name, story, "first_name", "Busan"):
            assert secret not in text, f"{secret!r} found in the {name_of_proc} log"
        assert "\\xff\\xd8" not in text and "/9j/" not in text, f"image bytes in the {name_of_proc} log"
    assert ack["seq"] > since
