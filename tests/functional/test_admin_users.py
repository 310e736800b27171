"""The helpdesk's pages: find a user, see why they cannot sign in, and help.

Attacks: a helpdesk officer climbing to superadmin (correct an admin's email,
then send it a reset), an auditor posting an act, markup in a name, query
parameters a script makes up, another user's id in the address.
"""

from __future__ import annotations

import datetime as dt
import random
from urllib.parse import quote

import pytest
from sqlalchemy import select

from idp.db import utcnow
from idp.models import AdminGrant, AuditEvent, IdpSession, User
from idp.services.audit import AuditLog
from idp.services.ratelimit import DatabaseRateLimiter
from tests.admin import admin_browser, make_admin, now_clock, post
from tests.factories import (
    PASSWORD,
    count,
    display,
    events,
    make_session,
    make_user,
)

ADDRESS = "198.51.100.23"


@pytest.fixture
def clock():
    return now_clock()


@pytest.fixture
def helpdesk(app, dbsession, clock):
    return make_admin(app, dbsession, clock, "helpdesk")


@pytest.fixture
def client(app, tm, dbsession, clock, helpdesk):
    return admin_browser(app, tm, dbsession, clock, helpdesk, address=ADDRESS)


def _user_page(client, user, lang="en"):
    return client.get(f"/admin/users/{user.id}?lang={lang}")


def _act(client, user, act, values=None, **kwargs):
    page = client.get(f"/admin/users/{user.id}/{act}?lang=en")
    return post(page, "admin-act-form", values, **kwargs)


def _audited(dbsession, event, user, helpdesk):
    row = events(dbsession, event)[-1]
    assert row.subject_user_id == user.id
    assert row.actor_user_id == helpdesk.id
    assert row.client_address == ADDRESS
    assert row.detail["by"] == "admin-console"
    return row


def test_search_by_number_name_email_and_phone(client, dbsession):
    siti = make_user(
        dbsession,
        full_name="Siti Aminah binti Yusof",
        email="siti.aminah@example.com.my",
        phone="+60123450789",
    )
    make_user(dbsession, full_name="Ahmad bin Ali", phone="+60198765432")
    for query in (
        display(siti),
        siti.identifier,
        "aminah",
        "AMINAH BINTI",
        "siti.aminah@example.com.my",
        "SITI.AMINAH@",
        "012-345 0789",
    ):
        page = client.get(f"/admin/users?q={quote(query)}&lang=en")
        rows = page.html.find(id="admin-users-found").find("tbody").find_all("tr")
        assert len(rows) == 1, query
        assert "Siti Aminah" in rows[0].text
    # Lists mask contact details; the full ones are on the user's page.
    assert "s***@example.com.my" in page.text and "+60******789" in page.text
    assert "siti.aminah@example.com.my" not in page.text
    assert "+60123450789" not in page.text
    # A number is matched exactly, never as a part.
    page = client.get(f"/admin/users?q={siti.identifier[:-1]}")
    assert page.html.find(id="admin-users-found").find("tbody").find("a") is None


@pytest.mark.postgresql
def test_search_wildcards_are_plain_characters(client, dbsession):
    make_user(dbsession, full_name="Ahmad bin Ali")
    for query in ("%%", "__", "a%i", "%@"):
        page = client.get(f"/admin/users?q={quote(query)}")
        found = page.html.find(id="admin-users-found").find("tbody")
        assert found.find("a") is None, query


def test_search_refusals_are_bilingual_400s(client):
    for lang, words in (("en", "at least 2"), ("ms", "sekurang-kurangnya 2")):
        page = client.get(f"/admin/users?q=a&lang={lang}", status=400)
        summary = page.html.find(id="form-errors")
        assert summary.find("a")["href"] == "#q" and words in summary.text
    client.get(f"/admin/users?q={'x' * 201}", status=400)
    client.get("/admin/users?q=ab%0Acd", status=400)


