"""What the console reads (Reports), the outbox queue (MailQueue), and list parsing.

Called as the console calls them, on the test's transaction.
"""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from webob.multidict import MultiDict

from idp.db import utcnow
from idp.models import AuditEvent, OutboxMessage, ServiceProvider
from idp.models.session import SessionParticipant
from idp.services.errors import Conflict, Invalid, NotFound
from idp.services.interfaces import (
    IAuditLog,
    IMailQueue,
    IReports,
    IServiceProviders,
)
from idp.services.listing import MAX_PAGE, parse_listing
from idp.services.reports import (
    SP_SORTS,
    AuditFilter,
    Reports,
    audit_csv_lines,
    csv_safe,
    parse_time,
)
from tests.factories import count, make_module, make_role, make_session, make_user
from tests.saml_metadata import make_sp_metadata
from tests.services import CONSOLE, audited


@pytest.fixture
def reports(service):
    return service(IReports)


def listing(sorts, default, **params):
    return parse_listing(MultiDict(params), sorts=sorts, default_sort=default)


# Listing: every bad query value is a refusal, never a crash or a silent default


@pytest.mark.parametrize(
    "params",
    [
        {"page": "0"},
        {"page": "-1"},
        {"page": str(MAX_PAGE + 1)},
        {"page": "1e3"},
        {"page": "١٢"},  # Arabic-Indic digits: int() would take them
        {"page": " 3"},
        {"page": "3_0"},
        {"per": "26"},
        {"per": "1000000"},
        {"sort": "password_hash"},
        {"sort": "entity_id; DROP TABLE users"},
        {"dir": "sideways"},
        {"unknown": "1"},
    ],
)
def test_bad_listing_values_are_refused(params):
    with pytest.raises(Invalid) as refused:
        listing(SP_SORTS, "entity_id", **params)
    assert refused.value.code == "list.bad_query"


def test_a_repeated_parameter_is_refused():
    params = MultiDict([("page", "1"), ("page", "2")])
    with pytest.raises(Invalid):
        parse_listing(params, sorts=("a",), default_sort="a")


def test_listing_defaults_and_values():
    parsed = listing(
        SP_SORTS, "entity_id", page="3", per="50", sort="module", dir="desc"
    )
    assert (parsed.page, parsed.per, parsed.sort, parsed.descending) == (
        3,
        50,
        "module",
        True,
    )
    assert parsed.offset == 100
    assert listing(SP_SORTS, "entity_id").per == 25


# Roles and modules


@pytest.mark.postgresql
def test_roles_count_their_users_and_reach_their_modules_sps(
    reports, dbsession, service
):
    emis = make_module(dbsession, "emis")
    make_module(dbsession, "hrmis")
    guru = make_role(dbsession, "guru", emis)
    make_role(dbsession, "kosong")
    users = [make_user(dbsession, full_name=f"Guru {i}") for i in range(3)]
    for user in users:
        user.roles.append(guru)
    service(IServiceProviders).import_metadata(
        make_sp_metadata(), module_code="emis", actor=CONSOLE
    )
    dbsession.flush()

    page = reports.roles(listing(("name", "users", "created"), "users", dir="desc"))
    assert [(row.role.name, row.users) for row in page.items] == [
        ("guru", 3),
        ("kosong", 0),
    ]
    holders = reports.role_users(guru, listing(("name", "granted"), "name", per="25"))
    assert holders.total == 3
    assert [user.full_name for user, _ in holders.items] == [
        "Guru 0",
        "Guru 1",
        "Guru 2",
    ]
    assert [(m.code, n) for m, n in reports.role_reach(guru)] == [("emis", 1)]
    by_module = reports.service_providers(listing(SP_SORTS, "entity_id"), module="EMIS")
    assert by_module.total == 1
    none = reports.service_providers(listing(SP_SORTS, "entity_id"), module="hrmis")
    assert none.total == 0
    modules = reports.modules(listing(("code", "roles", "sps"), "code"))
    assert [(m.module.code, m.roles, m.sps) for m in modules.items] == [
        ("emis", 1, 1),
        ("hrmis", 0, 0),
    ]


