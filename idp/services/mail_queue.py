"""The outbox as administrators see it: what waits, what fails, a retry.

The worker (:mod:`idp.services.delivery`) sends; this service lists the
messages not yet sent (never their sealed bodies) and lets an administrator
bring a failing one forward. A retry only makes the message due now: the
worker still claims it (``SKIP LOCKED``), so a retry never sends anything
itself, never twice at once from two clicks, and is audited
(``mail.retry``) with who asked.

A worker claims a message by moving its due time :data:`~idp.services.
delivery.LEASE` ahead, then sends it with no transaction open; a retry
then would let a second worker claim and send it again meanwhile. So a
message due within the lease is refused (``outbox.due_soon``): it is being
sent, or will be tried within minutes anyway.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.orm import load_only
from zope.interface import implementer

from idp.db import utcnow
from idp.models import OutboxMessage
from idp.services.actor import Actor
from idp.services.delivery import LEASE
from idp.services.errors import Conflict, NotFound, atomic
from idp.services.interfaces import IAuditLog, IMailQueue
from idp.services.listing import Listing, Page, paginate

OUTBOX_SORTS = ("created", "next_attempt", "attempts")
OUTBOX_STATES = ("pending", "failed")

_LIST_COLUMNS = (
    OutboxMessage.id,
    OutboxMessage.template,
    OutboxMessage.recipient,
    OutboxMessage.created_at,
    OutboxMessage.next_attempt_at,
    OutboxMessage.attempts,
    OutboxMessage.last_error,
    OutboxMessage.sent_at,
)


def masked_recipient(address: str) -> str:
    """``s***@example.com.my``: enough to tell messages apart, not to harvest."""
    local, at, domain = address.partition("@")
    if not at:
        return "" if not address else "***"
    return f"{local[:1]}***@{domain}"


@implementer(IMailQueue)
class MailQueue:
    def __init__(self, dbsession, audit, clock=utcnow) -> None:
        self.dbsession = dbsession
        self.audit = audit
        self.clock = clock

    @classmethod
    def create_service(cls, context, request) -> MailQueue:
        return cls(request.dbsession, request.service(IAuditLog))

    def waiting(self, state: str, listing: Listing) -> Page:
        """Unsent messages: ``failed`` (with an error), or all ``pending``."""
        if state not in OUTBOX_STATES:
            raise NotFound("outbox.bad_state", f"no list {state!r}")
        query = (
            select(OutboxMessage)
            .where(OutboxMessage.sent_at.is_(None))
            .options(load_only(*_LIST_COLUMNS))
        )
        if state == "failed":
            query = query.where(OutboxMessage.last_error.is_not(None))
        order = {
            "created": OutboxMessage.created_at,
            "next_attempt": OutboxMessage.next_attempt_at,
            "attempts": OutboxMessage.attempts,
        }
        return paginate(
            self.dbsession, query, listing, order, tiebreak=OutboxMessage.id
        )

    def retry(self, message_id: int, *, actor: Actor) -> dt.datetime:
        """Make an unsent message due now (``mail.retry``); the previous due time.

        :class:`NotFound` for a message that is gone or already sent;
        :class:`Conflict` (``outbox.due_soon``) for one due within the
        lease: a worker may be sending it now (and a double click audits
        one retry, not two).
        """
        now = self.clock()
        with atomic(self.dbsession):
            row = self.dbsession.scalar(
                select(OutboxMessage)
                .where(OutboxMessage.id == message_id)
                .options(load_only(*_LIST_COLUMNS))
                .with_for_update()
            )
            if row is None or row.sent_at is not None:
                raise NotFound("outbox.not_found", f"no unsent message {message_id}")
            previous = row.next_attempt_at
            if previous <= now + LEASE:
                raise Conflict(
                    "outbox.due_soon",
                    f"message {message_id} is being sent or due within "
                    f"{LEASE.seconds // 60} minutes",
                    id=message_id,
                )
            # Conditional, so a worker's claim or outcome that landed since
            # the read is never overwritten with a stale due time.
            changed = self.dbsession.execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.id == message_id,
                    OutboxMessage.sent_at.is_(None),
                    OutboxMessage.next_attempt_at == previous,
                )
                .values(next_attempt_at=now)
                .execution_options(synchronize_session=False)
            ).rowcount
            if not changed:
                raise Conflict(
                    "outbox.changed",
                    f"message {message_id} changed meanwhile",
                    id=message_id,
                )
            actor.record(
                self.audit,
                "mail.retry",
                message_id=message_id,
                template=row.template,
                attempts=row.attempts,
                was_due_at=previous.isoformat(),
            )
        return previous


def includeme(config) -> None:
    config.register_service_factory(MailQueue.create_service, IMailQueue)