def test_lists_page_and_sort(client, dbsession):
    made = [make_user(dbsession, full_name=f"Murid Contoh {n:02d}") for n in range(30)]
    first = client.get("/admin/users?q=contoh")
    rows = first.html.find(id="admin-users-found").find("tbody").find_all("tr")
    assert len(rows) == 25
    assert "Page 1 of 2 (30 in all)" in client.get("/admin/users?q=contoh&lang=en")
    second = client.get(first.html.find("a", rel="next")["href"])
    names = [
        row.find("a").text
        for row in second.html.find(id="admin-users-found").find("tbody")("tr")
    ]
    assert names == [f"Murid Contoh {n:02d}" for n in range(25, 30)]
    # Sorting by a header: the same header again reverses it.
    header = first.html.find("a", attrs={"data-sort": "identifier"})["href"]
    by_number = client.get(header)
    top = by_number.html.find(id="admin-users-found").find("tbody").find("tr")
    assert display(min(made, key=lambda u: u.identifier))[-4:] in top.text
    again = by_number.html.find("a", attrs={"data-sort": "identifier"})["href"]
    assert "dir=desc" in again
    # A page past the end shows the last one.
    last = client.get("/admin/users?q=contoh&page=9")
    assert len(last.html.find(id="admin-users-found").find("tbody")("tr")) == 5


@pytest.mark.parametrize(
    "query",
    [
        "sort=password_hash",
        "sort=name&dir=sideways",
        "page=0",
        "page=-1",
        "page=1e3",
        "page=%EF%BC%91",  # a full-width digit one
        "page=99999999999999999999",
        "page=1&page=2",
        "sort=name&sort=created",
        "dir=asc&dir=desc",
    ],
)
def test_bad_list_parameters_are_400(client, query):
    page = client.get(f"/admin/users?q=contoh&{query}", status=400)
    assert 'data-error-code="bad_request"' in page.text


def test_fuzzed_list_parameters_never_500(client, dbsession):
    make_user(dbsession, full_name="Murid Contoh")
    rng = random.Random(15)
    alphabet = "az09%-_.&=+?#\x00\u00e9\u202e<>\"' "
    for _ in range(60):
        params = {
            name: "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
            for name in rng.sample(["q", "sort", "dir", "page", "country"], 3)
        }
        query = "&".join(f"{k}={quote(v)}" for k, v in params.items())
        res = client.get(f"/admin/users?{query}", expect_errors=True)
        assert res.status_int in (200, 400), (query, res.status_int)


def test_web_06_markup_in_a_name_is_shown_as_text(client, dbsession):
    """WEB-06: a name (an admin's edit, a registration) cannot inject HTML."""
    evil = make_user(
        dbsession,
        full_name='<script>alert(1)</script><img src=x onerror="alert(2)">',
        institution="<b>SK</b>",
    )
    for page in (
        client.get("/admin/users?q=script"),
        _user_page(client, evil),
        client.get(f"/admin/users/{evil.id}/profile"),
    ):
        assert "<script>alert(1)" not in page.text
        assert "<img src=x" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<b>SK</b>" not in _user_page(client, evil).text


def test_user_page_says_why_they_cannot_sign_in(app, client, dbsession):
    now = utcnow()
    user = make_user(dbsession, locked_until=now + dt.timedelta(minutes=10))
    page = _user_page(client, user)
    assert page.html.find(attrs={"data-standing": "locked"}) is not None
    user.locked_until = None
    user.disabled_at = now
    user.must_change_password = True
    user.temp_password_expires_at = now + dt.timedelta(hours=5)
    dbsession.flush()
    page = _user_page(client, user, "ms")
    assert page.html.find(attrs={"data-standing": "disabled"}) is not None
    assert page.html.find(attrs={"data-standing": "temporary"}) is not None
    # Throttled: past the wrong-password limit, with the right password too.
    throttled = make_user(dbsession)
    limiter = DatabaseRateLimiter(dbsession, app.registry.settings["idp.hmac_key"])
    for _ in range(10):
        limiter.hit("login.identifier", throttled.identifier)
    page = _user_page(client, throttled)
    assert page.html.find(attrs={"data-standing": "throttled"}) is not None
    assert page.html.find(attrs={"data-standing": "ok"}) is None
    fine = _user_page(client, make_user(dbsession))
    assert fine.html.find(attrs={"data-standing": "ok"}) is not None


