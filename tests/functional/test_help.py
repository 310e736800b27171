"""The "Bantuan" (Help) page: the user manual, the helpdesk and the help link.

The Malay text of the manual arrives with the catalogs, so these tests look at
the page's structure and at the helpdesk details, which come from settings.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from idp.views.help import media_files, tel_uri

SECTIONS = ["register", "sign-in", "security-image", "forgot-password", "my-account"]
EMPTY_HELPDESK = {
    "idp.helpdesk.name.ms": "",
    "idp.helpdesk.name.en": "",
    "idp.helpdesk.address": "",
    "idp.helpdesk.phone": "",
    "idp.helpdesk.email": "",
    "idp.helpdesk.hours.ms": "",
    "idp.helpdesk.hours.en": "",
}
# As development.ini ships them.
NAME_MS = "Bahagian Pengurusan Maklumat, Kementerian Pendidikan Malaysia"
NAME_EN = "Information Management Division, Ministry of Education Malaysia"
ADDRESS = (
    "Kompleks Kerajaan Parcel E, Pusat Pentadbiran Kerajaan Persekutuan, "
    "62604 Putrajaya"
)
HOURS_MS = "Isnin hingga Jumaat, 8.30 pagi hingga 5.30 petang"
HOURS_EN = "Monday to Friday, 8.30 am to 5.30 pm"


def anchors(page) -> list[str]:
    return [a["href"][1:] for a in page.html.select("nav.help-toc a[href^='#']")]


@pytest.mark.parametrize("locale", ["ms", "en"])
def test_help_page_has_every_section_and_a_working_contents(testapp, locale):
    page = testapp.get(f"/help?lang={locale}")
    assert page.status_int == 200
    assert f'<html lang="{locale}">' in page.text
    assert anchors(page) == [*SECTIONS, "helpdesk"]
    for section in [*SECTIONS, "helpdesk"]:
        element = page.html.find(id=section)
        assert element is not None and element.name == "section", section
        # Each section is named by its own heading and has a way back up.
        heading = page.html.find(id=element["aria-labelledby"])
        assert heading.name == "h2" and heading.get_text(strip=True)
        assert element.select_one("a[href='#contents']")
    # Every step-by-step part is a numbered list.
    for section in SECTIONS:
        assert page.html.find(id=section).select("ol.help-steps > li"), section
    # Every in-page link goes somewhere on the page.
    for link in page.html.select("a[href^='#']"):
        assert page.html.find(id=link["href"][1:]) is not None, link["href"]
    headers = page.headers
    assert headers["X-Frame-Options"] == "DENY"
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
    assert not page.html.select("[style]")


def test_help_page_in_english(testapp):
    page = testapp.get("/help?lang=en")
    headings = [h.get_text(strip=True) for h in page.html.select(".help-section h2")]
    assert headings == [
        "How to register",
        "How to sign in",
        "Your security image and security phrase",
        "Forgot your password?",
        "Changing your details",
        "Contact the helpdesk",
    ]
    assert page.html.title.get_text().startswith("Help")
    # The numbers the manual quotes come from the product's own settings.
    assert "one of 64 pictures" in page.text
    assert "expires after 72 hours" in page.text
    assert "at least 12 characters" in page.text
    assert "3 to 40 characters" in page.text


@pytest.mark.parametrize(
    ("locale", "name", "hours", "not_shown"),
    [
        ("ms", NAME_MS, HOURS_MS, [NAME_EN, HOURS_EN]),
        ("en", NAME_EN, HOURS_EN, [NAME_MS, HOURS_MS]),
    ],
)
def test_helpdesk_details_come_from_settings(testapp, locale, name, hours, not_shown):
    page = testapp.get(f"/help?lang={locale}")
    helpdesk = page.html.find(id="helpdesk")
    assert helpdesk.select_one(".helpdesk-name").get_text(strip=True) == name
    assert helpdesk.select_one(".helpdesk-hours").get_text(strip=True) == hours
    assert helpdesk.select_one(".helpdesk-address").get_text(strip=True) == ADDRESS
    phone = helpdesk.select_one(".helpdesk-phone a")
    assert phone.get_text(strip=True) == "03-8884 6000"
    assert phone["href"] == "tel:+60388846000"
    email = helpdesk.select_one(".helpdesk-email a")
    assert email.get_text(strip=True) == "idme-support@moe.gov.my"
    assert email["href"] == "mailto:idme-support@moe.gov.my"
    for text in not_shown:
        assert text not in page.text
    # The warnings about a wrong security image point at the helpdesk.
    assert page.html.select("#sign-in a[href='#helpdesk']")
    assert page.html.select("#security-image a[href='#helpdesk']")


@pytest.mark.parametrize("path", ["/", "/register", "/help", "/no-such-page"])
def test_help_link_on_every_page(testapp, path):
    page = testapp.get(path, expect_errors=True)
    link = page.html.find(id="help-link")
    assert link is not None
    assert link["href"] == "/help"
    assert link.find_parent("header") is not None
    assert link.get_text(strip=True)
    # Marked as the current page only on the help page itself.
    assert (link.get("aria-current") == "page") == (path == "/help")


def test_help_link_label_in_english(testapp):
    page = testapp.get("/?lang=en")
    assert page.html.find(id="help-link").get_text(strip=True) == "Help"


@pytest.mark.parametrize("locale", ["ms", "en"])
def test_no_helpdesk_block_without_helpdesk_settings(testapp_with, locale):
    page = testapp_with(EMPTY_HELPDESK).get(f"/help?lang={locale}")
    assert page.status_int == 200
    assert page.html.find(id="helpdesk") is None
    assert not page.html.select("a[href='#helpdesk']")
    assert not page.html.select(".helpdesk-details, .helpdesk-name, dt")
    assert anchors(page) == SECTIONS
    # The manual itself is all there.
    for section in SECTIONS:
        assert page.html.find(id=section) is not None


def test_only_the_helpdesk_details_that_are_set_are_shown(testapp_with):
    page = testapp_with({**EMPTY_HELPDESK, "idp.helpdesk.email": "help@example.my"})
    page = page.get("/help?lang=en")
    helpdesk = page.html.find(id="helpdesk")
    assert [dt.get_text(strip=True) for dt in helpdesk.select("dt")] == ["Email"]
    assert helpdesk.select_one(".helpdesk-name") is None
    assert "help@example.my" in helpdesk.get_text()


def test_name_and_hours_fall_back_to_the_other_language(testapp_with):
    app = testapp_with({"idp.helpdesk.name.en": "", "idp.helpdesk.hours.ms": ""})
    english = app.get("/help?lang=en").html
    assert english.select_one(".helpdesk-name").get_text(strip=True) == NAME_MS
    assert english.select_one(".helpdesk-hours").get_text(strip=True) == HOURS_EN
    malay = app.get("/help?lang=ms").html
    assert malay.select_one(".helpdesk-name").get_text(strip=True) == NAME_MS
    assert malay.select_one(".helpdesk-hours").get_text(strip=True) == HOURS_EN


def test_temporary_password_lifetime_follows_the_setting(testapp_with):
    page = testapp_with({"idp.temporary_password_hours": "48"}).get("/help?lang=en")
    assert "expires after 48 hours" in page.text


def test_helpdesk_text_is_escaped(testapp_with):
    page = testapp_with({"idp.helpdesk.name.en": "<b>Meja</b> & co"})
    page = page.get("/help?lang=en")
    assert "&lt;b&gt;Meja&lt;/b&gt; &amp; co" in page.text
    assert page.html.select_one(".helpdesk-name b") is None


@pytest.mark.parametrize(
    ("phone", "uri"),
    [
        ("03-8884 6000", "tel:+60388846000"),
        ("(03) 8884-6000", "tel:+60388846000"),
        ("+65 6123 4567", "tel:+6561234567"),
        ("0065 6123 4567", "tel:+6561234567"),
        ("1-300-88-1234", "tel:1300881234"),
        ("03-8884 6000 ext. 12", None),
    ],
)
def test_tel_uri(phone, uri):
    assert tel_uri(phone) == uri


HELP_MEDIA = Path(__file__).resolve().parents[2] / "idp" / "static"


def _linked(page) -> set[str]:
    """Every file under /static/help/ the page links to, relative to static/."""
    links = set()
    for element in page.html.select("[src], [href], [poster]"):
        for attribute in ("src", "href", "poster"):
            value = element.get(attribute, "")
            if value.startswith("/static/help/"):
                links.add(value.removeprefix("/static/"))
    return links


def test_help_media_committed_are_exactly_what_the_page_shows(testapp):
    """The screenshots, videos, captions and manuals in idp/static/help/ are
    the ones the page links to, in both languages: a renamed step or a
    stale file fails here until scripts/build-help-media runs again."""
    on_disk = {f"help/{path.name}" for path in (HELP_MEDIA / "help").iterdir()}
    assert on_disk == media_files()
    shown = set()
    for locale in ("ms", "en"):
        page = testapp.get(f"/help?lang={locale}")
        linked = _linked(page)
        # Pictures, video and manual in the page's language; captions in both.
        assert {path for path in linked if not path.endswith(".vtt")} == {
            path
            for path in media_files()
            if f".{locale}." in path and not path.endswith(".vtt")
        }
        shown |= linked
        for image in page.html.select(".help-figure img"):
            assert image["alt"].strip() and image["src"].endswith(f".{locale}.png")
    assert shown == media_files()


def test_help_media_stay_small_and_well_formed():
    """Screenshots are palette PNGs at the desktop size, each video under
    2 MB and all the media under 10 MB."""
    from PIL import Image

    total = 0
    for name in media_files():
        path = HELP_MEDIA / name
        data = path.read_bytes()
        total += len(data)
        if name.endswith(".png"):
            with Image.open(path) as image:
                assert (image.format, image.mode, image.size) == (
                    "PNG",
                    "P",
                    (1280, 800),
                )
        elif name.endswith(".webm"):
            assert data[:4] == b"\x1aE\xdf\xa3" and len(data) < 2 * 1024 * 1024
        elif name.endswith(".vtt"):
            assert data.startswith(b"WEBVTT\n")
        else:
            assert data.startswith(b"%PDF-")
    assert total < 10 * 1024 * 1024