def test_pages_do_not_overlap_and_count_the_whole(reports, dbsession):
    role = make_role(dbsession, "ramai")
    users = [make_user(dbsession, full_name="Sama") for _ in range(30)]
    for user in users:
        user.roles.append(role)
    dbsession.flush()
    sorts = ("name", "granted")
    first = reports.role_users(role, listing(sorts, "name", per="25"))
    second = reports.role_users(role, listing(sorts, "name", per="25", page="2"))
    beyond = reports.role_users(role, listing(sorts, "name", per="25", page="9"))
    ids = [u.id for u, _ in first.items] + [u.id for u, _ in second.items]
    assert len(ids) == len(set(ids)) == 30
    assert (first.total, first.pages, first.has_next, second.has_next) == (
        30,
        2,
        True,
        False,
    )
    assert beyond.items == [] and beyond.total == 30


# Service providers


@pytest.mark.postgresql
def test_sp_list_shows_module_and_last_sso(reports, dbsession, service):
    make_module(dbsession, "emis")
    sp = (
        service(IServiceProviders)
        .import_metadata(make_sp_metadata(), module_code="emis", actor=CONSOLE)
        .sp
    )
    user = make_user(dbsession)
    session = make_session(dbsession, user)
    when = utcnow() - dt.timedelta(minutes=5)
    dbsession.add(
        SessionParticipant(
            session_id=session.id,
            sp_id=sp.id,
            name_id="x",
            name_id_format="f",
            session_index="i",
            created_at=when,
        )
    )
    dbsession.flush()
    page = reports.service_providers(listing(SP_SORTS, "last_sso", dir="desc"))
    [row] = page.items
    assert (row.sp.entity_id, row.module, row.source, row.last_sso) == (
        sp.entity_id,
        "emis",
        None,
        when,
    )
    assert (
        reports.service_providers(listing(SP_SORTS, "entity_id"), search="%").total == 0
    )


# The audit log


@pytest.mark.postgresql
def test_audit_filters_by_event_prefix_user_admin_and_time(reports, dbsession, service):
    audit = service(IAuditLog)
    subject = make_user(dbsession)
    admin = make_user(dbsession)
    audit.record("sp.imported", actor_user_id=admin.id, detail={})
    audit.record("sp.removed", actor_user_id=admin.id, detail={})
    audit.record("login.success", subject_user_id=subject.id, detail={})
    sorts = ("time",)

    def found(**filters):
        page = reports.audit_events(AuditFilter(**filters), listing(sorts, "time"))
        return [row.event for row in page.items]

    assert found(event="sp.") == ["sp.imported", "sp.removed"]
    assert found(event="sp.removed") == ["sp.removed"]
    assert found(event="sp%") == []  # a LIKE wildcard is a literal here
    assert found(actor=admin.id) == ["sp.imported", "sp.removed"]
    assert found(subject=subject.id) == ["login.success"]
    assert found(since=utcnow() + dt.timedelta(minutes=1)) == []
    assert len(found(until=utcnow() + dt.timedelta(minutes=1))) >= 3
    assert reports.find_user(subject.identifier).id == subject.id
    assert reports.find_user(subject.email.upper()).id == subject.id
    assert reports.find_user(str(admin.id)).id == admin.id
    with pytest.raises(NotFound):
        reports.find_user("nobody@example.com")


@pytest.mark.parametrize(
    "text", ["yesterday", "2026-13-01", "0001-01-01", "9999-12-31"]
)
def test_bad_times_are_refused(text):
    with pytest.raises(Invalid):
        parse_time(text, "since")


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1", "'+1"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("login.success", "login.success"),
        (None, ""),
    ],
)
def test_csv_cells_never_start_a_formula(value, cell):
    assert csv_safe(value) == cell


