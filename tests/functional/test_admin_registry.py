"""The console's registry pages: roles, modules, service providers, sources.

The attacks: a helpdesk officer or an auditor who opens the registry's
forms or posts them anyway; a partner whose metadata carries markup in its
display names; an admin who confirms one preview and sends other bytes; a
hostile XML file; a crafted query string on every list.
"""

from __future__ import annotations

import base64
import datetime as dt
import random

import pytest
from sqlalchemy import select

from idp.models import AuditEvent, Module, Role, ServiceProvider
from idp.services.interfaces import IServiceProviders
from tests.admin import admin_browser, make_admin, now_clock, post
from tests.factories import count, events, make_module, make_role, make_user
from tests.saml_metadata import SP_ENTITY_ID, make_sp_metadata
from tests.services import CONSOLE

READ_PAGES = (
    "/admin/roles",
    "/admin/roles/guru",
    "/admin/modules",
    "/admin/modules/emis",
    "/admin/sps",
    f"/admin/sp?e={SP_ENTITY_ID}",
    "/admin/sources",
)
ACT_PAGES = (f"/admin/sp/remove?e={SP_ENTITY_ID}", "/admin/sps/upload")
SCRIPT = "<script>alert(1)</script>"


@pytest.fixture
def clock():
    return now_clock()


@pytest.fixture
def registered(dbsession, service):
    """A module, a role granting it, and an SP in it."""
    emis = make_module(dbsession, "emis")
    make_role(dbsession, "guru", emis)
    return (
        service(IServiceProviders)
        .import_metadata(make_sp_metadata(), module_code="emis", actor=CONSOLE)
        .sp
    )


def console(app, tm, dbsession, clock, role: str, **kw):
    user = make_admin(app, dbsession, clock, role)
    return admin_browser(app, tm, dbsession, clock, user, **kw), user


def token_of(client) -> str:
    page = client.get("/account/password")
    return page.html.find("input", attrs={"name": "csrf_token"})["value"]


def test_registry_pages_render_in_both_languages(app, tm, dbsession, clock, registered):
    client, _user = console(app, tm, dbsession, clock, "registry")
    for lang in ("ms", "en"):
        for path in (*READ_PAGES, *ACT_PAGES):
            sep = "&" if "?" in path else "?"
            page = client.get(f"{path}{sep}lang={lang}", status=200)
            assert f'<html lang="{lang}">' in page.text
            assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    nav = client.get("/admin/roles").html.find("nav", class_="admin-nav")
    assert {a["href"] for a in nav.find_all("a")} >= {
        "/admin/roles",
        "/admin/modules",
        "/admin/sps",
        "/admin/sources",
        "/admin/outbox",
        "/admin/dashboard",
    }
    assert "/admin/audit" not in {a["href"] for a in nav.find_all("a")}


def test_web_11_helpdesk_cannot_touch_the_registry(
    app, tm, dbsession, clock, registered
):
    """WEB-11: a helpdesk officer gets 403 on every registry page and act."""
    client, _user = console(app, tm, dbsession, clock, "helpdesk")
    for path in (*READ_PAGES, *ACT_PAGES):
        client.get(path, status=403)
    token = token_of(client)
    before = count(dbsession, AuditEvent)
    for path, values in (
        ("/admin/roles", {"code": "x", "name_ms": "x", "name_en": "x"}),
        ("/admin/roles/guru", {"action": "delete"}),
        ("/admin/modules/emis", {"action": "delete"}),
        (f"/admin/sp?e={SP_ENTITY_ID}", {"action": "disable"}),
        (f"/admin/sp/remove?e={SP_ENTITY_ID}", {"registration": "x"}),
    ):
        client.post(path, {"csrf_token": token, **values}, status=403)
    assert count(dbsession, AuditEvent) == before
    assert count(dbsession, ServiceProvider) == 1 and count(dbsession, Role) == 1


