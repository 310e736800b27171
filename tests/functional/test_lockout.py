"""Lock-outs a stranger can cause: AUTH-29 (one account), AUTH-30 (a shared address).

The stranger holds the source and a script. Failures over simulated time run
through the real sign-in service with a settable clock that ends at the real
present, so the pages afterwards (real time) see the account as the stranger
left it.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from idp.db import utcnow
from idp.forms.login import MESSAGES as LOGIN_MESSAGES
from idp.models import AuditEvent
from idp.services.audit import AuditLog
from idp.services.mail import Outbox
from idp.services.ratelimit import REGISTRY_LIMITS, DatabaseRateLimiter
from idp.services.signin import Outcome, SignInService
from idp.services.users import UserService
from tests.app import browser, captcha_answer, make_app
from tests.factories import HASHER, NEW_PASSWORD, PASSWORD, display, make_user
from tests.password_reset import choose, link_for, open_link, verify
from tests.signin import bcrypt_calls, message, sign_in

pytestmark = pytest.mark.postgresql

STRANGER = "198.51.100.66"
OWNER = "203.0.113.5"
# The attack (21 failures in 31 minutes made the third lock of the
# day), drawn out: a wrong password every 20 seconds for three hours.
ATTACK = dt.timedelta(hours=3)
STEP = dt.timedelta(seconds=20)


class Clock:
    """A settable ``utcnow``."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def signin_service(app, dbsession, clock) -> SignInService:
    """The sign-in service as a request builds it, on a settable clock."""
    registry = app.registry
    users = UserService(dbsession, HASHER, None, temporary_hours=72, clock=clock)
    return SignInService(
        dbsession,
        users=users,
        passwords=HASHER,
        limiter=DatabaseRateLimiter(
            dbsession,
            registry.settings["idp.hmac_key"],
            registry[REGISTRY_LIMITS],
            clock=clock,
        ),
        audit=AuditLog(dbsession, clock=clock),
        outbox=Outbox(
            dbsession, registry["idp.mail.composer"], registry["idp.mail.codec"]
        ),
        clock=clock,
    )


