"""``idp-admin`` module, role and user commands, as an operator runs them.

Each test works on a scratch copy of development.ini (SQLite, mail written
as .eml files by ``mail deliver``). The commands run in this process through
``idp.cli.main``, with their output captured: a separate process per command
spent two seconds importing and starting before doing anything, and
``tests/functional/test_cli.py`` already shows the console script itself
works as a real process.
"""

from __future__ import annotations

import datetime as dt
import os
import re

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.db import utcnow
from idp.models import IdpSession, OneTimeToken, User
from tests.app import (
    base_settings,
    committing_browser,
    make_app,
)
from tests.cli import (
    NUMBER,
    add_user,
    admin,
    delivered,
    fails,
    ok,
    printed_password,
    text_of,
    user_row,
)
from tests.factories import NEW_PASSWORD, events

# Every command configures the app's services and database.
pytestmark = pytest.mark.slow


# Help


def test_every_command_has_help():
    for group, actions in (
        ("module", ("create", "list", "rename", "delete")),
        (
            "role",
            ("create", "list", "rename", "delete", "grant-module", "revoke-module"),
        ),
        (
            "user",
            ("add", "show", "grant", "revoke", "lock", "unlock", "reset-password"),
        ),
    ):
        assert group in ok("x.ini", "--help")
        for action in actions:
            assert action in ok("x.ini", group, "--help")
            assert "usage:" in ok("x.ini", group, action, "--help")


# Modules and roles


def test_modules_and_roles(db):
    assert "no modules yet" in ok(db, "module", "list")
    assert "no roles yet" in ok(db, "role", "list")
    names = ("--name-ms", "Sistem Maklumat Murid", "--name-en", "Pupil Records")
    assert "created module emis" in ok(db, "module", "create", "emis", *names)
    assert fails(db, "module", "create", "emis", *names) == (
        "idp-admin: a module with code 'emis' already exists"
    )
    assert "--name-en: must not be empty" in fails(
        db, "module", "create", "spm", "--name-ms", "SPM", "--name-en", " "
    )
    assert fails(db, "module", "create", "bad code", *names)  # argparse refuses
    ok(db, "module", "create", "spm", "--name-ms", "Peperiksaan", "--name-en", "Exams")

    role = ("--name-ms", "Guru", "--name-en", "Teacher")
    out = ok(db, "role", "create", "teacher", *role, "--description", "Teaches")
    assert "created role teacher" in out
    assert fails(db, "role", "create", "teacher", *role) == (
        "idp-admin: a role named 'teacher' already exists"
    )

    assert "now grants module emis" in ok(db, "role", "grant-module", "teacher", "emis")
    assert "already grants" in ok(db, "role", "grant-module", "teacher", "emis")
    ok(db, "role", "grant-module", "teacher", "spm")
    assert "no role named 'ghost'" in fails(db, "role", "grant-module", "ghost", "emis")
    assert "no module with code 'nope'" in fails(
        db, "role", "grant-module", "teacher", "nope"
    )
    listed = ok(db, "role", "list")
    assert "teacher  Guru / Teacher  modules: emis, spm" in listed
    assert "    Teaches" in listed
    modules = ok(db, "module", "list")
    assert "emis  Sistem Maklumat Murid / Pupil Records  roles: teacher" in modules

    assert "no longer grants module spm" in ok(
        db, "role", "revoke-module", "teacher", "spm"
    )
    assert "nothing changed" in ok(db, "role", "revoke-module", "teacher", "spm")
    assert "modules: emis\n" in ok(db, "role", "list")
    assert "spm  Peperiksaan / Exams  roles: -" in ok(db, "module", "list")


def test_commands_before_db_upgrade_fail_clearly(ini):
    assert "run 'idp-admin CONFIG db upgrade' first" in fails(ini, "role", "list")


# Users


