"""Prometheus metrics: what ``/metrics`` serves (idp.views.metrics).

Two kinds, kept apart on purpose:

* **Counters and a histogram** bumped on the hot path: one increment each,
  no database, no lock beyond prometheus_client's own. Every label has a
  bounded set of values: a route *name* (never a path), a status class, a
  fixed outcome, an SP's entity ID from the registry (or ``all``). Nothing
  a user types (an identity number, an email, an issuer nobody registered)
  ever becomes a label value, so a client cannot mint series.
* **Gauges computed at scrape time** by :class:`DatabaseCollector`: the
  outbox, the metadata sources, the signing keys and the engine's pool,
  read once per scrape on a connection of their own (not from the
  requests' pool) with short connect and statement timeouts. A failure
  there makes ``idme_scrape_error 1`` and leaves those gauges out; the
  scrape itself still answers 200.

Several processes on one host (two waitress nodes, the workers) each count
in their own memory unless ``PROMETHEUS_MULTIPROC_DIR`` names a directory
they share, set before the process starts: prometheus_client then keeps the
values in files there and :func:`exposition` sums them with its
``MultiProcessCollector``. See README.md, "Metrics".
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

# What generate_latest writes, which every Prometheus version reads.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The route label of a request no route matched (404s, probes).
NO_ROUTE = "none"
#: The sp label when ``idp.metrics_sso_by_sp`` is off, or no SP is known.
ALL_SPS = "all"
UNKNOWN_SP = "unknown"
#: How long the scrape-time queries may take, in seconds.
SCRAPE_TIMEOUT = 2

REQUESTS = Counter(
    "idme_requests",
    "Requests answered, by route name and status class.",
    ["route", "status_class"],
)
REQUEST_SECONDS = Histogram(
    "idme_request_seconds",
    "Time to answer a request, by route name.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SIGN_INS = Counter(
    "idme_sign_ins",
    "Sign-in attempts by outcome (success, failed, throttled, locked).",
    ["outcome"],
)
SSO = Counter(
    "idme_sso",
    "Single sign-on answers by SP entity ID and outcome.",
    ["sp", "outcome"],
)
SLO = Counter("idme_slo", "Single logout messages by outcome.", ["outcome"])
RATE_LIMITED = Counter(
    "idme_rate_limit_exceeded",
    "Hits counted past a rate limit, by the limit's name.",
    ["limit"],
)

#: Audit events that are sign-in outcomes (idp.services.audit counts them).
SIGN_IN_EVENTS = {
    "login.success": "success",
    "login.failure": "failed",
    "login.code_failure": "failed",
    "login.throttled": "throttled",
    "account.locked": "locked",
}
#: Every SLO outcome label; anything else is refused, not counted.
SLO_OUTCOMES = frozenset(
    {"started", "unknown_principal", "leg_done", "leg_failed", "refused"}
)


# --------------------------------------------------------------------------
# One attempt of a request, counted once
#
# pyramid_retry runs a request again from the start when its transaction
# meets a serialization failure or a deadlock (``retry.attempts``). What
# the thrown-away attempt counted (a sign-in's outcome, an SSO answer, a
# rate limit's hit, the request itself) would then count twice. So during
# a request's attempt (``idp.requestlog``'s tween, around each one) the
# increments are held, and made only if that attempt is the one that
# answers. Outside a request (workers, commands) they are made at once.

_attempt = threading.local()


def _count(increment: Callable[[], None]) -> None:
    held = getattr(_attempt, "held", None)
    if held is None:
        increment()
    else:
        held.append(increment)


@contextlib.contextmanager
def attempt() -> Iterator[list[Callable[[], None]]]:
    """Hold this thread's increments until :func:`count_held` (or drop them)."""
    previous = getattr(_attempt, "held", None)
    held: list[Callable[[], None]] = []
    _attempt.held = held
    try:
        yield held
    finally:
        _attempt.held = previous


def count_held(held: list[Callable[[], None]]) -> None:
    """Make the increments an attempt held: it is the one that answered."""
    for increment in held:
        increment()


def audited(event: str, *, by_operator: bool = False) -> None:
    """Counts ``event`` if it is a sign-in outcome; ignores every other.

    An operator's lock (an actor recorded) is no sign-in's outcome. Counted
    when audited: a request whose transaction then fails was still tried
    (unless pyramid_retry tries it again, see above).
    """
    outcome = SIGN_IN_EVENTS.get(event)
    if outcome is not None and not by_operator:
        _count(SIGN_INS.labels(outcome).inc)


def request_done(route: str | None, status: int, seconds: float) -> None:
    name = route or NO_ROUTE
    REQUESTS.labels(name, f"{status // 100}xx").inc()
    REQUEST_SECONDS.labels(name).observe(seconds)


def sso_answered(entity_id: str | None, outcome: str, *, by_sp: bool) -> None:
    """``entity_id`` must come from the registry (a known SP), never a request."""
    sp = (entity_id or UNKNOWN_SP) if by_sp else ALL_SPS
    _count(SSO.labels(sp, outcome).inc)


