"""worker.failures.classify: the one place that decides what a failed triage job means for its case."""

from __future__ import annotations

import pytest
import torch
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from ml.errors import InvalidImageError, ModelUnavailableError
from skintriage.exceptions import ImageNotFound, InfrastructureError, InvalidKey, StorageError
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