def test_auditor_reads_the_registry_and_changes_nothing(
    app, tm, dbsession, clock, registered
):
    """An auditor sees every registry page with no form to change it, and
    each act posted anyway (valid CSRF token) is 403, nothing written."""
    client, _user = console(app, tm, dbsession, clock, "auditor")
    for path in READ_PAGES:
        page = client.get(path, status=200)
        for form in page.html.find_all("form", method="post"):
            # Only the policy form is shown, read-only, its fields disabled.
            assert form["id"] == "sp-policy-form"
            assert all(fs.has_attr("disabled") for fs in form.find_all("fieldset"))
            assert form.find("button") is None
    for path in ACT_PAGES:
        client.get(path, status=403)
    token = token_of(client)
    before = count(dbsession, AuditEvent)
    for path, values in (
        ("/admin/roles", {"code": "x", "name_ms": "x", "name_en": "x"}),
        ("/admin/modules", {"code": "x", "name_ms": "x", "name_en": "x"}),
        ("/admin/roles/guru", {"action": "revoke", "module": "emis"}),
        ("/admin/modules/emis", {"action": "rename", "new": "emis2"}),
        (f"/admin/sp?e={SP_ENTITY_ID}", {"action": "disable"}),
        (
            f"/admin/sp?e={SP_ENTITY_ID}",
            {"action": "policy", "name_id_format": "transient"},
        ),
        (f"/admin/sp/remove?e={SP_ENTITY_ID}", {"registration": "x"}),
        ("/admin/sps/upload", {"step": "confirm"}),
        ("/admin/outbox", {"message": "1"}),
    ):
        client.post(path, {"csrf_token": token, **values}, status=403)
    assert count(dbsession, AuditEvent) == before
    dbsession.expire_all()
    assert dbsession.scalar(select(ServiceProvider.enabled)) is True


def test_web_01_registry_posts_need_the_csrf_token(
    app, tm, dbsession, clock, registered
):
    """WEB-01: a forged cross-site POST to a registry act is refused."""
    client, _user = console(app, tm, dbsession, clock, "registry")
    res = client.post(f"/admin/sp?e={SP_ENTITY_ID}", {"action": "disable"}, status=403)
    assert 'data-error-code="csrf"' in res.text
    client.post(
        "/admin/roles/guru", {"action": "delete", "csrf_token": "x"}, status=403
    )
    assert count(dbsession, Role) == 1
    dbsession.expire_all()
    assert dbsession.scalar(select(ServiceProvider.enabled)) is True


def test_roles_and_modules_lifecycle_is_audited_with_the_admin(
    app, tm, dbsession, clock
):
    client, admin = console(
        app, tm, dbsession, clock, "registry", address="198.51.100.9"
    )
    page = client.get("/admin/modules?lang=en")
    done = post(
        page,
        "module-create-form",
        {"code": "emis", "name_ms": "Sistem", "name_en": "System"},
        status=303,
    )
    assert done.location.endswith("/admin/modules/emis")
    page = client.get("/admin/roles?lang=en")
    done = post(
        page,
        "role-create-form",
        {"code": "guru", "name_ms": "Guru", "name_en": "Teacher"},
        status=303,
    )
    page = done.follow()
    assert "Role guru created." in page.text
    page = post(page, "grant-module-form", {"module": "emis"}, status=303).follow()
    assert [li.a.text for li in page.html.find(id="role-modules").find_all("li")] == [
        "emis"
    ]
    page = post(page, "role-rename-form", {"new": "pendidik"}, status=303).follow()
    assert page.request.path == "/admin/roles/pendidik"
    page = post(page, "revoke-emis", status=303).follow()
    post(page, "role-delete-form", status=303)
    assert count(dbsession, Role) == 0
    for event in (
        "module.created",
        "role.created",
        "role.module_granted",
        "role.renamed",
        "role.module_revoked",
        "role.deleted",
    ):
        [row] = events(dbsession, event)
        assert (row.actor_user_id, row.client_address) == (admin.id, "198.51.100.9")
        assert row.detail["by"] == "admin-console"


