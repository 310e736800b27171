"""Who may enter the admin console, and what each admin role may do there.

The attacks are an outsider's (the source, a script, patience): open /admin
anonymously, as a plain user, as an admin whose password was phished but
whose authenticator was not, as an admin who walked away from a browser
signed in an hour ago, as an auditor who posts the act's form anyway, and
by a forged cross-site POST.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from idp.models import AdminGrant, IdpSession
from idp.services.signin import AUTHN_METHOD, AUTHN_METHOD_TWO_STEP
from tests.admin import admin_browser, make_admin, now_clock, post
from tests.factories import PASSWORD, count, display, events, make_user
from tests.signin import sign_in
from tests.two_step import browser, code_for, enable


@pytest.fixture
def clock():
    return now_clock()


def _session_row(dbsession, user):
    return dbsession.scalars(
        select(IdpSession).where(IdpSession.user_id == user.id)
    ).one()


def test_admin_anonymous_is_sent_to_sign_in(app, tm, dbsession, clock):
    client = browser(app, tm, dbsession, clock)
    res = client.get("/admin", status=303)
    assert res.location.endswith("/login?next=%2Fadmin")
    # A forged POST without a session: refused, nothing granted.
    client.post("/admin/grants", {"identifier": "x", "role": "superadmin"}, status=403)


def test_web_11_admin_plain_user_gets_403(app, tm, dbsession, clock):
    """A signed-in user without an admin role: the bilingual 403 page, on
    every console page, whatever the method."""
    user = make_user(dbsession)
    client = browser(app, tm, dbsession, clock)
    sign_in(client, user)
    for path in ("/admin", "/admin/grants"):
        page = client.get(path, status=403)
        assert 'data-error-code="forbidden"' in page.text
    client.get("/admin/verify", status=403)
    client.get("/admin/reauthenticate", status=403)


def test_admin_role_needs_two_step_on(app, tm, dbsession, clock):
    """A role held by an account without a second factor does nothing: the
    page says to turn two-step verification on, and links there."""
    user = make_admin(app, dbsession, clock, "helpdesk", two_step=False)
    client = admin_browser(app, tm, dbsession, clock, user)
    page = client.get("/admin", status=403)
    assert 'data-error-code="admin_two_step"' in page.text
    assert page.html.find(id="admin-enrol")["href"] == "/account/two-step"
    assert "Content-Security-Policy" in page.headers


def test_admin_phished_password_is_not_enough(app, tm, dbsession, clock):
    """SEC: an admin session signed in by password alone (before two-step was
    turned on, say) must pass the second factor before any admin page."""
    user = make_admin(app, dbsession, clock, "helpdesk", two_step=False)
    client = admin_browser(app, tm, dbsession, clock, user)
    secret, _codes = enable(app, dbsession, user, clock)
    assert _session_row(dbsession, user).authn_method == AUTHN_METHOD
    res = client.get("/admin", status=303)
    assert res.location.endswith("/admin/verify?next=%2Fadmin")
    page = res.follow()
    # A wrong code: the form again, 400, still no console.
    wrong = "000000" if code_for(secret, clock()) != "000000" else "111111"
    bad = post(page, "admin-verify-form", {"code": wrong}, status=400)
    assert "The code is not right" in bad.text or "code" in bad.text
    client.get("/admin", status=303)
    before = client.cookies["idp_session"]
    done = post(
        page, "admin-verify-form", {"code": code_for(secret, clock())}, status=303
    )
    assert done.location.endswith("/admin")
    assert client.cookies["idp_session"] != before  # a new session id
    assert _session_row(dbsession, user).authn_method == AUTHN_METHOD_TWO_STEP
    client.get("/admin", status=200)
    [event] = events(dbsession, "admin.verified")
    assert event.actor_user_id == user.id and event.client_address == "192.0.2.10"


def test_admin_verify_refuses_a_redirect_elsewhere(app, tm, dbsession, clock):
    user = make_admin(app, dbsession, clock, "auditor", two_step=False)
    client = admin_browser(app, tm, dbsession, clock, user)
    secret, _codes = enable(app, dbsession, user, clock)
    page = client.get("/admin/verify?next=https://evil.example/admin")
    done = post(
        page, "admin-verify-form", {"code": code_for(secret, clock())}, status=303
    )
    assert done.location.endswith("/admin")
    assert "evil" not in done.location


def test_admin_signed_in_with_code_enters(app, tm, dbsession, clock):
    user = make_admin(app, dbsession, clock, "auditor")
    client = admin_browser(app, tm, dbsession, clock, user)
    for lang in ("ms", "en"):
        page = client.get(f"/admin?lang={lang}", status=200)
        assert page.html.find(attrs={"data-role": "auditor"}) is not None
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
        assert page.headers["Cache-Control"] == "no-store"
        assert page.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    ("role", "path", "status"),
    [
        ("helpdesk", "/admin/grants", 403),
        ("registry", "/admin/grants", 403),
        ("auditor", "/admin/grants", 200),
        ("superadmin", "/admin/grants", 200),
    ],
)
def test_admin_role_boundaries(app, tm, dbsession, clock, role, path, status):
    user = make_admin(app, dbsession, clock, role)
    client = admin_browser(app, tm, dbsession, clock, user)
    client.get("/admin", status=200)
    client.get(path, status=status)


def test_admin_auditor_reads_but_every_post_is_403(app, tm, dbsession, clock):
    """An auditor sees the grants but has no form; posting one anyway (with a
    valid CSRF token) is refused and writes nothing."""
    auditor = make_admin(app, dbsession, clock, "auditor")
    target = make_user(dbsession)
    client = admin_browser(app, tm, dbsession, clock, auditor)
    page = client.get("/admin/grants")
    assert page.html.find(id="admin-grant-form") is None
    token = page.html.find("input", attrs={"name": "csrf_token"})
    token = (
        token["value"]
        if token
        else client.get("/account/password").html.find(
            "input", attrs={"name": "csrf_token"}
        )["value"]
    )
    client.post(
        "/admin/grants",
        {"csrf_token": token, "identifier": display(target), "role": "superadmin"},
        status=403,
    )
    client.post(
        "/admin/grants",
        {
            "csrf_token": token,
            "action": "revoke",
            "user": str(auditor.id),
            "role": "auditor",
        },
        status=403,
    )
    assert count(dbsession, AdminGrant, AdminGrant.user_id == target.id) == 0
    assert count(dbsession, AdminGrant, AdminGrant.user_id == auditor.id) == 1


def test_admin_superadmin_grants_with_audit(app, tm, dbsession, clock):
    boss = make_admin(app, dbsession, clock, "superadmin")
    target = make_user(dbsession)
    client = admin_browser(app, tm, dbsession, clock, boss, address="198.51.100.7")
    page = client.get("/admin/grants")
    done = post(
        page,
        "admin-grant-form",
        {"identifier": display(target), "role": "helpdesk"},
        status=303,
    )
    assert done.location.endswith("/admin/grants")
    [grant] = dbsession.scalars(
        select(AdminGrant).where(AdminGrant.user_id == target.id)
    ).all()
    assert (grant.role, grant.granted_by) == ("helpdesk", boss.id)
    event = events(dbsession, "admin.granted")[-1]
    assert event.actor_user_id == boss.id
    assert event.subject_user_id == target.id
    assert event.client_address == "198.51.100.7"
    assert event.detail["by"] == "admin-console" and event.detail["role"] == "helpdesk"


def test_admin_grant_form_errors_are_bilingual(app, tm, dbsession, clock):
    boss = make_admin(app, dbsession, clock, "superadmin")
    client = admin_browser(app, tm, dbsession, clock, boss)
    for lang, words in (("en", "No account has"), ("ms", "Tiada akaun")):
        page = client.get(f"/admin/grants?lang={lang}")
        bad = post(
            page,
            "admin-grant-form",
            {"identifier": "080512-14-9999", "role": "helpdesk"},
            status=400,
        )
        summary = bad.html.find(id="form-errors")
        assert summary.find("a")["href"] == "#identifier"
        assert words in summary.text
    page = client.get("/admin/grants?lang=en")
    bad = post(page, "admin-grant-form", {"identifier": "not a number"}, status=400)
    assert bad.html.find(id="identifier-error") is not None


def test_admin_last_superadmin_cannot_be_revoked_from_the_console(
    app, tm, dbsession, clock
):
    boss = make_admin(app, dbsession, clock, "superadmin")
    client = admin_browser(app, tm, dbsession, clock, boss)
    page = client.get("/admin/grants?lang=en")
    form_id = page.html.find("form", id=lambda v: v and v.startswith("revoke-"))["id"]
    res = post(page, form_id, status=409)
    assert "last superadmin" in res.text
    assert count(dbsession, AdminGrant, AdminGrant.user_id == boss.id) == 1


def test_web_01_admin_csrf_refused(app, tm, dbsession, clock):
    boss = make_admin(app, dbsession, clock, "superadmin")
    target = make_user(dbsession)
    client = admin_browser(app, tm, dbsession, clock, boss)
    res = client.post(
        "/admin/grants",
        {"identifier": display(target), "role": "helpdesk"},
        status=403,
    )
    assert 'data-error-code="csrf"' in res.text
    res = client.post(
        "/admin/grants",
        {"csrf_token": "forged", "identifier": display(target), "role": "helpdesk"},
        status=403,
    )
    assert count(dbsession, AdminGrant, AdminGrant.user_id == target.id) == 0


def test_admin_act_after_15_minutes_asks_the_password_again(app, tm, dbsession, clock):
    """Reading stays open; an act sends the admin to give the password again,
    then back to the act's page, where the act goes through."""
    boss = make_admin(app, dbsession, clock, "superadmin")
    target = make_user(dbsession)
    client = admin_browser(app, tm, dbsession, clock, boss)
    page = client.get("/admin/grants")
    clock.advance(dt.timedelta(minutes=14, seconds=59))
    client.get("/admin/grants", status=200)
    clock.advance(dt.timedelta(seconds=2))
    page = client.get("/admin/grants", status=200)  # reading needs no re-auth
    values = {"identifier": display(target), "role": "helpdesk"}
    res = post(page, "admin-grant-form", values, status=303)
    assert res.location.endswith("/admin/reauthenticate?next=%2Fadmin%2Fgrants")
    assert count(dbsession, AdminGrant, AdminGrant.user_id == target.id) == 0
    reauth = res.follow()
    wrong = post(
        reauth, "admin-reauthenticate-form", {"current_password": "wrong"}, status=400
    )
    assert wrong.html.find(id="current_password-error") is not None
    back = post(
        reauth, "admin-reauthenticate-form", {"current_password": PASSWORD}, status=303
    )
    assert back.location.endswith("/admin/grants")
    page = back.follow()
    post(page, "admin-grant-form", values, status=303)
    assert count(dbsession, AdminGrant, AdminGrant.user_id == target.id) == 1
    [event] = events(dbsession, "admin.reauthenticated")
    assert event.actor_user_id == boss.id
    # Fifteen minutes on, again.
    clock.advance(dt.timedelta(minutes=16))
    page = client.get("/admin/grants")
    res = post(page, "admin-grant-form", {**values, "role": "auditor"}, status=303)
    assert "/admin/reauthenticate" in res.location


