"""A mistyped or outdated email is not a dead end (issue 12, item 8).

Walked page by page as the person does it, in Bahasa Melayu and English:
changing the email in "Akaun saya" (confirmed by a link sent to the new
address, a notice to the old one), and what the registration page tells
someone whose first registration went to a wrong address. The operator's
``idp-admin user set-email`` is in ``test_operator_mail.py``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import statistics

import lxml.html
import pytest
import webtest
from sqlalchemy import select

from idp.models import OneTimeToken, OutboxMessage
from tests.app import environ, make_app
from tests.factories import count, events
from tests.functional.test_account import PASSWORD, make_user, templates_sent
from tests.registration import fill, open_form
from tests.signin import sign_in
from tests.timing import median_gap, paired_samples, same_cost

NEW = "aisyah.baharu@example.com.my"
LINK = re.compile(r"https://idp\.test/account/email/confirm/([A-Za-z0-9_-]{43})")


@pytest.fixture
def user(dbsession):
    return make_user(dbsession)


@pytest.fixture
def browser(app, tm, dbsession):
    """Another browser on the same app and transaction, with its own cookies."""

    def open_browser(**extra) -> webtest.TestApp:
        return webtest.TestApp(app, extra_environ=environ(tm, dbsession, **extra))

    return open_browser


def signed_in_as(client, user, lang: str):
    client.get(f"/?lang={lang}")
    sign_in(client, user, PASSWORD, lang=None)
    return client


def email_form(client, email=NEW, again=None, current=PASSWORD):
    page = client.get("/account/email")
    form = page.forms["account-email-form"]
    form["email"] = email
    form["email_confirm"] = email if again is None else again
    form["current_password"] = current
    return form


def plain(message) -> str:
    return message.get_body(("plain",)).get_content()


def html(message) -> str:
    return message.get_body(("html",)).get_content()


def confirm_link(message) -> str:
    match = LINK.search(plain(message))
    assert match, plain(message)
    assert match.group(0) in html(message)
    return match.group(0)


def path_of(url: str) -> str:
    return url.removeprefix("https://idp.test")


# The whole flow, in each language


@pytest.mark.parametrize(
    ("lang", "words"),
    [
        (
            "ms",
            {
                "link": "Tukar e-mel",
                "sent": "Kami telah menghantar pautan",
                "confirm": "Sahkan e-mel baharu",
                "done": "E-mel anda telah ditukar",
                "subject": "Sahkan alamat e-mel baharu idMe anda",
                "notice": "Alamat e-mel idMe anda telah ditukar",
            },
        ),
        (
            "en",
            {
                "link": "Change email",
                "sent": "We have sent a link",
                "confirm": "Confirm your new email",
                "done": "Your email has been changed",
                "subject": "Confirm your new idMe email address",
                "notice": "Your idMe email address was changed",
            },
        ),
    ],
)
def test_email_change_is_confirmed_by_a_link_to_the_new_address(
    testapp, user, dbsession, mailbox, browser, lang, words
):
    signed_in_as(testapp, user, lang)
    profile = testapp.get("/account")
    link = profile.html.find(id="email-link")
    assert link is not None and link["href"] == "/account/email"
    assert words["link"] in link.text

    response = email_form(testapp).submit(status=303)

    assert response.location.endswith("/account")
    assert words["sent"] in response.follow().text
    # Nothing changes before the new address answers.
    assert user.email == "aisyah@example.com.my"
    (message,) = mailbox(NEW)
    # In the account's language first (ms), the other second.
    assert words["subject"] in message["Subject"]
    url = confirm_link(message)
    (requested,) = events(dbsession, "email.change_requested")
    assert requested.subject_user_id == user.id

    # Opened on another device, signed in or not (WEB-13: token-free after).
    phone = browser()
    phone.get(f"/?lang={lang}")
    opened = phone.get(path_of(url), status=303)
    assert opened.headers["Referrer-Policy"] == "no-referrer"
    assert opened.location.endswith("/account/email/confirm")
    page = opened.follow()
    assert words["confirm"] in page.text
    assert NEW in page.text and "XXXXXX-XX-5678" in page.text
    assert url.rsplit("/", 1)[1] not in page.text
    # A GET (a mail scanner opening the link) changes nothing.
    assert user.email == "aisyah@example.com.my"

    done = page.forms["email-confirm-form"].submit(status=303)
    assert words["done"] in done.follow().text
    assert user.email == NEW
    (changed,) = events(dbsession, "email.changed")
    assert changed.subject_user_id == user.id
    assert changed.detail == {"how": "account", "previous": "aisyah@example.com.my"}
    (notice,) = mailbox("aisyah@example.com.my")[-1:]
    assert words["notice"] in notice["Subject"]
    assert "XXXXXX-XX-5678" in plain(notice)
    assert "a***@example.com.my" in plain(notice)
    assert "idme-support@moe.gov.my" in plain(notice)
    assert templates_sent(dbsession, "aisyah@example.com.my")[-1] == "email-changed"
    # Both browsers stay signed in: the password, which the sessions rest
    # on, did not change.
    assert testapp.get("/account").status_int == 200

    # The link works once.
    again = browser().get(path_of(url), status=400)
    assert "This link cannot be used" in again.text or "tidak boleh" in again.text


def test_the_new_address_signs_up_for_forgot_password(
    testapp, user, dbsession, mailbox
):
    """After the change, "Forgot password" answers at the new address only."""
    signed_in_as(testapp, user, "en")
    email_form(testapp).submit(status=303)
    (message,) = mailbox(NEW)
    page = testapp.get(path_of(confirm_link(message))).follow()
    page.forms["email-confirm-form"].submit(status=303)

    for address in ("aisyah@example.com.my", NEW):
        form = testapp.get("/password/forgot").forms["reset-request-form"]
        form["email"] = address
        form.submit(status=303)
    resets = [
        m
        for m in mailbox()
        if "password/reset/" in plain(m) and "Reset" in m["Subject"]
    ]
    assert [m["To"] for m in resets] == [NEW]


def test_a_wrong_current_password_changes_nothing_and_counts(
    testapp, user, dbsession, mailbox
):
    signed_in_as(testapp, user, "en")
    before = count(dbsession, OutboxMessage)
    response = email_form(testapp, current="not my password at all").submit(status=400)
    assert "Your current password is wrong." in response.text
    assert count(dbsession, OutboxMessage) == before
    assert events(dbsession, "email.change_requested") == []
    # Control: the right one is accepted.
    email_form(testapp).submit(status=303)
    assert len(mailbox(NEW)) == 1


@pytest.mark.parametrize(
    ("email", "again", "message"),
    [
        ("not an address", None, "Enter an email address such as"),
        (
            NEW,
            "someone.else@example.com.my",
            "The two email addresses are not the same.",
        ),
        ("Aisyah@Example.com.my", None, "already your email"),
        ("a@b.my\r\nBcc: x@example.com", None, "Enter an email address such as"),
    ],
)
def test_bad_new_addresses_are_refused_beside_the_field(
    testapp, user, dbsession, email, again, message
):
    signed_in_as(testapp, user, "en")
    before = count(dbsession, OutboxMessage)
    response = email_form(testapp, email=email, again=again).submit(status=400)
    assert message in response.text
    assert count(dbsession, OutboxMessage) == before


@pytest.mark.postgresql
def test_auth_05_a_taken_address_gets_the_same_answer_and_its_owner_is_told(
    testapp, user, dbsession, mailbox
):
    """AUTH-05: asking for an address another account has looks the same.

    The requester sees the page a free address gets; the address's mailbox
    gets a note that it is already in use (only its owner reads that), and no
    link, so nothing can move the address to a second account.
    """
    make_user(
        dbsession,
        identifier="090203105432",
        email="muthu@example.com.my",
        full_name="Muthu a/l Rajan",
    )
    signed_in_as(testapp, user, "en")

    taken = email_form(testapp, email="Muthu@Example.com.my").submit(status=303)
    taken_rows = queued(dbsession)
    taken_page = taken.follow()
    free = email_form(testapp, email=NEW).submit(status=303)
    free_rows = queued(dbsession)[len(taken_rows) :]
    free_page = free.follow()

    # The request itself does the same for both: one sealed job, no
    # recipient, no link; what is sent is decided after it (AUTH-06).
    assert taken_rows == free_rows == [("job:email-change", "")]

    assert taken.location == free.location
    assert strip_tokens(taken_page.text) == strip_tokens(free_page.text)
    (note,) = mailbox("muthu@example.com.my")
    assert "already" in plain(note)
    assert LINK.search(plain(note)) is None
    (link,) = mailbox(NEW)
    assert LINK.search(plain(link))
    # Asking again does not flood the owner: one note a day.
    email_form(testapp, email="muthu@example.com.my").submit(status=303)
    assert len(mailbox("muthu@example.com.my")) == 1


def queued(dbsession) -> list[tuple[str, str]]:
    rows = dbsession.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
    return [(row.template, row.recipient) for row in rows]


def strip_tokens(text: str) -> str:
    return re.sub(r'name="csrf_token" value="[^"]*"', "", text)


@pytest.fixture(scope="module")
def roomy_app(settings, db_engine):
    """The app with room for many email changes: timing is measured, not limits."""
    return make_app({**settings, "ratelimit.account.email": "1000/86400"}, db_engine)


def test_auth_06_a_taken_address_takes_as_long_as_a_free_one(
    roomy_app, tm, user, dbsession
):
    """AUTH-06: the request does the same work for a taken and a free address.

    Timed as an attacker would, in pairs (one taken, one free, in turn
    first) so the load of a shared machine cancels out: the median of the
    pairs' differences must stay under a tenth of a request
    (tests/timing.py: up to three trials).
    """
    make_user(dbsession, identifier="090203105432", email="muthu@example.com.my")
    client = signed_in_as(
        webtest.TestApp(roomy_app, extra_environ=environ(tm, dbsession)), user, "en"
    )
    form = email_form(client)

    def ask(address: str) -> None:
        form["email"] = address
        form["email_confirm"] = address
        form.submit(status=303)

    fresh = itertools.count()

    def trial():
        taken, free = paired_samples(
            100,
            lambda: ask("muthu@example.com.my"),
            lambda: ask(f"n{next(fresh)}@example.my"),
        )
        gap = median_gap(taken, free)
        step = statistics.median(taken + free)
        return gap, 0.1 * step, f"taken - free {gap:.2f} ms, request {step:.2f} ms"

    same_cost(trial)


def test_data_01_the_database_decides_at_confirm_time(
    testapp, user, dbsession, mailbox, browser
):
    """DATA-01: two accounts asking for one free address; the first confirm wins.

    The second link then fails with a clear page and changes nothing.
    """
    other = make_user(
        dbsession,
        identifier="090203105432",
        email="muthu@example.com.my",
        full_name="Muthu a/l Rajan",
    )
    signed_in_as(testapp, user, "en")
    email_form(testapp).submit(status=303)
    muthu = signed_in_as(browser(), other, "en")
    email_form(muthu).submit(status=303)
    first, second = mailbox(NEW)
    assert first["To"] == second["To"] == NEW

    page = browser().get(path_of(confirm_link(first))).follow()
    page.forms["email-confirm-form"].submit(status=303)
    assert user.email == NEW

    late = browser()
    late.get("/?lang=en")
    page = late.get(path_of(confirm_link(second))).follow()
    refused = page.forms["email-confirm-form"].submit(status=400)
    assert "already used by another account" in refused.text
    assert other.email == "muthu@example.com.my"
    assert len(events(dbsession, "email.changed")) == 1


def test_auth_17_changing_the_email_voids_links_sent_to_the_old_one(
    testapp, user, dbsession, mailbox
):
    """AUTH-17: reset links mailed to the old address stop working with the change."""
    form = testapp.get("/password/forgot").forms["reset-request-form"]
    form["email"] = user.email
    form.submit(status=303)
    (reset,) = mailbox(user.email)
    reset_url = re.search(r"https://idp\.test(/password/reset/\S+)", plain(reset))
    # Control: before the change, the link opens.
    testapp.get(reset_url.group(1), status=303)

    signed_in_as(testapp, user, "en")
    email_form(testapp).submit(status=303)
    page = testapp.get(path_of(confirm_link(mailbox(NEW)[0]))).follow()
    page.forms["email-confirm-form"].submit(status=303)

    testapp.get(reset_url.group(1), status=400)


def test_auth_15_an_old_confirmation_link_is_refused(
    testapp, user, dbsession, mailbox, browser
):
    """AUTH-15 (for email links): a link past its 24 hours is refused."""
    signed_in_as(testapp, user, "en")
    email_form(testapp).submit(status=303)
    url = confirm_link(mailbox(NEW)[0])
    row = dbsession.scalars(
        select(OneTimeToken).where(OneTimeToken.purpose == "email-change")
    ).one()
    assert row.expires_at - row.created_at == dt.timedelta(hours=24)
    assert row.token_hash not in url and url.rsplit("/", 1)[1] not in row.token_hash
    row.expires_at = row.created_at + dt.timedelta(seconds=-1)
    dbsession.flush()
    browser().get(path_of(url), status=400)
    assert user.email == "aisyah@example.com.my"


def test_email_change_requests_are_limited_per_account(
    testapp, user, dbsession, mailbox
):
    """Re-authenticated or not, one account cannot make idMe mail anyone at will."""
    signed_in_as(testapp, user, "en")
    for index in range(5):
        email_form(testapp, email=f"n{index}@example.my").submit(status=303)
    refused = email_form(testapp, email="n9@example.my").submit(status=429)
    assert "Too many" in refused.text
    assert mailbox("n9@example.my") == []


# Registration: the neutral page says what to do


@pytest.mark.parametrize(
    ("lang", "words"),
    [
        ("ms", ["salah menaip alamat e-mel", "idme-support@moe.gov.my"]),
        ("en", ["mistyped your email address", "idme-support@moe.gov.my"]),
    ],
)
def test_the_registration_page_tells_a_mistyped_email_what_to_do(
    testapp, dbsession, mailbox, lang, words
):
    """Register with a typo, then again: the page points to the helpdesk.

    The same page for a fresh registration and a repeat, so it reveals
    nothing about who is registered (AUTH-05).
    """
    typo = "aisyah.ahmad@exmaple.com.my"
    first = fill(open_form(testapp, lang), email=typo, email_confirm=typo).submit(
        status=303
    )
    first_page = first.follow()
    again = fill(open_form(testapp, lang)).submit(status=303)
    again_page = again.follow()
    assert strip_tokens(first_page.text) == strip_tokens(again_page.text)
    text = " ".join(lxml.html.fromstring(again_page.text).text_content().split())
    for word in words:
        assert word in text, word
    # The person behind the typo never hears from idMe again; nor do they.
    assert mailbox("aisyah.ahmad@example.com.my") == []


@pytest.mark.parametrize(
    ("locale", "words"),
    [
        ("ms", ["Log masuk", "Lupa Kata Laluan", "Tukar e-mel"]),
        ("en", ["Log in", "Forgot password", "Change email"]),
    ],
)
def test_the_already_registered_notice_names_the_next_steps(
    testapp, dbsession, mailbox, locale, words
):
    owner = make_user(dbsession, locale=locale)
    owner.created_at -= dt.timedelta(days=2)
    dbsession.flush()
    fill(open_form(testapp), mykad="080512-14-5678").submit(status=303)
    (notice,) = mailbox(owner.email)
    for word in words:
        assert word in html(notice), word
    assert "/account/email" in plain(notice)


def test_web_01_the_confirm_form_without_its_csrf_token_is_refused(
    testapp, user, dbsession, mailbox, browser
):
    """WEB-01: a cross-site POST cannot confirm someone's pending change."""
    signed_in_as(testapp, user, "en")
    email_form(testapp).submit(status=303)
    phone = browser()
    page = phone.get(path_of(confirm_link(mailbox(NEW)[0]))).follow()
    phone.post("/account/email/confirm", {}, status=403)
    assert user.email == "aisyah@example.com.my"
    assert events(dbsession, "email.changed") == []
    # Control: the same browser with the form's token confirms.
    page.forms["email-confirm-form"].submit(status=303)
    assert user.email == NEW