def test_audit_csv_is_injection_safe_and_parses_back(reports, dbsession, service):
    """SEC: a partner's or user's text starting with '=' must not run in Excel."""
    audit = service(IAuditLog)
    audit.record("sp.imported", client_address="=1+1", detail={"x": "y"})
    text = "".join(audit_csv_lines(reports.audit_export(AuditFilter(event="sp."))))
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:3] == ["id", "occurred_at", "event"]
    assert rows[1][2] == "sp.imported"
    assert rows[1][5] == "'=1+1"
    assert rows[1][6] == '{"x":"y"}'


# The dashboard


def test_dashboard_counts_sign_ins_and_locks_per_bucket(dbsession, service):
    audit = service(IAuditLog)
    for event in ("login.success", "login.success", "login.failure", "login.throttled"):
        audit.record(event, detail={})
    audit.record("account.locked", detail={})
    make_user(dbsession, locked_until=utcnow() + dt.timedelta(hours=1))
    dbsession.add(OutboxMessage(template="t", recipient="a@b.c", message="m"))
    dbsession.flush()
    reports = Reports(dbsession)
    for window, buckets in (("24h", 24), ("30d", 30)):
        board = reports.dashboard(window)
        assert len(board.sign_ins.buckets) == buckets
        assert board.sign_ins.lines["success"][-1] == 2, (window, board.sign_ins)
        assert board.sign_ins.total("failed") == 1
        assert board.sign_ins.total("throttled") == 1
        assert board.locks.total("account.locked") == 1
        assert board.locked_now == 1
        assert board.outbox_depth >= 1
        assert board.outbox_oldest is not None
    with pytest.raises(Invalid):
        reports.dashboard("1y")


# The outbox queue


@pytest.mark.postgresql
def test_retry_makes_a_failed_message_due_once_and_audits_it(dbsession, service):
    queue = service(IMailQueue)
    later = utcnow() + dt.timedelta(hours=1)
    row = OutboxMessage(
        template="password-reset",
        recipient="siti@example.com.my",
        message="sealed",
        attempts=3,
        last_error="SMTPServerDisconnected: gone",
        next_attempt_at=later,
    )
    dbsession.add(row)
    dbsession.flush()
    sorts = ("created", "next_attempt", "attempts")
    failed = queue.waiting("failed", listing(sorts, "created"))
    assert [m.id for m in failed.items] == [row.id]
    assert queue.retry(row.id, actor=CONSOLE) == later
    dbsession.expire_all()
    assert dbsession.get(OutboxMessage, row.id).next_attempt_at <= utcnow()
    with pytest.raises(Conflict):
        queue.retry(row.id, actor=CONSOLE)
    [(detail, actor, address, _)] = audited(dbsession, "mail.retry")
    assert detail["message_id"] == row.id and detail["by"] == "admin-console"
    assert (actor, address) == (CONSOLE.user_id, CONSOLE.address)
    with pytest.raises(NotFound):
        queue.retry(row.id + 1000, actor=CONSOLE)
    assert count(dbsession, AuditEvent, AuditEvent.event == "mail.retry") == 1


def test_a_message_a_worker_has_claimed_cannot_be_retried(dbsession, service):
    """A worker's claim pushes the due time one lease ahead and sends with no
    transaction open: a retry then would let a second worker send it again."""
    from idp.services.delivery import LEASE

    row = OutboxMessage(
        template="t",
        recipient="a@b.c",
        message="sealed",
        last_error="e",
        next_attempt_at=utcnow() + dt.timedelta(hours=1),
    )
    dbsession.add(row)
    dbsession.flush()
    # As OutboxWorker._claim leaves it while it sends.
    row.next_attempt_at = utcnow() + LEASE
    dbsession.flush()
    with pytest.raises(Conflict) as refused:
        service(IMailQueue).retry(row.id, actor=CONSOLE)
    assert refused.value.code == "outbox.due_soon"
    dbsession.expire_all()
    assert dbsession.get(OutboxMessage, row.id).next_attempt_at > utcnow()
    assert count(dbsession, AuditEvent, AuditEvent.event == "mail.retry") == 0


