"""The module portal ("Modul saya") on the home page, on SQLite and PostgreSQL.

A signed-in user sees every enabled SP whose module one of their roles
grants, named from the SP's metadata (mdui) in the page's language or else by
its module, each linking to IdP-initiated single sign-on.
"""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

import pytest
from sqlalchemy import event

from idp.i18n import LOCALES
from idp.models import Module, Role, ServiceProvider
from idp.saml.registry import import_sp
from tests.app import TEST_BASE_URL
from tests.factories import display, make_module, make_role, make_user
from tests.saml_metadata import make_sp_metadata
from tests.signin import sign_in

# The portal's wording in both languages.
MY_MODULES = {"ms": "Modul saya", "en": "My modules"}
NO_MODULES = {
    "ms": "Belum ada modul yang dibuka oleh peranan anda. Minta pentadbir "
    "institusi anda memberikan peranan yang diperlukan untuk tugas anda.",
    "en": "None of your roles opens a module yet. Ask your institution's "
    "administrator to give you the role your work needs.",
}


# --------------------------------------------------------------------------
# Helpers


def sp_metadata_xml(
    entity_id: str,
    names: dict[str | None, str] | None = None,
    logos: dict[str | None, str] | None = None,
) -> bytes:
    """An SP's metadata with mdui names and logos per language (None: no xml:lang)."""

    def lang(code):
        return "" if code is None else f" xml:lang={quoteattr(code)}"

    ui = "".join(
        f"<mdui:DisplayName{lang(code)}>{escape(text)}</mdui:DisplayName>"
        for code, text in (names or {}).items()
    ) + "".join(
        f'<mdui:Logo height="60" width="120"{lang(code)}>{escape(url)}</mdui:Logo>'
        for code, url in (logos or {}).items()
    )
    extensions = (
        f"<md:Extensions><mdui:UIInfo>{ui}</mdui:UIInfo></md:Extensions>" if ui else ""
    )
    base = entity_id.rstrip("/")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"'
        ' xmlns:mdui="urn:oasis:names:tc:SAML:metadata:ui"'
        f" entityID={quoteattr(entity_id)}>"
        '<md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">'
        f"{extensions}"
        '<md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"'
        f' Location={quoteattr(base + "/acs")} index="0"/>'
        "</md:SPSSODescriptor></md:EntityDescriptor>"
    ).encode()


def make_sp(
    dbsession,
    entity_id: str,
    module: Module | None,
    *,
    names: dict[str | None, str] | None = None,
    logos: dict[str | None, str] | None = None,
    enabled: bool = True,
) -> ServiceProvider:
    return import_sp(
        dbsession,
        sp_metadata_xml(entity_id, names, logos),
        module_code=module.code if module else None,
        enabled=enabled,
    )


def signed_in_user(testapp, dbsession, *roles: Role):
    user = make_user(dbsession)
    user.roles.extend(roles)
    dbsession.flush()
    sign_in(testapp, display(user))
    return user


def portal(testapp, lang: str):
    return testapp.get(f"/?lang={lang}", status=200)


def listed(page) -> list[str]:
    return [
        link.select_one(".module-name").get_text(strip=True)
        for link in page.html.select("#my-modules a")
    ]


# --------------------------------------------------------------------------
# What is listed


def test_modules_of_every_role_listed_once_each(testapp, dbsession):
    """Two roles granting an overlapping set of modules: each SP appears once."""
    exam = make_module(dbsession, "exam", "Peperiksaan", "Examinations")
    staff = make_module(dbsession, "staff", "Kakitangan", "Staff")
    hostel = make_module(dbsession, "hostel", "Asrama", "Hostels")
    teacher = make_role(dbsession, "teacher", exam, staff)
    warden = make_role(dbsession, "warden", staff, hostel)
    make_sp(dbsession, "https://exam.example.my/sp", exam)
    make_sp(dbsession, "https://staff.example.my/sp", staff)
    make_sp(dbsession, "https://staff-mobile.example.my/sp", staff)
    make_sp(dbsession, "https://hostel.example.my/sp", hostel)
    signed_in_user(testapp, dbsession, teacher, warden)

    page = portal(testapp, "en")
    assert listed(page) == ["Examinations", "Hostels", "Staff", "Staff"]
    hrefs = [a["href"] for a in page.html.select("#my-modules a")]
    assert len(set(hrefs)) == 4
    assert page.html.find(id="no-modules") is None


