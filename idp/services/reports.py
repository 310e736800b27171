"""What the admin console reads: the registry, the audit log, the dashboard.

Read-only queries, each sized for a national deployment: lists are
paginated in SQL (:mod:`idp.services.listing`), counts are grouped in SQL,
and the audit export streams. Changes go through the services that own
them (:mod:`idp.services.modules`, :mod:`idp.services.service_providers`,
:mod:`idp.services.mail_queue`), never through here.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import func, literal_column, select
from sqlalchemy.orm import load_only
from zope.interface import implementer

from idp.db import utcnow
from idp.identifiers import InvalidIdentifier, parse_identifier
from idp.models import (
    AuditEvent,
    MetadataSource,
    Module,
    OutboxMessage,
    PendingChange,
    QuarantinedEntity,
    Role,
    ServiceProvider,
    SloHourlyCount,
    SsoHourlyCount,
    User,
)
from idp.models.role import role_modules, user_roles
from idp.models.saml_state import LogoutLeg
from idp.models.session import SessionParticipant
from idp.services.errors import Invalid, NotFound
from idp.services.interfaces import IReports
from idp.services.listing import Listing, Page, paginate

ROLE_SORTS = ("name", "users", "created")
MODULE_SORTS = ("code", "roles", "sps")
ROLE_USER_SORTS = ("name", "granted")
SP_SORTS = ("entity_id", "module", "enabled", "last_sso", "valid_until", "source")
QUARANTINE_SORTS = ("entity_id", "source", "last_seen")
PENDING_SORTS = ("entity_id", "source", "created")
AUDIT_SORTS = ("time",)
AUDIT_FILTERS = ("event", "user", "admin", "since", "until")
#: How many audit rows the CSV export holds in memory at a time.
EXPORT_BATCH = 1000
#: The dashboard's two windows: (length, bucket) in hours.
WINDOWS = {"24h": (24, 1), "30d": (30 * 24, 24)}
SIGN_IN_EVENTS = {
    "login.success": "success",
    "login.failure": "failed",
    "login.throttled": "throttled",
}
LOCK_EVENT = "account.locked"


@dataclass(frozen=True)
class RoleRow:
    role: Role
    users: int


@dataclass(frozen=True)
class ModuleRow:
    module: Module
    roles: int
    sps: int


@dataclass(frozen=True)
class SpRow:
    sp: ServiceProvider
    module: str | None
    source: str | None
    source_fetched_at: dt.datetime | None
    # The newest sign-in the SP received in a session not yet purged.
    last_sso: dt.datetime | None


@dataclass(frozen=True)
class SourceRow:
    source: MetadataSource
    sps: int
    quarantined: int
    pending: int


@dataclass(frozen=True)
class AuditFilter:
    """The audit log's filters; every field optional."""

    event: str | None = None
    subject: uuid.UUID | None = None
    actor: uuid.UUID | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def described(self) -> dict:
        """The filters as JSON for an audit event: ids and times, no more."""
        values = {
            "event": self.event,
            "subject": str(self.subject) if self.subject else None,
            "actor": str(self.actor) if self.actor else None,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }
        return {key: value for key, value in values.items() if value}

    def clauses(self) -> list:
        where = []
        if self.event:
            # "sp." lists every SP event; "sp.removed" just that one.
            if self.event.endswith("."):
                where.append(AuditEvent.event.startswith(self.event, autoescape=True))
            else:
                where.append(AuditEvent.event == self.event)
        if self.subject is not None:
            where.append(AuditEvent.subject_user_id == self.subject)
        if self.actor is not None:
            where.append(AuditEvent.actor_user_id == self.actor)
        if self.since is not None:
            where.append(AuditEvent.occurred_at >= self.since)
        if self.until is not None:
            where.append(AuditEvent.occurred_at < self.until)
        return where


@dataclass(frozen=True)
class Series:
    """Counts per bucket, oldest bucket first, for each named line."""

    buckets: list[dt.datetime]
    lines: dict[str, list[int]]

    def total(self, name: str) -> int:
        return sum(self.lines.get(name, ()))


@dataclass(frozen=True)
class Dashboard:
    window: str
    start: dt.datetime
    now: dt.datetime
    sign_ins: Series
    locks: Series
    locked_now: int
    sso_per_module: list[tuple[str, int]]
    slo: dict[str, int]
    outbox_depth: int
    outbox_failing: int
    outbox_oldest: dt.datetime | None
    notes: list[str] = field(default_factory=list)


