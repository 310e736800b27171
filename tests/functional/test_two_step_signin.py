"""Signing in with two-step verification on: the password, then a code.

The clock the pages read is frozen (``tests/two_step.py``), so a code's step
is exact: no sleeps, no boundary races. The attacks are an outsider's with
the source, a script and the victim's password (phished, reused): walk the
million codes, replay a code seen over a shoulder, reuse a recovery code,
skip the code step, or plant a session cookie before it.
"""

from __future__ import annotations

import datetime as dt
import random
from urllib.parse import urlsplit

import pytest
from lxml import etree
from sqlalchemy import select

from idp.db import utcnow
from idp.forms.login import MESSAGES as LOGIN_MESSAGES
from idp.models import IdpSession, PendingSamlRequest
from idp.services.signin import AUTHN_METHOD, AUTHN_METHOD_TWO_STEP
from idp.views.login import CODE_STEP_LIFETIME, CODE_STEP_TRIES
from tests.factories import NEW_PASSWORD, PASSWORD, count, events
from tests.fuzzing import _mutate_text
from tests.saml_pages import response_of, status_of
from tests.saml_requests import SP_ACS, authn_request, redirect_query
from tests.signin import message, sign_in, submit, to_password_page
from tests.two_step import (
    STEP,
    Clock,
    browser,
    code_for,
    enable,
    submit_code,
    submit_recovery,
    to_code_page,
    wrong_codes,
)

SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def client(app, tm, dbsession, clock):
    return browser(app, tm, dbsession, clock)


@pytest.fixture
def two_step_user(app, dbsession, user, clock):
    """The SSO world's user (role guru) with two-step verification on."""
    secret, codes = enable(app, dbsession, user, clock)
    user.secret, user.recovery_codes = secret, codes
    return user


def signed_in(client) -> bool:
    return client.get("/account", expect_errors=True).status_int == 200


def session_row(dbsession, user) -> IdpSession:
    return dbsession.scalar(select(IdpSession).where(IdpSession.user_id == user.id))


def test_the_password_alone_no_longer_signs_in(client, dbsession, two_step_user):
    page = to_code_page(client, two_step_user)
    assert page.html.select_one("#code")["inputmode"] == "numeric"
    assert page.html.select_one("#code")["autocomplete"] == "one-time-code"
    assert page.html.select_one("label[for=code]") is not None
    assert not signed_in(client)
    assert session_row(dbsession, two_step_user) is None
    # The failures a right password would forget are still counted, and
    # nothing says the user signed in.
    assert events(dbsession, "login.success") == []
    assert len(events(dbsession, "login.second_step")) == 1


def test_a_right_code_signs_in_and_the_session_says_two_steps(
    client, dbsession, two_step_user, clock
):
    page = to_code_page(client, two_step_user)
    done = submit_code(page, code_for(two_step_user.secret, clock()), status=303)
    assert urlsplit(done.location).path == "/"
    assert signed_in(client)
    assert session_row(dbsession, two_step_user).authn_method == AUTHN_METHOD_TWO_STEP
    (success,) = events(dbsession, "login.success")
    assert success.detail["second_factor"] == "totp"


def test_a_user_without_two_step_signs_in_with_the_password(client, dbsession, user):
    """The control: nothing changes for everyone else."""
    done = sign_in(client, user)
    assert urlsplit(done.location).path == "/"
    assert session_row(dbsession, user).authn_method == AUTHN_METHOD


def test_sso_continues_after_the_code(client, dbsession, sp, two_step_user, clock):
    """An SP-initiated sign-in waits through both steps and is answered after."""
    xml = authn_request()
    start = client.get("/saml/sso/redirect?" + redirect_query(xml, relay_state="r1"))
    next_url = start.location.split("next=", 1)[1]
    page = to_code_page(client, two_step_user, next_url=next_url)
    # Not before the code: the parked request is still waiting.
    assert count(dbsession, PendingSamlRequest) == 1
    done = submit_code(page, code_for(two_step_user.secret, clock()), status=303)
    assert "/saml/sso/continue?r=" in done.location
    posted = done.follow()
    assert posted.forms["saml-post-form"].action == SP_ACS
    root = response_of(posted)
    assert status_of(root) == [SUCCESS]
    assert root.get("InResponseTo") == etree.fromstring(xml).get("ID")


