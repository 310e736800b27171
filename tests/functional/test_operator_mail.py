"""What the owner reads after an operator acts (issue 12, items 8 and 10).

Each operator event has its own words: ``user add`` says the helpdesk
created the account, ``user reset-password`` that a new temporary password
was issued (not "an account has been registered... if you did not
register, ignore this"), ``user lock`` that the helpdesk locked it (not
"someone typed a wrong password"). ``user set-email`` fixes the address a
registration mistyped, audited, with a notice to both addresses.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.models import OutboxMessage, User
from tests.cli import NUMBER, add_user, delivered, fails, ok, text_of, user_row
from tests.factories import events

# The fixtures ini, db and engine (tests/conftest.py): the scratch ini and
# database of the operator's commands.

pytestmark = pytest.mark.slow


def html_of(message) -> str:
    return message.get_body(preferencelist=("html",)).get_content()


def subject(message) -> str:
    return message["Subject"].split(" / ")[1]  # the English half (locale ms)


def test_user_add_says_the_helpdesk_created_the_account(db, tmp_path):
    assert add_user(db).returncode == 0
    (message,) = delivered(db, tmp_path)
    assert subject(message) == "An idMe account has been created for you"
    text = text_of(message)
    assert "The helpdesk has created an idMe account for you" in text
    assert "Meja bantuan telah mewujudkan akaun idMe" in text
    assert "If you did not register" not in text
    assert re.search(r"temporary password: [a-z0-9]{16}\s*$", text, re.M)
    assert "Log masuk" in html_of(message)


def test_reset_password_says_a_new_temporary_password_was_issued(db, tmp_path):
    """Item 10: not the registration wording "if you did not register, ignore"."""
    assert add_user(db, "--print-password").returncode == 0
    ok(db, "user", "reset-password", NUMBER)
    (message,) = delivered(db, tmp_path)
    assert subject(message) == "A new temporary password for your idMe account"
    text = text_of(message)
    assert "has issued a new temporary password" in text
    assert "kata laluan sementara baharu" in text
    assert "has been registered" not in text
    assert "If you did not register" not in text
    assert "idme-support@moe.gov.my" in text


def test_operator_lock_says_the_helpdesk_locked_it(db, tmp_path):
    """Item 10: an operator's lock is not "a wrong password too many times"."""
    assert add_user(db, "--print-password").returncode == 0
    ok(db, "user", "lock", NUMBER)
    (message,) = delivered(db, tmp_path)
    assert subject(message) == "The helpdesk has locked your idMe account"
    text = text_of(message)
    assert "The helpdesk locked the idMe account XXXXXX-XX-5678" in text
    assert "too many times" not in text and "wrong password" not in text
    assert "/password/forgot" not in text
    assert "idme-support@moe.gov.my" in text and "03-8884 6000" in text


# user set-email


def test_set_email_moves_the_address_audits_and_tells_both(db, engine, tmp_path):
    assert add_user(db, "--print-password").returncode == 0
    # Delivered once so the welcome mail is out of the way.
    assert delivered(db, tmp_path) == []

    out = ok(db, "user", "set-email", NUMBER, "Ali.Abu@Example.com.my")

    assert "XXXXXX-XX-5678" in out and "ali.abu@example.com.my" in out
    assert user_row(engine).email == "ali.abu@example.com.my"
    (event,) = events(engine, "email.changed")
    assert event.detail == {"by": "idp-admin", "previous": "ali@example.com.my"}
    assert event.actor_user_id is None
    messages = delivered(db, tmp_path)
    (old,) = [m for m in messages if m["To"] == "ali@example.com.my"]
    new = "".join(text_of(m) for m in messages if m["To"] == "ali.abu@example.com.my")
    assert "The helpdesk changed the email of the idMe account" in text_of(old)
    assert "a***@example.com.my" in text_of(old)
    assert "ali.abu@example.com.my" not in text_of(old)
    assert "temporary password:" not in text_of(old)
    assert "The helpdesk made this address the email" in new


def test_set_email_refuses_a_taken_or_bad_address_and_changes_nothing(db, engine):
    assert add_user(db, "--print-password").returncode == 0
    assert (
        add_user(
            db, "--print-password", number="900101-14-5679", email="siti@example.com.my"
        ).returncode
        == 0
    )
    error = fails(db, "user", "set-email", NUMBER, "SITI@example.com.my")
    assert "siti@example.com.my" in error and "already" in error
    assert "not an email" in fails(db, "user", "set-email", NUMBER, "not an email")
    assert "no user with identity number" in fails(
        db, "user", "set-email", "900101-14-5670", "x@example.my"
    )
    assert "already the email" in fails(
        db, "user", "set-email", NUMBER, "ALI@example.com.my"
    )
    assert user_row(engine).email == "ali@example.com.my"
    assert events(engine, "email.changed") == []
    with Session(engine) as session:
        templates = session.scalars(select(OutboxMessage.template)).all()
    assert "email-changed" not in templates


def test_a_mistyped_registration_gets_its_password_at_the_right_address(
    db, engine, tmp_path
):
    """Item 8: the temporary password went to a typo; the operator fixes it.

    The password mailed to the wrong address stops working; a new one goes
    to the corrected address, and it signs in.
    """
    assert add_user(db, email="ali@exmaple.com.my").returncode == 0
    (welcome,) = delivered(db, tmp_path)
    stranded = re.search(r"temporary password: (\S+)", text_of(welcome)).group(1)

    out = ok(db, "user", "set-email", NUMBER, "ali@example.com.my")

    assert "new temporary password" in out
    messages = [
        m for m in delivered(db, tmp_path) if m["Message-ID"] != welcome["Message-ID"]
    ]
    to_new = [m for m in messages if m["To"] == "ali@example.com.my"]
    assert {subject(m) for m in to_new} == {
        "This address is now the email of your idMe account",
        "A new temporary password for your idMe account",
    }
    fresh = next(
        re.search(r"temporary password: (\S+)", text_of(m)).group(1)
        for m in to_new
        if "temporary password:" in text_of(m)
    )
    assert fresh != stranded
    assert "temporary password:" not in "".join(
        text_of(m) for m in messages if m["To"] == "ali@exmaple.com.my"
    )
    from idp.services.passwords import BcryptPasswordService

    hasher = BcryptPasswordService(rounds=4)
    row = user_row(engine)
    assert hasher.verify(fresh, row.password_hash)
    assert not hasher.verify(stranded, row.password_hash)
    assert row.must_change_password


def test_set_email_keeps_a_password_the_owner_chose(db, engine, tmp_path):
    """The control: only a pending temporary password is replaced."""
    assert add_user(db, "--print-password").returncode == 0
    with Session(engine) as session, session.begin():
        # As after the first sign-in's forced change.
        user = session.scalars(select(User)).one()
        user.must_change_password = False
        user.temp_password_expires_at = None
        chosen = user.password_hash
    out = ok(db, "user", "set-email", NUMBER, "ali.abu@example.com.my")
    assert "temporary password" not in out
    assert user_row(engine).password_hash == chosen
    messages = delivered(db, tmp_path)
    assert sorted(m["To"] for m in messages) == [
        "ali.abu@example.com.my",
        "ali@example.com.my",
    ]


def test_set_email_has_help():
    assert "set-email" in ok("x.ini", "user", "--help")
    out = ok("x.ini", "user", "set-email", "--help")
    assert "EMAIL" in out and "temporary password" in out
