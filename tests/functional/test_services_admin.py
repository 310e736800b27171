"""The admin console's services: admin roles (AdminRoles), the helpdesk's
profile edit, ending sessions and search (AccountService), the rule that
keeps the helpdesk off admin accounts, and the masks of the lists."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from idp.contact import mask_email, mask_phone
from idp.models import AdminGrant, IdpSession, OutboxMessage, User
from idp.services.accounts import search
from idp.services.actor import Actor
from idp.services.admin import check_target, fresh, parse_role
from idp.services.errors import Conflict, Invalid
from idp.services.interfaces import IAccountService, IAdminRoles
from tests.factories import count, make_session, make_user
from tests.services import CONSOLE, audited


@pytest.fixture
def roles(service):
    return service(IAdminRoles)


@pytest.fixture
def accounts(service):
    return service(IAccountService)


@pytest.fixture
def by(dbsession):
    """The console as CONSOLE, but with a superadmin who exists (granted_by
    names them)."""
    boss = make_user(dbsession)
    return Actor("admin-console", user_id=boss.id, address=CONSOLE.address)


def test_grant_and_revoke_are_audited_once(roles, dbsession, by):
    user = make_user(dbsession)
    assert roles.grant(user, "Auditor", actor=by)
    assert not roles.grant(user, "auditor", actor=by)
    assert roles.roles_of(user) == {"auditor"}
    [grant] = dbsession.scalars(select(AdminGrant)).all()
    assert grant.granted_by == by.user_id
    assert roles.revoke(user, "auditor", actor=by)
    assert not roles.revoke(user, "auditor", actor=by)
    # The owner is told of each change, once.
    notices = dbsession.scalars(
        select(OutboxMessage.recipient).where(
            OutboxMessage.template == "admin-role-changed"
        )
    ).all()
    assert notices == [user.email, user.email]
    assert audited(dbsession, "admin.granted") == [
        (
            {"by": "admin-console", "role": "auditor"},
            by.user_id,
            "192.0.2.44",
            user.id,
        )
    ]
    assert len(audited(dbsession, "admin.revoked")) == 1


def test_an_unknown_role_is_refused(roles, dbsession):
    user = make_user(dbsession)
    with pytest.raises(Invalid) as refused:
        roles.grant(user, "root", actor=CONSOLE)
    assert refused.value.code == "admin.role_unknown"
    assert count(dbsession, AdminGrant) == 0
    with pytest.raises(Invalid):
        parse_role("super admin")


def test_the_last_superadmin_stays_unless_the_shell_says(roles, dbsession, by):
    first, second = make_user(dbsession), make_user(dbsession)
    roles.grant(first, "superadmin", actor=Actor.command_line())
    with pytest.raises(Conflict) as refused:
        roles.revoke(first, "superadmin", actor=by)
    assert refused.value.code == "admin.last_superadmin"
    roles.grant(second, "superadmin", actor=by)
    assert roles.revoke(first, "superadmin", actor=by)
    assert roles.revoke(second, "superadmin", actor=Actor.command_line())
    assert count(dbsession, AdminGrant) == 0


def test_holders_lists_each_user_once(roles, dbsession, by):
    user = make_user(dbsession)
    roles.grant(user, "helpdesk", actor=by)
    roles.grant(user, "auditor", actor=by)
    [(held_by, held)] = roles.holders()
    assert held_by.id == user.id and held == ["auditor", "helpdesk"]


def test_the_helpdesk_never_acts_on_an_admin(roles, dbsession, by):
    user = make_user(dbsession)
    check_target(dbsession, user)
    roles.grant(user, "registry", actor=by)
    with pytest.raises(Conflict) as refused:
        check_target(dbsession, user)
    assert refused.value.code == "admin.target_is_admin"


def test_update_profile_changes_and_audits_only_what_differs(accounts, dbsession):
    user = make_user(dbsession)
    assert accounts.update_profile(user, actor=CONSOLE, full_name=user.full_name) == []
    assert audited(dbsession, "account.profile_changed") == []
    changed = accounts.update_profile(
        user, actor=CONSOLE, full_name="Nur Aisyah", phone=user.phone
    )
    assert changed == ["full_name"] and user.full_name == "Nur Aisyah"
    [(detail, *_rest)] = audited(dbsession, "account.profile_changed")
    assert detail == {"by": "admin-console", "fields": ["full_name"]}


def test_update_profile_refuses_other_fields(accounts, dbsession):
    """WEB-10: mass assignment through the service is refused as a whole."""
    user = make_user(dbsession)
    before = user.email
    with pytest.raises(Invalid):
        accounts.update_profile(
            user, actor=CONSOLE, full_name="Nur Aisyah", email="x@example.com.my"
        )
    dbsession.refresh(user)
    assert user.email == before and user.full_name != "Nur Aisyah"


def test_end_sessions(accounts, dbsession):
    user = make_user(dbsession)
    make_session(dbsession, user)
    assert accounts.end_sessions(user, actor=CONSOLE) == 1
    assert count(dbsession, IdpSession, IdpSession.user_id == user.id) == 0
    [(detail, *_rest)] = audited(dbsession, "sessions.ended")
    assert detail == {"by": "admin-console", "how": "helpdesk", "count": 1}


@pytest.mark.postgresql
def test_search(dbsession):
    """Dialects differ in LIKE escapes and lower(): both must agree."""
    user = make_user(dbsession, full_name="Tan Mei Ling", phone="+60112223344")
    make_user(dbsession, full_name="Tan Sri Ahmad")

    def found(text, country=None):
        return [u.id for u in dbsession.scalars(search(text, country))]

    assert found(user.identifier) == [user.id]
    assert found("mei ling") == [user.id]
    assert len(found("TAN")) == 2
    assert found(user.email.upper()) == [user.id]
    assert found("011-222 3344") == [user.id]
    for text in ("a", " ", "x" * 201):
        with pytest.raises(Invalid):
            search(text)
    assert found("100%") == []
    assert dbsession.scalar(select(User).where(User.id == user.id)) is not None


def test_masks():
    assert mask_email("aminah@example.com") == "a***@example.com"
    assert mask_email("broken") == "***"
    assert mask_phone("+60123456789") == "+60******789"
    assert mask_phone("+6012") == "*****"


def test_fresh_is_bound_to_the_window(dbsession):
    import datetime as dt

    from idp.db import utcnow

    user = make_user(dbsession)
    now = utcnow()
    assert fresh(user.id, now - dt.timedelta(minutes=14), {}, now)
    assert not fresh(user.id, now - dt.timedelta(minutes=15), {}, now)
    assert not fresh(user.id, None, {}, now)


@pytest.mark.postgresql
def test_a_grant_racing_another_is_refused_by_the_key(roles, dbsession, by):
    """The check and the insert are apart: a grant made meanwhile (here, a row
    inserted behind the service's back) must not become a 500."""
    user = make_user(dbsession)
    dbsession.add(AdminGrant(user_id=user.id, role="auditor"))
    dbsession.flush()
    dbsession.expire_all()
    original = roles.roles_of
    roles.roles_of = lambda target: frozenset()
    try:
        assert roles.grant(user, "auditor", actor=by) is False
    finally:
        roles.roles_of = original
    assert count(dbsession, AdminGrant) == 1
    assert audited(dbsession, "admin.granted") == []
