"""Throttling of password guesses and signups, shared between processes through Redis.

Counts live in Redis when `REDIS_URL` is set, so every process and machine shares them, and in
this process's memory otherwise. When Redis stops answering, counting moves to memory (each
process then enforces the limit on its own) and Redis is tried again a few seconds later: a
dead Redis must neither lock every user out nor let unlimited guesses through.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar
from urllib.parse import urlsplit

import redis.asyncio
from fastapi import Depends, Request
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from app.config import Settings
from app.email_addresses import lookup_key

logger = logging.getLogger("passgate.ratelimit")

T = TypeVar("T")

# A Redis that accepts connections but never answers must not hold a login for long: each
# socket operation gives up after this, and a whole limiter call after REDIS_CALL_TIMEOUT.
REDIS_SOCKET_TIMEOUT_SECONDS = 0.5
REDIS_CALL_TIMEOUT_SECONDS = 1.0
# After a Redis failure, counting stays in memory this long before Redis is tried again, so
# an outage costs one timeout every few seconds rather than one per request.
REDIS_RETRY_INTERVAL_SECONDS = 5.0

# What is counted, per whom: part of every key, and the reason in "throttled" audit events.
LOGIN_ACCOUNT = "login_account"
LOGIN_ADDRESS = "login_address"
SIGNUP_ADDRESS = "signup_address"
INTROSPECTION_ADDRESS = "introspection_address"
RECOVERY_ADDRESS = "recovery_address"
MAIL_COOLDOWN = "mail_cooldown"

RATE_LIMIT_OK = "ok"
RATE_LIMIT_PER_PROCESS = "per-process"
RATE_LIMIT_DEGRADED = "degraded: per-process fallback"


class Throttled(Exception):
    """Too many attempts: the caller should answer 429 with Retry-After."""

    def __init__(self, *, retry_after: int, key: str) -> None:
        super().__init__(f"throttled on {key}; retry after {retry_after}s")
        self.retry_after = retry_after
        self.key = key


def account_key(email: str) -> str:
    """The account a login names, as a fixed-size key: raw usernames can be 4 KB of anything.

    Every spelling of one address counts against one account; a string that is no address is
    counted under its own caseless form, so it cannot dodge the limit either (`lookup_key`).
    """
    return hashlib.sha256(lookup_key(email).encode("utf-8", "surrogatepass")).hexdigest()


def address_key(host: str | None) -> str:
    """The client's address; IPv6 clients by /64, the block one subscriber usually holds."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _redis_location(url: str) -> str:
    """Host and port of a Redis URL, for log lines that must not show its password."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}" if parts.hostname else parts.scheme


class Throttle:
    """Fixed-window counters of login attempts (per account and per address) and signups.

    An attempt is counted before its password is checked, atomically, so a burst of concurrent
    guesses cannot all pass the check before the first failure is recorded; a successful login
    then gives its unit back to the address and clears the account's count. What remains
    counted is exactly the failed logins, as LOGIN_RATE_LIMIT says.
    """

    def __init__(
        self,
        *,
        login_limit: str,
        signup_limit: str,
        recovery_limit: str = "5 per 15 minutes",
        mail_cooldown_seconds: int = 60,
        redis_url: str | None = None,
        key_prefix: str = "passgate",
    ) -> None:
        self.login_limit: RateLimitItem = parse(login_limit)
        self.signup_limit: RateLimitItem = parse(signup_limit)
        self.recovery_limit: RateLimitItem = parse(recovery_limit)
        self.mail_cooldown: RateLimitItem | None = (
            parse(f"1 per {mail_cooldown_seconds} seconds") if mail_cooldown_seconds else None
        )
        self._memory = MemoryStorage()
        self._redis: RedisStorage | None = None
        self._redis_pool: redis.asyncio.ConnectionPool | None = None
        self._redis_location = ""
        # time.monotonic() before which Redis is not tried; 0 while Redis is believed healthy.
        self._redis_down_until = 0.0
        if redis_url is not None:
            self._redis_location = _redis_location(redis_url)
            self._redis_pool = redis.asyncio.ConnectionPool.from_url(
                redis_url,
                socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
                # One retry on a fresh connection covers a pooled socket that went stale when
                # Redis restarted; more would only stretch an outage's delay.
                retry=Retry(NoBackoff(), 1),
                retry_on_error=[RedisConnectionError],
            )
            self._redis = RedisStorage(
                "async+redis://",  # the pool below decides where to connect
                implementation="redispy",
                connection_pool=self._redis_pool,
                key_prefix=key_prefix,
                wrap_exceptions=True,
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> Throttle:
        return cls(
            login_limit=settings.login_rate_limit,
            signup_limit=settings.signup_rate_limit,
            recovery_limit=settings.recovery_rate_limit,
            mail_cooldown_seconds=settings.recovery_cooldown_seconds,
            redis_url=settings.redis_url,
            key_prefix=settings.redis_key_prefix,
        )

    async def close(self) -> None:
        if self._redis_pool is not None:
            await self._redis_pool.aclose()

    @property
    def status(self) -> str:
        """How counting works right now, as /health/ready reports it."""
        if self._redis is None:
            return RATE_LIMIT_PER_PROCESS
        return RATE_LIMIT_DEGRADED if self._redis_down_until else RATE_LIMIT_OK

    async def check(self) -> str:
        """Ping Redis now, even while it is believed down, and return the resulting status."""
        if self._redis is not None:
            try:
                async with asyncio.timeout(REDIS_CALL_TIMEOUT_SECONDS):
                    answered = await self._redis.check()
            except TimeoutError:
                answered = False
            if answered:
                self._redis_answered()
            else:
                self._redis_failed("no answer to PING")
        return self.status

    async def start_login(self, *, account: str, address: str) -> None:
        """Count a login attempt before its password is checked; Throttled when over the limit."""
        await self._take(
            self.login_limit, (LOGIN_ACCOUNT, account_key(account)), (LOGIN_ADDRESS, address)
        )

    async def login_succeeded(self, *, account: str, address: str) -> None:
        """The password was right: the account starts afresh, the address gets its unit back."""
        await self._call(
            lambda storage: FixedWindowRateLimiter(storage).clear(
                self.login_limit, LOGIN_ACCOUNT, account_key(account)
            )
        )
        await self._give_back(self.login_limit, (LOGIN_ADDRESS, address))

    async def start_client_authentication(self, *, address: str) -> None:
        """Count an /introspect call before its credentials are checked, as logins are."""
        await self._take(self.login_limit, (INTROSPECTION_ADDRESS, address))

    async def client_authenticated(self, *, address: str) -> None:
        """The credentials were right: only failures stay counted against the address."""
        await self._give_back(self.login_limit, (INTROSPECTION_ADDRESS, address))

    async def password_step_passed(self, *, account: str, address: str) -> None:
        """The password was right but a second factor is due: give back the attempt's units.

        The account's count is not cleared, unlike after a full login: the wrong codes that
        follow must add up, however often the password step is repeated.
        """
        await self._give_back(self.login_limit, (LOGIN_ACCOUNT, account_key(account)))
        await self._give_back(self.login_limit, (LOGIN_ADDRESS, address))

    async def start_signup(self, *, address: str) -> None:
        """Count a signup from this address; Throttled when over the limit."""
        await self._take(self.signup_limit, (SIGNUP_ADDRESS, address))

    async def start_recovery(self, *, address: str) -> None:
        """Count a reset or verification request from this address; Throttled when over."""
        await self._take(self.recovery_limit, (RECOVERY_ADDRESS, address))

    async def mail_cooling_down(self, *, purpose: str, email: str) -> bool:
        """Whether a mail of this purpose went to this address moments ago (then: send none).

        Counted for every address, registered or not, so the answer and its cost reveal
        nothing; a request inside the quiet period is answered as usual and sends nothing.
        """
        if self.mail_cooldown is None:
            return False
        item = self.mail_cooldown
        allowed = await self._call(
            lambda storage: FixedWindowRateLimiter(storage).hit(
                item, MAIL_COOLDOWN, purpose, account_key(email)
            )
        )
        return not allowed

    async def _take(self, item: RateLimitItem, *keys: tuple[str, str]) -> None:
        taken: list[tuple[str, str]] = []
        for key in keys:
            taken.append(key)
            allowed = await self._call(
                lambda storage, key=key: FixedWindowRateLimiter(storage).hit(item, *key)
            )
            if not allowed:
                # A refused attempt is not a failed login: undo every count it made, so the
                # counts stay at "attempts let through" and a success can give its unit back.
                for counted in taken:
                    await self._give_back(item, counted)
                raise Throttled(retry_after=await self._retry_after(item, key), key=key[0])

    async def _give_back(self, item: RateLimitItem, key: tuple[str, str]) -> None:
        # A fixed window's count is a plain counter, so giving a unit back is an increment by
        # -1 (the same atomic INCRBY in Redis); the window's expiry is left as it was.
        await self._call(
            lambda storage: storage.incr(item.key_for(*key), item.get_expiry(), amount=-1)
        )

    async def _retry_after(self, item: RateLimitItem, key: tuple[str, str]) -> int:
        stats = await self._call(
            lambda storage: FixedWindowRateLimiter(storage).get_window_stats(item, *key)
        )
        return max(1, math.ceil(stats.reset_time - time.time()))

    async def _call(self, operation: Callable[[Storage], Awaitable[T]]) -> T:
        """Run the operation on Redis while it answers, else on this process's memory."""
        if self._redis is not None and time.monotonic() >= self._redis_down_until:
            try:
                async with asyncio.timeout(REDIS_CALL_TIMEOUT_SECONDS):
                    result = await operation(self._redis)
            except StorageError as exc:
                self._redis_failed(repr(exc.storage_error))
            except TimeoutError:
                self._redis_failed(f"no answer within {REDIS_CALL_TIMEOUT_SECONDS}s")
            else:
                self._redis_answered()
                return result
        return await operation(self._memory)

    def _redis_failed(self, why: str) -> None:
        if not self._redis_down_until:
            logger.warning(
                "Redis at %s does not answer (%s): rate limits are counted per process "
                "until it does",
                self._redis_location,
                why,
            )
        self._redis_down_until = time.monotonic() + REDIS_RETRY_INTERVAL_SECONDS

    def _redis_answered(self) -> None:
        if self._redis_down_until:
            logger.warning(
                "Redis at %s answers again: rate limits are shared again", self._redis_location
            )
            self._redis_down_until = 0.0


async def get_throttle(request: Request) -> Throttle:
    return request.app.state.throttle


def client_address(request: Request) -> str:
    """The peer's address as the server saw it.

    Proxy headers count only where the operator said to trust them (uvicorn's
    --forwarded-allow-ips), which rewrites the peer address before this runs; otherwise a
    client could pick any address with X-Forwarded-For and escape its limit.
    """
    return address_key(request.client.host if request.client else None)


async def get_client_address(request: Request) -> str:
    return client_address(request)


ThrottleDep = Annotated[Throttle, Depends(get_throttle)]
ClientAddress = Annotated[str, Depends(get_client_address)]
