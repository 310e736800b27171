"""Refreshing URL and MDQ sources: on time, one node at a time, never worse.

A URL source is fetched again when its ``next_refresh_at`` comes: a
conditional GET (``If-None-Match`` / ``If-Modified-Since`` from the last
good copy). 304 only moves the schedule; 200 goes through
:func:`idp.saml.sources.apply_document`, which verifies the signature and
applies the document in one transaction, or refuses it whole having
changed nothing.

**The backing copy.** Whatever goes wrong (the partner is down, serves
garbage, a bad signature, an expired document), the registry stays as the
last good copy left it, and so does the copy itself (``document``). The
failure is recorded on the source (``last_error``, ``failures``), logged as
a WARNING naming the source and the cause, and audited; the next attempt
waits ``idp.metadata_refresh_retry_seconds``, doubling up to
``idp.metadata_refresh_retry_max_seconds``. Once the copy itself passes its
``validUntil``, the log line is an ERROR: the source's SPs are then refused
at every SSO start (``requests.usable_sp`` checks expiry per SP).

**When.** After a good fetch (or a 304) the next one is due after the
document's ``cacheDuration``, kept between ``idp.metadata_refresh_min_seconds``
and ``idp.metadata_refresh_max_seconds``, and never later than halfway to its
``validUntil``, so a partner outage has half the validity to be noticed
and fixed before anything stops working.

**One node at a time.** Before fetching, a node takes the source's lease
with one conditional UPDATE (``lease_owner``, ``lease_until``: the row count
says who won, on SQLite and PostgreSQL alike). The lease outlives the
longest fetch; the transaction that applies the result locks the source's
row and checks the lease is still this node's, so a node that overran its
lease writes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from idp.db import utcnow
from idp.models import MetadataSource, ServiceProvider
from idp.saml.fetch import Fetched, FetchError, FetchPolicy, fetch
from idp.saml.sources import SourceError, apply_document

log = logging.getLogger(__name__)

# The kinds a refresher fetches; file and upload sources change by command.
FETCHED_KINDS = ("url", "mdq")
# A lease outlives the longest fetch by this much (applying a 10,000-entity
# aggregate takes under a minute).
LEASE_MARGIN = dt.timedelta(minutes=10)
# Who the audit log says refreshed a source.
BY = "refresher"
# How long the loop sleeps at most, so a source added meanwhile is seen, and
# at least, so nothing can make it spin.
MAX_SLEEP_SECONDS = 60.0
MIN_SLEEP_SECONDS = 1.0
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Schedule:
    """When sources are refreshed; :meth:`from_settings` reads the ini."""

    min_interval: dt.timedelta = dt.timedelta(minutes=10)
    max_interval: dt.timedelta = dt.timedelta(hours=24)
    retry: dt.timedelta = dt.timedelta(minutes=1)
    retry_max: dt.timedelta = dt.timedelta(hours=1)
    max_valid: dt.timedelta = dt.timedelta(days=28)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Schedule:
        return cls(
            min_interval=dt.timedelta(
                seconds=settings["idp.metadata_refresh_min_seconds"]
            ),
            max_interval=dt.timedelta(
                seconds=settings["idp.metadata_refresh_max_seconds"]
            ),
            retry=dt.timedelta(seconds=settings["idp.metadata_refresh_retry_seconds"]),
            retry_max=dt.timedelta(
                seconds=settings["idp.metadata_refresh_retry_max_seconds"]
            ),
            max_valid=dt.timedelta(days=settings["idp.metadata_max_validity_days"]),
        )

    def after_success(
        self,
        now: dt.datetime,
        cache_duration: int | None,
        valid_until: dt.datetime | None,
    ) -> dt.datetime:
        """The next refresh after a good fetch or a 304."""
        interval = (
            dt.timedelta(seconds=cache_duration)
            if cache_duration is not None
            else self.max_interval
        )
        interval = max(self.min_interval, min(interval, self.max_interval))
        due = now + interval
        if valid_until is not None:
            # Well before the copy expires: halfway there, at the latest.
            halfway = now + max((valid_until - now) / 2, self.min_interval)
            due = min(due, halfway)
        return due

    def after_failure(self, now: dt.datetime, failures: int) -> dt.datetime:
        """The next attempt after ``failures`` failures in a row (1 or more)."""
        step = self.retry * (2 ** min(max(failures, 1) - 1, 20))
        return now + min(step, self.retry_max)


def node_name() -> str:
    """This process, as a lease names it: host, process id and a random tag."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{secrets.token_hex(4)}"


def take_lease(
    engine: Engine,
    source_id: int,
    owner: str,
    *,
    now: dt.datetime,
    until: dt.datetime,
) -> bool:
    """Take the source's lease if nobody holds a live one; True if taken.

    One UPDATE whose WHERE clause is the test: of several nodes racing, the
    database lets exactly one change the row (row count 1).
    """
    with engine.begin() as conn:
        result = conn.execute(
            update(MetadataSource)
            .where(
                MetadataSource.id == source_id,
                or_(
                    MetadataSource.lease_until.is_(None),
                    MetadataSource.lease_until < now,
                ),
            )
            .values(lease_owner=owner, lease_until=until)
        )
        return result.rowcount == 1


