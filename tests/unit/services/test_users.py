"""UserService.set_password: everything a new password entails, in one place.

The reset, the forced first change and "Akaun saya" all go through it; the
pages' own tests check what each shows, these check the one rule they share.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from idp.db import utcnow
from idp.models import AuditEvent, IdpSession, OneTimeToken, OutboxMessage
from idp.services.mail import Outbox
from idp.services.tokens import ResetTokens
from idp.services.users import PasswordChange, UserService
from tests.factories import HASHER, make_user

NEW_PASSWORD = "teh tarik kurang manis di kedai mamak"
ADDRESS = "192.0.2.77"


def make_session(dbsession, user, token_hash: str) -> IdpSession:
    now = utcnow()
    row = IdpSession(
        token_hash=token_hash,
        user_id=user.id,
        authn_at=now,
        expires_at=now + dt.timedelta(hours=8),
    )
    dbsession.add(row)
    dbsession.flush()
    return row


@pytest.fixture
def users(app, dbsession) -> UserService:
    registry = app.registry
    outbox = Outbox(
        dbsession, registry["idp.mail.composer"], registry["idp.mail.codec"]
    )
    return UserService(dbsession, HASHER, outbox, temporary_hours=72)


@pytest.mark.parametrize(
    ("how", "event", "by_user", "detail"),
    [
        (PasswordChange.RESET, "password.reset", False, {}),
        (
            PasswordChange.FIRST_SIGN_IN,
            "password.changed",
            True,
            {"how": "first sign-in"},
        ),
        (PasswordChange.ACCOUNT, "password.changed", True, {"how": "account"}),
    ],
)
def test_a_new_password_ends_sessions_voids_links_audits_and_mails(
    users, dbsession, how, event, by_user, detail
):
    user = make_user(dbsession, must_change_password=True)
    other = make_user(dbsession)
    here = make_session(dbsession, user, "a" * 64)
    make_session(dbsession, user, "b" * 64)
    elsewhere = make_session(dbsession, other, "c" * 64)
    ResetTokens(dbsession).issue(user)

    users.set_password(
        user, NEW_PASSWORD, how=how, client_address=ADDRESS, keep_session=here
    )
    dbsession.flush()

    assert HASHER.verify(NEW_PASSWORD, user.password_hash)
    assert user.must_change_password is False
    assert user.password_changed_at is not None
    # The user's other sessions end; the kept one and other users' stay.
    left = dbsession.scalars(select(IdpSession.id)).all()
    assert sorted(left) == sorted([here.id, elsewhere.id])
    unused = select(OneTimeToken).where(
        OneTimeToken.user_id == user.id, OneTimeToken.used_at.is_(None)
    )
    assert dbsession.scalars(unused).all() == []
    (audited,) = dbsession.scalars(
        select(AuditEvent).where(AuditEvent.event.like("password.%"))
    ).all()
    assert audited.event == event
    assert audited.subject_user_id == user.id
    assert audited.actor_user_id == (user.id if by_user else None)
    assert audited.client_address == ADDRESS
    assert audited.detail == detail
    mailed = dbsession.scalars(
        select(OutboxMessage.template).where(OutboxMessage.recipient == user.email)
    ).all()
    assert mailed == ["password-changed"]


def test_without_a_kept_session_every_session_ends(users, dbsession):
    user = make_user(dbsession)
    make_session(dbsession, user, "d" * 64)
    users.set_password(user, NEW_PASSWORD, how=PasswordChange.RESET)
    dbsession.flush()
    assert dbsession.scalars(select(IdpSession)).all() == []


def test_usable_means_not_disabled_and_no_lock_running(dbsession):
    now = utcnow()
    assert make_user(dbsession).usable(now)
    assert not make_user(dbsession, disabled_at=now).usable(now)
    locked = make_user(dbsession, locked_until=now + dt.timedelta(minutes=15))
    assert not locked.usable(now)
    # A lock ends by itself.
    assert locked.usable(now + dt.timedelta(minutes=15))