def check_event_filter(text: str) -> str:
    """An event name or prefix as the audit filter takes it."""
    value = text.strip()
    if len(value) > 64 or not all(ch.isalnum() or ch in "._-" for ch in value):
        raise Invalid("audit.bad_event", "not an event name", field="event")
    return value


def parse_time(text: str, field_name: str) -> dt.datetime:
    """``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM`` (an HTML date/datetime-local), UTC."""
    value = text.strip()
    for pattern in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            parsed = dt.datetime.strptime(value, pattern)
        except ValueError:
            continue
        if not 2000 <= parsed.year <= 9998:
            break
        return parsed.replace(tzinfo=dt.UTC)
    raise Invalid("audit.bad_time", "not a date", field=field_name)


def _bucket(column, hours: int, dialect: str):
    """The bucket a timestamp falls in, as text: its hour or its day (UTC)."""
    if dialect == "postgresql":
        pattern = "YYYY-MM-DD HH24" if hours == 1 else "YYYY-MM-DD"
        return func.to_char(func.timezone("UTC", column), pattern)
    # SQLite keeps naive UTC as "YYYY-MM-DD HH:MM:SS.ffffff" (idp.db).
    return func.substr(column, 1, 13 if hours == 1 else 10)


def _bucket_key(moment: dt.datetime, hours: int) -> str:
    return moment.strftime("%Y-%m-%d %H" if hours == 1 else "%Y-%m-%d")