def test_add_with_print_password_signs_in_on_the_web_and_must_change(
    db, engine, tmp_path
):
    ok(db, "role", "create", "admin", "--name-ms", "Pentadbir", "--name-en", "Admin")
    result = add_user(db, "--role", "admin", "--print-password")
    assert result.returncode == 0, result.stderr
    password = printed_password(result.stdout)
    assert "created user XXXXXX-XX-5678 (Ali bin Abu); roles: admin" in result.stdout
    assert "mail status" not in result.stdout
    # Printed, so not emailed.
    assert ok(db, "mail", "status").startswith("queued 0 ")

    user = user_row(engine)
    assert user.must_change_password is True
    assert user.security_image is None
    assert user.phone == "+60123456789"
    lifetime = user.temp_password_expires_at - user.created_at
    assert lifetime == dt.timedelta(hours=72)
    (created,) = events(engine, "account.created")
    assert created.actor_user_id is None
    assert created.detail == {"by": "idp-admin", "roles": ["admin"]}

    settings = {
        **base_settings(tmp_path),
        "sqlalchemy.url": str(engine.url),
        "idp.auto_create_keys": "true",
    }
    browser = committing_browser(make_app(settings, engine))
    form = browser.get("/login?lang=en").forms["login-form"]
    form["identifier"] = NUMBER
    form = form.submit(status=303).follow().forms["image-form"]
    form["confirm"] = True
    form = form.submit(status=303).follow().forms["password-form"]
    form["password"] = password
    landed = form.submit(status=303)
    assert landed.location.endswith("/password/new")
    form = browser.get("/password/new").forms["new-password-form"]
    form["password"] = form["password_confirm"] = NEW_PASSWORD
    # No image or phrase yet: the first change asks for them too.
    form["security_image"] = "cat"
    form.submit(status=303)
    assert user_row(engine).must_change_password is False
    assert user_row(engine).security_image == "cat"

    shown = ok(db, "user", "show", NUMBER)
    assert "must change password: no" in shown
    assert re.search(r"last sign-in: +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", shown)


def test_add_without_the_flag_emails_the_password_and_does_not_print_it(
    db, engine, tmp_path
):
    result = add_user(db, "--locale", "en")
    assert result.returncode == 0, result.stderr
    assert "temporary password: " not in result.stdout
    assert "queued by email to ali@example.com.my" in result.stdout
    # Queued only: the command does not send, `mail deliver` does.
    assert not list((tmp_path / "mail").glob("*.eml"))
    (message,) = delivered(db, tmp_path)
    assert message["To"] == "ali@example.com.my"
    body = text_of(message)
    password = re.search(r"Your temporary password: (\S+)", body).group(1)
    assert password not in result.stdout
    with Session(engine) as session:
        from idp.services.passwords import BcryptPasswordService

        user = session.scalars(select(User)).one()
        assert BcryptPasswordService(rounds=4).verify(password, user.password_hash)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            {"number": "901301-14-5678"},
            "IDENTIFIER: The first six digits of the identity card number",
        ),
        ({"email": "ali@"}, "--email: Enter an email address"),
        ({"--phone": "012-345"}, "--phone: A Malaysian mobile number"),
        ({"--category": "teacher"}, "--category: 'teacher' is not one of student,"),
        ({"--country": "ZZZ"}, "--country: Choose the country"),
        ({"--role": "ghost"}, "no role named 'ghost'"),
    ],
)
def test_add_refuses_bad_input_and_writes_nothing(db, engine, change, error):
    options = {"--category": "educator", "--phone": "012-345 6789"}
    options.update({k: v for k, v in change.items() if k.startswith("--")})
    args = [
        db,
        "user",
        "add",
        change.get("number", NUMBER),
        "--name",
        "Ali bin Abu",
        "--email",
        change.get("email", "ali@example.com.my"),
        "--institution",
        "SK Putrajaya",
    ]
    for key, value in options.items():
        args += [key, value]
    assert error in fails(*args)
    with Session(engine) as session:
        assert session.scalars(select(User)).all() == []


def test_add_names_the_duplicate(db):
    assert add_user(db).returncode == 0
    assert fails(*add_user_args(db, email="other@example.com.my")) == (
        "idp-admin: a user with identity number 900101-14-5678 already exists"
    )
    assert fails(*add_user_args(db, number="900101-14-5679")) == (
        "idp-admin: a user with email ali@example.com.my already exists"
    )


def add_user_args(ini, *, number=NUMBER, email="ali@example.com.my"):
    return [
        ini,
        "user",
        "add",
        number,
        "--name",
        "Ali bin Abu",
        "--email",
        email.upper(),
        "--phone",
        "0123456789",
        "--category",
        "public",
    ]


def test_show_grant_revoke(db):
    ok(db, "role", "create", "teacher", "--name-ms", "Guru", "--name-en", "Teacher")
    ok(db, "role", "create", "head", "--name-ms", "Guru Besar", "--name-en", "Head")
    assert add_user(db, "--role", "teacher").returncode == 0
    shown = ok(db, "user", "show", "900101145678")
    for line in (
        "name:                 Ali bin Abu",
        "identifier:           XXXXXX-XX-5678 (mykad)",
        "email:                ali@example.com.my",
        "category:             educator",
        "roles:                teacher",
        "state:                active",
        "must change password: yes (temporary password valid until",
        "security image:       not chosen",
        "last sign-in:         never",
    ):
        assert line in shown
    assert NUMBER not in shown and "900101145678" not in shown

    assert "now has role head" in ok(db, "user", "grant", NUMBER, "head")
    assert "already has role head" in ok(db, "user", "grant", NUMBER, "head")
    assert "roles:                head, teacher" in ok(db, "user", "show", NUMBER)
    assert "no longer has role teacher" in ok(db, "user", "revoke", NUMBER, "teacher")
    assert "nothing changed" in ok(db, "user", "revoke", NUMBER, "teacher")
    assert "roles:                head\n" in ok(db, "user", "show", NUMBER)

    assert "no role named 'ghost'" in fails(db, "user", "grant", NUMBER, "ghost")
    assert fails(db, "user", "show", "900101-14-5679") == (
        "idp-admin: no user with identity number 900101-14-5679"
    )
    assert "IDENTIFIER:" in fails(db, "user", "grant", "12345", "head")


