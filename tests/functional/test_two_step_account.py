"""Two-step verification in Akaun saya: turning it on, new recovery codes, off.

Turning it on asks for the password, shows the QR code and the key, and
takes effect only with a code from the app; the ten recovery codes are
shown once. New codes and turning it off ask for the password and a code,
and a wrong code counts as a wrong password: someone holding a session left
open and the password still cannot remove the second factor, nor walk the
codes by typing the password again.
"""

from __future__ import annotations

import random
import re

import pytest
import segno
from sqlalchemy import select

from idp.models import RecoveryCode, TotpCredential
from idp.services.two_factor import RECOVERY_CODE_COUNT, provisioning_uri
from idp.views.account import SETUP_LIFETIME
from tests.factories import PASSWORD, count, events
from tests.fuzzing import _mutate_text
from tests.signin import sign_in, submit
from tests.two_step import (
    STEP,
    Clock,
    browser,
    code_for,
    enable,
    submit_code,
    to_code_page,
    wrong_codes,
)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def client(app, tm, dbsession, clock, user):
    client = browser(app, tm, dbsession, clock)
    sign_in(client, user)
    return client


def secret_on(page) -> str:
    return page.html.select_one("#totp-secret").get_text().replace(" ", "")


def shown_codes(page) -> list[str]:
    return [li.get_text(strip=True) for li in page.html.select("#recovery-codes li")]


def turn_on(client, clock, password: str = PASSWORD):
    """Through the pages: the password, the QR page, a code. The codes page."""
    start = client.get("/account/two-step/setup?lang=en")
    qr = submit(
        start, "two-step-password-form", {"current_password": password}, status=303
    ).follow()
    return submit(
        qr,
        "two-step-confirm-form",
        {"code": code_for(secret_on(qr), clock())},
        status=200,
    ), secret_on(qr)


def test_turning_it_on_from_akaun_saya(client, dbsession, user, clock, mailbox):
    status = client.get("/account/two-step?lang=en")
    assert "is off" in status.html.select_one("#two-step-status").get_text()
    start = client.get(status.html.select_one("#two-step-on-link")["href"])
    # The password first: no secret is shown, or made, before it.
    assert start.html.select_one("#totp-secret") is None
    assert count(dbsession, TotpCredential) == 0
    wrong = submit(
        start,
        "two-step-password-form",
        {"current_password": "not it at all"},
        status=400,
    )
    assert wrong.html.select_one("#current_password-error") is not None
    qr_page = submit(
        wrong, "two-step-password-form", {"current_password": PASSWORD}, status=303
    ).follow()
    assert qr_page.headers["Cache-Control"] == "no-store"
    svg = qr_page.html.select_one("#qr-code svg")
    assert svg is not None and svg["role"] == "img" and svg.select_one("title")
    # Drawn here: no image is fetched for it, and the CSP was not loosened.
    assert qr_page.html.select_one("#qr-code img") is None
    secret = secret_on(qr_page)
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)  # 160 bits
    # The QR code holds the key shown beside it, in the otpauth URI apps read.
    expected = segno.make(provisioning_uri(secret, user.email), error="m")
    drawn = svg.select_one("path.qrline")["d"]
    assert drawn == re.search(r' d="([^"]+)"', expected.svg_inline()).group(1)
    assert re.fullmatch(
        r"([A-Z2-7]{4} ){7}[A-Z2-7]{4}",
        qr_page.html.select_one("#totp-secret").get_text(),
    )
    code_input = qr_page.html.select_one("#code")
    assert code_input["inputmode"] == "numeric"
    assert code_input["autocomplete"] == "one-time-code"
    # The secret is not stored readable.
    row = dbsession.get(TotpCredential, user.id)
    assert secret not in row.secret and row.confirmed_at is None
    # Not on until a code from it is typed; a wrong one says so.
    bad = submit(qr_page, "two-step-confirm-form", {"code": "000000"}, status=400)
    assert bad.html.select_one("#code-error") is not None
    assert events(dbsession, "two_step.enabled") == []
    done = submit(
        bad, "two-step-confirm-form", {"code": code_for(secret, clock())}, status=200
    )
    assert done.headers["Cache-Control"] == "no-store"
    codes = shown_codes(done)
    assert len(set(codes)) == RECOVERY_CODE_COUNT
    assert all(re.fullmatch(r"[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}", c) for c in codes)
    stored = dbsession.scalars(select(RecoveryCode.code_hash)).all()
    assert not {c.replace("-", "") for c in codes} & set(stored)
    assert len(events(dbsession, "two_step.enabled")) == 1
    (notice,) = [m for m in mailbox(user.email) if "on" in m["Subject"]]
    assert notice["Content-Language"] == "ms, en"
    assert notice.get_body(("html",)) is not None
    status = client.get("/account/two-step?lang=en")
    assert "is on" in status.html.select_one("#two-step-status").get_text()
    assert (
        "Unused recovery codes: 10"
        in status.html.select_one("#recovery-codes-left").get_text()
    )
    # Shown once: the setup page now leads to the status page.
    assert client.get("/account/two-step/setup").status_int == 303