@implementer(IReports)
class Reports:
    def __init__(self, dbsession, clock=utcnow) -> None:
        self.dbsession = dbsession
        self.clock = clock

    @classmethod
    def create_service(cls, context, request) -> Reports:
        return cls(request.dbsession)

    @property
    def dialect(self) -> str:
        return self.dbsession.get_bind().dialect.name

    # Roles and modules

    def roles(self, listing: Listing) -> Page:
        users = (
            select(func.count())
            .select_from(user_roles)
            .where(user_roles.c.role_id == Role.id)
            .correlate(Role)
            .scalar_subquery()
        )
        query = select(Role, users.label("users"))
        order = {
            "name": func.lower(Role.name),
            "users": users,
            "created": Role.created_at,
        }
        page = paginate(
            self.dbsession, query, listing, order, tiebreak=Role.id, scalars=False
        )
        return Page(
            [RoleRow(role, count) for role, count in page.items], page.total, listing
        )

    def modules(self, listing: Listing) -> Page:
        roles = (
            select(func.count())
            .select_from(role_modules)
            .where(role_modules.c.module_id == Module.id)
            .correlate(Module)
            .scalar_subquery()
        )
        sps = (
            select(func.count(ServiceProvider.id))
            .where(ServiceProvider.module_id == Module.id)
            .correlate(Module)
            .scalar_subquery()
        )
        query = select(Module, roles.label("roles"), sps.label("sps"))
        order = {"code": func.lower(Module.code), "roles": roles, "sps": sps}
        page = paginate(
            self.dbsession, query, listing, order, tiebreak=Module.id, scalars=False
        )
        return Page(
            [ModuleRow(module, r, s) for module, r, s in page.items],
            page.total,
            listing,
        )

    def role_users(self, role: Role, listing: Listing) -> Page:
        """The users holding ``role``, with when they got it."""
        query = (
            select(User, user_roles.c.granted_at)
            .join(user_roles, user_roles.c.user_id == User.id)
            .where(user_roles.c.role_id == role.id)
            .options(
                load_only(
                    User.id,
                    User.full_name,
                    User.identifier,
                    User.identifier_kind,
                    User.locked_until,
                    User.disabled_at,
                )
            )
        )
        order = {
            "name": func.lower(User.full_name),
            "granted": user_roles.c.granted_at,
        }
        page = paginate(
            self.dbsession, query, listing, order, tiebreak=User.id, scalars=False
        )
        return Page([tuple(row) for row in page.items], page.total, listing)

    def role_reach(self, role: Role) -> list[tuple[Module, int]]:
        """What ``role``'s holders reach: each module it grants, with how
        many SPs belong to it (the SPs themselves are the SP list's,
        filtered by module: a federation's module holds thousands)."""
        sps = (
            select(func.count(ServiceProvider.id))
            .where(ServiceProvider.module_id == Module.id)
            .correlate(Module)
            .scalar_subquery()
        )
        rows = self.dbsession.execute(
            select(Module, sps)
            .join(role_modules, role_modules.c.module_id == Module.id)
            .where(role_modules.c.role_id == role.id)
            .order_by(func.lower(Module.code))
        )
        return [(module, count) for module, count in rows]

    # Service providers and sources

    def service_providers(
        self, listing: Listing, *, search: str | None = None, module: str | None = None
    ) -> Page:
        last_sso = func.coalesce(
            select(func.max(SessionParticipant.created_at))
            .where(SessionParticipant.sp_id == ServiceProvider.id)
            .correlate(ServiceProvider)
            .scalar_subquery(),
            select(func.max(SsoHourlyCount.hour))
            .where(SsoHourlyCount.sp_id == ServiceProvider.id)
            .correlate(ServiceProvider)
            .scalar_subquery(),
        )
        query = (
            select(
                ServiceProvider,
                Module.code,
                MetadataSource.name,
                MetadataSource.fetched_at,
                last_sso.label("last_sso"),
            )
            .outerjoin(Module, Module.id == ServiceProvider.module_id)
            .outerjoin(MetadataSource, MetadataSource.id == ServiceProvider.source_id)
            .options(load_only(*_SP_LIST_COLUMNS))
        )
        if search:
            query = query.where(
                ServiceProvider.entity_id.contains(search, autoescape=True)
            )
        if module:
            query = query.where(func.lower(Module.code) == module.lower())
        order = {
            "entity_id": ServiceProvider.entity_id,
            "module": Module.code,
            "enabled": ServiceProvider.enabled,
            "last_sso": last_sso,
            "valid_until": ServiceProvider.metadata_valid_until,
            "source": MetadataSource.name,
        }
        page = paginate(
            self.dbsession,
            query,
            listing,
            order,
            tiebreak=ServiceProvider.id,
            scalars=False,
        )
        return Page(
            [SpRow(*row) for row in page.items],
            page.total,
            listing,
        )

    def last_sso(self, sp: ServiceProvider) -> dt.datetime | None:
        """The newest sign-in to ``sp`` a live session holds, else the start
        of the last hour with an assertion for it (``sso_hourly_counts``)."""
        return self.dbsession.scalar(
            select(
                func.coalesce(
                    select(func.max(SessionParticipant.created_at))
                    .where(SessionParticipant.sp_id == sp.id)
                    .scalar_subquery(),
                    select(func.max(SsoHourlyCount.hour))
                    .where(SsoHourlyCount.sp_id == sp.id)
                    .scalar_subquery(),
                )
            )
        )

    def sources(self) -> list[SourceRow]:
        def per_source(model, column=None):
            column = column if column is not None else model.source_id
            return (
                select(func.count())
                .select_from(model)
                .where(column == MetadataSource.id)
                .correlate(MetadataSource)
                .scalar_subquery()
            )

        query = select(
            MetadataSource,
            per_source(ServiceProvider),
            per_source(QuarantinedEntity),
            per_source(PendingChange),
        ).order_by(MetadataSource.name)
        return [SourceRow(*row) for row in self.dbsession.execute(query)]

    def find_source(self, name: str) -> MetadataSource:
        source = self.dbsession.scalar(
            select(MetadataSource).where(MetadataSource.name == name)
        )
        if source is None:
            raise NotFound("source.not_found", f"no source named {name!r}")
        return source

    def quarantine(self, listing: Listing) -> Page:
        query = select(QuarantinedEntity, MetadataSource.name).join(
            MetadataSource, MetadataSource.id == QuarantinedEntity.source_id
        )
        order = {
            "entity_id": QuarantinedEntity.entity_id,
            "source": MetadataSource.name,
            "last_seen": QuarantinedEntity.last_seen_at,
        }
        page = paginate(
            self.dbsession,
            query,
            listing,
            order,
            tiebreak=QuarantinedEntity.id,
            scalars=False,
        )
        return Page([tuple(row) for row in page.items], page.total, listing)

    def pending_changes(self, listing: Listing) -> Page:
        query = (
            select(PendingChange, MetadataSource.name)
            .join(MetadataSource, MetadataSource.id == PendingChange.source_id)
            .options(
                load_only(
                    PendingChange.id,
                    PendingChange.entity_id,
                    PendingChange.diff,
                    PendingChange.created_at,
                    PendingChange.source_id,
                )
            )
        )
        order = {
            "entity_id": PendingChange.entity_id,
            "source": MetadataSource.name,
            "created": PendingChange.created_at,
        }
        page = paginate(
            self.dbsession,
            query,
            listing,
            order,
            tiebreak=PendingChange.id,
            scalars=False,
        )
        return Page([tuple(row) for row in page.items], page.total, listing)

    # The audit log

    def find_user(self, text: str) -> User:
        """The user an admin names by identity number, email or id."""
        value = text.strip()
        user = None
        try:
            user = self.dbsession.get(User, uuid.UUID(value))
        except ValueError:
            if "@" in value:
                user = self.dbsession.scalar(
                    select(User).where(func.lower(User.email) == value.lower())
                )
            else:
                try:
                    number = parse_identifier(value).value
                except InvalidIdentifier:
                    number = None
                if number is not None:
                    user = self.dbsession.scalar(
                        select(User).where(User.identifier == number)
                    )
        if user is None:
            raise NotFound("user.not_found", "no such user", field="user")
        return user

    def audit_export(self, filters: AuditFilter) -> Iterator[AuditEvent]:
        """Every matching event up to the newest now, batch by batch."""
        upto, after = self.audit_newest_id(), 0
        while True:
            batch = self.audit_batch(filters, after=after, upto=upto)
            yield from batch
            if len(batch) < EXPORT_BATCH:
                return
            after = batch[-1].id

    def audit_events(self, filters: AuditFilter, listing: Listing) -> Page:
        query = select(AuditEvent).where(*filters.clauses())
        order = {"time": AuditEvent.occurred_at}
        return paginate(self.dbsession, query, listing, order, tiebreak=AuditEvent.id)

    def audit_newest_id(self) -> int:
        """The id of the newest event: where an export stops (see below)."""
        return self.dbsession.scalar(select(func.max(AuditEvent.id))) or 0

    def audit_batch(
        self, filters: AuditFilter, *, after: int, upto: int
    ) -> list[AuditEvent]:
        """The next :data:`EXPORT_BATCH` matching events with ``after < id <=
        upto``, oldest first.

        An export reads batch after batch, each in its own short transaction
        (keyset, not OFFSET: every batch costs the same), so a long export
        holds no transaction, snapshot or SQLite write lock open, and stops
        at the newest event when it began: the log is append-only, so that
        is a consistent cut.
        """
        return list(
            self.dbsession.scalars(
                select(AuditEvent)
                .where(*filters.clauses(), AuditEvent.id > after, AuditEvent.id <= upto)
                .order_by(AuditEvent.id)
                .limit(EXPORT_BATCH)
            )
        )

    def user_labels(self, ids: set[uuid.UUID]) -> dict[uuid.UUID, User]:
        """The users behind audit rows' actor and subject ids, in one query."""
        if not ids:
            return {}
        rows = self.dbsession.scalars(
            select(User)
            .where(User.id.in_(ids))
            .options(
                load_only(
                    User.id, User.full_name, User.identifier, User.identifier_kind
                )
            )
        )
        return {user.id: user for user in rows}

    # The dashboard

    def dashboard(self, window: str) -> Dashboard:
        if window not in WINDOWS:
            raise Invalid("dashboard.bad_window", "24h or 30d", field="window")
        hours, step = WINDOWS[window]
        now = self.clock()
        # The current hour (or day) is the last bucket, so "now" is in it.
        floor = now.replace(minute=0, second=0, microsecond=0)
        if step == 24:
            floor = floor.replace(hour=0)
        end = floor + dt.timedelta(hours=step)
        start = end - dt.timedelta(hours=hours)
        buckets = [start + dt.timedelta(hours=step * i) for i in range(hours // step)]
        sign_ins = self._event_series(
            list(SIGN_IN_EVENTS), start, buckets, step, names=SIGN_IN_EVENTS
        )
        locks = self._event_series([LOCK_EVENT], start, buckets, step)
        depth, failing, oldest = self.outbox_status()
        locked_now = self.dbsession.scalar(
            select(func.count()).select_from(User).where(User.locked_until > now)
        )
        # Assertions per SP and hour, kept by every node (idp.saml.tally).
        total = func.sum(SsoHourlyCount.count)
        sso = self.dbsession.execute(
            select(func.coalesce(Module.code, literal_column("''")), total)
            .select_from(SsoHourlyCount)
            .join(ServiceProvider, ServiceProvider.id == SsoHourlyCount.sp_id)
            .outerjoin(Module, Module.id == ServiceProvider.module_id)
            .where(SsoHourlyCount.hour >= start)
            .group_by(Module.code)
            .order_by(total.desc(), Module.code)
        ).all()
        # Legs of flows not purged yet, and those the purge counted.
        slo: dict[str, int] = dict(
            self.dbsession.execute(
                select(LogoutLeg.status, func.count())
                .where(LogoutLeg.updated_at >= start)
                .group_by(LogoutLeg.status)
            ).all()
        )
        for status, number in self.dbsession.execute(
            select(SloHourlyCount.status, func.sum(SloHourlyCount.count))
            .where(SloHourlyCount.hour >= start)
            .group_by(SloHourlyCount.status)
        ):
            slo[status] = slo.get(status, 0) + int(number)
        return Dashboard(
            window=window,
            start=start,
            now=now,
            sign_ins=sign_ins,
            locks=locks,
            locked_now=locked_now or 0,
            sso_per_module=[(code, n) for code, n in sso],
            slo={status: slo.get(status, 0) for status in SLO_STATUSES},
            outbox_depth=depth,
            outbox_failing=failing,
            outbox_oldest=oldest,
        )

    def outbox_status(self) -> tuple[int, int, dt.datetime | None]:
        """Unsent messages, how many of them failed, and the oldest's time."""
        pending = OutboxMessage.sent_at.is_(None)
        depth, failing, oldest = self.dbsession.execute(
            select(
                func.count().filter(pending),
                func.count().filter(pending, OutboxMessage.last_error.is_not(None)),
                func.min(OutboxMessage.created_at).filter(pending),
            )
        ).one()
        return depth, failing, oldest

    def _event_series(
        self,
        events: list[str],
        start: dt.datetime,
        buckets: list[dt.datetime],
        step: int,
        *,
        names: dict[str, str] | None = None,
    ) -> Series:
        bucket = _bucket(AuditEvent.occurred_at, step, self.dialect)
        rows = self.dbsession.execute(
            select(AuditEvent.event, bucket, func.count())
            .where(AuditEvent.event.in_(events), AuditEvent.occurred_at >= start)
            .group_by(AuditEvent.event, bucket)
        ).all()
        index = {_bucket_key(moment, step): i for i, moment in enumerate(buckets)}
        lines = {
            (names or {}).get(event, event): [0] * len(buckets) for event in events
        }
        for event, key, number in rows:
            position = index.get(key)
            if position is not None:
                lines[(names or {}).get(event, event)][position] += number
        return Series(buckets, lines)


# What a logout leg ends as (idp.models.saml_state.LogoutLeg.status).
SLO_STATUSES = ("done", "failed", "timeout", "sent", "pending")

_SP_LIST_COLUMNS = (
    ServiceProvider.id,
    ServiceProvider.entity_id,
    ServiceProvider.enabled,
    ServiceProvider.module_id,
    ServiceProvider.source_id,
    ServiceProvider.metadata_valid_until,
    ServiceProvider.updated_at,
)


def includeme(config) -> None:
    config.register_service_factory(Reports.create_service, IReports)


#: What a spreadsheet reads as a formula at the start of a cell (OWASP CSV
#: injection), and the tab and carriage return that hide one.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
AUDIT_CSV_HEADER = (
    "id",
    "occurred_at",
    "event",
    "actor_user_id",
    "subject_user_id",
    "client_address",
    "detail",
)


def csv_safe(value: object) -> str:
    """``value`` as a CSV cell no spreadsheet runs: a formula start gets ``'``."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def audit_csv_lines(events) -> Iterator[str]:
    """The CSV text of ``events``, a header then one line per event."""
    import csv
    import io

    from idp.services.audit import canonical_json

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def line(cells) -> str:
        writer.writerow([csv_safe(cell) for cell in cells])
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    yield line(AUDIT_CSV_HEADER)
    for event in events:
        yield line(
            (
                event.id,
                event.occurred_at.astimezone(dt.UTC).isoformat(timespec="seconds"),
                event.event,
                event.actor_user_id,
                event.subject_user_id,
                event.client_address,
                canonical_json(event.detail),
            )
        )
