"""The hash-chained, append-only audit log (DATA-07).

Each row stores the hash of the row before it (64 zeros for the first) and
its own hash over that and its content::

    hash = sha256(prev_hash + canonical JSON of
                  [occurred_at, event, actor, subject, client_address, detail])

so :func:`verify` finds an edited row where it was edited, and a deleted one
at the row after it. The database refuses UPDATE and DELETE outright
(migration 0003); the chain catches what someone with the power to drop a
trigger does anyway. Deleting the newest rows leaves a shorter, intact
chain: compare ``checked`` with a count kept elsewhere to catch that.

Appends are serialised so the chain stays linear. On PostgreSQL a recording
transaction takes a transaction-scoped advisory lock before it reads the last
hash and holds it until it commits or aborts, so recording transactions
commit one at a time: record late in a transaction. This relies on READ
COMMITTED (the default), where the read after the lock sees the previous
holder's commit. On SQLite the recording transaction takes the writer's
turn before that read (:func:`idp.db.take_write_turn`): one writer at a
time, and its reads after the turn see every earlier commit.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

from sqlalchemy import String, select, text
from sqlalchemy.engine import Connection
from zope.interface import implementer

from idp import metrics
from idp.db import take_write_turn, utcnow
from idp.models import AuditEvent
from idp.services.interfaces import IAuditLog

GENESIS_HASH = "0" * 64
#: The advisory lock key: the ASCII bytes of "idpaudit", easy to spot in pg_locks.
ADVISORY_LOCK_KEY = int.from_bytes(b"idpaudit", "big")
#: How many rows :func:`verify` holds at a time.
VERIFY_BATCH = 1000
#: The maintenance switch of migration 0003 (see :func:`audit_maintenance`).
MAINTENANCE_SETTING = "idp.audit_maintenance"
MAINTENANCE_FUNCTION = "idp_audit_maintenance"


def _length(column) -> int:
    """The declared length of a ``String`` column of :class:`AuditEvent`."""
    length = cast(String, column.type).length
    assert length is not None, f"{column} has no length"
    return length


_EVENT_MAX = _length(AuditEvent.__table__.c.event)
_ADDRESS_MAX = _length(AuditEvent.__table__.c.client_address)


def canonical_json(value) -> str:
    """The one JSON text of ``value`` that is hashed: sorted keys, no spaces.

    Raises ``TypeError`` for what JSON cannot hold and ``ValueError`` for
    NaN and infinities, which PostgreSQL's JSON would refuse.
    """
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def chain_hash(
    prev_hash: str,
    *,
    occurred_at: dt.datetime,
    event: str,
    actor_user_id: uuid.UUID | None,
    subject_user_id: uuid.UUID | None,
    client_address: str | None,
    detail: dict,
) -> str:
    """The hash of one row, given the hash of the row before it."""
    content = [
        occurred_at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        event,
        None if actor_user_id is None else str(actor_user_id),
        None if subject_user_id is None else str(subject_user_id),
        client_address,
        detail,
    ]
    payload = prev_hash + canonical_json(content)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _as_uuid(value: uuid.UUID | str | None) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(value)


@implementer(IAuditLog)
class AuditLog:
    def __init__(self, dbsession, clock=utcnow):
        self.dbsession = dbsession
        self.clock = clock

    @classmethod
    def create_service(cls, context, request) -> AuditLog:
        return cls(request.dbsession)

    def record(
        self,
        event: str,
        *,
        subject_user_id: uuid.UUID | None = None,
        actor_user_id: uuid.UUID | None = None,
        client_address: str | None = None,
        detail: dict | None = None,
    ) -> AuditEvent:
        """Append one event in the caller's transaction and return its row.

        Raises ``ValueError`` for an empty or over-long ``event`` or
        ``client_address``, a user id that is not a UUID and a ``detail``
        JSON cannot hold. User ids may be given as strings. What is
        stored is ``detail`` as JSON gives it back (tuples become lists), so
        the hash checks out after a round trip.
        """
        fields = self._fields(
            event,
            subject_user_id=subject_user_id,
            actor_user_id=actor_user_id,
            client_address=client_address,
            detail=detail,
        )
        row = self._append([fields])[0]
        # Sign-in outcomes only (an allow-list of event names).
        metrics.audited(event, by_operator=actor_user_id is not None)
        return row

    def record_many(self, events: list[tuple[str, dict]]) -> list[AuditEvent]:
        """Append ``(event, detail)`` pairs in order, as :meth:`record` would
        one by one, but under one lock, one read of the chain's end and one
        flush: a bulk change (a federation's 10,000 SPs) audits each of its
        parts without 10,000 round trips. Everything is checked before
        anything is added."""
        checked = [self._fields(event, detail=detail) for event, detail in events]
        return self._append(checked) if checked else []

    @staticmethod
    def _fields(
        event: str,
        *,
        subject_user_id: uuid.UUID | None = None,
        actor_user_id: uuid.UUID | None = None,
        client_address: str | None = None,
        detail: dict | None = None,
    ) -> dict:
        if not event or len(event) > _EVENT_MAX:
            raise ValueError(f"event must have 1 to {_EVENT_MAX} characters")
        if client_address is not None and len(client_address) > _ADDRESS_MAX:
            raise ValueError(f"client_address longer than {_ADDRESS_MAX} characters")
        try:
            detail = json.loads(canonical_json({} if detail is None else detail))
        except TypeError as exc:
            raise ValueError(f"detail is not JSON: {exc}") from None
        if not isinstance(detail, dict):
            raise ValueError("detail must be a dict")
        return {
            "event": event,
            "actor_user_id": _as_uuid(actor_user_id),
            "subject_user_id": _as_uuid(subject_user_id),
            "client_address": client_address,
            "detail": detail,
        }

    def _append(self, checked: list[dict]) -> list[AuditEvent]:
        self._lock()
        prev_hash = (
            self.dbsession.scalar(
                select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)
            )
            or GENESIS_HASH
        )
        rows = []
        for partial in checked:
            # Read the clock under the lock, so time never runs backwards
            # along the chain.
            fields = {"occurred_at": self.clock(), **partial}
            row = AuditEvent(
                **fields, prev_hash=prev_hash, hash=chain_hash(prev_hash, **fields)
            )
            prev_hash = row.hash
            rows.append(row)
        self.dbsession.add_all(rows)
        self.dbsession.flush()
        return rows

    def _lock(self) -> None:
        if self.dbsession.get_bind().dialect.name == "postgresql":
            self.dbsession.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
            )
        else:
            take_write_turn(self.dbsession.connection())


@dataclass(frozen=True)
class VerifyResult:
    """What :func:`verify` found.

    ``checked`` counts the rows read, the bad one included; ``first_bad_id``
    is the id of the first row whose ``prev_hash`` or ``hash`` is wrong.
    """

    ok: bool
    checked: int
    first_bad_id: int | None


def verify(session) -> VerifyResult:
    """Recompute the whole chain in id order; stop at the first bad row.

    ``session`` is a Session or a Connection. Rows are streamed
    :data:`VERIFY_BATCH` at a time (a server-side cursor on PostgreSQL), so
    the log's size does not matter to memory.
    """
    query = select(
        AuditEvent.id,
        AuditEvent.occurred_at,
        AuditEvent.event,
        AuditEvent.actor_user_id,
        AuditEvent.subject_user_id,
        AuditEvent.client_address,
        AuditEvent.detail,
        AuditEvent.prev_hash,
        AuditEvent.hash,
    ).order_by(AuditEvent.id)
    expected_prev = GENESIS_HASH
    checked = 0
    result = session.execute(query.execution_options(yield_per=VERIFY_BATCH))
    try:
        for row in result:
            checked += 1
            actual = chain_hash(
                row.prev_hash,
                occurred_at=row.occurred_at,
                event=row.event,
                actor_user_id=row.actor_user_id,
                subject_user_id=row.subject_user_id,
                client_address=row.client_address,
                detail=row.detail,
            )
            if row.prev_hash != expected_prev or actual != row.hash:
                return VerifyResult(ok=False, checked=checked, first_bad_id=row.id)
            expected_prev = row.hash
    finally:
        result.close()
    return VerifyResult(ok=True, checked=checked, first_bad_id=None)


@contextmanager
def audit_maintenance(connection: Connection) -> Iterator[None]:
    """Let ``connection``'s current transaction DELETE audit rows (never UPDATE).

    The maintenance switch of migration 0003, for the test suite's teardown,
    which empties every table; the application never turns it on. On
    PostgreSQL it is a transaction-local setting; on SQLite a SQL function
    registered on this connection that returns 1 inside the block and 0
    after it.
    """
    if connection.dialect.name == "postgresql":
        set_switch = text("SELECT set_config(:name, :value, true)")
        connection.execute(set_switch, {"name": MAINTENANCE_SETTING, "value": "on"})
        yield
        # After an error the transaction is aborted and ends the setting itself.
        connection.execute(set_switch, {"name": MAINTENANCE_SETTING, "value": "off"})
        return
    driver = cast(sqlite3.Connection, connection.connection.driver_connection)
    driver.create_function(MAINTENANCE_FUNCTION, 0, lambda: 1)
    try:
        yield
    finally:
        driver.create_function(MAINTENANCE_FUNCTION, 0, lambda: 0)


def includeme(config) -> None:
    config.register_service_factory(AuditLog.create_service, IAuditLog)