def test_user_page_shows_sign_ins_and_sessions(client, dbsession):
    user = make_user(dbsession)
    audit = AuditLog(dbsession)
    audit.record("login.failure", subject_user_id=user.id, client_address="203.0.113.5")
    audit.record(
        "login.success",
        subject_user_id=user.id,
        client_address="203.0.113.5",
        detail={"user_agent": "Mozilla/5.0 (Windows NT 10.0) Firefox/120.0"},
    )
    session = make_session(dbsession, user)
    session.client_address = "203.0.113.9"
    dbsession.flush()
    page = _user_page(client, user)
    table = page.html.find(id="admin-sign-ins").text
    assert "Wrong password" in table and "Signed in" in table
    assert "Firefox on Windows" in table
    assert "203.0.113.9" in page.html.find(id="admin-sessions").text
    assert user.email in page.html.find(id="admin-profile").text


def test_unlock_with_audit(client, dbsession, helpdesk):
    user = make_user(dbsession, disabled_at=utcnow())
    page = _user_page(client, user)
    assert page.html.find(attrs={"data-act": "unlock"}) is not None
    done = _act(client, user, "unlock", status=303)
    assert done.location.endswith(f"/admin/users/{user.id}")
    assert "The account has been unlocked." in done.follow().text
    dbsession.refresh(user)
    assert user.disabled_at is None
    _audited(dbsession, "account.unlocked", user, helpdesk)
    again = _act(client, user, "unlock", status=303).follow()
    assert "was not locked" in again.text


def test_lock_with_a_reason_ends_sessions(client, dbsession, helpdesk, mailbox):
    user = make_user(dbsession)
    make_session(dbsession, user)
    _act(client, user, "lock", {"reason": "Tiket #1234"}, status=303)
    dbsession.refresh(user)
    assert user.disabled_at is not None
    assert count(dbsession, IdpSession, IdpSession.user_id == user.id) == 0
    row = _audited(dbsession, "account.locked", user, helpdesk)
    assert row.detail["reason"] == "Tiket #1234"
    assert mailbox(user.email)
    again = _act(client, user, "lock", status=303).follow()
    assert "already locked" in again.text
    assert len(events(dbsession, "account.locked")) == 1
    other = make_user(dbsession)
    page = client.get(f"/admin/users/{other.id}/lock?lang=en")
    token = page.html.find("input", attrs={"name": "csrf_token"})["value"]
    for reason in ("a\x00b", "x" * 201):
        bad = client.post(
            f"/admin/users/{other.id}/lock",
            {"csrf_token": token, "reason": reason},
            status=400,
        )
        assert bad.html.find(id="reason-error") is not None
    dbsession.refresh(other)
    assert other.disabled_at is None


def test_send_a_password_reset_mails_the_user(client, dbsession, helpdesk, mailbox):
    user = make_user(dbsession)
    make_session(dbsession, user)
    _act(client, user, "reset", status=303)
    dbsession.refresh(user)
    assert user.must_change_password
    assert count(dbsession, IdpSession, IdpSession.user_id == user.id) == 0
    _audited(dbsession, "password.admin_reset", user, helpdesk)
    [message] = mailbox(user.email)
    assert "temporary" in message["Subject"].lower() or message["Subject"]


def test_correct_an_email_tells_both_addresses(client, dbsession, helpdesk, mailbox):
    user = make_user(dbsession, email="salah@example.com.my")
    taken = make_user(dbsession)
    page = client.get(f"/admin/users/{user.id}/email?lang=en")
    assert page.html.find(id="email")["value"] == "salah@example.com.my"
    bad = post(page, "admin-act-form", {"email": "not an address"}, status=400)
    assert bad.html.find(id="form-errors").find("a")["href"] == "#email"
    clash = post(page, "admin-act-form", {"email": taken.email}, status=409)
    assert "Another account already has" in clash.html.find(id="email-error").text
    post(page, "admin-act-form", {"email": "Betul@Example.com.my"}, status=303)
    dbsession.refresh(user)
    assert user.email == "betul@example.com.my"
    row = _audited(dbsession, "email.changed", user, helpdesk)
    assert row.detail["previous"] == "salah@example.com.my"
    assert mailbox("salah@example.com.my") and mailbox("betul@example.com.my")


