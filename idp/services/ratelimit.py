"""Named rate limiters on a sliding window, in storage every node shares.

Each limiter (``login.identifier``, ``reset.email``...) allows ``COUNT``
attempts per key in ``SECONDS``; :data:`LIMITS` has the defaults and
``ratelimit.<name> = COUNT/SECONDS`` overrides one. The window slides by
weighting two fixed windows: the count is the current window's plus the
previous window's weighted by the part of it that still lies within the last
``SECONDS``, rounded down. Fixed windows start at multiples of ``SECONDS``
since the Unix epoch, so every node agrees on them.

Keys (identity numbers, addresses) are never stored: the storage key is
``name + ":" + HMAC-SHA256(k, key)[:32 hex]``, ``k`` derived from
``idp.hmac_key``.

``ratelimit.storage`` chooses where counters live:

``database`` (the default)
    :class:`DatabaseRateLimiter`, rows of ``throttle_counters`` written
    through the request's ``dbsession``: a hit is part of the request's
    transaction, so a request that pyramid_retry replays counts once, and the
    upsert's row lock makes concurrent hits on one key count exactly.
``redis://...`` or ``rediss://...``
    :class:`RedisRateLimiter`, one Redis every node reaches. Redis is outside
    the transaction, so hits already counted by an earlier attempt of the same
    request are not counted again (see :class:`RedisRateLimiter`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
from collections import Counter
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import Insert as PostgresqlInsert
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from zope.interface import implementer

from idp import metrics
from idp.db import utcnow
from idp.models import ThrottleCounter
from idp.services.interfaces import IRateLimiter
from idp.settings import SettingsError

SETTING_PREFIX = "ratelimit."
STORAGE_SETTING = "ratelimit.storage"
REGISTRY_LIMITS = "idp.ratelimit.limits"
REGISTRY_REDIS = "idp.ratelimit.redis"
# Hits a request has counted in Redis, kept in the WSGI environ that
# pyramid_retry hands to every attempt of the request.
ENVIRON_COUNTED = "idp.ratelimit.counted"

# Limits from settings must stay within these; a window over 30 days or a
# count over a million is a typo, not a policy.
MAX_COUNT = 1_000_000
MAX_SECONDS = 30 * 86400
KEY_HEX_CHARS = 32
_KEY_LABEL = b"idp ratelimit v1"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
_US_PER_SECOND = 1_000_000
# Redis is asked with these unless the URL says otherwise (its query string
# wins), so a dead Redis fails a request in seconds instead of hanging it.
REDIS_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Limit:
    """At most ``count`` attempts per key in any ``seconds``."""

    count: int
    seconds: int


@dataclass(frozen=True)
class Decision:
    """What a limiter says about one key.

    ``count`` is the sliding-window count (after counting, for a hit);
    ``retry_after`` the whole seconds until the count falls back under
    ``limit``, so that one more attempt is allowed again (0 when allowed).
    """

    allowed: bool
    count: int
    limit: int
    retry_after: int


LIMITS: Mapping[str, Limit] = MappingProxyType(
    {
        # Failed passwords per identifier (AUTH-07).
        "login.identifier": Limit(10, 900),
        # Failures per client address, and per IPv4 /24 or IPv6 /64: past
        # them sign-in asks for the captcha (AUTH-08, AUTH-30).
        "login.address": Limit(30, 900),
        "login.prefix": Limit(100, 900),
        # Failures across the whole site; above it sign-in shows a captcha
        # (AUTH-09).
        "login.global": Limit(500, 300),
        # Identifier lookups (the step that shows the image and phrase) per
        # client address, per IPv4 /24 or IPv6 /64, and across the site;
        # past any of them the identifier step asks for the captcha (AUTH-27).
        # A school lab of 40 pupils behind one NAT address, each signing in
        # twice a lesson and mistyping now and then, makes about 120 lookups
        # an hour; 200 leaves room for that plus a teacher or two, and the
        # captcha, not a refusal, meets a lab that goes past it.
        "login.lookup.address": Limit(200, 3600),
        # A /24 holds a whole school (several labs) or a provider's pool.
        "login.lookup.prefix": Limit(1000, 3600),
        # Every lookup on the site: 100 a second over 15 minutes, above a
        # school-morning peak of a few hundred thousand sign-ins an hour, so
        # only a distributed harvest trips it. Set it to about twice the
        # busiest 15 minutes the audit log shows.
        "login.lookup.global": Limit(90000, 900),
        # Locks per identifier per day: each lasts four times the one before,
        # up to the lock that reaches this count (AUTH-29, signin.lock_period).
        "login.locks": Limit(3, 86400),
        "reset.address": Limit(10, 3600),
        "reset.email": Limit(3, 3600),
        # Email changes asked for per account: each mails an address the
        # person typed, so a signed-in account must not become a mailer.
        "account.email": Limit(5, 86400),
        # A school's computer lab registers a whole class from one address.
        "register.address": Limit(200, 3600),
        # Each captcha a form shows and each fetch of its picture or sound;
        # one form view costs two to four, so a lab registering a class of
        # 40 from one address stays well inside it (AUTH-25).
        "captcha.address": Limit(600, 3600),
        # MDQ lookups of SPs nobody registered (idp/saml/mdq.py, OPS-04): an
        # entity ID is looked up once per window (the negative cache); per
        # client address and for the whole IdP, lookups past these get the
        # "unknown service" page without one.
        "mdq.entity": Limit(1, 600),
        "mdq.address": Limit(20, 600),
        "mdq.global": Limit(60, 60),
    }
)


# Settings


def parse_limit(setting: str, value: str) -> Limit:
    """Parse ``COUNT/SECONDS``; raise :class:`SettingsError` naming ``setting``."""
    text = str(value).strip()
    count, slash, seconds = text.partition("/")
    try:
        if not slash:
            raise ValueError
        limit = Limit(int(count.strip()), int(seconds.strip()))
    except ValueError:
        raise SettingsError(
            f"{setting}: must be COUNT/SECONDS, for example 10/900 (got {text!r})"
        ) from None
    if not 1 <= limit.count <= MAX_COUNT:
        raise SettingsError(
            f"{setting}: the count must be between 1 and {MAX_COUNT} (got {text!r})"
        )
    if not 1 <= limit.seconds <= MAX_SECONDS:
        raise SettingsError(
            f"{setting}: the seconds must be between 1 and {MAX_SECONDS} (got {text!r})"
        )
    return limit


def parse_limits(settings: Mapping[str, Any]) -> Mapping[str, Limit]:
    """:data:`LIMITS` with the ``ratelimit.<name>`` settings applied.

    A ``ratelimit.`` setting that names no limiter is refused too, so a typo
    cannot leave a default in force unnoticed.
    """
    limits = dict(LIMITS)
    for setting, value in settings.items():
        if not setting.startswith(SETTING_PREFIX) or setting == STORAGE_SETTING:
            continue
        name = setting.removeprefix(SETTING_PREFIX)
        if name not in LIMITS:
            raise SettingsError(
                f"{setting}: no such rate limiter; known: {', '.join(LIMITS)}"
            )
        if value is None or not str(value).strip():
            continue
        limits[name] = parse_limit(setting, value)
    return MappingProxyType(limits)


def parse_storage(value: str | None) -> str:
    """``database`` or a ``redis://``/``rediss://`` URL; else SettingsError.

    The value is not repeated in the error: a Redis URL may hold a password.
    """
    text = str(value or "").strip() or "database"
    if text == "database":
        return text
    try:
        parts = urlsplit(text)
        # .port raises ValueError when the port is not a number in range.
        ok = parts.scheme in ("redis", "rediss") and bool(parts.hostname)
        ok = ok and (parts.port is None or parts.port > 0)
    except ValueError:
        ok = False
    if not ok:
        raise SettingsError(
            f"{STORAGE_SETTING}: must be database or a redis:// or rediss:// URL "
            "with a host"
        )
    return text


# Keys and windows


def address_prefix(addr: str) -> str:
    """The network an address counts in: its IPv4 /24 or IPv6 /64.

    ``"192.0.2.77"`` gives ``"192.0.2.0/24"``; ``"2001:db8:1:2:3::4"`` gives
    ``"2001:db8:1:2::/64"``. Spellings of one address give one prefix, and an
    IPv4-mapped IPv6 address counts as its IPv4 address. Anything that is not
    an address comes back stripped and otherwise unchanged, so it is still
    counted, by itself.
    """
    text = str(addr).strip()
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ipaddress.IPv4Network((int(ip) >> 8 << 8, 24)))
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))


def derive_key(secret: str) -> bytes:
    """The rate limiter's own HMAC key, derived from ``idp.hmac_key``."""
    return hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def storage_key(hmac_key: bytes, name: str, key: str) -> str:
    """``name:<32 hex>``: what storage holds instead of ``key``."""
    digest = hmac.new(
        hmac_key, str(key).encode("utf-8", "surrogatepass"), hashlib.sha256
    ).hexdigest()
    return f"{name}:{digest[:KEY_HEX_CHARS]}"


