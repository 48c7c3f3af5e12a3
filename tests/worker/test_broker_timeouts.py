"""Bounded waits on the Celery broker: a Redis that hangs instead of refusing costs the bot seconds.

A `TcpProxy` sits between the Celery app and the real Redis; `stall()` keeps connections open and forwards
nothing. Publishing then fails as it does when Redis refuses: `enqueue_*` returns False within its limit
(the bot says the answer is delayed and the sweeper enqueues the case later), and the publish behind it
gives up within the REDIS_*_TIMEOUT_S settings instead of holding a thread forever.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from skintriage.settings import get_settings
from tests.proxy import TcpProxy
from worker.celery_app import TRIAGE_QUEUE, TRIAGE_TASK, broker_options, get_app
from worker.enqueue import ENQUEUE_TIMEOUT_S, enqueue_triage

pytestmark = pytest.mark.redis


@pytest.fixture
def stalling_broker(redis_url: str, settings_env, monkeypatch: pytest.MonkeyPatch) -> Iterator[TcpProxy]:
    """CELERY_BROKER_URL through a proxy in front of the real Redis, with 1 s Redis timeouts."""
    proxy = TcpProxy(6379)
    monkeypatch.setenv("CELERY_BROKER_URL", redis_url.replace("127.0.0.1:6379", f"127.0.0.1:{proxy.port}"))
    monkeypatch.setenv("REDIS_CONNECT_TIMEOUT_S", "1")
    monkeypatch.setenv("REDIS_SOCKET_TIMEOUT_S", "1")
    get_settings.cache_clear()
    yield proxy
    proxy.close()


def queued(redis_url: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.llen(TRIAGE_QUEUE))
    finally:
        client.close()


def test_the_broker_options_carry_the_redis_timeout_settings(stalling_broker) -> None:
    options = broker_options(get_settings())
    assert (options["socket_connect_timeout"], options["socket_timeout"]) == (1.0, 1.0)
    assert options["socket_keepalive"] is True and options["health_check_interval"] == 25
    assert get_app().conf.broker_connection_timeout == 1.0


def test_publishing_to_a_hung_redis_gives_up_in_seconds_like_a_refused_one(stalling_broker, redis_url) -> None:
    assert enqueue_triage(101)  # through the proxy: the job reaches the real Redis
    assert queued(redis_url) == 1

    stalling_broker.stall()
    started = time.monotonic()
    assert enqueue_triage(102) is False  # the bot's answer: "delayed"; the case stays for the sweeper
    assert time.monotonic() - started < ENQUEUE_TIMEOUT_S + 1

    # The publish itself (the thread behind enqueue) ends within the Redis timeouts, with an error.
    outcome: dict[str, object] = {}

    def publish() -> None:
        try:
            get_app().send_task(TRIAGE_TASK, args=[103], queue=TRIAGE_QUEUE, routing_key=TRIAGE_QUEUE, retry=False)
            outcome["sent"] = True
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    thread.join(60)
    hung = thread.is_alive()
    if hung:
        stalling_broker.cut()
    assert not hung, "publishing to a hung Redis is not bounded"
    took = time.monotonic() - started
    assert "error" in outcome, outcome
    assert took < 10, f"publishing took {took:.1f} s"

    stalling_broker.restore()
    assert enqueue_triage(104)
    # 101 and 104, and perhaps a request that sat in the hung connection and reached Redis on restore:
    # a duplicate job, which the tasks ignore (they re-read the row).
    assert 2 <= queued(redis_url) <= 4