def test_passport_users_are_found_with_their_country(db):
    result = admin(
        *add_user_args(db, number="ab123456", email="john@example.com"),
        "--country",
        "gbr",
    )
    assert "created user GBR ****3456" in result.stdout, result.stderr
    assert "GBR ****3456 (passport)" in ok(
        db, "user", "show", "AB123456", "--country", "GBR"
    )
    assert "no user with identity number" in fails(
        db, "user", "show", "AB123456", "--country", "FRA"
    )


def add_session(engine, user_id) -> None:
    now = utcnow()
    with Session(engine) as session, session.begin():
        session.add(
            IdpSession(
                token_hash=os.urandom(32).hex(),
                user_id=user_id,
                authn_at=now,
                expires_at=now + dt.timedelta(hours=1),
            )
        )


def sessions_of(engine, user_id) -> int:
    with Session(engine) as session:
        return len(
            session.scalars(
                select(IdpSession).where(IdpSession.user_id == user_id)
            ).all()
        )


def test_lock_ends_sessions_and_unlock_opens_the_account(db, engine, tmp_path):
    assert add_user(db, "--print-password").returncode == 0
    user = user_row(engine)
    add_session(engine, user.id)
    add_session(engine, user.id)

    out = ok(db, "user", "lock", NUMBER, "--reason", "left the school")
    assert "locked XXXXXX-XX-5678 until 'user unlock'; ended 2 session(s)" in out
    assert sessions_of(engine, user.id) == 0
    assert user_row(engine).disabled_at is not None
    (locked,) = events(engine, "account.locked")
    assert locked.actor_user_id is None
    assert locked.subject_user_id == user.id
    assert locked.detail == {
        "by": "idp-admin",
        "reason": "left the school",
        "until_unlocked": True,
    }
    assert "state:                locked since" in ok(db, "user", "show", NUMBER)
    # Locking again changes nothing and sends nothing more.
    assert "already locked" in ok(db, "user", "lock", NUMBER)
    assert len(events(engine, "account.locked")) == 1
    (message,) = delivered(db, tmp_path)
    assert message["To"] == "ali@example.com.my"
    assert "helpdesk" in text_of(message)

    assert "unlocked XXXXXX-XX-5678" in ok(db, "user", "unlock", NUMBER)
    row = user_row(engine)
    assert row.disabled_at is None and row.locked_until is None
    assert "state:                active" in ok(db, "user", "show", NUMBER)
    (unlocked,) = events(engine, "account.unlocked")
    assert unlocked.detail == {"by": "idp-admin"}
    assert unlocked.actor_user_id is None
    assert "was not locked" in ok(db, "user", "unlock", NUMBER)

    assert "no user with identity number" in fails(db, "user", "lock", "900101-14-5679")
    assert "--reason: remove the line breaks" in fails(
        db, "user", "lock", NUMBER, "--reason", "a\nb"
    )


def test_unlock_resets_the_sign_in_limiters(db, engine, tmp_path):
    """A third lock in a day needs an admin; `user unlock` clears the counters."""
    from idp.services.ratelimit import DatabaseRateLimiter

    assert add_user(db, "--print-password").returncode == 0
    secret = base_settings(tmp_path)["idp.hmac_key"]
    with Session(engine) as session, session.begin():
        limiter = DatabaseRateLimiter(session, secret)
        for _ in range(3):
            limiter.hit("login.locks", "900101145678")
        for _ in range(10):
            limiter.hit("login.identifier", "900101145678")
        session.scalars(select(User)).one().disabled_at = utcnow()
    ok(db, "user", "unlock", NUMBER)
    with Session(engine) as session:
        limiter = DatabaseRateLimiter(session, secret)
        assert limiter.check("login.locks", "900101145678").count == 0
        assert limiter.check("login.identifier", "900101145678").count == 0
    assert user_row(engine).disabled_at is None