def test_a_sent_message_cannot_be_retried(dbsession, service):
    row = OutboxMessage(
        template="t",
        recipient="a@b.c",
        message="",
        sent_at=utcnow(),
        next_attempt_at=utcnow() + dt.timedelta(hours=1),
    )
    dbsession.add(row)
    dbsession.flush()
    with pytest.raises(NotFound):
        service(IMailQueue).retry(row.id, actor=CONSOLE)


@pytest.mark.postgresql
@pytest.mark.parametrize(
    "now",
    [
        dt.datetime(2026, 12, 4, 23, 59, 59, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 5, 0, 0, 0, tzinfo=dt.UTC),
    ],
)
def test_dashboard_buckets_at_the_day_boundary(dbsession, now):
    """Events land in the hour and the day they happened, on both databases."""
    from idp.services.audit import AuditLog

    AuditLog(dbsession, clock=lambda: now).record("login.failure", detail={})
    AuditLog(dbsession, clock=lambda: now - dt.timedelta(days=29)).record(
        "login.failure", detail={}
    )
    AuditLog(dbsession, clock=lambda: now - dt.timedelta(days=31)).record(
        "login.failure", detail={}
    )
    reports = Reports(dbsession, clock=lambda: now)
    day = reports.dashboard("24h")
    assert day.sign_ins.buckets[-1] == now.replace(minute=0, second=0)
    assert day.sign_ins.lines["failed"][-1] == 1
    assert day.sign_ins.total("failed") == 1
    month = reports.dashboard("30d")
    assert month.sign_ins.buckets[-1] == now.replace(hour=0, minute=0, second=0)
    assert month.sign_ins.lines["failed"][-1] == 1
    assert month.sign_ins.lines["failed"][0] == 1
    assert month.sign_ins.total("failed") == 2


# Previewing an import: the import itself, rolled back


@pytest.mark.postgresql
def test_preview_shows_what_an_import_would_do_and_writes_nothing(dbsession, service):
    from idp.saml.registry import current_version
    from tests.saml_metadata import SP_ENTITY_ID

    sps = service(IServiceProviders)
    first = make_sp_metadata()
    preview = sps.preview_import(first, actor=CONSOLE)
    assert (preview.entity_id, preview.outcome) == (SP_ENTITY_ID, "registered")
    assert preview.diff[0].startswith("---") and all(
        line.startswith(("+", "-", "@", " ")) for line in preview.diff
    )
    assert count(dbsession, ServiceProvider) == 0
    assert count(dbsession, AuditEvent) == 0
    assert current_version(dbsession)[0] == 0

    sps.import_metadata(first, actor=CONSOLE)
    generation = current_version(dbsession)[0]
    events = count(dbsession, AuditEvent)
    assert sps.preview_import(first, actor=CONSOLE).outcome == "unchanged"
    # New endpoints are a trust change (SAML-30): refused without replace,
    # listed with it, and still nothing written.
    moved = make_sp_metadata(acs="https://baru.example.org/acs")
    with pytest.raises(Conflict) as refused:
        sps.preview_import(moved, actor=CONSOLE)
    assert refused.value.code == "sp.trust_changed"
    replaced = sps.preview_import(moved, replace=True, actor=CONSOLE)
    assert replaced.outcome == "updated" and replaced.trust_changes
    assert any("baru.example.org" in line for line in replaced.diff)
    dbsession.expire_all()
    assert sps.find(SP_ENTITY_ID).metadata_sha256 != replaced.sha256
    assert current_version(dbsession)[0] == generation
    assert count(dbsession, AuditEvent) == events


@pytest.mark.postgresql
def test_outbox_status_counts_unsent_and_failing_with_the_oldest(dbsession):
    old = utcnow() - dt.timedelta(hours=3)
    dbsession.add_all(
        [
            OutboxMessage(template="t", recipient="a@b.c", message="m", created_at=old),
            OutboxMessage(template="t", recipient="a@b.c", message="m", last_error="e"),
            OutboxMessage(
                template="t", recipient="a@b.c", message="", sent_at=utcnow()
            ),
        ]
    )
    dbsession.flush()
    depth, failing, oldest = Reports(dbsession).outbox_status()
    assert (depth, failing, oldest) == (2, 1, old)
