"""worker.failures.classify: the one place that decides what a failed triage job means for its case."""

from __future__ import annotations

import pytest
import torch
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from ml.errors import InvalidImageError, ModelUnavailableError
from skintriage.exceptions import AnswerWithdrawn, ImageNotFound, InfrastructureError, InvalidKey, StorageError
from skintriage.vocabulary import RetakeReason
from worker.failures import Failure, classify


def _raised(call) -> BaseException:
    with pytest.raises(Exception) as info:
        call()
    return info.value


def test_torch_out_of_memory_is_the_workers_failure_not_the_photos() -> None:
    exc = _raised(lambda: torch.empty(1 << 62, dtype=torch.uint8))  # torch's own allocator error
    assert isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
    assert classify(exc) is Failure.INFRASTRUCTURE
    assert classify(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")) is Failure.INFRASTRUCTURE


def test_tensorflow_errors_are_infrastructure() -> None:
    import tensorflow as tf

    exc = _raised(lambda: tf.raw_ops.Reshape(tensor=tf.zeros([6]), shape=[4]))
    assert isinstance(exc, tf.errors.OpError) and not isinstance(exc, RuntimeError)
    assert classify(exc) is Failure.INFRASTRUCTURE


@pytest.mark.parametrize(
    "exc",
    [MemoryError(), InfrastructureError("models failed to load"), OSError(5, "I/O error"), ImportError("libcudnn")],
)
def test_memory_load_and_library_failures_are_infrastructure(exc: BaseException) -> None:
    assert classify(exc) is Failure.INFRASTRUCTURE


def test_a_missing_model_stays_a_missing_model() -> None:
    assert classify(ModelUnavailableError("no card in /models")) is Failure.MODEL_MISSING


def test_an_unreachable_database_or_store_is_transient(tmp_path) -> None:
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1})
    exc = _raised(engine.connect)
    assert isinstance(exc, OperationalError)
    assert classify(exc) is Failure.TRANSIENT
    assert classify(StorageError("S3 timed out")) is Failure.TRANSIENT
    dropped = DBAPIError("SELECT 1", {}, Exception("server closed the connection"), connection_invalidated=True)
    assert classify(dropped) is Failure.TRANSIENT


def test_a_bad_photo_or_a_bug_it_triggers_is_never_retried(tmp_path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.sqlite'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
    with engine.begin() as conn:
        duplicate = _raised(lambda: conn.execute(text("INSERT INTO t VALUES (1)")))
    assert isinstance(duplicate, IntegrityError)
    for exc in (
        InvalidImageError(RetakeReason.UNREADABLE, "not a JPEG or PNG"),
        ImageNotFound("gone"),
        InvalidKey("../x"),
        ValueError("expected an RGB image"),
        KeyError("MEL"),
        duplicate,
    ):
        assert classify(exc) is Failure.BAD_INPUT, exc


def test_send_failures_mean_the_same_for_an_answer_and_an_outbox_message() -> None:
    from datetime import timedelta

    from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError, TimedOut

    from worker.failures import Send, send_failure

    expected = {
        AnswerWithdrawn("case 3 was deleted while its answer was on its way"): (Send.WITHDRAWN, "withdrawn", None),
        Forbidden("bot was blocked by the user"): (Send.REFUSED, "forbidden", None),
        BadRequest("chat not found"): (Send.REFUSED, "bad_request", None),
        RetryAfter(timedelta(seconds=7)): (Send.WAIT, "retry_after", 7.0),
        InvalidToken(): (Send.RETRY, "invalid_token", None),
        TimedOut(): (Send.RETRY, "timed_out", None),
        NetworkError("Bad Gateway"): (Send.RETRY, "network", None),
        TelegramError("something else"): (Send.RETRY, "telegram", None),
        StorageError("S3 timed out"): (Send.RETRY, "storage", None),
        OperationalError("SELECT 1", {}, Exception("server closed the connection")): (Send.RETRY, "database", None),
    }
    for exc, (action, reason, wait_s) in expected.items():
        failure = send_failure(exc)
        assert failure is not None and (failure.action, failure.reason, failure.wait_s) == (action, reason, wait_s)
    # A bug is no send failure: it goes up.
    assert send_failure(KeyError("chat_id")) is None
    assert send_failure(ImageNotFound("gone")) is not None  # the image store's errors are retried, as before