def test_refusals_are_translated_and_write_nothing(
    app, tm, dbsession, clock, registered
):
    """A role in use, a module in use, a taken code: the reason in the
    admin's language, nothing written."""
    client, _user = console(app, tm, dbsession, clock, "registry")
    guru = dbsession.scalar(select(Role))
    guru.users.append(make_user(dbsession))
    dbsession.flush()
    before = count(dbsession, AuditEvent)
    for lang, role_words, module_words in (
        ("en", "still held by 1 account", "still in use"),
        ("ms", "masih dipegang oleh 1 akaun", "masih digunakan"),
    ):
        page = client.get(f"/admin/roles/guru?lang={lang}")
        res = post(page, "role-delete-form", status=400)
        assert role_words in res.html.find(id="form-errors").text
        page = client.get(f"/admin/modules/emis?lang={lang}")
        res = post(page, "module-delete-form", status=400)
        assert module_words in res.html.find(id="form-errors").text
    page = client.get("/admin/modules?lang=en")
    res = post(
        page,
        "module-create-form",
        {"code": "EMIS", "name_ms": "a", "name_en": "b"},
        status=400,
    )
    assert "already exists" in res.html.find(id="code-error").text
    res = post(
        page,
        "module-create-form",
        {"code": "bad code!", "name_ms": "a", "name_en": "b"},
        status=400,
    )
    assert res.html.find(id="code-error") is not None
    res = post(
        page,
        "module-create-form",
        {"code": "", "name_ms": "", "name_en": ""},
        status=400,
    )
    assert len(res.html.find(class_="form-summary-list").find_all("li")) == 3
    assert count(dbsession, AuditEvent) == before
    assert count(dbsession, Role) == 1 and count(dbsession, Module) == 1


def test_role_page_lists_holders_paginated_and_the_sps_it_reaches(
    app, tm, dbsession, clock, registered
):
    client, _user = console(app, tm, dbsession, clock, "registry")
    guru = dbsession.scalar(select(Role))
    people = [make_user(dbsession, full_name=f"Cikgu {i:02d}") for i in range(27)]
    guru.users.extend(people)
    dbsession.flush()
    page = client.get("/admin/roles/guru?lang=en")
    assert "(27)" in page.html.find("h2", string=lambda s: s and "27" in s).text
    assert len(page.html.find(id="role-holders").tbody.find_all("tr")) == 25
    reach = page.html.find(id="role-reach").a
    assert reach.text.strip() == "1 in module emis"
    listed = client.get(reach["href"])
    assert [
        r.td.code.text for r in listed.html.find(id="sps").tbody.find_all("tr")
    ] == [SP_ENTITY_ID]
    assert "module=emis" in listed.html.find(id="sort-module")["href"]
    page = page.click(linkid="pager-next")
    assert len(page.html.find(id="role-holders").tbody.find_all("tr")) == 2
    # Identity numbers are masked in the list.
    assert people[0].identifier not in page.text


def test_web_06_partner_markup_is_escaped_everywhere(
    app, tm, dbsession, clock, service
):
    """WEB-06: a display name, entity ID or quarantine reason carrying markup
    is shown as text on every console page that shows it."""
    metadata = make_sp_metadata().replace(
        b"Sistem Contoh", b"&lt;script&gt;alert(1)&lt;/script&gt;"
    )
    make_module(dbsession, "emis", ms=SCRIPT, en=SCRIPT)
    service(IServiceProviders).import_metadata(
        metadata, module_code="emis", actor=CONSOLE
    )
    client, _user = console(app, tm, dbsession, clock, "registry")
    for path in (
        f"/admin/sp?e={SP_ENTITY_ID}",
        "/admin/modules",
        "/admin/modules/emis",
        "/admin/sps",
    ):
        page = client.get(path)
        assert SCRIPT not in page.text
    page = client.get(f"/admin/sp?e={SP_ENTITY_ID}")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_sp_enable_disable_and_policy(app, tm, dbsession, clock, registered):
    client, admin = console(app, tm, dbsession, clock, "registry")
    page = client.get(f"/admin/sp?e={SP_ENTITY_ID}&lang=en")
    page = post(page, "sp-enable-form", status=303).follow()
    assert "disabled" in page.html.find(class_="flash").text
    dbsession.expire_all()
    assert registered.enabled is False
    page = post(page, "sp-enable-form", status=303).follow()
    dbsession.expire_all()
    assert registered.enabled is True
    values = {"name_id_format": "transient", "sign_response": False}
    form = page.html.find(id="sp-policy-form")
    assert form.find("input", id="attr-uid").has_attr("checked")
    page = post(page, "sp-policy-form", values, status=303).follow()
    dbsession.expire_all()
    assert registered.name_id_format.endswith(":transient")
    assert registered.sign_response is False
    [event] = events(dbsession, "sp.policy")
    assert event.actor_user_id == admin.id
    # The email NameID without mail released: refused by the service's rule.
    res = post(page, "sp-policy-form", {"name_id_format": "email"}, status=400)
    assert res.html.find(id="form-errors") is not None
    assert "mail" in res.html.find(id="form-errors").code.text
    dbsession.expire_all()
    assert registered.name_id_format.endswith(":transient")


