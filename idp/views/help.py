"""The "Bantuan" (Help) page: a step-by-step user manual and the helpdesk.

The helpdesk's details come from the ``idp.helpdesk.*`` settings; the name and
opening hours are shown in the page's language, or in the other language when
that one is empty. With no helpdesk settings at all the page leaves the
helpdesk section out rather than showing empty labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyramid.i18n import TranslationString
from pyramid.view import view_config

from idp import security_images
from idp.forms import PHRASE_MAX, PHRASE_MIN
from idp.i18n import _, other_locale
from idp.services.passwords import MIN_LENGTH as PASSWORD_MIN_LENGTH

# The manual's media live in idp/static/help/ and are all made by one browser
# run (scripts/build-help-media, which drives tests/e2e): screenshots of the
# real pages, a walkthrough video per flow with captions, and the manual as a
# PDF. Their names come from here, so the page, the run and the test that the
# committed files match (tests/functional/test_help.py) cannot drift apart.
MEDIA_DIR = "help"
LANGUAGES = ("ms", "en")


@dataclass(frozen=True)
class Figure:
    """One screenshot: ``<name>.<lang>.png``, shown in its manual section.

    ``text`` says what the picture shows and what to do there: it is the
    picture's alt text and caption, and the video's caption for that step.
    """

    name: str
    section: str
    text: TranslationString


FIGURES = (
    Figure(
        "register-form",
        "register",
        _(
            "The registration form: fill in every field, choose your security "
            'image, type the digits in the picture and press "Daftar" (Register).'
        ),
    ),
    Figure(
        "register-done",
        "register",
        _("Registration is done: idMe sends your temporary password to your email."),
    ),
    Figure(
        "sign-in-identifier",
        "sign-in",
        _("The sign-in page: type your MyKad, MyKid or passport number."),
    ),
    Figure(
        "sign-in-image",
        "sign-in",
        _(
            "Check your security image and phrase, tick the box and press "
            '"Teruskan" (Continue).'
        ),
    ),
    Figure(
        "sign-in-password",
        "sign-in",
        _('Only then type your password and press "Daftar Masuk" (Sign in).'),
    ),
    Figure(
        "first-sign-in",
        "sign-in",
        _("The first time, choose your own password and type it twice."),
    ),
    Figure(
        "forgot-request",
        "forgot-password",
        _("Forgot password: type your email address and the digits in the picture."),
    ),
    Figure(
        "forgot-verify",
        "forgot-password",
        _(
            "From the link in the email: type your email address and your identity "
            "number."
        ),
    ),
    Figure(
        "forgot-new",
        "forgot-password",
        _("Type your new password twice and the digits in the picture."),
    ),
    Figure(
        "account",
        "my-account",
        _(
            "My account: your details, and links to change your password, security "
            "image and phrase, and to see your sessions."
        ),
    ),
    Figure(
        "account-security",
        "my-account",
        _("Changing your security image and phrase."),
    ),
    Figure(
        "account-sessions",
        "my-account",
        _("Your recent sign-ins, and the button to sign out of all your sessions."),
    ),
)

# A walkthrough video per flow, made from that flow's screenshots:
# ``<flow>.<lang>.webm`` with captions ``<flow>.<lang>.vtt``.
VIDEOS = {
    "register": _("Video: how to register"),
    "sign-in": _("Video: how to sign in"),
    "forgot-password": _("Video: forgot your password"),
}
# The manual as a printable PDF: ``manual.<lang>.pdf``.
MANUAL = "manual"


def figure_path(figure: Figure, lang: str) -> str:
    return f"{MEDIA_DIR}/{figure.name}.{lang}.png"


def video_paths(flow: str, lang: str) -> tuple[str, str]:
    """The video and its captions in ``lang``."""
    return f"{MEDIA_DIR}/{flow}.{lang}.webm", f"{MEDIA_DIR}/{flow}.{lang}.vtt"


def manual_path(lang: str) -> str:
    return f"{MEDIA_DIR}/{MANUAL}.{lang}.pdf"


def media_files() -> set[str]:
    """Every file under static/help/ the page links to, in both languages."""
    files = set()
    for lang in LANGUAGES:
        files.update(figure_path(figure, lang) for figure in FIGURES)
        for flow in VIDEOS:
            files.update(video_paths(flow, lang))
        files.add(manual_path(lang))
    return files


_PHONE_SEPARATORS = re.compile(r"[\s\-().]")
_TEL = re.compile(r"\+?[0-9]{3,15}")


def _in_language(settings, name: str, locale: str) -> str:
    """``name.<locale>``, else ``name.<other locale>``, else ``""``."""
    return settings.get(f"{name}.{locale}") or settings.get(
        f"{name}.{other_locale(locale)}", ""
    )


def tel_uri(phone: str) -> str | None:
    """A ``tel:`` URI for a number as people write it, or None if unsure.

    ``03-8884 6000`` becomes ``tel:+60388846000``; a number that is not
    plain digits once the usual separators are gone gets no link.
    """
    value = _PHONE_SEPARATORS.sub("", phone)
    if value.startswith("00"):
        value = "+" + value[2:]
    elif value.startswith("0"):
        value = "+60" + value[1:]
    return f"tel:{value}" if _TEL.fullmatch(value) else None


def helpdesk(settings, locale: str) -> dict | None:
    """The helpdesk's details for ``locale``; None when every one is empty."""
    details = {
        "name": _in_language(settings, "idp.helpdesk.name", locale),
        "address": settings.get("idp.helpdesk.address", ""),
        "phone": settings.get("idp.helpdesk.phone", ""),
        "email": settings.get("idp.helpdesk.email", ""),
        "hours": _in_language(settings, "idp.helpdesk.hours", locale),
    }
    if not any(details.values()):
        return None
    details["tel"] = tel_uri(details["phone"]) if details["phone"] else None
    return details


@view_config(route_name="help.index", renderer="help/index.jinja2")
def index(request):
    settings = request.registry.settings
    return {
        "helpdesk": helpdesk(settings, request.locale_name),
        # The numbers the manual quotes, from where the product takes them.
        "temporary_password_hours": settings["idp.temporary_password_hours"],
        "password_min": PASSWORD_MIN_LENGTH,
        "phrase_min": PHRASE_MIN,
        "phrase_max": PHRASE_MAX,
        "image_count": len(security_images.CATALOGUE),
        "figures": {
            section: [figure for figure in FIGURES if figure.section == section]
            for section in {figure.section for figure in FIGURES}
        },
        "videos": VIDEOS,
        "figure_path": figure_path,
        "video_paths": video_paths,
        "manual": manual_path(request.locale_name),
        "languages": LANGUAGES,
    }
