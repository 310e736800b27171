"""Assertions per SP and hour, for the admin console's charts.

Nothing else about a successful single sign-on lasts: session rows and
replay records are purged within hours. A database write per SSO would
cost every module click a statement and make the busiest SP's row a point
of contention between nodes, so each node counts in memory and adds its
counts to ``sso_hourly_counts`` about once a minute, in the transaction of
the SSO that finds the minute over (one upsert, after its own writes). A
node that dies, or a flush whose request fails, loses at most that minute:
the charts are counts for people, not a ledger. No count leaves memory
for an SP removed meanwhile.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable

from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from idp.models import ServiceProvider, SsoHourlyCount

FLUSH_SECONDS = 60.0


def _upsert(dialect: str):
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(SsoHourlyCount).values(
        sp_id=bindparam("sp_id"), hour=bindparam("hour"), count=bindparam("n")
    )
    return statement.on_conflict_do_update(
        index_elements=[SsoHourlyCount.sp_id, SsoHourlyCount.hour],
        set_={"count": SsoHourlyCount.count + statement.excluded.count},
    )


_UPSERTS = {dialect: _upsert(dialect) for dialect in ("postgresql", "sqlite")}


class SsoTally:
    """This node's assertions per (SP, UTC hour) since its last flush."""

    def __init__(
        self,
        interval: float = FLUSH_SECONDS,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.interval = interval
        self._monotonic = monotonic
        self._now = now
        self._lock = threading.Lock()
        self._counts: dict[tuple[int, dt.datetime], int] = {}
        self._due = monotonic() + interval

    def count(self, sp_id: int) -> None:
        hour = self._now().replace(minute=0, second=0, microsecond=0)
        with self._lock:
            key = (sp_id, hour)
            self._counts[key] = self._counts.get(key, 0) + 1

    def due(self) -> bool:
        return self._monotonic() >= self._due

    def take(self) -> dict[tuple[int, dt.datetime], int]:
        """The counts so far, leaving none; the next flush is due in ``interval``."""
        with self._lock:
            counts, self._counts = self._counts, {}
            self._due = self._monotonic() + self.interval
        return counts

    def flush(self, dbsession: Session) -> None:
        """Add the counts to ``sso_hourly_counts`` in ``dbsession``'s transaction."""
        from idp.db import execute_write

        counts = self.take()
        if not counts:
            return
        statement = _UPSERTS[dbsession.get_bind().dialect.name]
        rows = [{"sp_id": sp, "hour": hour, "n": n} for (sp, hour), n in counts.items()]
        try:
            with dbsession.begin_nested():
                execute_write(dbsession, statement, rows)
        except IntegrityError:
            # An SP removed since it was counted: keep the others' counts.
            alive = set(
                dbsession.scalars(
                    select(ServiceProvider.id).where(
                        ServiceProvider.id.in_({row["sp_id"] for row in rows})
                    )
                )
            )
            rows = [row for row in rows if row["sp_id"] in alive]
            if rows:
                with dbsession.begin_nested():
                    execute_write(dbsession, statement, rows)