def test_enrol_confirm_then_sign_in_with_the_code(
    app, tm, dbsession, client, user, clock
):
    """The whole path: on from Akaun saya, signed out, signed in with a code."""
    _, secret = turn_on(client, clock)
    client.get("/logout").forms["logout-form"].submit(status=303)
    clock.advance(STEP)
    other = browser(app, tm, dbsession, clock)
    page = to_code_page(other, user)
    submit_code(page, code_for(secret, clock()), status=303)
    assert other.get("/account").status_int == 200


def test_the_password_step_of_the_setup_expires(client, dbsession, user, clock):
    start = client.get("/account/two-step/setup")
    submit(start, "two-step-password-form", {"current_password": PASSWORD}, status=303)
    clock.advance(SETUP_LIFETIME + STEP)
    again = client.get("/account/two-step/setup")
    assert again.html.select_one("#totp-secret") is None
    assert again.html.select_one("#two-step-password-form") is not None


def test_a_restarted_setup_is_not_confirmed_by_the_old_key(
    client, dbsession, user, clock
):
    """A setup restarted after its hour shows a new key; the old key's codes fail."""
    start = client.get("/account/two-step/setup")
    first = submit(
        start, "two-step-password-form", {"current_password": PASSWORD}, status=303
    ).follow()
    old = secret_on(first)
    clock.advance(SETUP_LIFETIME * 7)
    start = client.get("/account/two-step/setup")
    second = submit(
        start, "two-step-password-form", {"current_password": PASSWORD}, status=303
    ).follow()
    assert secret_on(second) != old
    submit(
        second, "two-step-confirm-form", {"code": code_for(old, clock())}, status=400
    )


def test_new_recovery_codes_need_the_password_and_a_code(
    app, client, dbsession, user, clock, mailbox
):
    secret, old_codes = enable(app, dbsession, user, clock)
    page = client.get("/account/two-step/recovery-codes?lang=en")
    only_password = submit(
        page,
        "two-step-codes-form",
        {"current_password": PASSWORD, "code": ""},
        status=400,
    )
    assert only_password.html.select_one("#code-error") is not None
    done = submit(
        only_password,
        "two-step-codes-form",
        {"current_password": PASSWORD, "code": code_for(secret, clock())},
        status=200,
    )
    new_codes = shown_codes(done)
    assert len(new_codes) == RECOVERY_CODE_COUNT
    assert not set(new_codes) & set(old_codes)
    assert len(events(dbsession, "two_step.recovery_codes_replaced")) == 1
    assert any("recovery codes" in m["Subject"] for m in mailbox(user.email))
    # The old codes are gone; a new one works, at the next sign-in.
    client.get("/logout").forms["logout-form"].submit(status=303)
    page = to_code_page(client, user)
    page = submit(page, "recovery-form", {"recovery_code": old_codes[0]}, status=400)
    submit(page, "recovery-form", {"recovery_code": new_codes[0]}, status=303)


def test_turning_it_off_needs_the_password_and_a_code(
    app, client, dbsession, user, clock, mailbox
):
    secret, _ = enable(app, dbsession, user, clock)
    page = client.get("/account/two-step/off?lang=en")
    fields = {"current_password": PASSWORD, "code": "000000"}
    wrong_code = submit(page, "two-step-off-form", fields, status=400)
    assert "wrong" in wrong_code.html.select_one("#code-error").get_text()
    fields = {"current_password": "not the password", "code": code_for(secret, clock())}
    wrong_password = submit(wrong_code, "two-step-off-form", fields, status=400)
    assert wrong_password.html.select_one("#current_password-error") is not None
    assert count(dbsession, TotpCredential) == 1
    fields = {"current_password": PASSWORD, "code": code_for(secret, clock())}
    done = submit(wrong_password, "two-step-off-form", fields, status=303)
    assert count(dbsession, TotpCredential) == 0
    assert count(dbsession, RecoveryCode) == 0
    (event,) = events(dbsession, "two_step.disabled")
    assert event.detail == {"how": "account"}
    assert any("off" in m["Subject"] for m in mailbox(user.email))
    assert "is off" in done.follow().html.select_one("#two-step-status").get_text()
    # And the next sign-in asks only for the password.
    client.get("/logout").forms["logout-form"].submit(status=303)
    assert sign_in(client, user).location.endswith("/")