def test_sso_does_not_answer_at_the_code_step(client, dbsession, sp, two_step_user):
    """AUTH-22: an SSO opened between the password and the code asks to sign in."""
    to_code_page(client, two_step_user)
    page = client.get("/saml/sso/redirect?" + redirect_query(authn_request()))
    assert page.status_int == 303
    assert urlsplit(page.location).path == "/login"


def test_wrong_code_is_refused_counted_and_audited(client, dbsession, two_step_user):
    page = to_code_page(client, two_step_user)
    answer = submit_code(page, "000000", status=400)
    errors = answer.html.select_one("#code-error").get_text(" ", strip=True)
    assert "wrong" in errors
    # The summary links to the field, as every form's does.
    assert answer.html.select_one("#form-errors a[href='#code']") is not None
    assert not signed_in(client)
    (failure,) = events(dbsession, "login.code_failure")
    assert failure.subject_user_id == two_step_user.id


@pytest.mark.parametrize(
    ("steps", "accepted"), [(-1, True), (1, True), (-2, False), (2, False)]
)
def test_one_step_of_drift_either_side(
    client, dbsession, two_step_user, clock, steps, accepted
):
    """A phone's clock 30 seconds off still works; a minute off does not."""
    page = to_code_page(client, two_step_user)
    code = code_for(two_step_user.secret, clock(), steps)
    answer = submit_code(page, code, expect_errors=True)
    assert (answer.status_int == 303) is accepted
    assert signed_in(client) is accepted


def test_a_code_is_good_once(app, tm, dbsession, two_step_user, clock):
    """Replay: a code watched over a shoulder, typed again within its 30 seconds."""
    owner = browser(app, tm, dbsession, clock)
    code = code_for(two_step_user.secret, clock())
    submit_code(to_code_page(owner, two_step_user), code, status=303)
    attacker = browser(app, tm, dbsession, clock, address="198.51.100.7")
    page = to_code_page(attacker, two_step_user)
    submit_code(page, code, status=400)
    # Nor the step before it (still within the drift): steps only go forward.
    submit_code(page, code_for(two_step_user.secret, clock(), -1), status=400)
    assert not signed_in(attacker)
    # The next step's code works, for whoever has the phone.
    clock.advance(STEP)
    submit_code(page, code_for(two_step_user.secret, clock()), status=303)


def test_a_recovery_code_signs_in_once(
    app, tm, dbsession, two_step_user, clock, mailbox
):
    first = browser(app, tm, dbsession, clock)
    recovery = two_step_user.recovery_codes[3]
    page = to_code_page(first, two_step_user)
    # Typed in capitals without dashes, as from a printout: still the code.
    done = submit_recovery(page, recovery.replace("-", "").upper(), status=303)
    assert signed_in(first)
    (success,) = events(dbsession, "login.success")
    assert success.detail["second_factor"] == "recovery"
    notice = mailbox(two_step_user.email)[-1]
    assert "recovery code" in notice["Subject"].lower()
    assert "9" in notice.get_body(("plain",)).get_content()
    assert done.status_int == 303
    second = browser(app, tm, dbsession, clock, address="198.51.100.7")
    again = submit_recovery(to_code_page(second, two_step_user), recovery, status=400)
    assert again.html.select_one("#recovery_code-error") is not None
    assert again.html.select_one("details#recovery").has_attr("open")
    assert not signed_in(second)


def test_malformed_codes_are_told_apart_from_wrong_ones(
    client, dbsession, two_step_user
):
    page = to_code_page(client, two_step_user)
    short = submit_code(page, "12345", status=400)
    assert LOGIN_MESSAGES["code.format"] in short.text
    empty = submit_code(page, "", status=400)
    assert empty.html.select_one("#code-error") is not None
    bad = submit_recovery(page, "not-a-code", status=400)
    assert "12 letters and digits" in bad.text
    # None of them could have been right, so none counts as a guess.
    assert events(dbsession, "login.code_failure") == []


