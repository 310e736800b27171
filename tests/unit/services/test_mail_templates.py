"""Every email, rendered in both languages: its text part, its HTML part (issue 12, items 9-10).

Each template under ``templates/email/`` has a sample below; a template
without one fails :func:`test_every_template_has_a_sample`. For each sample
and each recipient language the message must be multipart/alternative with
a plain-text part and an accessible HTML part: ``lang`` attributes, layout
tables marked ``role="presentation"``, links whose text says where they go,
the action as a link styled as a button in the section's own language, and
the same link printed in full where a phone can break it.
"""

from __future__ import annotations

import datetime as dt
import re
from types import SimpleNamespace

import lxml.html
import pytest

from idp.jinja2 import TEMPLATES_DIR
from idp.services import mail
from idp.services.mail import Composer

SETTINGS = {
    "mail.sender": "idMe <no-reply@idme.moe.gov.my>",
    "idp.base_url": "https://idme.moe.gov.my",
    "idp.name.ms": "idMe",
    "idp.name.en": "idMe",
    "idp.timezone": "Asia/Kuala_Lumpur",
    "idp.helpdesk.name.ms": "Meja Bantuan idMe",
    "idp.helpdesk.name.en": "idMe Helpdesk",
    "idp.helpdesk.phone": "03-8884 6000",
    "idp.helpdesk.email": "idme-support@moe.gov.my",
}
BASE = SETTINGS["idp.base_url"]
WHEN = dt.datetime(2026, 11, 28, 2, 30, tzinfo=dt.UTC)
# What a person typed: it must arrive as text, never as markup.
NAME = '<b onclick="x()">Ali</b> & "Abu"'
RESET_LINK = f"{BASE}/password/reset/" + "T" * 43
CONFIRM_LINK = f"{BASE}/account/email/confirm/" + "C" * 43
LOGIN = f"{BASE}/login"
SIGN_IN = ("Log masuk", "Log in")
FORGOT = f"{BASE}/password/forgot"
FORGOT_BUTTON = ("Lupa Kata Laluan", "Forgot password")
RESET_BUTTON = (
    "Penetapan Semula Kata Laluan Akaun Pengguna",
    "Reset user account password",
)
CONFIRM_BUTTON = ("Sahkan alamat e-mel baharu", "Confirm new email address")