def test_web_12_the_confirm_page_takes_no_other_method(testapp, user, mailbox, browser):
    """WEB-12: only GET shows and POST confirms; PUT or DELETE are refused."""
    signed_in_as(testapp, user, "en")
    email_form(testapp).submit(status=303)
    phone = browser()
    phone.get(path_of(confirm_link(mailbox(NEW)[0]))).follow()
    for method in (phone.put, phone.delete):
        method("/account/email/confirm", status=405)
    assert user.email == "aisyah@example.com.my"


def test_confirm_page_without_a_link_is_refused(testapp):
    """Straight to the confirm page, with no link opened: the bilingual 400."""
    page = testapp.get("/account/email/confirm?lang=ms", status=400)
    assert "Pautan ini tidak boleh digunakan" in page.text or "tidak boleh" in page.text
    assert "This link cannot be used" in page.text
    testapp.get("/account/email/confirm/" + "x" * 500, status=400)


@pytest.mark.postgresql
def test_data_01_two_confirms_racing_for_one_address_leave_one_owner(
    committing_testapp, app, db_url, db_engine
):
    """DATA-01: two accounts confirm one free address at the same moment.

    With real transactions on PostgreSQL: exactly one account gets it, the
    other gets the clear 400 page, and nothing is half-written.
    """
    import threading

    from sqlalchemy import func
    from sqlalchemy.orm import Session

    from idp.models import AuditEvent, User
    from idp.services.delivery import MemorySender, OutboxWorker

    if not db_url.startswith("postgresql"):
        pytest.skip("two transactions at once need PostgreSQL")
    with Session(db_engine, expire_on_commit=False) as session, session.begin():
        aisyah = make_user(session)
        muthu = make_user(
            session,
            identifier="090203105432",
            email="muthu@example.com.my",
            full_name="Muthu a/l Rajan",
        )
    extra = committing_testapp.extra_environ
    for person in (aisyah, muthu):
        client = signed_in_as(webtest.TestApp(app, extra_environ=extra), person, "en")
        email_form(client).submit(status=303)
    sender = MemorySender()
    OutboxWorker.from_settings(app.registry.settings, db_engine, sender).run()
    links = [confirm_link(m) for m in sender.messages if m["To"] == NEW]
    assert len(links) == 2
    forms = []
    for url in links:
        phone = webtest.TestApp(app, extra_environ=extra)
        page = phone.get(path_of(url)).follow()
        forms.append(page.forms["email-confirm-form"])

    barrier = threading.Barrier(len(forms))
    statuses = []

    def confirm(form):
        barrier.wait()
        statuses.append(form.submit(status="*").status_int)

    threads = [threading.Thread(target=confirm, args=(form,)) for form in forms]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(statuses) == [303, 400]
    with Session(db_engine) as session:
        owners = session.scalar(
            select(func.count()).select_from(User).where(User.email == NEW)
        )
        changed = session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.event == "email.changed")
        )
    assert owners == 1 and changed == 1