def test_auth_07_a_script_with_the_password_cannot_walk_the_codes(
    app, tm, dbsession, two_step_user, clock, mailbox
):
    """AUTH-07: 10^6 codes, the password known, typed again to start over.

    The script: wrong codes until the code step gives up, then the (right)
    password again, and on. Were a right password to forget the failures,
    as it does for a user without a second factor, this would never end.
    It ends at login.identifier's ten: the account locks, and from then on
    the right code is refused too, even at a code step opened before.
    """
    owner = browser(app, tm, dbsession, clock)
    owner_page = to_code_page(owner, two_step_user)
    attacker = browser(app, tm, dbsession, clock, address="198.51.100.7")
    guesses = wrong_codes(two_step_user.secret, clock)
    failures = 0
    for _ in range(10):
        done = sign_in(attacker, two_step_user, status=None)
        if not done.location or not done.location.endswith("/login/code"):
            break
        page = done.follow()
        for _ in range(CODE_STEP_TRIES):
            page = submit_code(page, next(guesses), expect_errors=True)
            if page.status_int != 400:
                break
            failures += 1
    assert failures == 10
    assert page.status_int == 429 or done.status_int == 429
    assert len(events(dbsession, "login.code_failure")) == 10
    (locked,) = events(dbsession, "account.locked")
    assert locked.detail["reason"] == "code-failures"
    assert two_step_user.locked_until is not None
    assert not signed_in(attacker)
    # The owner is told that the password is known, not that it was safe.
    (notice,) = [m for m in mailbox(two_step_user.email) if "locked" in m["Subject"]]
    assert "knows your password" in notice["Subject"]
    refused = submit_code(
        owner_page, code_for(two_step_user.secret, clock()), expect_errors=True
    )
    assert refused.status_int == 429
    assert "Too many unsuccessful attempts" in message(refused)
    assert not signed_in(owner)


def test_nine_wrong_codes_still_let_the_owner_in(
    client, dbsession, two_step_user, clock
):
    """The control: short of the limit, the right code signs in."""
    guesses = wrong_codes(two_step_user.secret, clock)
    page = to_code_page(client, two_step_user)
    for _ in range(CODE_STEP_TRIES):
        page = submit_code(page, next(guesses), status=400)
    page = to_code_page(client, two_step_user)
    for _ in range(9 - CODE_STEP_TRIES):
        page = submit_code(page, next(guesses), status=400)
    assert "1 attempt left" in page.text
    submit_code(page, code_for(two_step_user.secret, clock()), status=303)
    assert signed_in(client)


def test_the_code_step_gives_up_after_its_tries(
    client, dbsession, two_step_user, clock
):
    page = to_code_page(client, two_step_user)
    for guess in range(CODE_STEP_TRIES):
        page = submit_code(page, f"{guess:06d}", status=400)
    gone = client.get("/login/code", status=303)
    assert urlsplit(gone.location).path == "/login"
    assert "took too long" in gone.follow().text


def test_the_code_step_expires(client, two_step_user, clock):
    page = to_code_page(client, two_step_user)
    clock.advance(CODE_STEP_LIFETIME + dt.timedelta(seconds=1))
    late = submit_code(page, code_for(two_step_user.secret, clock()), status=303)
    assert urlsplit(late.location).path == "/login"
    assert not signed_in(client)


def test_auth_22_the_code_step_needs_the_password_step(client, two_step_user, clock):
    """AUTH-22: /login/code without a right password just now leads to /login."""
    assert urlsplit(client.get("/login/code", status=303).location).path == "/login"
    page = client.get("/login")
    assert page.status_int == 200
    # A wrong password does not open it either.
    sign_in(client, two_step_user, "wrong " + "x" * 12, status=None)
    assert urlsplit(client.get("/login/code", status=303).location).path == "/login"


def test_a_wrong_password_typed_again_closes_the_code_step(client, two_step_user):
    to_code_page(client, two_step_user)
    client.get("/login/code", status=200)
    page = client.get("/login/password")
    submit(page, "password-form", {"password": "not the password"}, status=400)
    assert urlsplit(client.get("/login/code", status=303).location).path == "/login"