def test_admin_reauthentication_of_another_user_does_not_count(
    app, tm, dbsession, clock
):
    """The re-authentication mark is bound to its user: one left in a session
    by someone else (same browser) does not make another's sign-in fresh."""
    from idp.services.admin import fresh, mark_reauthenticated

    data: dict = {}
    first, second = make_user(dbsession), make_user(dbsession)
    mark_reauthenticated(data, first.id, clock())
    old = clock() - dt.timedelta(hours=1)
    assert fresh(first.id, old, data, clock())
    assert not fresh(second.id, old, data, clock())
    assert not fresh(second.id, None, {"_admin_reauth": "garbage"}, clock())


def test_admin_revoke_after_15_minutes_comes_back_to_the_grants(
    app, tm, dbsession, clock
):
    boss = make_admin(app, dbsession, clock, "superadmin")
    other = make_admin(app, dbsession, clock, "auditor")
    client = admin_browser(app, tm, dbsession, clock, boss)
    page = client.get("/admin/grants")
    clock.advance(dt.timedelta(minutes=20))
    form_id = f"revoke-1-{other.id}"
    res = post(page, form_id, status=303)
    assert res.location.endswith("/admin/reauthenticate?next=%2Fadmin%2Fgrants")
    back = post(
        res.follow(), "admin-reauthenticate-form", {"current_password": PASSWORD}
    )
    page = back.follow()
    post(page, form_id, status=303)
    assert count(dbsession, AdminGrant, AdminGrant.user_id == other.id) == 0
    event = events(dbsession, "admin.revoked")[-1]
    assert (event.actor_user_id, event.subject_user_id) == (boss.id, other.id)