# name -> (send(outbox, user), the button's link, (ms wording, en wording),
#          words each language's text must hold (ms, en), words it must not)
SAMPLES = {
    "temporary-password": (
        lambda o, u: mail.temporary_password(
            o, u, password="k7mq3xw9pf2hzr4t", expires_at=WHEN
        ),
        LOGIN,
        SIGN_IN,
        ("telah didaftarkan", "has been registered"),
        (),
    ),
    "account-created": (
        lambda o, u: mail.account_created(
            o, u, password="k7mq3xw9pf2hzr4t", expires_at=WHEN
        ),
        LOGIN,
        SIGN_IN,
        ("meja bantuan", "helpdesk"),
        ("If you did not register",),
    ),
    "temporary-password-reset": (
        lambda o, u: mail.temporary_password_reset(
            o, u, password="k7mq3xw9pf2hzr4t", expires_at=WHEN
        ),
        LOGIN,
        SIGN_IN,
        ("kata laluan sementara baharu", "new temporary password"),
        ("has been registered", "If you did not register"),
    ),
    "password-reset": (
        lambda o, u: mail.password_reset(o, u, link=RESET_LINK, expires_at=WHEN),
        RESET_LINK,
        RESET_BUTTON,
        ("sekali sahaja", "works once"),
        (),
    ),
    "already-registered": (
        lambda o, u: mail.already_registered(o, u),
        LOGIN,
        SIGN_IN,
        ("Lupa Kata Laluan", "Forgot password"),
        (),
    ),
    "password-changed": (
        lambda o, u: mail.password_changed(o, u, changed_at=WHEN),
        FORGOT,
        FORGOT_BUTTON,
        ("28 November 2026, 10:30", "28 November 2026, 10:30"),
        (),
    ),
    "account-locked": (
        lambda o, u: mail.account_locked(o, u, until=WHEN),
        FORGOT,
        FORGOT_BUTTON,
        ("terlalu banyak kali", "too many times"),
        ("helpdesk has locked",),
    ),
    "account-locked-codes": (
        lambda o, u: mail.account_locked_codes(o, u, until=WHEN),
        FORGOT,
        FORGOT_BUTTON,
        ("mengetahui kata laluan anda", "knows your password"),
        ("tidak terdedah", "was not revealed"),
    ),
    "admin-role-changed": (
        lambda o, u: mail.admin_role_changed(
            o, u, role="helpdesk", granted=True, at=WHEN
        ),
        None,
        None,
        ("Meja bantuan", "Helpdesk"),
        (),
    ),
    "account-locked-by-helpdesk": (
        lambda o, u: mail.account_locked_by_helpdesk(o, u, locked_at=WHEN),
        None,
        None,
        ("idme-support@moe.gov.my", "idme-support@moe.gov.my"),
        ("wrong password", "too many times"),
    ),
    "security-image-changed": (
        lambda o, u: mail.security_image_changed(o, u, changed_at=WHEN),
        FORGOT,
        FORGOT_BUTTON,
        ("frasa keselamatan", "security image or phrase"),
        (),
    ),
    "email-change-confirm": (
        lambda o, u: mail.email_change_confirm(
            o, u, recipient="baru@example.my", link=CONFIRM_LINK, expires_at=WHEN
        ),
        CONFIRM_LINK,
        CONFIRM_BUTTON,
        ("XXXXXX-XX-5678", "XXXXXX-XX-5678"),
        (),
    ),
    "email-change-in-use": (
        lambda o, u: mail.email_change_in_use(o, u),
        LOGIN,
        SIGN_IN,
        ("sudah digunakan", "already used"),
        ("XXXXXX-XX-5678", "5678"),
    ),
    "email-changed": (
        lambda o, u: mail.email_changed(
            o,
            u,
            recipient="lama@example.my",
            new_email="baru@example.my",
            changed_at=WHEN,
        ),
        LOGIN,
        SIGN_IN,
        ("b***@example.my", "b***@example.my"),
        ("baru@example.my",),
    ),
    "email-set-by-helpdesk": (
        lambda o, u: mail.email_set_by_helpdesk(o, u, changed_at=WHEN),
        LOGIN,
        SIGN_IN,
        ("meja bantuan", "helpdesk"),
        (),
    ),
    "two-step-enabled": (
        lambda o, u: mail.two_step_enabled(o, u, changed_at=WHEN),
        FORGOT,
        FORGOT_BUTTON,
        ("kod pemulihan", "recovery codes"),
        (),
    ),
    "two-step-disabled": (
        lambda o, u: mail.two_step_disabled(o, u, changed_at=WHEN),
        FORGOT,
        FORGOT_BUTTON,
        ("dimatikan", "turned off"),
        ("atas permintaan", "as the account's owner asked"),
    ),
    "recovery-codes-replaced": (
        lambda o, u: mail.recovery_codes_replaced(o, u, changed_at=WHEN),
        FORGOT,
        FORGOT_BUTTON,
        ("Kod lama", "old codes"),
        (),
    ),
    "recovery-code-used": (
        lambda o, u: mail.recovery_code_used(o, u, used_at=WHEN, remaining=7),
        FORGOT,
        FORGOT_BUTTON,
        ("Baki kod pemulihan: 7", "Recovery codes left: 7"),
        ("tiada lagi", "no recovery codes left"),
    ),
}


@pytest.fixture(scope="module")
def composer():
    return Composer(SETTINGS)


class Recorder:
    def __init__(self, composer):
        self.composer = composer
        self.messages = []

    def add(self, name, *, recipient, locale, context, dedupe_key=None):
        message = self.composer.compose(
            name, recipient=recipient, locale=locale, context=context
        )
        self.messages.append((name, recipient, message))
        return message


def person(locale: str):
    return SimpleNamespace(
        email="ali@example.com.my",
        locale=locale,
        full_name=NAME,
        identifier_kind="mykad",
        identifier="080512145678",
    )


def render(composer, name: str, locale: str):
    outbox = Recorder(composer)
    SAMPLES[name][0](outbox, person(locale))
    ((sent, _recipient, message),) = outbox.messages
    assert sent == name
    return message


def test_every_template_has_a_sample():
    on_disk = {
        path.name for path in (TEMPLATES_DIR / "email").iterdir() if path.is_dir()
    }
    assert on_disk == set(SAMPLES)
    for name in on_disk:
        for part in ("subject.txt", "body.txt", "body.html"):
            assert (TEMPLATES_DIR / "email" / name / part).is_file(), (name, part)


def sections(tree) -> dict:
    return {
        element.get("lang"): element
        for element in tree.xpath("//body//*[@lang]")
        if element.get("lang") in ("ms", "en")
    }


