"""AccountService: what the helpdesk and operators do to accounts.

``idp-admin user`` (tests/functional/test_cli_admin.py) and the admin console
call the same service; these tests call it as the console will, with an
actor that has a user id and an address, and check each rule, its audit
event with that actor, its email, the refusals, and that a refusal leaves
nothing behind even for a caller that catches it and goes on to commit.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from idp.db import utcnow
from idp.identifiers import parse_identifier
from idp.models import AuditEvent, IdpSession, OneTimeToken, OutboxMessage, User
from idp.services.errors import Conflict, Invalid, NotFound
from idp.services.interfaces import IAccountService, IRateLimiter
from idp.services.tokens import ResetTokens
from idp.services.users import Registration
from tests.factories import (
    HASHER,
    count,
    make_module,
    make_role,
    make_session,
    make_user,
)
from tests.services import CONSOLE, audited

NUMBER = "900101-14-5678"


def registration(**values) -> Registration:
    fields = {
        "category": "educator",
        "identifier": parse_identifier(NUMBER),
        "full_name": "Ali bin Abu",
        "email": "ali@example.com.my",
        "phone": "+60123456789",
        "institution": "SK Putrajaya",
        "security_image": "",
        "security_phrase": "",
        "locale": "ms",
        **values,
    }
    return Registration(**fields)


@pytest.fixture
def accounts(service):
    return service(IAccountService)


def snapshot(dbsession, user=None) -> tuple:
    """What an account operation could write, flushed first as a commit would."""
    dbsession.flush()
    state = None
    if user is not None:
        dbsession.refresh(user)
        state = (
            user.email,
            user.password_hash,
            user.disabled_at,
            user.must_change_password,
            sorted(role.name for role in user.roles),
        )
    return (
        count(dbsession, User),
        count(dbsession, AuditEvent),
        count(dbsession, OutboxMessage),
        count(dbsession, IdpSession),
        state,
    )


def templates(dbsession, recipient: str) -> list[str]:
    return list(
        dbsession.scalars(
            select(OutboxMessage.template)
            .where(OutboxMessage.recipient == recipient)
            .order_by(OutboxMessage.id)
        )
    )


def test_create_audits_grants_and_mails_the_temporary_password(accounts, dbsession):
    make_role(dbsession, "guru", make_module(dbsession, "emis"))
    issued = accounts.create(registration(), roles=["GURU", "guru"], actor=CONSOLE)
    user = issued.user
    assert issued.password is None  # emailed, never handed back
    assert [role.name for role in user.roles] == ["guru"]
    assert user.must_change_password is True
    assert issued.expires_at - user.created_at == dt.timedelta(hours=72)
    assert audited(dbsession, "account.created") == [
        (
            {"by": "admin-console", "roles": ["guru"]},
            CONSOLE.user_id,
            CONSOLE.address,
            user.id,
        )
    ]
    assert templates(dbsession, "ali@example.com.my") == ["account-created"]


def test_a_revealed_password_is_not_emailed_and_works(accounts, dbsession):
    issued = accounts.create(registration(), reveal_password=True, actor=CONSOLE)
    assert HASHER.verify(issued.password, issued.user.password_hash)
    assert count(dbsession, OutboxMessage) == 0


@pytest.mark.parametrize(
    ("values", "code"),
    [
        ({}, "account.identifier_taken"),
        ({"identifier": parse_identifier("900101-14-5679")}, "account.email_taken"),
    ],
)
def test_data_01_an_identity_number_or_email_registered_is_refused(
    accounts, dbsession, values, code
):
    accounts.create(registration(), actor=CONSOLE)
    before = snapshot(dbsession)
    with pytest.raises(Conflict) as refused:
        accounts.create(registration(**values), actor=CONSOLE)
    assert refused.value.code == code
    assert snapshot(dbsession) == before
    # The control: another number and address register.
    accounts.create(
        registration(
            identifier=parse_identifier("900101-14-5679"), email="abu@example.com.my"
        ),
        actor=CONSOLE,
    )


def test_an_unknown_role_creates_no_account(accounts, dbsession):
    """Nothing half-written: no user without the roles asked for."""
    make_role(dbsession, "guru")
    before = snapshot(dbsession)
    with pytest.raises(NotFound) as refused:
        accounts.create(registration(), roles=["guru", "ghost"], actor=CONSOLE)
    assert refused.value.code == "role.not_found"
    assert snapshot(dbsession) == before


def test_grant_and_revoke_are_audited_once(accounts, dbsession):
    make_role(dbsession, "guru")
    user = make_user(dbsession)
    assert accounts.grant_role(user, "Guru", actor=CONSOLE) is True
    assert accounts.grant_role(user, "guru", actor=CONSOLE) is False
    assert accounts.revoke_role(user, "guru", actor=CONSOLE) is True
    assert accounts.revoke_role(user, "guru", actor=CONSOLE) is False
    for event in ("role.granted", "role.revoked"):
        assert audited(dbsession, event) == [
            (
                {"by": "admin-console", "role": "guru"},
                CONSOLE.user_id,
                CONSOLE.address,
                user.id,
            )
        ]
    with pytest.raises(NotFound):
        accounts.grant_role(user, "ghost", actor=CONSOLE)


def test_auth_18_a_lock_ends_every_session_and_tells_the_owner(accounts, dbsession):
    user, other = make_user(dbsession), make_user(dbsession)
    make_session(dbsession, user)
    make_session(dbsession, user)
    kept = make_session(dbsession, other)
    assert accounts.lock(user, reason="left the  school", actor=CONSOLE) == 2
    assert user.disabled_at is not None and not user.usable()
    assert dbsession.scalars(select(IdpSession.id)).all() == [kept.id]
    assert audited(dbsession, "account.locked") == [
        (
            {
                "by": "admin-console",
                "reason": "left the school",
                "until_unlocked": True,
            },
            CONSOLE.user_id,
            CONSOLE.address,
            user.id,
        )
    ]
    assert templates(dbsession, user.email) == ["account-locked-by-helpdesk"]
    # Locked already: nothing changes, nothing more is sent.
    before = snapshot(dbsession, user)
    assert accounts.lock(user, reason=None, actor=CONSOLE) is None
    assert snapshot(dbsession, user) == before


@pytest.mark.parametrize(
    "reason",
    ["forged\naccount.unlocked by idp-admin", "\u202etoohcs eht tfel", "x" * 201],
)
def test_a_lock_reason_is_one_clean_line_or_nothing_is_locked(
    accounts, dbsession, reason
):
    """The reason lands in the audit log an auditor reads: no forged lines."""
    user = make_user(dbsession)
    make_session(dbsession, user)
    before = snapshot(dbsession, user)
    with pytest.raises(Invalid) as refused:
        accounts.lock(user, reason=reason, actor=CONSOLE)
    assert refused.value.field == "reason"
    assert snapshot(dbsession, user) == before
    assert user.usable()


def test_unlock_lifts_both_locks_and_forgets_the_failures(accounts, service, dbsession):
    limiter = service(IRateLimiter)
    user = make_user(
        dbsession, disabled_at=utcnow(), locked_until=utcnow() + dt.timedelta(hours=1)
    )
    for _ in range(3):
        limiter.hit("login.locks", user.identifier)
        limiter.hit("login.identifier", user.identifier)
    assert accounts.unlock(user, actor=CONSOLE) is True
    assert user.usable()
    for name in ("login.locks", "login.identifier"):
        assert limiter.check(name, user.identifier).count == 0
    assert accounts.unlock(user, actor=CONSOLE) is False
    assert [row[1:] for row in audited(dbsession, "account.unlocked")] == [
        (CONSOLE.user_id, CONSOLE.address, user.id)
    ] * 2


def test_an_admin_reset_ends_sessions_voids_links_and_mails(accounts, dbsession):
    user = make_user(dbsession)
    make_session(dbsession, user)
    ResetTokens(dbsession).issue(user)
    ended, issued = accounts.reset_password(user, actor=CONSOLE)
    assert (ended, issued.password) == (1, None)
    assert user.must_change_password is True
    assert count(dbsession, IdpSession) == 0
    assert count(dbsession, OneTimeToken, OneTimeToken.used_at.is_(None)) == 0
    assert audited(dbsession, "password.admin_reset") == [
        ({"by": "admin-console"}, CONSOLE.user_id, CONSOLE.address, user.id)
    ]
    assert templates(dbsession, user.email) == ["temporary-password-reset"]


def test_a_corrected_email_tells_both_and_resends_a_pending_password(
    accounts, dbsession
):
    issued = accounts.create(registration(email="ali@exmaple.com.my"), actor=CONSOLE)
    user = issued.user
    old_hash = user.password_hash
    corrected = accounts.set_email(user, " Ali@Example.com.my ", actor=CONSOLE)
    assert (corrected.previous, corrected.email, corrected.reissued) == (
        "ali@exmaple.com.my",
        "ali@example.com.my",
        True,
    )
    assert user.password_hash != old_hash  # the copy in the wrong mailbox is dead
    assert audited(dbsession, "email.changed") == [
        (
            {"by": "admin-console", "previous": "ali@exmaple.com.my"},
            CONSOLE.user_id,
            CONSOLE.address,
            user.id,
        )
    ]
    assert audited(dbsession, "password.admin_reset")[0][0] == {
        "by": "admin-console",
        "reason": "email-changed",
    }
    assert "temporary-password-reset" in templates(dbsession, "ali@example.com.my")
    # The control: with no temporary password pending, none is sent.
    settled = make_user(dbsession)
    assert (
        accounts.set_email(settled, "new@example.com.my", actor=CONSOLE).reissued
        is False
    )


@pytest.mark.parametrize(
    ("email", "error", "code"),
    [
        # WEB-09: a line break would add a header to every later notice.
        ("ali@example.com.my\r\nBcc: x@evil.example", Invalid, "email.invalid"),
        ("not an address", Invalid, "email.invalid"),
        ("PENGGUNA@example.com.my", Invalid, "account.email_unchanged"),
        ("TAKEN@example.com.my", Conflict, "account.email_taken"),
    ],
)
def test_web_09_a_bad_or_taken_email_changes_nothing(
    accounts, dbsession, email, error, code
):
    user = make_user(dbsession, email="pengguna@example.com.my")
    make_user(dbsession, email="taken@example.com.my")
    before = snapshot(dbsession, user)
    with pytest.raises(error) as refused:
        accounts.set_email(user, email, actor=CONSOLE)
    assert (refused.value.code, refused.value.field) == (code, "email")
    assert snapshot(dbsession, user) == before


def test_find_names_the_number_it_did_not_find(accounts, dbsession):
    user = make_user(dbsession)
    assert accounts.find(parse_identifier(user.identifier)) is user
    with pytest.raises(NotFound) as refused:
        accounts.find(parse_identifier(NUMBER))
    assert str(refused.value) == f"no user with identity number {NUMBER}"


def test_standing_says_why_someone_cannot_sign_in(accounts, dbsession, service):
    from idp.services.interfaces import IAuditLog

    now = utcnow()
    later = now + dt.timedelta(minutes=15)
    free = accounts.standing(make_user(dbsession))
    assert (free.disabled_since, free.locked_until, free.last_sign_in) == (
        None,
        None,
        None,
    )
    locked = make_user(dbsession, locked_until=later)
    assert accounts.standing(locked).locked_until == later
    # An administrator's lock is what the helpdesk must lift; it is the one
    # named even while a lock from wrong passwords runs too.
    both = accounts.standing(make_user(dbsession, disabled_at=now, locked_until=later))
    assert (both.disabled_since, both.locked_until) == (now, None)
    # A lock that ran out is no lock.
    over = make_user(dbsession, locked_until=now - dt.timedelta(seconds=1))
    assert accounts.standing(over).locked_until is None

    pending = make_user(
        dbsession, must_change_password=True, temp_password_expires_at=later
    )
    expired = make_user(
        dbsession, must_change_password=True, temp_password_expires_at=now
    )
    assert accounts.standing(pending).temporary_until == later
    assert accounts.standing(expired).temporary_until is None
    assert accounts.standing(expired).must_change_password is True

    service(IAuditLog).record("login.success", subject_user_id=pending.id)
    assert accounts.standing(pending).last_sign_in is not None
    assert accounts.standing(expired).last_sign_in is None