@pytest.mark.parametrize(
    "values",
    [
        {"action": "revoke", "user": "not-a-uuid", "role": "auditor"},
        {"action": "revoke", "user": "00000000-0000-0000-0000-000000000000"},
        {"action": "revoke", "role": "root"},
    ],
)
def test_admin_bad_revoke_is_400(app, tm, dbsession, clock, values):
    boss = make_admin(app, dbsession, clock, "superadmin")
    client = admin_browser(app, tm, dbsession, clock, boss)
    token = client.get("/admin/grants").html.find("input", attrs={"name": "csrf_token"})
    res = client.post(
        "/admin/grants", {"csrf_token": token["value"], **values}, status=400
    )
    assert 'data-error-code="bad_request"' in res.text


def test_admin_verify_with_a_recovery_code(app, tm, dbsession, clock):
    user = make_admin(app, dbsession, clock, "helpdesk", two_step=False)
    client = admin_browser(app, tm, dbsession, clock, user)
    _secret, codes = enable(app, dbsession, user, clock)
    page = client.get("/admin/users").follow()
    done = post(page, "admin-recovery-form", {"recovery_code": codes[0]}, status=303)
    assert done.location.endswith("/admin/users")
    client.get("/admin/users", status=200)


def test_admin_grants_list_pages_and_sorts(app, tm, dbsession, clock):
    boss = make_admin(app, dbsession, clock, "superadmin", full_name="Zainab")
    make_admin(app, dbsession, clock, "auditor", two_step=False, full_name="Aziz")
    client = admin_browser(app, tm, dbsession, clock, boss)
    page = client.get("/admin/grants?lang=en")
    rows = page.html.find(id="admin-holders").find("tbody")("tr")
    assert [row.find("td").text for row in rows] == ["Aziz", "Zainab"]
    page = client.get(page.html.find("a", attrs={"data-sort": "name"})["href"])
    rows = page.html.find(id="admin-holders").find("tbody")("tr")
    assert [row.find("td").text for row in rows] == ["Zainab", "Aziz"]
    assert "Page 1 of 1 (2 in all)" in page.text
    client.get("/admin/grants?sort=role", status=400)
    client.get("/admin/grants?page=x", status=400)