def window_position(now: dt.datetime, seconds: int) -> tuple[int, int]:
    """The fixed window ``now`` falls in and how far into it, in microseconds.

    Windows are numbered from the Unix epoch: window ``n`` starts at
    ``n * seconds``.
    """
    since_epoch = (now - _EPOCH) // _MICROSECOND
    window = seconds * _US_PER_SECOND
    return since_epoch // window, since_epoch % window


def window_start(index: int, seconds: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(seconds=index * seconds)


def sliding_count(current: int, previous: int, elapsed_us: int, seconds: int) -> int:
    """``current + previous * (1 - elapsed/window)``, rounded up, exactly.

    Rounded up, not down: a count must never dip below the attempts still
    inside the window, or crossing a window boundary would hand an attacker
    one free attempt past a lockout.
    """
    window = seconds * _US_PER_SECOND
    return current + -(-previous * (window - elapsed_us) // window)


def retry_after(current: int, previous: int, elapsed_us: int, limit: Limit) -> int:
    """Whole seconds until the count is under ``limit.count`` with no more hits.

    While the current window is under the limit, the count falls as the
    previous window's weight does; otherwise it must wait for the next
    window, where this one becomes the previous and is weighted down in turn.
    """
    window = limit.seconds * _US_PER_SECOND
    if sliding_count(current, previous, elapsed_us, limit.seconds) < limit.count:
        return 0
    # With the weight rounded up, the count is under the limit once
    # weight * n <= limit - 1 - (what is not weighted); solve for that
    # moment and take the first whole second at or after it.
    if current < limit.count:
        wait = (
            window
            - elapsed_us
            - Fraction((limit.count - 1 - current) * window, previous)
        )
    else:
        wait = 2 * window - elapsed_us - Fraction((limit.count - 1) * window, current)
    return max(1, -(-wait // _US_PER_SECOND))


def decide(
    current: int, previous: int, elapsed_us: int, limit: Limit, *, counted: bool
) -> Decision:
    """The decision for a key whose windows hold ``current`` and ``previous``.

    After a hit (``counted``) the attempt just counted is allowed while the
    count is at most the limit; without one (a check), the answer is whether
    one more attempt would be, so a check and the hit that follows agree.
    """
    count = sliding_count(current, previous, elapsed_us, limit.seconds)
    allowed = count <= limit.count if counted else count < limit.count
    wait = 0 if allowed else retry_after(current, previous, elapsed_us, limit)
    return Decision(allowed, count, limit.count, wait)


class _Limiter:
    def __init__(
        self, secret: str, limits: Mapping[str, Limit] = LIMITS, *, clock=utcnow
    ) -> None:
        if not secret:
            raise ValueError("the rate limiter needs idp.hmac_key")
        self.limits = limits
        self.clock = clock
        self._hmac_key = derive_key(secret)

    def private_key(self, name: str, key: str) -> str:
        """What storage holds for ``key`` under ``name``: an HMAC, never the key."""
        return storage_key(self._hmac_key, name, key)

    @staticmethod
    def _counted_hit(name: str, decision: Decision) -> Decision:
        """``/metrics``: a hit past its limit, by the limit's name (a
        bounded set), never its key."""
        if not decision.allowed:
            metrics.rate_limit_exceeded(name)
        return decision

    def _lookup(self, name: str, key: str) -> tuple[Limit, str]:
        try:
            limit = self.limits[name]
        except KeyError:
            raise KeyError(f"no rate limiter named {name!r}") from None
        return limit, storage_key(self._hmac_key, name, key)


@implementer(IRateLimiter)
class DatabaseRateLimiter(_Limiter):
    """Counters in ``throttle_counters``, in the caller's transaction."""

    def __init__(
        self,
        dbsession,
        secret: str,
        limits: Mapping[str, Limit] = LIMITS,
        *,
        clock=utcnow,
    ) -> None:
        super().__init__(secret, limits, clock=clock)
        self.dbsession = dbsession

    @classmethod
    def create_service(cls, context, request) -> DatabaseRateLimiter:
        return cls(
            request.dbsession,
            request.registry.settings["idp.hmac_key"],
            request.registry[REGISTRY_LIMITS],
        )

    # Statements name the mapped class, not its table: zope.sqlalchemy only
    # sees ORM statements, and a request whose only write was a Core one
    # would be rolled back at its end instead of committed.

    def _counts(self, key: str, index: int, seconds: int) -> tuple[int, int]:
        current_start = window_start(index, seconds)
        previous_start = window_start(index - 1, seconds)
        rows = self.dbsession.execute(
            select(ThrottleCounter.window_start, ThrottleCounter.count).where(
                ThrottleCounter.key == key,
                ThrottleCounter.window_start.in_([current_start, previous_start]),
            )
        )
        counts = dict(rows.all())
        return counts.get(current_start, 0), counts.get(previous_start, 0)

    def _increment(self, key: str, index: int, seconds: int) -> int:
        dialect = self.dbsession.get_bind().dialect.name
        insert: Callable[..., PostgresqlInsert | SqliteInsert]
        if dialect == "postgresql":
            insert = postgresql_insert
        elif dialect == "sqlite":
            insert = sqlite_insert
        else:
            raise RuntimeError(
                f"rate limits: only SQLite and PostgreSQL are supported, not {dialect}"
            )
        start = window_start(index, seconds)
        statement = (
            insert(ThrottleCounter)
            .values(
                key=key,
                window_start=start,
                count=1,
                # The window is needed while it is the current or previous one.
                expires_at=start + dt.timedelta(seconds=2 * seconds),
            )
            .on_conflict_do_update(
                index_elements=[ThrottleCounter.key, ThrottleCounter.window_start],
                set_={"count": ThrottleCounter.count + 1},
            )
            .returning(ThrottleCounter.count)
        )
        return self.dbsession.execute(statement).scalar_one()

    def hit(self, name: str, key: str) -> Decision:
        limit, skey = self._lookup(name, key)
        now = self.clock()
        index, elapsed = window_position(now, limit.seconds)
        current = self._increment(skey, index, limit.seconds)
        _, previous = self._counts(skey, index, limit.seconds)
        return self._counted_hit(
            name, decide(current, previous, elapsed, limit, counted=True)
        )

    def check(self, name: str, key: str) -> Decision:
        limit, skey = self._lookup(name, key)
        index, elapsed = window_position(self.clock(), limit.seconds)
        current, previous = self._counts(skey, index, limit.seconds)
        return decide(current, previous, elapsed, limit, counted=False)

    def reset(self, name: str, key: str) -> None:
        _, skey = self._lookup(name, key)
        self.dbsession.execute(
            delete(ThrottleCounter)
            .where(ThrottleCounter.key == skey)
            .execution_options(synchronize_session=False)
        )


@implementer(IRateLimiter)
class RedisRateLimiter(_Limiter):
    """Counters in Redis: ``<storage key>:<window number>``, expiring.

    A hit is one MULTI/EXEC: INCR and EXPIRE of the current window and GET of
    the previous one. pyramid_retry replays a failed request with the same
    WSGI environ; ``counted`` (kept there by :meth:`create_service`) records
    how many hits each key got in earlier attempts, and a replayed hit only
    reads. One instance per request, as ``find_service(..., context=None)``
    gives, so each attempt starts its own tally.
    """

    def __init__(
        self,
        client,
        secret: str,
        limits: Mapping[str, Limit] = LIMITS,
        *,
        clock=utcnow,
        counted: MutableMapping[str, int] | None = None,
    ) -> None:
        super().__init__(secret, limits, clock=clock)
        self.client = client
        self._counted = {} if counted is None else counted
        self._tally: Counter[str] = Counter()

    @classmethod
    def create_service(cls, context, request) -> RedisRateLimiter:
        return cls(
            request.registry[REGISTRY_REDIS],
            request.registry.settings["idp.hmac_key"],
            request.registry[REGISTRY_LIMITS],
            counted=request.environ.setdefault(ENVIRON_COUNTED, {}),
        )

    @staticmethod
    def _window_keys(skey: str, index: int) -> tuple[str, str]:
        return f"{skey}:{index}", f"{skey}:{index - 1}"

    def hit(self, name: str, key: str) -> Decision:
        limit, skey = self._lookup(name, key)
        index, elapsed = window_position(self.clock(), limit.seconds)
        current_key, previous_key = self._window_keys(skey, index)
        self._tally[skey] += 1
        if self._tally[skey] <= self._counted.get(skey, 0):
            current, previous = self.client.mget(current_key, previous_key)
        else:
            # Keep the window while it is the current or the previous one.
            ttl = -(-(2 * limit.seconds * _US_PER_SECOND - elapsed) // _US_PER_SECOND)
            with self.client.pipeline(transaction=True) as pipe:
                pipe.incr(current_key)
                pipe.expire(current_key, ttl)
                pipe.get(previous_key)
                current, _, previous = pipe.execute()
            self._counted[skey] = self._tally[skey]
        return self._counted_hit(
            name,
            decide(int(current or 0), int(previous or 0), elapsed, limit, counted=True),
        )

    def check(self, name: str, key: str) -> Decision:
        limit, skey = self._lookup(name, key)
        index, elapsed = window_position(self.clock(), limit.seconds)
        current, previous = self.client.mget(*self._window_keys(skey, index))
        return decide(
            int(current or 0), int(previous or 0), elapsed, limit, counted=False
        )

    def reset(self, name: str, key: str) -> None:
        limit, skey = self._lookup(name, key)
        index, _ = window_position(self.clock(), limit.seconds)
        self.client.delete(*self._window_keys(skey, index))


def make_redis_client(url: str):
    """A client with its own connection pool; one per process is enough."""
    import redis

    return redis.Redis.from_url(
        url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )


def includeme(config) -> None:
    settings = config.get_settings()
    config.registry[REGISTRY_LIMITS] = parse_limits(settings)
    storage = parse_storage(settings.get(STORAGE_SETTING))
    factory: type[DatabaseRateLimiter | RedisRateLimiter]
    if storage == "database":
        factory = DatabaseRateLimiter
    else:
        config.registry[REGISTRY_REDIS] = make_redis_client(storage)
        factory = RedisRateLimiter
    config.register_service_factory(factory.create_service, IRateLimiter)