def stranger_attack(app, dbsession, user) -> tuple[Clock, SignInService, list]:
    """Wrong passwords for ``user`` every STEP for ATTACK, ending now."""
    clock = Clock(utcnow() - ATTACK)
    signin = signin_service(app, dbsession, clock)
    outcomes = []
    for n in range(ATTACK // STEP + 1):
        clock.now = utcnow() - ATTACK + n * STEP
        attempt = signin.attempt(
            user.identifier, "mykad", f"stranger guess {n:04d}", STRANGER
        )
        outcomes.append(attempt.outcome)
    return clock, signin, outcomes


def locks(dbsession, user) -> list[AuditEvent]:
    return dbsession.scalars(
        select(AuditEvent)
        .where(
            AuditEvent.event == "account.locked",
            AuditEvent.subject_user_id == user.id,
        )
        .order_by(AuditEvent.occurred_at)
    ).all()


# AUTH-29


@pytest.mark.slow
def test_auth_29_a_strangers_failures_never_disable_the_account(app, dbsession):
    """AUTH-29: hours of wrong passwords lock, for longer each time, never for good."""
    user = make_user(dbsession)
    clock, signin, outcomes = stranger_attack(app, dbsession, user)
    assert outcomes.count(Outcome.FAILED) >= 21
    dbsession.refresh(user)
    assert user.disabled_at is None
    made = locks(dbsession, user)
    assert len(made) == 3
    assert all(not lock.detail["until_unlocked"] for lock in made)
    # Each lock lasts longer than the one before, up to the cap.
    lengths = [lock.detail["minutes"] for lock in made]
    assert lengths == [15, 60, 240]
    assert user.locked_until is not None
    # Still locked: the right password is refused while the lock lasts...
    assert not signin.attempt(user.identifier, "mykad", PASSWORD, OWNER).ok
    # ...and, the control, accepted once it is over: no helpdesk needed.
    clock.now = user.locked_until + dt.timedelta(seconds=1)
    assert signin.attempt(user.identifier, "mykad", PASSWORD, OWNER).ok


@pytest.mark.slow
def test_auth_29_a_reset_by_email_works_during_the_lock_and_ends_it(
    app, tm, dbsession, mailbox
):
    """AUTH-29: the locked owner resets by email at once and signs in."""
    user = make_user(dbsession, locale="en")
    stranger_attack(app, dbsession, user)
    owner = browser(app, tm, dbsession, OWNER)
    refused = sign_in(owner, display(user), PASSWORD, status=None)
    assert refused.status_int in (400, 429)
    link = link_for(owner, mailbox, user.email)
    assert open_link(owner, link).status_int == 303
    assert verify(owner, user.email, user.identifier).status_int == 303
    assert choose(owner, NEW_PASSWORD).status_int == 303
    dbsession.refresh(user)
    assert user.locked_until is None and user.disabled_at is None
    assert sign_in(owner, display(user), NEW_PASSWORD, status=None).status_int == 303
    # The owner was told of each lock, and told what to do.
    notices = [m for m in mailbox(user.email) if "locked" in m["Subject"]]
    assert len(notices) == len(locks(dbsession, user)) == 3
    text = notices[-1].get_body(("plain",)).get_content()
    assert "was not revealed" in text
    assert "https://idp.test/password/forgot" in text
    assert "helpdesk" not in text.lower()


# AUTH-30


@pytest.fixture(scope="module")
def nat_app(settings, db_engine):
    """The shipped limits, with the captcha on as both ini files have it."""
    return make_app({**settings, "captcha.enabled": "true"}, db_engine)


@pytest.mark.slow
def test_auth_30_a_right_password_behind_a_busy_address_succeeds_after_the_captcha(
    nat_app, tm, dbsession, monkeypatch
):
    """AUTH-30: 30 failures on other numbers from a NAT address refuse nobody's right password."""
    user = make_user(dbsession)
    attacker = browser(nat_app, tm, dbsession, "100.64.0.9")
    for n in range(30):
        page = sign_in(attacker, f"9001011456{n:02d}", "not the password", status=None)
        assert page.status_int == 400
    # A classmate behind the same address, with the right password.
    calls = bcrypt_calls(monkeypatch)
    classmate = browser(nat_app, tm, dbsession, "100.64.0.9")
    page = sign_in(classmate, display(user), PASSWORD, status=None)
    assert page.status_int == 400  # the captcha was not answered yet
    assert message(page) == LOGIN_MESSAGES["failed"]
    form = page.forms["password-form"]
    assert "captcha_answer" in form.fields
    # OPS-06: an attempt without the captcha costs no bcrypt.
    assert calls == []
    form["password"] = PASSWORD
    form["captcha_answer"] = captcha_answer(nat_app, form["captcha_token"].value)
    assert form.submit(expect_errors=True).status_int == 303
    assert calls == ["checkpw"]


@pytest.mark.slow
def test_auth_30_past_the_address_limit_a_wrong_password_still_fails(
    nat_app, tm, dbsession
):
    """AUTH-30: the captcha lets an attempt be heard, not succeed: wrong stays wrong."""
    user = make_user(dbsession)
    attacker = browser(nat_app, tm, dbsession, "100.64.0.11")
    for n in range(30):
        sign_in(attacker, f"9001011457{n:02d}", "not the password", status=None)
    form = sign_in(attacker, display(user), "still not it", status=None).forms[
        "password-form"
    ]
    form["password"] = "still not it"
    form["captcha_answer"] = captcha_answer(nat_app, form["captcha_token"].value)
    refused = form.submit(expect_errors=True)
    assert refused.status_int == 400
    assert message(refused) == LOGIN_MESSAGES["failed"]
    # The identifier's own limit still holds past the address limit (AUTH-07).
    for n in range(9):
        form = refused.forms["password-form"]
        form["password"] = f"guess {n} behind the captcha"
        form["captcha_answer"] = captcha_answer(nat_app, form["captcha_token"].value)
        refused = form.submit(expect_errors=True)
    form = refused.forms["password-form"]
    form["password"] = PASSWORD
    form["captcha_answer"] = captcha_answer(nat_app, form["captcha_token"].value)
    assert form.submit(expect_errors=True).status_int == 429


def test_auth_30_the_captcha_is_demanded_only_past_the_address_limit(
    nat_app, tm, dbsession
):
    """AUTH-30 control: a quiet address signs in without a captcha."""
    user = make_user(dbsession)
    page = sign_in(
        browser(nat_app, tm, dbsession, "100.64.0.10"), display(user), status=None
    )
    assert page.status_int == 303


def test_auth_29_migration_0005_enables_what_the_old_rule_disabled(tmp_path):
    """AUTH-29: accounts the old third-lock rule disabled are usable again; an
    operator's lock stays, and the audit chain records each change and holds."""
    from alembic import command
    from sqlalchemy.orm import Session

    from idp.db import make_engine
    from idp.migrations import alembic_config
    from idp.models import User
    from idp.services import audit

    engine = make_engine({"sqlalchemy.url": f"sqlite:///{tmp_path / 'm.sqlite'}"})
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
        now = utcnow()
        old_rule = {"reason": "failures", "until_unlocked": True}
        operator = {"by": "idp-admin", "reason": None, "until_unlocked": True}
        with Session(engine) as session, session.begin():
            log = audit.AuditLog(session)
            stranger_victim = make_user(session, disabled_at=now)
            log.record(
                "account.locked", subject_user_id=stranger_victim.id, detail=old_rule
            )
            left_school = make_user(session, disabled_at=now)
            log.record(
                "account.locked", subject_user_id=left_school.id, detail=old_rule
            )
            log.record(
                "account.unlocked",
                subject_user_id=left_school.id,
                detail={"by": "idp-admin"},
            )
            log.record(
                "account.locked", subject_user_id=left_school.id, detail=operator
            )
            # Locked by the old rule, unlocked, then in use: not disabled.
            in_use = make_user(session)
            log.record("account.locked", subject_user_id=in_use.id, detail=old_rule)
            ids = [stranger_victim.id, left_school.id, in_use.id]
        # As a database upgraded from 0004 meets the new revision.
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0004")
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
        with Session(engine) as session:
            victim, school, used = (session.get(User, i) for i in ids)
            assert victim.disabled_at is None
            assert school.disabled_at is not None  # the control: an operator's lock
            assert used.disabled_at is None
            unlocked = session.scalars(
                select(AuditEvent).where(
                    AuditEvent.event == "account.unlocked",
                    AuditEvent.detail["by"].as_string()
                    == "migration 0005_failure_locks",
                )
            ).all()
            assert [event.subject_user_id for event in unlocked] == [victim.id]
            assert audit.verify(session).ok
    finally:
        engine.dispose()