def test_end_sessions(client, dbsession, helpdesk):
    user = make_user(dbsession)
    make_session(dbsession, user)
    make_session(dbsession, user)
    _act(client, user, "sessions", status=303)
    assert count(dbsession, IdpSession, IdpSession.user_id == user.id) == 0
    assert _audited(dbsession, "sessions.ended", user, helpdesk).detail["count"] == 2


def test_edit_profile(client, dbsession, helpdesk):
    user = make_user(dbsession)
    page = client.get(f"/admin/users/{user.id}/profile?lang=ms")
    token = page.html.find("input", attrs={"name": "csrf_token"})["value"]
    bad = client.post(
        f"/admin/users/{user.id}/profile?lang=ms",
        {
            "csrf_token": token,
            "full_name": "x",
            "phone": "12",
            "category": "wizard",
            "institution": "",
            # Mass assignment: fields the form does not have are ignored.
            "email": "mass@example.com.my",
            "disabled_at": "",
        },
        status=400,
    )
    links = [a["href"] for a in bad.html.find(id="form-errors").find_all("a")]
    # In the page's order, as the registration form's.
    assert links == ["#category", "#full_name", "#phone"]
    assert "Kategori" in bad.text or "Pilih" in bad.text
    post(
        page,
        "admin-act-form",
        {
            "full_name": "  Nur   Aisyah binti Ahmad ",
            "phone": "019-876 5432",
            "category": "parent",
            "institution": "",
        },
        status=303,
    )
    dbsession.refresh(user)
    assert (user.full_name, user.phone, user.category, user.institution) == (
        "Nur Aisyah binti Ahmad",
        "+60198765432",
        "parent",
        None,
    )
    row = _audited(dbsession, "account.profile_changed", user, helpdesk)
    assert row.detail["fields"] == ["category", "full_name", "institution", "phone"]


def test_helpdesk_cannot_take_over_an_admin_account(
    app, client, dbsession, clock, mailbox
):
    """Attack: correct a superadmin's email to one the officer reads, then send
    a reset. Every act on an account holding an admin role is refused."""
    boss = make_admin(app, dbsession, clock, "superadmin")
    before = boss.email
    mails = len(mailbox(before))
    for act, values in (
        ("email", {"email": "officer@example.com.my"}),
        ("reset", {}),
        ("lock", {}),
        ("sessions", {}),
        ("profile", {}),
    ):
        page = client.get(f"/admin/users/{boss.id}/{act}?lang=en", status=409)
        assert "holds an admin role" in page.text
        assert page.html.find(id="admin-act-form") is None
        token = client.get("/admin/users?q=ab").html.find(
            "input", attrs={"name": "csrf_token"}
        )
        # No token on a GET form: take the session's from an act page.
        token = client.get(f"/admin/users/{make_user(dbsession).id}/unlock").html.find(
            "input", attrs={"name": "csrf_token"}
        )["value"]
        client.post(
            f"/admin/users/{boss.id}/{act}",
            {"csrf_token": token, **values},
            status=409,
        )
    dbsession.refresh(boss)
    assert boss.email == before and not boss.must_change_password
    assert len(mailbox(before)) == mails
    assert mailbox("officer@example.com.my") == []


def test_auditor_reads_users_but_cannot_act(app, tm, dbsession, clock):
    auditor = make_admin(app, dbsession, clock, "auditor")
    client = admin_browser(app, tm, dbsession, clock, auditor)
    user = make_user(dbsession, disabled_at=utcnow())
    page = _user_page(client, user)
    assert page.html.find(id="admin-user-actions") is None
    for act in ("unlock", "lock", "reset", "email", "sessions", "profile"):
        client.get(f"/admin/users/{user.id}/{act}", status=403)
    token = client.get("/admin/grants").html.find("input", attrs={"name": "csrf_token"})
    assert token is None  # the auditor has no form at all
    client.post(f"/admin/users/{user.id}/unlock", {}, status=403)
    dbsession.refresh(user)
    assert user.disabled_at is not None


