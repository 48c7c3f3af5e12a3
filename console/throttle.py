"""Login throttling: failed logins counted per (client address, username) with the `limits` library,
and the client address itself, read from X-Forwarded-For only when the direct peer is a trusted proxy.

Keying on the pair, not on the account or the address alone, is what keeps throttling from being
used against clinicians: a stranger who knows a username can only block their own address for that
name, and colleagues behind one NAT or proxy do not block each other.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from starlette.requests import Request

from skintriage.settings import IPNetwork as Network

log = logging.getLogger(__name__)

NAMESPACE = "skintriage-console-login"


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: Iterable[Network]) -> bool:
    return any(address.version == net.version and address in net for net in networks)


def client_address(request: Request, trusted_proxies: Iterable[Network]) -> str:
    """The client's address: the direct peer, or, when that peer is a trusted proxy, the nearest untrusted
    hop in X-Forwarded-For (read from the right, since a client can put anything on the left)."""
    peer = request.client.host if request.client else ""
    current = _ip(peer)
    if current is None:
        return peer or "unknown"
    trusted = tuple(trusted_proxies)
    if not _trusted(current, trusted):
        return str(current)
    hops = [h for header in request.headers.getlist("x-forwarded-for") for h in header.split(",") if h.strip()]
    while hops and _trusted(current, trusted):
        previous = _ip(hops.pop())
        if previous is None:
            # A hop a trusted proxy would never write: stop at the last address we can vouch for.
            break
        current = previous
    return str(current)


class LoginLimiter:
    """At most `max_failures` failed logins per (address, username) in a moving window of `window_s`.

    Counts live in the project's Redis when there is one (shared by every console process) and in
    process memory otherwise. When Redis is unreachable, or hangs past the `redis_options` timeouts
    (Settings.redis_client_options), the limiter keeps working in memory and logs a warning rather than
    refusing, or holding up, every login.
    """

    def __init__(
        self,
        *,
        max_failures: int,
        window_s: int,
        storage_url: str = "memory://",
        redis_options: Mapping[str, Any] | None = None,
    ) -> None:
        if max_failures < 1 or window_s < 1:
            raise ValueError("CONSOLE_LOGIN_MAX_FAILURES and CONSOLE_LOGIN_WINDOW_S must be at least 1")
        self.max_failures = max_failures
        self.window_s = window_s
        self.item = RateLimitItemPerSecond(max_failures, window_s, namespace=NAMESPACE)
        self.storage_url = storage_url
        if storage_url == "memory://":
            storage: Storage = MemoryStorage()
        elif storage_url.startswith(("redis://", "rediss://")):
            storage = storage_from_string(storage_url, **dict(redis_options or {}))
        else:
            storage = storage_from_string(storage_url)
        self._limiter = MovingWindowRateLimiter(storage)
        self._fallback = MovingWindowRateLimiter(MemoryStorage())

    @staticmethod
    def _key(address: str, username: str) -> tuple[str, str]:
        # The name tried may be a mistyped password: keep only a digest of it in the store.
        return address, hashlib.sha256(username.strip().casefold().encode()).hexdigest()[:32]

    def _call(self, method: str, address: str, username: str) -> bool:
        try:
            return bool(getattr(self._limiter, method)(self.item, *self._key(address, username)))
        except Exception as exc:  # noqa: BLE001 - any storage failure: keep throttling in memory
            # The URL may hold a password: log its scheme only.
            scheme = self.storage_url.partition(":")[0]
            log.warning("login limiter storage (%s) failed: %s; counting in memory", scheme, type(exc).__name__)
            return bool(getattr(self._fallback, method)(self.item, *self._key(address, username)))

    def blocked(self, address: str, username: str) -> bool:
        """Whether this address has used up its failed logins for this username."""
        return not self._call("test", address, username)

    def failed(self, address: str, username: str) -> None:
        """Count one failed login."""
        self._call("hit", address, username)

    def clear(self, address: str, username: str) -> None:
        """Forget the failures of this pair (after a successful login, or when an admin unlocks)."""
        self._call("clear", address, username)


def limiter_storage_url(configured: str, broker_url: str) -> str:
    """Where the limiter keeps counts: the configured URL, else the broker's Redis, else process memory."""
    if configured:
        return configured
    if broker_url.startswith(("redis://", "rediss://")):
        return broker_url
    return "memory://"