@pytest.mark.parametrize(
    ("lang", "unsigned", "wanted"),
    [
        ("en", "no signature", "asks for signed assertions"),
        ("ms", "tanpa tandatangan", "meminta penegasan yang ditandatangani"),
    ],
)
def test_sp_policy_never_sends_an_assertion_unsigned(
    app, tm, dbsession, clock, registered, lang, unsigned, wanted
):
    """Both signatures off, or the assertion's off for an SP whose metadata
    asks for signed assertions: refused in the admin's language, nothing
    changed or audited."""
    client, _admin = console(app, tm, dbsession, clock, "registry")
    page = client.get(f"/admin/sp?e={SP_ENTITY_ID}&lang={lang}")
    both_off = {"sign_response": False, "sign_assertion": False}
    res = post(page, "sp-policy-form", both_off, status=400)
    assert unsigned in res.html.find(id="form-errors").text
    res = post(page, "sp-policy-form", {"sign_assertion": False}, status=400)
    assert wanted in res.html.find(id="form-errors").text
    dbsession.expire_all()
    assert (registered.sign_response, registered.sign_assertion) == (True, True)
    assert events(dbsession, "sp.policy") == []


def test_fuzzed_policy_posts_never_500_and_never_leave_an_assertion_unsigned(
    app, tm, dbsession, clock, registered
):
    """Random policy forms (flags in any mix, values that are no choice,
    markup, control characters): each is saved (303) or refused (400), and
    what is stored still signs the assertion its metadata asks signed."""
    client, _admin = console(app, tm, dbsession, clock, "registry")
    token = token_of(client)
    rng = random.Random(16)
    junk = ["", "transient", "persistent", "email", "x" * 300, "<b>", "\x00", "é‮"]
    fields = ["sign_response", "sign_assertion", "encrypt_assertion"]
    statuses = set()
    for _ in range(60):
        form = [("csrf_token", token), ("action", "policy")]
        form += [(name, rng.choice(["y", "", "on", "0"])) for name in fields
                 if rng.random() < 0.5]  # fmt: skip
        form += [("name_id_format", rng.choice(junk))] * rng.randint(0, 2)
        form += [
            ("attributes", rng.choice(["uid", "mail", "displayName", *junk]))
            for _ in range(rng.randint(0, 4))
        ]
        res = client.post(f"/admin/sp?e={SP_ENTITY_ID}", form, expect_errors=True)
        assert res.status_int in (303, 400), (form, res.status_int)
        statuses.add(res.status_int)
        dbsession.expire_all()
        assert registered.sign_assertion is True
    # The control: the same token and form do save a valid policy.
    valid = [
        ("csrf_token", token),
        ("action", "policy"),
        ("name_id_format", "persistent"),
        ("attributes", "uid"),
        ("sign_assertion", "y"),
    ]
    client.post(f"/admin/sp?e={SP_ENTITY_ID}", valid, status=303)
    assert 400 in statuses


def test_sp_removal_shows_what_goes_and_needs_the_registration_seen(
    app, tm, dbsession, clock, registered
):
    client, _user = console(app, tm, dbsession, clock, "registry")
    page = client.get(f"/admin/sp/remove?e={SP_ENTITY_ID}&lang=en")
    assert SP_ENTITY_ID in page.html.find(id="removal-lines").text
    # A confirmation of another registration (removed and registered again
    # meanwhile) is refused.
    bad = post(
        page,
        "sp-remove-form",
        {"registration": "1:2000-01-01T00:00:00+00:00"},
        status=409,
    )
    assert bad.html.find(id="form-errors") is not None
    assert count(dbsession, ServiceProvider) == 1
    done = post(page, "sp-remove-form", status=303)
    assert done.location.endswith("/admin/sps")
    assert count(dbsession, ServiceProvider) == 0
    assert events(dbsession, "sp.removed")[0].detail["by"] == "admin-console"
    client.get(f"/admin/sp?e={SP_ENTITY_ID}", status=404)


def upload(client, data: bytes, **fields):
    page = client.get("/admin/sps/upload?lang=en")
    token = page.html.find("input", attrs={"name": "csrf_token"})["value"]
    return client.post(
        "/admin/sps/upload",
        {"csrf_token": token, **fields},
        upload_files=[("metadata", "sp.xml", data)],
        expect_errors=True,
    )


