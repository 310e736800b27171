"""The pages a person meets first: the sign-in form on ``/``, the footer and
its pages (privacy, security, accessibility, helpdesk, developers), the crest.

Each page is walked as a browser does, in Malay and in English.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest

from idp.i18n import LOCALES
from idp.saml.registry import RELEASABLE
from idp.services.mail import Composer, already_registered, temporary_password
from idp.settings import SettingsError, parse_settings
from tests.app import ROOT, TEST_BASE_URL
from tests.factories import PASSWORD, make_user

FOOTER_PAGES = {
    "privacy-link": "/privacy",
    "security-link": "/security",
    "accessibility-link": "/accessibility",
    "helpdesk-link": "/helpdesk",
    "developers-link": "/developers",
}
NEW_PAGES = list(FOOTER_PAGES.values())
HEADINGS = {
    "/privacy": {"ms": "Notis privasi", "en": "Privacy notice"},
    "/security": {"ms": "Dasar keselamatan", "en": "Security policy"},
    "/accessibility": {
        "ms": "Pernyataan kebolehcapaian",
        "en": "Accessibility statement",
    },
    "/helpdesk": {"ms": "Meja bantuan", "en": "Helpdesk"},
    "/developers": {"ms": "Untuk pembangun", "en": "For developers"},
}
SIGN_IN = {"ms": "Daftar Masuk", "en": "Sign in"}
REGISTER = {"ms": "Daftar Baharu", "en": "Register"}
FORGOT = {"ms": "Lupa Kata Laluan", "en": "Forgot password"}
# A 1x1 transparent PNG: the tests' own crest, nobody's emblem.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"></svg>'


def assert_security_headers(response) -> None:
    headers = response.headers
    assert headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.fixture(scope="module")
def crest_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("crest")
    (directory / "crest.png").write_bytes(PNG)
    (directory / "crest.svg").write_bytes(SVG)
    (directory / "not-an-image.png").write_bytes(b"<html>hello</html>")
    return directory


# --------------------------------------------------------------------------
# Item 11: "/" for a signed-out visitor is the sign-in form


@pytest.mark.parametrize("lang", LOCALES)
def test_home_signed_out_is_the_sign_in_form(testapp, lang):
    page = testapp.get(f"/?lang={lang}")
    assert page.status_int == 200
    form = page.forms["login-form"]
    assert form.action == "/login"
    assert form.method.lower() == "post"
    assert "identifier" in form.fields
    button = page.html.find(id="login-form").find("button", type="submit")
    assert button.get_text(strip=True) == SIGN_IN[lang]
    # "Daftar Baharu" and "Lupa Kata Laluan" sit beside the button.
    actions = button.find_parent(class_="actions")
    assert actions.find(id="register-link")["href"] == "/register"
    assert REGISTER[lang] in actions.find(id="register-link").get_text()
    assert actions.find(id="forgot-link")["href"] == "/password/forgot"
    assert actions.find(id="forgot-link").get_text(strip=True) == FORGOT[lang]
    # No "go to sign-in" click, no metadata link for parents.
    assert page.html.find(id="login-link") is None
    assert "/saml/metadata" not in page.text
    assert_security_headers(page)


@pytest.mark.parametrize("lang", LOCALES)
def test_home_sign_in_form_continues_the_flow(testapp, dbsession, lang):
    user = make_user(dbsession, identifier="080512145678")
    form = testapp.get(f"/?lang={lang}").forms["login-form"]
    form["identifier"] = "080512-14-5678"
    image = form.submit(status=303)
    assert image.headers["Location"].endswith("/login/image")
    form = image.follow().forms["image-form"]
    form["confirm"] = True
    form = form.submit(status=303).follow().forms["password-form"]
    form["password"] = PASSWORD
    done = form.submit(status=303)
    assert done.headers["Location"] == f"{TEST_BASE_URL}/"
    portal = done.follow()
    assert portal.html.find(id="logout-link") is not None
    assert "login-form" not in portal.forms
    assert user.full_name in portal.text


def test_home_keeps_next(testapp, dbsession):
    make_user(dbsession, identifier="080512145678")
    page = testapp.get("/?next=/account")
    assert page.forms["login-form"]["next"].value == "/account"
    # An off-site next is dropped, as on /login.
    evil = testapp.get("/?next=https://evil.example/")
    assert evil.forms["login-form"]["next"].value == ""
    form = page.forms["login-form"]
    form["identifier"] = "080512-14-5678"
    form = form.submit(status=303).follow().forms["image-form"]
    form["confirm"] = True
    form = form.submit(status=303).follow().forms["password-form"]
    form["password"] = PASSWORD
    assert form.submit(status=303).headers["Location"].endswith("/account")


def test_home_bad_identifier_is_the_same_answer_as_login(testapp):
    form = testapp.get("/?lang=en").forms["login-form"]
    form["identifier"] = "not a number"
    answer = form.submit(status=400)
    assert answer.forms["login-form"].action == "/login"
    # Control: /login itself gives the same status for the same input.
    form = testapp.get("/login?lang=en").forms["login-form"]
    form["identifier"] = "not a number"
    form.submit(status=400)


def mail_context(composer, user, template: str) -> dict:
    """The context the queueing function builds for ``template``."""
    if template == "temporary-password":
        return temporary_password.__wrapped__(
            composer, user, password="a" * 16, expires_at=dt.datetime.now(dt.UTC)
        )
    return already_registered.__wrapped__(composer, user)


@pytest.mark.parametrize("template", ["temporary-password", "already-registered"])
@pytest.mark.parametrize("lang", LOCALES)
def test_sign_in_links_in_mail_go_to_login(app, dbsession, lang, template):
    user = make_user(dbsession, identifier="080512145678", locale=lang)
    composer = Composer(app.registry.settings)
    message = composer.compose(
        template,
        recipient=user.email,
        locale=lang,
        context=mail_context(composer, user, template),
    )
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert f"{TEST_BASE_URL}/login" in text
    assert f'href="{TEST_BASE_URL}/login"' in html
    # No bare "/" link left: that would cost the reader a click.
    assert not re.search(re.escape(TEST_BASE_URL) + r"/(\s|$)", text)


# --------------------------------------------------------------------------
# Item 12: the footer and its pages


@pytest.mark.parametrize("path", NEW_PAGES)
@pytest.mark.parametrize("lang", LOCALES)
def test_footer_pages_in_both_languages(testapp, path, lang):
    page = testapp.get(f"{path}?lang={lang}")
    assert page.status_int == 200
    assert f'<html lang="{lang}">' in page.text
    assert page.html.find("h1").get_text(strip=True) == HEADINGS[path][lang]
    other = "en" if lang == "ms" else "ms"
    assert HEADINGS[path][other] not in page.html.find("main").get_text()
    assert_security_headers(page)
    assert 'href="#' not in page.html.find(class_="site-footer").decode()


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/login",
        "/register",
        "/help",
        "/password/forgot",
        "/no-such-page",
        *NEW_PAGES,
    ],
)
@pytest.mark.parametrize("lang", LOCALES)
def test_footer_links_on_every_page(testapp, path, lang):
    page = testapp.get(f"{path}?lang={lang}", expect_errors=True)
    footer = page.html.find("footer", class_="site-footer")
    assert footer is not None
    for link_id, href in FOOTER_PAGES.items():
        assert footer.find(id=link_id)["href"] == href


def test_footer_links_on_the_signed_in_portal(testapp, dbsession):
    make_user(dbsession, identifier="080512145678")
    form = testapp.get("/").forms["login-form"]
    form["identifier"] = "080512-14-5678"
    form = form.submit(status=303).follow().forms["image-form"]
    form["confirm"] = True
    form = form.submit(status=303).follow().forms["password-form"]
    form["password"] = PASSWORD
    portal = form.submit(status=303).follow()
    footer = portal.html.find("footer", class_="site-footer")
    for link_id, href in FOOTER_PAGES.items():
        assert footer.find(id=link_id)["href"] == href


def readme_attribute_names() -> dict[str, str]:
    """FriendlyName -> Name from the README's table of released attributes."""
    text = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `([A-Za-z-]+)` \| `(urn:[^`…]+)` \|", text, re.MULTILINE)
    return dict(rows)


@pytest.mark.parametrize("lang", LOCALES)
def test_developers_page_says_what_integrators_need(app, testapp, lang, keypair):
    page = testapp.get(f"/developers?lang={lang}")
    text = page.text
    settings = app.registry.settings
    metadata = page.html.find(id="metadata-url")
    assert metadata.find("a")["href"] == f"{TEST_BASE_URL}/saml/metadata"
    assert (
        page.html.find(id="entity-id").get_text(strip=True) == settings["idp.entity_id"]
    )
    for path in ("sso/redirect", "sso/post", "slo/redirect", "slo/post"):
        assert f"{TEST_BASE_URL}/saml/{path}" in text
    assert "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" in text
    assert "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" in text
    fingerprint = keypair.fingerprint.upper()
    shown = page.html.find(id="signing-fingerprint").get_text(strip=True)
    assert shown.replace(":", "") == fingerprint
    for name_format in ("persistent", "transient", "emailAddress"):
        assert f"urn:oasis:names:tc:SAML:2.0:nameid-format:{name_format}" in text or (
            f"urn:oasis:names:tc:SAML:1.1:nameid-format:{name_format}" in text
        )
    rows = {
        row.find("code").get_text(strip=True): row
        for row in page.html.find(id="attributes").find_all("tr")[1:]
    }
    assert set(rows) == set(RELEASABLE)
    for friendly, uri in readme_attribute_names().items():
        assert uri in rows[friendly].get_text()
    contact = settings["idp.contact.technical.email"]
    assert page.html.find(id="register-service").find("a", href=f"mailto:{contact}")


@pytest.mark.parametrize("path", NEW_PAGES)
def test_wide_tables_scroll_by_keyboard_in_a_named_region(testapp, path):
    """A table wider than a 360 px phone scrolls in a region Tab reaches.

    WCAG 2.1.1: axe's scrollable-region-focusable failed on /developers at
    360 px, whose two tables scrolled in a div the keyboard never reached.
    """
    page = testapp.get(f"{path}?lang=ms")
    for region in page.html.select(".table-scroll"):
        assert region.get("tabindex") == "0", path
        assert region.get("role") == "region", path
        label = page.html.find(id=region.get("aria-labelledby"))
        assert label is not None and label.get_text(strip=True), path


@pytest.mark.parametrize("lang", LOCALES)
def test_privacy_notice_names_the_controller_and_pdpa(testapp_with, lang):
    app = testapp_with(
        {
            "idp.privacy.controller.ms": "Kementerian Ujian",
            "idp.privacy.controller.en": "Ministry of Testing",
            "idp.privacy.email": "privacy@test.example.my",
            "idp.privacy.address": "Aras 1, Putrajaya",
        }
    )
    page = app.get(f"/privacy?lang={lang}")
    controller = page.html.find(id="data-controller").get_text(" ", strip=True)
    assert {"ms": "Kementerian Ujian", "en": "Ministry of Testing"}[lang] in controller
    assert "Aras 1, Putrajaya" in controller
    assert page.html.find(id="data-controller").find(
        "a", href="mailto:privacy@test.example.my"
    )
    assert "2010" in page.text
    assert "709" in page.text  # Akta 709, the PDPA's number


@pytest.mark.parametrize("lang", LOCALES)
def test_security_policy_names_the_security_contact(app, testapp, lang):
    page = testapp.get(f"/security?lang={lang}")
    email = app.registry.settings["idp.contact.security.email"]
    assert page.html.find(id="report").find("a", href=f"mailto:{email}")


@pytest.mark.parametrize("lang", LOCALES)
def test_helpdesk_page_shows_the_helpdesk_settings(app, testapp, lang):
    settings = app.registry.settings
    page = testapp.get(f"/helpdesk?lang={lang}")
    details = page.html.find(id="helpdesk-details").get_text(" ", strip=True)
    assert settings[f"idp.helpdesk.name.{lang}"] in details
    assert settings[f"idp.helpdesk.hours.{lang}"] in details
    assert page.html.find(id="helpdesk-details").find(
        "a", href=f"mailto:{settings['idp.helpdesk.email']}"
    )
    assert page.html.find(id="helpdesk-details").find("a", href="tel:+60388846000")


# --------------------------------------------------------------------------
# The crest


def test_no_crest_unless_configured(testapp):
    for lang in LOCALES:
        page = testapp.get(f"/?lang={lang}")
        assert page.html.find(id="crest") is None
    testapp.get("/crest", status=404)


@pytest.mark.parametrize("lang", LOCALES)
def test_crest_from_a_file_is_served_and_shown(testapp_with, crest_dir, lang):
    app = testapp_with(
        {
            "idp.crest.path": str(crest_dir / "crest.png"),
            "idp.crest.alt_ms": "Jata Negara",
            "idp.crest.alt_en": "Coat of arms of Malaysia",
        }
    )
    page = app.get(f"/privacy?lang={lang}")
    crest = page.html.find("footer").find(id="crest")
    assert crest["src"] == "/crest"
    assert crest["alt"] == {"ms": "Jata Negara", "en": "Coat of arms of Malaysia"}[lang]
    image = app.get("/crest")
    assert image.body == PNG
    assert image.content_type == "image/png"
    assert image.headers["X-Content-Type-Options"] == "nosniff"
    # Cached by browsers, revalidated by its ETag.
    etag = image.headers["ETag"]
    app.get("/crest", headers={"If-None-Match": etag}, status=304)
    # Error pages carry it too (they share the footer).
    missing = app.get(f"/no-such-page?lang={lang}", status=404)
    assert missing.html.find("footer").find(id="crest")["src"] == "/crest"


def test_crest_svg_is_served_sandboxed(testapp_with, crest_dir):
    app = testapp_with(
        {
            "idp.crest.path": str(crest_dir / "crest.svg"),
            "idp.crest.alt_ms": "Jata",
            "idp.crest.alt_en": "Crest",
        }
    )
    image = app.get("/crest")
    assert image.content_type == "image/svg+xml"
    policy = image.headers["Content-Security-Policy"]
    assert "sandbox" in policy
    assert "default-src 'none'" in policy


def test_crest_from_a_same_origin_url(testapp_with):
    app = testapp_with(
        {
            "idp.crest.path": f"{TEST_BASE_URL}/assets/jata.svg",
            "idp.crest.alt_ms": "Jata",
            "idp.crest.alt_en": "Crest",
        }
    )
    crest = app.get("/").html.find(id="crest")
    assert crest["src"] == f"{TEST_BASE_URL}/assets/jata.svg"
    app.get("/crest", status=404)


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"idp.crest.path": "https://evil.example/crest.png"}, "same origin"),
        ({"idp.crest.path": f"{TEST_BASE_URL}.evil.example/c.png"}, "same origin"),
        ({"idp.crest.path": "https://idp.test@evil.example/c.png"}, "same origin"),
        ({"idp.crest.path": "http://idp.test/c.png"}, "same origin"),
        ({"idp.crest.path": "/nonexistent/crest.png"}, "no such file"),
        ({"idp.crest.path": "CREST_DIR/not-an-image.png"}, "not a PNG"),
        ({"idp.crest.path": "CREST_DIR/crest.png", "idp.crest.alt_en": ""}, "alt_en"),
        ({"idp.crest.path": "CREST_DIR/crest.png", "idp.crest.alt_ms": ""}, "alt_ms"),
        ({"idp.crest.alt_ms": "Jata"}, "idp.crest.path"),
    ],
)
def test_crest_settings_are_validated(settings, crest_dir, overrides, complaint):
    raw = {
        **settings,
        "idp.crest.alt_ms": "Jata",
        "idp.crest.alt_en": "Crest",
        **{k: v.replace("CREST_DIR", str(crest_dir)) for k, v in overrides.items()},
    }
    if overrides == {"idp.crest.alt_ms": "Jata"}:
        raw["idp.crest.alt_en"] = ""
    with pytest.raises(SettingsError, match=complaint) as caught:
        parse_settings(raw, environ={})
    assert str(caught.value).startswith("idp.crest.")
    # Control: the same settings with a good crest file start.
    good = {**raw, "idp.crest.path": str(crest_dir / "crest.png")}
    good.update({"idp.crest.alt_ms": "Jata", "idp.crest.alt_en": "Crest"})
    assert parse_settings(good, environ={})["idp.crest"].data == PNG


def test_a_crest_file_too_large_is_named_in_human_units(settings, tmp_path):
    """Issue 12 item 16: sizes as people read them, not 614400 bytes."""
    big = tmp_path / "crest.png"
    big.write_bytes(PNG + bytes(600 * 1024))
    raw = {
        **settings,
        "idp.crest.path": str(big),
        "idp.crest.alt_ms": "Jata",
        "idp.crest.alt_en": "Crest",
    }
    with pytest.raises(SettingsError) as caught:
        parse_settings(raw, environ={})
    assert str(caught.value) == (
        "idp.crest.path: the file is 600.1 KiB; the limit is 512 KiB"
    )


def test_privacy_contact_must_be_an_email_address(settings):
    with pytest.raises(SettingsError, match=r"^idp\.privacy\.email: not an email"):
        parse_settings({**settings, "idp.privacy.email": "privacy at moe"}, environ={})
    # Control: a real address starts.
    parsed = parse_settings(
        {**settings, "idp.privacy.email": "privacy@moe.gov.my"}, environ={}
    )
    assert parsed["idp.privacy.email"] == "privacy@moe.gov.my"