def rate_limit_exceeded(name: str) -> None:
    """``name`` is a limit's name (idp.services.ratelimit.LIMITS), never a key."""
    _count(RATE_LIMITED.labels(name).inc)


def slo_outcome(outcome: str) -> None:
    if outcome not in SLO_OUTCOMES:
        raise ValueError(f"unknown SLO outcome {outcome!r}")
    _count(SLO.labels(outcome).inc)


# --------------------------------------------------------------------------
# Scrape-time gauges


def _seconds_since(moment: dt.datetime, now: dt.datetime) -> float:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (now - moment).total_seconds()


_SCRAPE_ENGINES: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def scrape_engine(engine: Engine) -> Engine:
    """The scrape's own engine for ``engine``'s database: no pool (one
    connection per scrape, every 15 s or so), a connect timeout, and never a
    wait for the requests' pool, which is when the gauges matter most."""
    own = _SCRAPE_ENGINES.get(engine)
    if own is None:
        timeout = (
            {"connect_timeout": SCRAPE_TIMEOUT}
            if engine.dialect.name == "postgresql"
            else {"timeout": SCRAPE_TIMEOUT}
        )
        own = create_engine(engine.url, poolclass=NullPool, connect_args=timeout)
        _SCRAPE_ENGINES[engine] = own
    return own


class DatabaseCollector(Collector):
    """Gauges read from the database once per scrape, never per request.

    ``engine`` is the requests' engine: its pool is reported, and its
    database read through :func:`scrape_engine`.
    """

    def __init__(self, engine: Engine, clock=None) -> None:
        self.engine = engine
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._pool()
        try:
            families = self._read()
        except Exception:  # a scrape must answer, whatever broke
            log.exception("metrics: the database gauges could not be read")
            families = []
            error = 1
        else:
            error = 0
        yield from families
        yield GaugeMetricFamily(
            "idme_scrape_error",
            "1 when this scrape could not read the database gauges.",
            value=error,
        )

    def _pool(self) -> Iterator[GaugeMetricFamily]:
        pool = self.engine.pool
        for name, method, doc in (
            ("idme_db_pool_checked_out", "checkedout", "Connections in use."),
            ("idme_db_pool_size", "size", "The pool's configured size."),
            ("idme_db_pool_overflow", "overflow", "Connections beyond the size."),
        ):
            read = getattr(pool, method, None)
            if read is not None:
                yield GaugeMetricFamily(name, doc, value=read())

    def _read(self) -> list[GaugeMetricFamily]:
        now = self.clock()
        with scrape_engine(self.engine).connect() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text(f"SET LOCAL statement_timeout = {SCRAPE_TIMEOUT * 1000}")
                )
            depth, oldest = connection.execute(
                text(
                    "SELECT count(*), min(created_at) FROM mail_outbox"
                    " WHERE sent_at IS NULL"
                )
            ).one()
            sources = connection.execute(
                text(
                    "SELECT name, fetched_at, valid_until FROM metadata_sources"
                    " ORDER BY name"
                )
            ).all()
            signing = connection.execute(
                text(
                    "SELECT kid, state, not_after FROM signing_keys"
                    " WHERE state <> 'retired' ORDER BY kid"
                )
            ).all()
            connection.rollback()
        outbox = GaugeMetricFamily(
            "idme_outbox_depth", "Unsent outbox rows (mails and jobs)."
        )
        outbox.add_metric([], depth)
        age = GaugeMetricFamily(
            "idme_outbox_oldest_age_seconds",
            "Age of the oldest unsent outbox row (0 when none).",
        )
        age.add_metric([], _seconds_since(_moment(oldest), now) if oldest else 0)
        fresh = GaugeMetricFamily(
            "idme_metadata_source_age_seconds",
            "Seconds since the source's last successful fetch.",
            labels=["source"],
        )
        expiry = GaugeMetricFamily(
            "idme_metadata_source_expiry_seconds",
            "Seconds until the source's document expires (validUntil).",
            labels=["source"],
        )
        for name, fetched_at, valid_until in sources:
            if fetched_at is not None:
                fresh.add_metric([name], _seconds_since(_moment(fetched_at), now))
            if valid_until is not None:
                expiry.add_metric([name], -_seconds_since(_moment(valid_until), now))
        keys = GaugeMetricFamily(
            "idme_signing_key_expiry_days",
            "Days until a signing certificate's notAfter.",
            labels=["kid", "state"],
        )
        for kid, state, not_after in signing:
            keys.add_metric(
                [kid, state], -_seconds_since(_moment(not_after), now) / 86400
            )
        return [outbox, age, fresh, expiry, keys]


def _moment(value) -> dt.datetime:
    """A timestamp as the driver gives it (SQLite's raw query: a string)."""
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))


def exposition(engine: Engine) -> bytes:
    """The whole text exposition: the counters and this scrape's gauges."""
    if os.environ.get(MULTIPROC_ENV):
        counted = CollectorRegistry()
        MultiProcessCollector(counted)
    else:
        counted = REGISTRY
    scraped = CollectorRegistry()
    scraped.register(DatabaseCollector(engine))
    return generate_latest(counted) + generate_latest(scraped)