def test_a_recovery_code_also_turns_it_off(app, client, dbsession, user, clock):
    """The phone is lost: the password and a recovery code are enough."""
    _, codes = enable(app, dbsession, user, clock)
    page = client.get("/account/two-step/off")
    fields = {"current_password": PASSWORD, "code": codes[0]}
    submit(page, "two-step-off-form", fields, status=303)
    assert count(dbsession, TotpCredential) == 0


def test_auth_07_a_session_and_the_password_cannot_walk_the_codes(
    app, client, dbsession, user, clock
):
    """AUTH-07: a session left open, the password known, codes tried at "off".

    The right password typed with each wrong code must not forget the wrong
    codes: at login.identifier's ten the account locks and the browser is
    signed out, its second factor still on.
    """
    secret, _ = enable(app, dbsession, user, clock)
    guesses = wrong_codes(secret, clock)
    page = client.get("/account/two-step/off")
    tried = 0
    while page.status_int != 303 and tried < 20:
        fields = {"current_password": PASSWORD, "code": next(guesses)}
        page = submit(page, "two-step-off-form", fields, expect_errors=True)
        tried += 1
    assert tried == 10
    assert page.location.endswith("/")
    assert len(events(dbsession, "account.code_failure")) == 10
    assert user.locked_until is not None
    (locked,) = events(dbsession, "account.locked")
    assert locked.detail["reason"] == "code-failures"
    assert count(dbsession, TotpCredential) == 1
    assert client.get("/account/two-step/off").status_int == 303


def test_the_pages_need_a_sign_in_and_csrf(app, tm, dbsession, user, clock):
    anonymous = browser(app, tm, dbsession, clock)
    for path in (
        "/account/two-step",
        "/account/two-step/setup",
        "/account/two-step/recovery-codes",
        "/account/two-step/off",
    ):
        assert "/login" in anonymous.get(path, status=303).location
    signed_in = browser(app, tm, dbsession, clock)
    sign_in(signed_in, user)
    signed_in.post(
        "/account/two-step/setup",
        {"step": "password", "current_password": PASSWORD},
        status=403,
    )
    assert count(dbsession, TotpCredential) == 0


@pytest.mark.parametrize("lang", ["ms", "en"])
def test_the_pages_in_both_languages(app, client, dbsession, user, clock, lang):
    for path in ("/account/two-step", "/account/two-step/setup"):
        page = client.get(f"{path}?lang={lang}")
        assert page.html.html["lang"] == lang
    enable(app, dbsession, user, clock)
    for path in ("/account/two-step/recovery-codes", "/account/two-step/off"):
        page = client.get(f"{path}?lang={lang}")
        assert page.html.html["lang"] == lang
        assert page.html.select_one("label[for=code]") is not None


FUZZ_ROUNDS = 40


def test_ops_09_fuzzing_the_two_step_forms(app, client, dbsession, user, clock):
    """OPS-09, bounded: mutated fields on each new form give no 5xx, change nothing."""
    rng = random.Random(15)
    secret, _ = enable(app, dbsession, user, clock)
    valid = {
        "/account/two-step/off": {"current_password": PASSWORD, "code": "123456"},
        "/account/two-step/recovery-codes": {
            "current_password": PASSWORD,
            "code": "abcd-efgh-jkmn",
        },
        "/account/two-step/setup": {"step": "confirm", "code": "123456"},
    }
    token = client.get("/account/two-step/off").html.select_one(
        "input[name=csrf_token]"
    )["value"]
    for n in range(FUZZ_ROUNDS):
        path = rng.choice(sorted(valid))
        fields = {k.encode(): v.encode() for k, v in valid[path].items()}
        for _ in range(rng.randrange(1, 3)):
            target = rng.choice(sorted(fields))
            fields[target] = _mutate_text(rng, fields[target])
        body = {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
        body["csrf_token"] = token
        answer = client.post(path, body, expect_errors=True)
        assert answer.status_int in (200, 303, 400), (n, path, answer.status_int)
        assert "Traceback" not in answer.text
        if answer.status_int == 303 and answer.location.endswith("/"):
            break  # ten wrong guesses locked the account: signed out
    assert count(dbsession, TotpCredential) == 1
    assert events(dbsession, "two_step.disabled") == []
    assert code_for(secret, clock()) not in {"123456"}


def test_two_tabs_turning_it_on_at_once(app, client, dbsession, user, clock):
    """The password typed in a second tab after the first tab finished."""
    start = client.get("/account/two-step/setup")
    enable(app, dbsession, user, clock)
    late = submit(
        start, "two-step-password-form", {"current_password": PASSWORD}, status=303
    )
    assert late.location.endswith("/account/two-step")
    assert count(dbsession, TotpCredential) == 1