@dataclass(frozen=True)
class Outcome:
    """What one source's refresh did; ``line`` is what the CLI prints."""

    source: str
    result: str  # updated, unchanged, not modified, failed, busy
    line: str
    error: str | None = None


@dataclass
class Refresher:
    """Refreshes the due URL and MDQ sources of one database, one at a time.

    Every fetch goes through :func:`idp.saml.fetch.fetch` under ``policy``
    (OPS-04); ``owner`` names this process in the leases it takes;
    ``progress(done, total)`` is handed to ``apply_document``.
    """

    engine: Engine
    settings: Mapping[str, Any]
    policy: FetchPolicy
    schedule: Schedule
    owner: str = field(default_factory=node_name)
    clock: Callable[[], dt.datetime] = utcnow
    progress: Callable[[int, int], None] | None = None

    @classmethod
    def from_settings(
        cls, settings: Mapping[str, Any], engine: Engine, **options: Any
    ) -> Refresher:
        return cls(
            engine=engine,
            settings=settings,
            policy=FetchPolicy.from_settings(settings),
            schedule=Schedule.from_settings(settings),
            **options,
        )

    # -- what is due -----------------------------------------------------

    def _schedule(self) -> list[tuple[dt.datetime, str]]:
        """(when due, name) of every URL and MDQ source, soonest first.

        A source another node holds a live lease on is due when that lease
        ends, not before: the loop neither waits on it nor spins on it.
        """
        with Session(self.engine) as session:
            rows = session.execute(
                select(
                    MetadataSource.name,
                    MetadataSource.next_refresh_at,
                    MetadataSource.lease_until,
                ).where(MetadataSource.kind.in_(FETCHED_KINDS))
            ).all()
        schedule = []
        for name, next_refresh_at, lease_until in rows:
            due = next_refresh_at or _EPOCH
            if lease_until is not None:
                due = max(due, lease_until)
            schedule.append((due, name))
        return sorted(schedule)

    def due(self, now: dt.datetime | None = None) -> list[str]:
        """Names of the URL and MDQ sources whose refresh is due."""
        now = now or self.clock()
        return [name for due, name in self._schedule() if due <= now]

    def seconds_until_due(self) -> float:
        """Seconds the loop may sleep: until the next refresh, within 1..60."""
        schedule = self._schedule()
        if not schedule:
            return MAX_SLEEP_SECONDS
        wait = (schedule[0][0] - self.clock()).total_seconds()
        return max(MIN_SLEEP_SECONDS, min(wait, MAX_SLEEP_SECONDS))

    def run(self, stop: Callable[[], bool] | None = None) -> list[Outcome]:
        """Refresh every due source once; a failure never stops the others.

        ``stop()`` is asked before each source: a loop told to stop finishes
        the source under way and leaves the rest for next time.
        """
        outcomes = []
        for name in self.due():
            if stop is not None and stop():
                break
            try:
                outcomes.append(self.refresh(name))
            except SourceError as exc:
                # Removed (or made a file source) since it was listed.
                outcomes.append(Outcome(name, "gone", f"{name}: {exc}"))
        return outcomes

    # -- one source --------------------------------------------------------

    def refresh(self, name: str) -> Outcome:
        """Refresh the source ``name`` now.

        Raises :class:`SourceError` for a source that does not exist or is
        not fetched, and database errors; every other failure is an
        :class:`Outcome`, recorded on the source.
        """
        now = self.clock()
        with Session(self.engine) as session:
            source = session.scalar(
                select(MetadataSource).where(MetadataSource.name == name)
            )
            if source is None:
                raise SourceError(f"no metadata source named {name!r}")
            if source.kind not in FETCHED_KINDS:
                raise SourceError(
                    f"source {name} is a {source.kind} source, not fetched"
                )
            source_id = source.id
            kind = source.kind
        until = now + dt.timedelta(seconds=self.policy.timeout) + LEASE_MARGIN
        if not take_lease(self.engine, source_id, self.owner, now=now, until=until):
            return Outcome(name, "busy", f"{name}: another node is refreshing it")
        try:
            if kind == "url":
                return self._refresh_url(source_id, name)
            from idp.saml.mdq import refresh_mdq_source

            return refresh_mdq_source(self, source_id, name)
        except SQLAlchemyError:
            raise
        except Exception as exc:
            # A fault of ours, not the partner's: the source is marked
            # failing (the backing copy stays) and the loop goes on.
            log.exception("metadata source %s: refresh failed unexpectedly", name)
            return self.failed(
                source_id, f"unexpected {type(exc).__name__}; see the log"
            )
        finally:
            self._release_if_held(source_id)

    def _release_if_held(self, source_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(MetadataSource)
                .where(
                    MetadataSource.id == source_id,
                    MetadataSource.lease_owner == self.owner,
                )
                .values(lease_owner=None, lease_until=None)
            )

    def _refresh_url(self, source_id: int, name: str) -> Outcome:
        with Session(self.engine) as session:
            source = session.get_one(MetadataSource, source_id)
            url = source.location
            expiring = source.valid_until is not None and (
                source.valid_until <= self.clock() + self.schedule.min_interval
            )
            # A 304 cannot renew a copy about to expire: ask for the document.
            # (Its digest says a copy exists, without loading 80 MB of it.)
            conditional = not expiring and source.document_sha256 is not None
            etag = source.etag if conditional else None
            last_modified = source.last_modified if conditional else None
        try:
            fetched = fetch(
                url, policy=self.policy, etag=etag, last_modified=last_modified
            )
        except FetchError as exc:
            return self.failed(source_id, str(exc))
        return self.apply(source_id, name, fetched)

    # -- writing the outcome ----------------------------------------------

    def locked(self, session: Session, source_id: int) -> MetadataSource | None:
        """The source row, locked, if this node still holds its lease."""
        source = session.scalar(
            select(MetadataSource)
            .where(MetadataSource.id == source_id)
            .with_for_update()
        )
        if source is None or source.lease_owner != self.owner:
            return None
        return source

    def apply(self, source_id: int, name: str, fetched: Fetched) -> Outcome:
        """Write a fetch's result: a 304's timing, or the new document."""
        now = self.clock()
        try:
            with Session(self.engine) as session, session.begin():
                source = self.locked(session, source_id)
                if source is None:
                    return Outcome(
                        name, "busy", f"{name}: the lease ran out; nothing written"
                    )
                name = source.name
                if fetched.status == 304:
                    self.succeeded(source, now)
                    return Outcome(
                        name, "not modified", f"{name}: not modified (HTTP 304)"
                    )
                assert fetched.body is not None
                failures = source.failures
                report = apply_document(
                    session,
                    source,
                    fetched.body,
                    now=now,
                    max_valid_until=self.schedule.max_valid,
                    progress=self.progress,
                    by=BY,
                )
                source.failures = failures
                source.fetched_at = now
                source.etag = fetched.etag
                source.last_modified = fetched.last_modified
                self.succeeded(source, now)
                changed = report.added or report.updated or report.removed
                result = "updated" if changed else "unchanged"
                return Outcome(name, result, f"{name}: {report.summary()}")
        except SourceError as exc:
            return self.failed(source_id, str(exc))

    def succeeded(self, source: MetadataSource, now: dt.datetime) -> None:
        """Record a good refresh (a 304 too) and schedule the next one."""
        if source.failures:
            log.warning(
                "metadata source %s: refreshed again after %d failed attempts",
                source.name,
                source.failures,
            )
        source.last_attempt_at = now
        source.last_error = None
        source.failures = 0
        source.next_refresh_at = self.schedule.after_success(
            now, source.cache_duration, source.valid_until
        )

    def failed(self, source_id: int, error: str) -> Outcome:
        """Record a failed refresh; the backing copy stays as it is."""
        from idp.services.audit import AuditLog

        now = self.clock()
        error = " ".join(error.split())[:2000]
        with Session(self.engine) as session, session.begin():
            source = session.get_one(MetadataSource, source_id)
            source.failures += 1
            source.last_error = error
            source.last_attempt_at = now
            source.next_refresh_at = self.schedule.after_failure(now, source.failures)
            name, failures = source.name, source.failures
            valid_until = source.valid_until
            kind = source.kind
            sps = session.scalar(
                select(func.count()).where(ServiceProvider.source_id == source_id)
            )
            AuditLog(session).record(
                "source.refresh_failed",
                detail={
                    "by": BY,
                    "source": name,
                    "error": error,
                    "failures": failures,
                },
            )
        if kind == "mdq":
            log.warning(
                "metadata source %s: refresh failed%s: %s; each of its %d SPs "
                "keeps its last good metadata until that expires",
                name,
                "" if failures == 1 else f" ({failures} attempts in a row)",
                error,
                sps or 0,
            )
        else:
            _log_failure(name, error, failures, valid_until, sps or 0, now)
        return Outcome(name, "failed", f"{name}: refresh failed: {error}", error)


def _log_failure(
    name: str,
    error: str,
    failures: int,
    valid_until: dt.datetime | None,
    sps: int,
    now: dt.datetime,
) -> None:
    attempts = "" if failures == 1 else f" ({failures} attempts in a row)"
    if valid_until is None:
        log.warning(
            "metadata source %s: refresh failed%s: %s; it has no good copy yet",
            name,
            attempts,
            error,
        )
    elif valid_until > now:
        log.warning(
            "metadata source %s: refresh failed%s: %s; the last good copy stays "
            "in force until %s",
            name,
            attempts,
            error,
            f"{valid_until:%Y-%m-%d %H:%M} UTC",
        )
    else:
        log.error(
            "metadata source %s: refresh failed%s: %s; the last good copy expired "
            "at %s: its %d SPs are refused until a refresh succeeds",
            name,
            attempts,
            error,
            f"{valid_until:%Y-%m-%d %H:%M} UTC",
            sps,
        )