def test_reset_password_ends_sessions_voids_links_and_emails(db, engine, tmp_path):
    first = printed_password(add_user(db, "--print-password").stdout)
    user = user_row(engine)
    add_session(engine, user.id)
    with Session(engine) as session, session.begin():
        session.add(
            OneTimeToken(
                user_id=user.id,
                purpose="reset",
                token_hash=os.urandom(32).hex(),
                expires_at=utcnow() + dt.timedelta(hours=1),
            )
        )

    result = admin(db, "user", "reset-password", NUMBER)
    assert result.returncode == 0, result.stderr
    assert "ended 1 session(s)" in result.stdout
    assert "temporary password: " not in result.stdout
    assert sessions_of(engine, user.id) == 0
    with Session(engine) as session:
        token = session.scalars(select(OneTimeToken)).one()
        assert token.used_at is not None
    (event,) = events(engine, "password.admin_reset")
    assert event.detail == {"by": "idp-admin"}
    assert event.actor_user_id is None
    (message,) = delivered(db, tmp_path)
    emailed = re.search(r"temporary password: (\S+)", text_of(message)).group(1)
    assert emailed != first
    assert emailed not in result.stdout

    printed = printed_password(
        ok(db, "user", "reset-password", NUMBER, "--print-password")
    )
    assert printed not in (first, emailed)
    assert ok(db, "mail", "status").startswith("queued 0 ")
    row = user_row(engine)
    assert row.must_change_password is True
    assert row.temp_password_expires_at > utcnow() + dt.timedelta(hours=71)
    assert "no user with identity number" in fails(
        db, "user", "reset-password", "900101-14-5679"
    )


def test_sp_policy_changes_only_what_is_given_and_is_audited(db, engine, tmp_path):
    from tests.saml_metadata import make_sp_metadata

    metadata = tmp_path / "sp.xml"
    metadata.write_bytes(make_sp_metadata(encryption=False))
    ok(db, "module", "create", "emis", "--name-ms", "EMIS", "--name-en", "EMIS")
    ok(db, "sp", "import", metadata, "--module", "emis")
    entity = "https://sp.example.org/sp"
    shown = ok(db, "sp", "show", entity)
    assert "attributes released:  uid, isMemberOf" in shown

    out = ok(
        db, "sp", "policy", entity,
        "--release", "uid,displayName,mail,isMemberOf",
        "--name-id-format", "email",
        "--sign-response", "no",
        "--clock-skew", "60",
        "--relay-state-max", "80",
        "--authn-context", "urn:oasis:names:tc:SAML:2.0:ac:classes:Password",
    )  # fmt: skip
    assert "attributes released:  uid, displayName, mail, isMemberOf" in out
    assert "emailAddress" in out
    assert "sign response:        no" in out
    assert "sign assertion:       yes" in out
    assert "clock skew:           60 s" in out
    assert "RelayState limit:     80 B" in out
    assert "classes:Password" in out
    assert events(engine, "sp.policy")[-1].detail["changes"]["clock_skew"] == 60

    out = ok(
        db, "sp", "policy", entity, "--clock-skew", "default", "--authn-context", "none"
    )
    assert "clock skew:           IdP default" in out
    assert "AuthnContext class:   -" in out
    assert "attributes released:  uid, displayName, mail, isMemberOf" in out

    assert "unknown attribute icNumber" in fails(
        db, "sp", "policy", entity, "--release", "uid,icNumber"
    )
    assert "publishes no encryption key" in fails(
        db, "sp", "policy", entity, "--encrypt", "yes"
    )
    assert "0 to 600" in fails(db, "sp", "policy", entity, "--clock-skew", "601")
    assert "80 to 1024" in fails(db, "sp", "policy", entity, "--relay-state-max", "79")
    assert "nothing to change" in fails(db, "sp", "policy", entity)
    assert fails(db, "sp", "policy", entity, "--sign-assertion", "maybe")
    # The Response is unsigned now: the assertion is its one signature.
    assert "no unsigned assertion" in fails(
        db, "sp", "policy", entity, "--sign-assertion", "no"
    )
    assert "no SP is registered" in fails(
        db, "sp", "policy", "https://nobody.example/sp", "--release", "uid"
    )
    # Refusals wrote nothing.
    assert "attributes released:  uid, displayName, mail, isMemberOf" in ok(
        db, "sp", "show", entity
    )
    # A row stored before the signing rules: shown as what is sent.
    from sqlalchemy import update

    from idp.models import ServiceProvider

    with engine.begin() as conn:
        conn.execute(
            update(ServiceProvider)
            .where(ServiceProvider.entity_id == entity)
            .values(sign_response=False, sign_assertion=False)
        )
    shown = ok(db, "sp", "show", entity)
    assert "sign response:        no\n" in shown
    assert (
        "sign assertion:       yes (the metadata asks: WantAssertionsSigned)" in shown
    )