def test_a_password_changed_between_the_steps_restarts(
    client, dbsession, two_step_user, clock
):
    page = to_code_page(client, two_step_user)
    two_step_user.password_hash = "changed elsewhere"
    dbsession.flush()
    late = submit_code(page, code_for(two_step_user.secret, clock()), status=303)
    assert urlsplit(late.location).path == "/login"
    assert not signed_in(client)


def test_the_session_id_rotates_at_the_code_step(
    app, tm, dbsession, two_step_user, clock
):
    """Session fixation: a cookie known before the password names nothing after."""
    victim = browser(app, tm, dbsession, clock)
    page = to_password_page(victim, two_step_user)
    known = victim.cookies["idp_session"]
    submit(page, "password-form", {"password": PASSWORD}, status=303)
    assert victim.cookies["idp_session"] != known
    attacker = browser(app, tm, dbsession, clock, address="198.51.100.7")
    attacker.set_cookie("idp_session", known)
    gone = attacker.get("/login/code", status=303)
    assert urlsplit(gone.location).path == "/login"


def test_a_temporary_password_is_used_up_only_with_the_code(
    app, tm, dbsession, two_step_user, clock
):
    """A helpdesk reset's temporary password, for a user with two steps on.

    Used up at the password step, it would strand an owner who did not
    finish the code step. It is used up with the right code, and the forced
    change follows.
    """
    two_step_user.must_change_password = True
    two_step_user.temp_password_expires_at = utcnow() + dt.timedelta(hours=72)
    dbsession.flush()
    first = browser(app, tm, dbsession, clock)
    to_code_page(first, two_step_user)
    assert two_step_user.password_hash is not None
    second = browser(app, tm, dbsession, clock)
    page = to_code_page(second, two_step_user)
    done = submit_code(page, code_for(two_step_user.secret, clock()), status=303)
    assert urlsplit(done.location).path == "/password/new"
    assert two_step_user.password_hash is None
    form = second.get("/password/new?lang=en").forms["new-password-form"]
    form["password"] = form["password_confirm"] = NEW_PASSWORD
    form.submit(status=303)


def test_the_code_form_needs_its_csrf_token(client, two_step_user, clock):
    to_code_page(client, two_step_user)
    refused = client.post(
        "/login/code?lang=en",
        {"code": code_for(two_step_user.secret, clock())},
        status=403,
    )
    assert "expired" in refused.html.select_one("h1").get_text()
    assert not signed_in(client)


def test_the_code_page_in_both_languages(client, two_step_user):
    page = to_code_page(client, two_step_user, lang="ms")
    assert page.html.html["lang"] == "ms"
    assert "Kod" in page.text
    english = client.get("/login/code?lang=en")
    assert english.html.html["lang"] == "en"
    assert "authenticator app" in english.text
    assert message(english) == ""


FUZZ_ROUNDS = 40


def test_ops_09_fuzzing_the_code_step(client, dbsession, two_step_user, clock):
    """OPS-09, bounded: mutated codes give no 5xx and sign nobody in."""
    rng = random.Random(6238)
    page = to_code_page(client, two_step_user)
    token = page.html.select_one("input[name=csrf_token]")["value"]
    for n in range(FUZZ_ROUNDS):
        field = rng.choice(["code", "recovery_code"])
        value = _mutate_text(rng, b"123456" if field == "code" else b"7k3m-q9xd-2hfp")
        body = {field: value.decode("utf-8", "replace"), "csrf_token": token}
        if rng.random() < 0.2:
            body["code" if field != "code" else "recovery_code"] = "654321"
        answer = client.post("/login/code", body, expect_errors=True)
        assert answer.status_int in (200, 303, 400, 429), (n, answer.status_int)
        assert "Traceback" not in answer.text
        if answer.status_int == 303:
            # The code step gave up (its tries) or the account locked: again.
            assert answer.location.endswith("/login"), answer.location
            if two_step_user.locked_until is not None:
                break
            page = to_code_page(client, two_step_user)
            token = page.html.select_one("input[name=csrf_token]")["value"]
    assert not signed_in(client)
    assert events(dbsession, "login.success") == []