@pytest.mark.parametrize("locale", ["ms", "en"])
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_email_has_a_text_part_and_an_accessible_html_part(composer, name, locale):
    _send, link, button, words, absent = SAMPLES[name]
    message = render(composer, name, locale)
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    tree = lxml.html.document_fromstring(html)

    # The recipient's language first, in both parts, and declared.
    assert tree.get("lang") == locale
    first, second = ("Kepada", "Dear") if locale == "ms" else ("Dear", "Kepada")
    assert text.index(first) < text.index(second)
    found = sections(tree)
    assert set(found) == {"ms", "en"}
    assert html.index(f'lang="{locale}"', html.index("<body")) < html.index(
        f'lang="{"en" if locale == "ms" else "ms"}"', html.index("<body")
    )

    # What the person typed is text in the HTML part and as typed in the other.
    assert "<b onclick" not in html
    assert "&lt;b onclick=" in html
    assert NAME in text

    # Layout tables are presentation; no script; no image that carries words.
    for table in tree.iter("table"):
        assert table.get("role") == "presentation"
    assert not tree.xpath("//script") and not tree.xpath("//img")

    # Every link says what it is: no bare "here", no empty text.
    for anchor in tree.iter("a"):
        label = anchor.text_content().strip()
        assert anchor.get("href", "").startswith(("https://", "mailto:", "tel:"))
        assert label and label.lower() not in {
            "here",
            "sini",
            "klik di sini",
            "click here",
        }

    for index, lang in enumerate(("ms", "en")):
        words_in = " ".join(found[lang].text_content().split())
        assert words[index] in words_in, (lang, words[index])
        for word in absent:
            assert word not in words_in, (lang, word)
    for word in absent:
        assert word not in text

    if link is None:
        assert not tree.xpath('//a[contains(@class, "button")]')
        return
    assert link in text
    for index, lang in enumerate(("ms", "en")):
        (styled,) = found[lang].xpath('.//a[contains(@class, "button")]')
        assert styled.get("href") == link
        assert " ".join(styled.text_content().split()) == button[index]
        style = styled.get("style").replace(" ", "")
        assert "display:inline-block" in style and "color:#ffffff" in style
        # The link again, in full, breakable anywhere on a narrow screen.
        printed = [
            a for a in found[lang].xpath(".//a") if a.text_content().strip() == link
        ]
        assert printed, lang
        holder = printed[0].getparent()
        style = (holder.get("style") or "").replace(" ", "")
        assert "word-break:break-all" in style and "overflow-wrap:anywhere" in style


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_the_subject_names_the_event_in_both_languages(composer, name):
    ms_first = render(composer, name, "ms")["Subject"]
    en_first = render(composer, name, "en")["Subject"]
    malay, english = ms_first.split(" / ")
    assert en_first == f"{english} / {malay}"
    assert malay != english


def test_each_event_has_its_own_subject(composer):
    subjects = [render(composer, name, "en")["Subject"] for name in SAMPLES]
    assert len(set(subjects)) == len(subjects), subjects


def test_text_links_stand_on_their_own_lines(composer):
    """A mail app makes a link of a URL alone on its line, without trailing words."""
    for name, (_send, link, *_rest) in SAMPLES.items():
        if link is None:
            continue
        text = render(composer, name, "ms").get_body(("plain",)).get_content()
        assert re.search(rf"^{re.escape(link)}$", text, re.M), name


def test_the_helpdesk_is_named_where_the_mail_sends_people_to_it(composer):
    for name in (
        "account-locked-by-helpdesk",
        "email-changed",
        "temporary-password-reset",
    ):
        for locale in ("ms", "en"):
            message = render(composer, name, locale)
            text = message.get_body(("plain",)).get_content()
            html = message.get_body(("html",)).get_content()
            for body in (text, html):
                assert "idme-support@moe.gov.my" in body, name
                assert "03-8884 6000" in body, name
            assert 'href="mailto:idme-support@moe.gov.my"' in html


def _luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [
        c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels
    ]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(one: str, two: str) -> float:
    lighter, darker = sorted((_luminance(one), _luminance(two)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def _style(element, prop: str) -> str | None:
    match = re.search(
        rf"(?:^|;)\s*{prop}\s*:\s*(#[0-9a-fA-F]{{6}})", element.get("style") or ""
    )
    return match.group(1).lower() if match else None


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_text_colours_meet_wcag_aa_on_their_background(composer, name):
    """Every coloured text in the HTML part has a contrast of 4.5:1 or more."""
    html = render(composer, name, "ms").get_body(("html",)).get_content()
    tree = lxml.html.document_fromstring(html)
    checked = 0
    for element in tree.body.iter():
        own_text = (element.text or "") + "".join(c.tail or "" for c in element)
        if not isinstance(element.tag, str) or not own_text.strip():
            continue
        lineage = [element, *element.iterancestors()]
        colour = next(filter(None, (_style(e, "color") for e in lineage)))
        background = next(
            filter(None, (_style(e, "background") for e in lineage)), "#ffffff"
        )
        assert _contrast(colour, background) >= 4.5, (element.tag, colour, background)
        checked += 1
    assert checked
