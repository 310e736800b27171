"""Purging what has outlived its use, so every table stays bounded.

What goes, and when:

- ``idp_sessions``: past their absolute expiry or idle for longer than
  ``idp.session_idle_seconds`` (they can never be used again; their
  ``session_participants`` go with them by cascade);
- ``one_time_tokens`` (reset links, temporary passwords): used or expired
  more than ``idp.purge.token_days`` ago (kept that long so a support call
  about a link can still be answered);
- ``logout_flows``: expired, their legs' outcomes added to
  ``slo_hourly_counts`` first (the console's 30-day charts);
- ``captcha_challenges``, ``pending_saml_requests``,
  ``seen_request_ids``, ``throttle_counters``: expired (the replay window of
  a request id is its ``expires_at``, so nothing replayable is dropped);
- ``mail_outbox``: rows sent more than ``idp.purge.outbox_days`` ago (their
  body was emptied at sending; the row goes). Unsent rows and jobs stay.

The audit log is never purged: it is append-only by trigger.

Each table is purged in batches of ``idp.purge.batch_size`` rows, each in
its own short transaction, so no lock is held for long; on PostgreSQL rows
another node is purging or a request is using are skipped (``SKIP
LOCKED``), so two purges, or a purge and a sign-in, never wait on each
other. The number of batches per run is bounded.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import and_, delete, func, or_, select, tuple_

from idp.db import utcnow
from idp.models import (
    CaptchaChallenge,
    IdpSession,
    LogoutFlow,
    LogoutLeg,
    MetadataFetch,
    OneTimeToken,
    OutboxMessage,
    PendingSamlRequest,
    SeenRequestId,
    SloHourlyCount,
    ThrottleCounter,
)

# A partner that has not fetched idMe's metadata for this long has not seen
# any key published since: "keys rollover status" says "unknown" either way.
METADATA_FETCH_DAYS = 90

# A logout leg's outcomes once it is over (idp.saml.slo); any other state at
# the purge means the SP never answered.
FINAL_OUTCOMES = ("done", "failed", "timeout")


def _slo_upsert(dialect: str):
    from sqlalchemy import bindparam
    from sqlalchemy.dialects.postgresql import insert as postgresql_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(SloHourlyCount).values(
        status=bindparam("status"), hour=bindparam("hour"), count=bindparam("n")
    )
    return statement.on_conflict_do_update(
        index_elements=[SloHourlyCount.status, SloHourlyCount.hour],
        set_={"count": SloHourlyCount.count + statement.excluded.count},
    )


# A run stops after this many batches per table and leaves the rest to the
# next one: a backlog never turns one run into an hours-long job.
MAX_BATCHES = 200


@dataclasses.dataclass(frozen=True)
class Retention:
    """How long each kind of row is kept past the point it became useless."""

    session_idle: dt.timedelta
    tokens: dt.timedelta
    outbox: dt.timedelta

    @classmethod
    def from_settings(cls, settings: dict) -> Retention:
        return cls(
            session_idle=dt.timedelta(seconds=settings["idp.session_idle_seconds"]),
            tokens=dt.timedelta(days=settings["idp.purge.token_days"]),
            outbox=dt.timedelta(days=settings["idp.purge.outbox_days"]),
        )


def _rules(retention: Retention, now: dt.datetime):
    """(table name, model, key columns, condition) for each purged table."""
    token_cutoff = now - retention.tokens
    return [
        (
            "idp_sessions",
            IdpSession,
            (IdpSession.id,),
            or_(
                IdpSession.expires_at <= now,
                IdpSession.last_seen_at <= now - retention.session_idle,
            ),
        ),
        (
            "one_time_tokens",
            OneTimeToken,
            (OneTimeToken.id,),
            or_(
                OneTimeToken.used_at < token_cutoff,
                OneTimeToken.expires_at < token_cutoff,
            ),
        ),
        (
            "captcha_challenges",
            CaptchaChallenge,
            (CaptchaChallenge.id,),
            CaptchaChallenge.expires_at < now,
        ),
        (
            "pending_saml_requests",
            PendingSamlRequest,
            (PendingSamlRequest.id,),
            PendingSamlRequest.expires_at < now,
        ),
        (
            "logout_flows",
            LogoutFlow,
            (LogoutFlow.id,),
            LogoutFlow.expires_at < now,
        ),
        (
            "seen_request_ids",
            SeenRequestId,
            (SeenRequestId.issuer, SeenRequestId.request_id),
            SeenRequestId.expires_at < now,
        ),
        (
            "throttle_counters",
            ThrottleCounter,
            (ThrottleCounter.key, ThrottleCounter.window_start),
            ThrottleCounter.expires_at < now,
        ),
        (
            "mail_outbox",
            OutboxMessage,
            (OutboxMessage.id,),
            OutboxMessage.sent_at < now - retention.outbox,
        ),
        (
            "metadata_fetches",
            MetadataFetch,
            (MetadataFetch.id,),
            MetadataFetch.last_at < now - dt.timedelta(days=METADATA_FETCH_DAYS),
        ),
    ]


class Purger:
    """Deletes, table by table and batch by batch, what the retention allows."""

    def __init__(self, engine, retention: Retention, *, batch_size: int = 500):
        self.engine = engine
        self.retention = retention
        self.batch_size = batch_size

    @classmethod
    def from_settings(cls, settings: dict, engine) -> Purger:
        return cls(
            engine,
            Retention.from_settings(settings),
            batch_size=settings["idp.purge.batch_size"],
        )

    def run(self, now: dt.datetime | None = None, *, dry_run: bool = False):
        """Purge (or, with ``dry_run``, count) each table; return {table: rows}."""
        now = now or utcnow()
        counts = {}
        for name, model, keys, condition in _rules(self.retention, now):
            if dry_run:
                with self.engine.connect() as conn:
                    counts[name] = conn.scalar(
                        select(func.count()).select_from(model).where(condition)
                    )
            elif model is LogoutFlow:
                counts[name] = self._purge_logout_flows(condition)
            else:
                counts[name] = self._purge(model, keys, condition)
        return counts

    def _purge_logout_flows(self, condition) -> int:
        """Delete logout flows in batches, their legs' outcomes counted first.

        The console charts single logout over 30 days, and a flow goes
        within minutes of its end: each batch adds its legs to
        ``slo_hourly_counts`` (per outcome and hour of the leg's last
        change; a leg still pending or sent never had an answer, so it
        counts as ``timeout``) in the transaction that deletes them. Picked
        ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, as the other tables.
        """
        # FOR UPDATE on SQLite too, where it takes the writer's turn (idp.db)
        # before the read: two purges never count one flow twice.
        batch = (
            select(LogoutFlow.id)
            .where(condition)
            .limit(self.batch_size)
            .with_for_update(skip_locked=self.engine.dialect.name == "postgresql")
        )
        upsert = _slo_upsert(self.engine.dialect.name)
        total = 0
        for _ in range(MAX_BATCHES):
            with self.engine.begin() as conn:
                ids = list(conn.scalars(batch))
                if not ids:
                    break
                outcomes: dict[tuple[str, dt.datetime], int] = {}
                for status, updated_at in conn.execute(
                    select(LogoutLeg.status, LogoutLeg.updated_at).where(
                        LogoutLeg.flow_id.in_(ids)
                    )
                ):
                    status = status if status in FINAL_OUTCOMES else "timeout"
                    hour = updated_at.replace(minute=0, second=0, microsecond=0)
                    outcomes[(status, hour)] = outcomes.get((status, hour), 0) + 1
                if outcomes:
                    conn.execute(
                        upsert,
                        [
                            {"status": status, "hour": hour, "n": n}
                            for (status, hour), n in outcomes.items()
                        ],
                    )
                deleted = conn.execute(
                    delete(LogoutFlow)
                    .where(LogoutFlow.id.in_(ids), condition)
                    .execution_options(synchronize_session=False)
                ).rowcount
            total += deleted
            if len(ids) < self.batch_size:
                break
        return total

    def _purge(self, model, keys, condition) -> int:
        """Delete in batches, one statement each, until a batch comes up short.

        One set-based DELETE per batch: the whole key (for
        ``seen_request_ids`` the (issuer, ID) pair, never the ID alone:
        SAML-17), and the condition checked again on the row deleted, so a
        session used since it was picked stays.

        On PostgreSQL the batch is a ``MATERIALIZED`` CTE picked ``FOR
        UPDATE SKIP LOCKED``: run once, so at most ``batch_size`` rows go
        per statement (a ``LIMIT ... SKIP LOCKED`` subquery under ``IN``
        can be rescanned by a nested-loop plan and, skipping what the
        DELETE already took, find batch after batch), and a row another
        purge or a request holds is left for the next run. SQLite runs a
        plain ``IN (SELECT ... LIMIT n)`` once, and has one writer at a time
        anyway.
        """
        batch = select(*keys).where(condition).limit(self.batch_size)
        if self.engine.dialect.name == "postgresql":
            picked = (
                batch.with_for_update(skip_locked=True)
                .cte("batch")
                .prefix_with("MATERIALIZED")
            )
            chosen = and_(*(key == picked.c[key.key] for key in keys))
        else:
            key = keys[0] if len(keys) == 1 else tuple_(*keys)
            chosen = key.in_(batch.scalar_subquery() if len(keys) == 1 else batch)
        statement = (
            delete(model)
            .where(chosen, condition)
            .execution_options(synchronize_session=False)
        )
        total = 0
        for _ in range(MAX_BATCHES):
            with self.engine.begin() as conn:
                deleted = conn.execute(statement).rowcount
            total += deleted
            if deleted < self.batch_size:
                break
        return total