@pytest.mark.parametrize("role", ["registry", "superadmin"])
def test_other_admins_cannot_reach_the_helpdesk_pages(app, tm, dbsession, clock, role):
    admin = make_admin(app, dbsession, clock, role)
    client = admin_browser(app, tm, dbsession, clock, admin)
    user = make_user(dbsession)
    client.get("/admin/users", status=403)
    client.get(f"/admin/users/{user.id}", status=403)
    client.get(f"/admin/users/{user.id}/unlock", status=403)


def test_web_11_plain_user_and_anonymous_cannot_reach_the_helpdesk_pages(
    app, tm, dbsession, clock
):
    from tests.signin import sign_in
    from tests.two_step import browser

    user = make_user(dbsession)
    anonymous = browser(app, tm, dbsession, clock)
    res = anonymous.get(f"/admin/users/{user.id}", status=303)
    assert "/login?next=" in res.location
    signed_in = browser(app, tm, dbsession, clock)
    sign_in(signed_in, user)
    signed_in.get("/admin/users", status=403)
    signed_in.get(f"/admin/users/{user.id}/reset", status=403)


def test_unknown_ids_and_acts_are_404(client, dbsession):
    user = make_user(dbsession)
    client.get("/admin/users/not-a-uuid", status=404)
    client.get("/admin/users/00000000-0000-0000-0000-000000000000", status=404)
    client.get(f"/admin/users/{user.id}/delete", status=404)
    client.get("/admin/users/not-a-uuid/unlock", status=404)


def test_an_act_after_15_minutes_comes_back_after_the_password(
    client, dbsession, clock, helpdesk
):
    user = make_user(dbsession, disabled_at=utcnow())
    page = client.get(f"/admin/users/{user.id}/unlock")
    clock.advance(dt.timedelta(minutes=16))
    _user_page(client, user)  # reading still works
    res = post(page, "admin-act-form", status=303)
    assert res.location.endswith(
        f"/admin/reauthenticate?next=%2Fadmin%2Fusers%2F{user.id}%2Funlock"
    )
    dbsession.refresh(user)
    assert user.disabled_at is not None
    back = post(
        res.follow(), "admin-reauthenticate-form", {"current_password": PASSWORD}
    )
    assert back.location.endswith(f"/admin/users/{user.id}/unlock")
    post(back.follow(), "admin-act-form", status=303)
    dbsession.refresh(user)
    assert user.disabled_at is None


def test_web_01_admin_pages_csrf_refused(client, dbsession):
    user = make_user(dbsession, disabled_at=utcnow())
    res = client.post(f"/admin/users/{user.id}/unlock", {}, status=403)
    assert 'data-error-code="csrf"' in res.text
    dbsession.refresh(user)
    assert user.disabled_at is not None
    assert count(dbsession, AuditEvent, AuditEvent.event == "account.unlocked") == 0


def test_console_pages_in_both_languages_with_headers(client, dbsession):
    user = make_user(dbsession)
    for lang in ("ms", "en"):
        for path in (
            "/admin",
            "/admin/users",
            "/admin/users?q=siti",
            f"/admin/users/{user.id}",
            *(
                f"/admin/users/{user.id}/{act}"
                for act in ("lock", "unlock", "reset", "email", "sessions", "profile")
            ),
        ):
            sep = "&" if "?" in path else "?"
            page = client.get(f"{path}{sep}lang={lang}")
            assert page.headers["Cache-Control"] == "no-store"
            assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
            assert page.html.find("html")["lang"] == lang
    assert count(dbsession, AdminGrant) == 1
    assert dbsession.scalar(select(User).where(User.id == user.id)) is not None