def test_disabled_unassigned_and_ungranted_sps_are_hidden(testapp, dbsession):
    granted = make_module(dbsession, "granted", "Diberi", "Granted")
    other = make_module(dbsession, "other", "Lain", "Other")
    role = make_role(dbsession, "teacher", granted)
    make_role(dbsession, "someone-else", other)
    make_sp(dbsession, "https://shown.example.my/sp", granted, names={"en": "Shown"})
    make_sp(
        dbsession,
        "https://disabled.example.my/sp",
        granted,
        names={"en": "Disabled"},
        enabled=False,
    )
    make_sp(dbsession, "https://ungranted.example.my/sp", other, names={"en": "Nope"})
    make_sp(dbsession, "https://orphan.example.my/sp", None, names={"en": "Orphan"})
    signed_in_user(testapp, dbsession, role)

    page = portal(testapp, "en")
    assert listed(page) == ["Shown"]
    for hidden in ("Disabled", "Nope", "Orphan"):
        assert hidden not in page.text


@pytest.mark.parametrize("lang", LOCALES)
def test_names_in_the_page_language_sorted_case_insensitively(testapp, dbsession, lang):
    """mdui DisplayName in the page's language, else the module's name in it."""
    exam = make_module(dbsession, "exam", "Peperiksaan", "Examinations")
    staff = make_module(dbsession, "staff", "Kakitangan", "Staff")
    apdm = make_module(dbsession, "apdm", "apdm murid", "apdm pupils")
    role = make_role(dbsession, "teacher", exam, staff, apdm)
    make_sp(
        dbsession,
        "https://exam.example.my/sp",
        exam,
        names={"ms": "Sistem Peperiksaan", "en": "Examination System"},
    )
    # A name only in Malay: the English page falls back to the module's name.
    make_sp(dbsession, "https://staff.example.my/sp", staff, names={"ms": "HRMIS"})
    # No mdui at all: the module's name, lower-case, still sorted with the rest.
    make_sp(dbsession, "https://apdm.example.my/sp", apdm)
    signed_in_user(testapp, dbsession, role)

    page = portal(testapp, lang)
    assert f'<html lang="{lang}">' in page.text
    assert (
        listed(page)
        == {
            "ms": ["apdm murid", "HRMIS", "Sistem Peperiksaan"],
            "en": ["apdm pupils", "Examination System", "Staff"],
        }[lang]
    )
    # Under an SP's own name, its module's name; not twice where they agree.
    modules = [
        entry.select_one(".module-module")
        for entry in page.html.select("#my-modules a")
    ]
    assert [m.get_text(strip=True) if m else None for m in modules] == {
        "ms": [None, "Kakitangan", "Peperiksaan"],
        "en": [None, "Examinations", None],
    }[lang]


def test_metadata_as_pysaml2_publishes_it(testapp, dbsession):
    """pysaml2's SP metadata: names per language, one logo for every language."""
    module = make_module(dbsession, "contoh", "Contoh", "Example")
    role = make_role(dbsession, "teacher", module)
    sp = import_sp(
        dbsession,
        make_sp_metadata("https://contoh.example.my/sp"),
        module_code="contoh",
    )
    signed_in_user(testapp, dbsession, role)

    for lang, name in (("ms", "Sistem Contoh"), ("en", "Example System")):
        page = portal(testapp, lang)
        assert listed(page) == [name]
        link = page.html.select_one("#my-modules a")
        assert link["href"] == f"{TEST_BASE_URL}/saml/init/{sp.id}"
        assert link.img["src"] == "https://contoh.example.my/logo.png"
        assert link.img["alt"] == name


# --------------------------------------------------------------------------
# Links and logos


def test_each_service_links_to_idp_initiated_sso(testapp, dbsession):
    module = make_module(dbsession, "exam", "Peperiksaan", "Examinations")
    role = make_role(dbsession, "teacher", module)
    first = make_sp(dbsession, "https://a.example.my/sp", module, names={"en": "A"})
    second = make_sp(dbsession, "https://b.example.my/sp", module, names={"en": "B"})
    signed_in_user(testapp, dbsession, role)

    page = portal(testapp, "en")
    hrefs = [a["href"] for a in page.html.select("#my-modules a")]
    assert hrefs == [
        f"{TEST_BASE_URL}/saml/init/{first.id}",
        f"{TEST_BASE_URL}/saml/init/{second.id}",
    ]