def test_saml_30_upload_previews_the_diff_then_applies_what_was_previewed(
    app, tm, dbsession, clock
):
    """SAML-30: new metadata is shown as a diff first; applying needs the
    confirm step, and a replacement of keys or endpoints needs "replace"."""
    make_module(dbsession, "emis")
    client, admin = console(app, tm, dbsession, clock, "registry")
    preview = upload(client, make_sp_metadata(), module="emis")
    assert preview.status_int == 200
    assert preview.html.find(id="preview-outcome")["data-outcome"] == "registered"
    assert preview.html.find(id="metadata-diff") is not None
    assert count(dbsession, ServiceProvider) == 0  # nothing yet
    done = post(preview, "sp-confirm-form", status=303)
    assert done.location.endswith(
        f"/admin/sp?e={SP_ENTITY_ID.replace(':', '%3A').replace('/', '%2F')}"
    )
    assert count(dbsession, ServiceProvider) == 1
    [event] = events(dbsession, "sp.imported")
    assert event.actor_user_id == admin.id
    # The same file again: nothing would change, no confirm form.
    same = upload(client, make_sp_metadata())
    assert same.html.find(id="preview-outcome")["data-outcome"] == "unchanged"
    assert same.html.find(id="sp-confirm-form") is None
    # New endpoints: refused without replace, listed, applied with it.
    moved = make_sp_metadata(acs="https://baru.example.org/acs")
    refused = upload(client, moved)
    assert refused.status_int == 400
    assert "baru.example.org" in refused.html.find(id="trust-changes").text
    assert "baru.example.org" in refused.html.find(id="metadata-diff").text
    again = post(refused, "sp-confirm-form", status=400)  # "replace" not ticked
    assert count(dbsession, AuditEvent, AuditEvent.event == "sp.replaced") == 0
    post(again, "sp-confirm-form", {"replace": True}, status=303)
    [event] = events(dbsession, "sp.replaced")
    assert event.actor_user_id == admin.id


def test_upload_confirm_applies_only_the_bytes_previewed(app, tm, dbsession, clock):
    """An admin (or a script in their name) who swaps the file between the
    preview and the confirm gets a 400: the hash must match."""
    client, _user = console(app, tm, dbsession, clock, "registry")
    preview = upload(client, make_sp_metadata())
    other = base64.b64encode(make_sp_metadata("https://lain.example.org/sp")).decode()
    form = preview.html.find(id="sp-confirm-form")
    values = {i["name"]: i.get("value", "") for i in form.find_all("input")}
    client.post("/admin/sps/upload", {**values, "metadata_b64": other}, status=400)
    # Other bytes with their own SHA-256: still not what was previewed.
    import hashlib

    raw = base64.b64decode(other)
    forged = {
        **values,
        "metadata_b64": other,
        "seal": hashlib.sha256(raw).hexdigest(),
    }
    client.post("/admin/sps/upload", forged, status=400)
    # Nor the previewed bytes put in another module than the one previewed.
    make_module(dbsession, "lain")
    client.post("/admin/sps/upload", {**values, "module": "lain"}, status=400)
    # Another admin's seal does not carry over either.
    second, _user = console(app, tm, dbsession, clock, "registry")
    second_token = token_of(second)
    second.post("/admin/sps/upload", {**values, "csrf_token": second_token}, status=400)
    client.post(
        "/admin/sps/upload", {**values, "metadata_b64": "!!notbase64"}, status=400
    )
    assert count(dbsession, ServiceProvider) == 0


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not xml at all",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a SYSTEM "file:///etc/passwd">]><x>&a;</x>',
        b'<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
        b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><l>&c;</l>',
        b"<md:EntityDescriptor " * 2000,
        b"x" * (512 * 1024 + 1),
    ],
    ids=["empty", "text", "xxe", "laughs", "deep", "too-large"],
)
def test_hostile_uploads_are_refused_cleanly(app, tm, dbsession, clock, data):
    client, _user = console(app, tm, dbsession, clock, "registry")
    res = upload(client, data)
    assert res.status_int == 400, res.status
    assert res.html.find(id="form-errors") is not None
    assert "passwd" not in res.text and "root:" not in res.text
    assert count(dbsession, ServiceProvider) == 0