@pytest.mark.parametrize("lang", LOCALES)
def test_logo_in_the_page_language_or_none(testapp, dbsession, lang):
    module = make_module(dbsession, "exam", "Peperiksaan", "Examinations")
    role = make_role(dbsession, "teacher", module)
    make_sp(
        dbsession,
        "https://logo.example.my/sp",
        module,
        names={"ms": "Dengan Logo", "en": "With Logo"},
        logos={
            "ms": "https://logo.example.my/logo-ms.png",
            "en": "https://logo.example.my/logo-en.png",
        },
    )
    # Only an http logo: the registry drops it, so no image at all.
    make_sp(
        dbsession,
        "https://plain.example.my/sp",
        module,
        names={None: "Tanpa Logo"},
        logos={None: "http://plain.example.my/logo.png"},
    )
    signed_in_user(testapp, dbsession, role)

    page = portal(testapp, lang)
    links = {
        link.select_one(".module-name").get_text(strip=True): link
        for link in page.html.select("#my-modules a")
    }
    name = {"ms": "Dengan Logo", "en": "With Logo"}[lang]
    assert sorted(links) == sorted([name, "Tanpa Logo"])
    image = links[name].img
    assert image["src"] == f"https://logo.example.my/logo-{lang}.png"
    assert image["alt"] == name
    assert image["width"] and image["height"]
    assert not image.has_attr("style")
    assert links["Tanpa Logo"].img is None
    assert "http://plain.example.my" not in page.text


# --------------------------------------------------------------------------
# Nothing to show, and visitors


@pytest.mark.parametrize("lang", LOCALES)
def test_no_modules_explains_and_links_to_help(testapp, dbsession, lang):
    module = make_module(dbsession, "exam", "Peperiksaan", "Examinations")
    # A role that grants a module with no SP, and an SP the user is not granted.
    role = make_role(dbsession, "teacher", make_module(dbsession, "x", "X", "X"))
    make_sp(dbsession, "https://exam.example.my/sp", module, names={"en": "Exam"})
    signed_in_user(testapp, dbsession, role)

    page = portal(testapp, lang)
    assert page.html.find(id="my-modules") is None
    empty = page.html.find(id="no-modules")
    assert empty is not None
    assert empty.find("a", href="/help") is not None
    assert page.html.find(id="logout-link") is not None


def test_no_modules_in_english(testapp, dbsession):
    signed_in_user(testapp, dbsession)
    page = portal(testapp, "en")
    text = page.html.find(id="no-modules").get_text(" ", strip=True)
    assert NO_MODULES["en"] in text
    assert page.html.find(id="my-modules-heading").get_text() == MY_MODULES["en"]


def test_no_modules_in_malay(testapp, dbsession):
    signed_in_user(testapp, dbsession)
    page = portal(testapp, "ms")
    text = page.html.find(id="no-modules").get_text(" ", strip=True)
    assert NO_MODULES["ms"] in text
    assert page.html.find(id="my-modules-heading").get_text() == MY_MODULES["ms"]


@pytest.mark.parametrize("lang", LOCALES)
def test_visitors_get_the_home_page_without_a_portal(testapp, dbsession, lang):
    module = make_module(dbsession, "exam", "Peperiksaan", "Examinations")
    make_role(dbsession, "teacher", module)
    make_sp(dbsession, "https://exam.example.my/sp", module, names={"en": "Exam"})

    page = portal(testapp, lang)
    assert {"ms": "Daftar Masuk ke idMe", "en": "Sign in to idMe"}[lang] in page.text
    assert page.forms["login-form"].action == "/login"
    assert page.html.find(id="register-link")["href"] == "/register"
    for absent in ("my-modules", "my-modules-heading", "no-modules", "logout-link"):
        assert page.html.find(id=absent) is None
    assert "/saml/init/" not in page.text


# --------------------------------------------------------------------------
# Cost


def test_the_portal_costs_the_same_selects_for_one_service_or_many(testapp, dbsession):
    """No N+1: one query for the services, whatever their number."""
    modules = [
        make_module(dbsession, f"m{n}", f"Modul {n}", f"Module {n}") for n in range(6)
    ]
    role = make_role(dbsession, "teacher", *modules[:3])
    other = make_role(dbsession, "warden", *modules[3:])
    make_sp(dbsession, "https://sp0.example.my/sp", modules[0])
    signed_in_user(testapp, dbsession, role, other)
    connection = dbsession.connection()

    def selects_for_portal() -> tuple[int, int]:
        # Forget every loaded object, so a lazy load would have to go to the
        # database and be counted rather than come from the identity map.
        dbsession.expunge_all()
        statements: list[str] = []

        def record(conn, cursor, statement, parameters, context, executemany):
            statements.append(statement)

        event.listen(connection, "before_cursor_execute", record)
        try:
            page = portal(testapp, "en")
        finally:
            event.remove(connection, "before_cursor_execute", record)
        selects = sum(1 for s in statements if s.lstrip().upper().startswith("SELECT"))
        return selects, len(listed(page))

    portal(testapp, "en")  # the first page after sign-in may tidy the session
    one, shown = selects_for_portal()
    assert shown == 1
    for n, module in enumerate(modules):
        make_sp(dbsession, f"https://sp{n}-extra.example.my/sp", module)
    many, shown = selects_for_portal()
    assert shown == 7
    assert many == one
    assert one <= 5