BAD_QUERIES = (
    "page=0",
    "page=-1",
    "page=abc",
    "page=99999999999999999999",
    "per=7",
    "per=1e9",
    "sort=password_hash",
    "sort=name%27%3B--",
    "dir=up",
    "page=1&page=2",
    "nope=1",
    "sort=%00",
    "page=%EF%BC%91",  # a full-width digit one
)


@pytest.mark.parametrize("query", BAD_QUERIES)
def test_every_list_answers_bad_query_values_with_400(
    app, tm, dbsession, clock, registered, query
):
    client, _user = console(app, tm, dbsession, clock, "registry")
    for path in (
        "/admin/roles",
        "/admin/modules",
        "/admin/sps",
        "/admin/sources",
        "/admin/roles/guru",
        "/admin/outbox",
    ):
        res = client.get(f"{path}?{query}", expect_errors=True)
        assert res.status_int == 400, (path, query, res.status)
        assert 'data-error-code="bad_request"' in res.text


@pytest.mark.postgresql
def test_lists_sort_both_ways(app, tm, dbsession, clock, registered, service):
    service(IServiceProviders).import_metadata(
        make_sp_metadata("https://a.example.org/sp"), actor=CONSOLE
    )
    client, _user = console(app, tm, dbsession, clock, "registry")

    def entity_ids(query):
        page = client.get(f"/admin/sps?{query}")
        return [
            row.td.code.text for row in page.html.find(id="sps").tbody.find_all("tr")
        ]

    ascending = entity_ids("sort=entity_id&dir=asc")
    assert ascending == sorted(ascending)
    assert entity_ids("sort=entity_id&dir=desc") == ascending[::-1]
    page = client.get("/admin/sps?sort=module&dir=asc")
    assert (
        page.html.find("th", attrs={"aria-sort": "ascending"}).a["id"] == "sort-module"
    )
    assert entity_ids("q=a.example") == ["https://a.example.org/sp"]


def test_registry_act_after_15_minutes_asks_the_password_again(
    app, tm, dbsession, clock, registered
):
    client, _user = console(app, tm, dbsession, clock, "registry")
    page = client.get(f"/admin/sp?e={SP_ENTITY_ID}")
    clock.advance(dt.timedelta(minutes=16))
    res = post(page, "sp-enable-form", status=303)
    assert "/admin/reauthenticate?next=" in res.location
    dbsession.expire_all()
    assert registered.enabled is True


def test_saml_30_a_held_trust_change_is_approved_from_the_console(
    app, tm, dbsession, clock
):
    """SAML-30: a source's new endpoints wait for approval; the registry
    admin approves them here, audited with who; the auditor cannot."""
    from idp.models import PendingChange
    from tests.metadata_sources import (
        aggregate,
        apply,
        entity,
        make_source,
        with_endpoint,
    )
    from tests.metadata_sources import entity_id as partner

    source = make_source(dbsession)
    apply(dbsession, source, aggregate(entity("a")))
    moved = with_endpoint(
        entity("a"), "AssertionConsumerService", "https://a.example.org/acs2"
    )
    apply(dbsession, source, aggregate(moved))
    assert count(dbsession, PendingChange) == 1

    auditor, _user = console(app, tm, dbsession, clock, "auditor")
    page = auditor.get("/admin/sources?lang=en")
    assert "acs2" in page.html.find(id="pending").text
    assert page.html.find("form", id="approve-1") is None
    token = token_of(auditor)
    auditor.post(
        "/admin/sources",
        {"csrf_token": token, "source": "partner", "entity_id": partner("a")},
        status=403,
    )
    assert count(dbsession, PendingChange) == 1

    client, admin = console(app, tm, dbsession, clock, "registry")
    page = client.get("/admin/sources?lang=en")
    done = post(page, "approve-1", status=303).follow()
    assert "is applied" in done.text
    assert count(dbsession, PendingChange) == 0
    [event] = events(dbsession, "source.change_approved")
    assert event.actor_user_id == admin.id and event.detail["entity_ids"] == [
        partner("a")
    ]
    # Nothing held any more: a second approval says why, 409.
    token = token_of(client)
    res = client.post(
        "/admin/sources?lang=en",
        {"csrf_token": token, "source": "partner", "entity_id": partner("a")},
        status=409,
    )
    assert "cannot be applied" in res.text
    client.post(
        "/admin/sources",
        {"csrf_token": token, "source": "nope", "entity_id": "x"},
        status=404,
    )
