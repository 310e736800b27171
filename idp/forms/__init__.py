"""WTForms forms, one module per flow (``idp/forms/<flow>.py``).

Forms take the request's POST data and nothing else: only declared fields
are read, so extra fields a client adds (``role``, ``is_admin``...) are
ignored. Error messages are lazy ``TranslationString``s, translated when the
page is rendered. Pyramid checks the CSRF token before any view runs, so
WTForms' own CSRF is off.
"""

import unicodedata

from wtforms import Form

from idp.contact import InvalidContact, normalise_email
from idp.i18n import _
from idp.identifiers import Identifier, InvalidIdentifier, parse_identifier

# What more than one form says or checks: each message and limit has this
# one home.
REQUIRED = _("This field is required.")
# A security phrase's length, at registration, in Akaun saya, on the help
# page and for the decoys of numbers nobody registered.
PHRASE_MIN, PHRASE_MAX = 3, 40
# A wrong captcha answer, by ICaptchaService.kind: "image" for the
# self-hosted picture, else a hosted provider's widget.
CAPTCHA_WRONG = _(
    "The characters you typed do not match the picture. "
    "Type the characters in the new picture."
)
CAPTCHA_HOSTED_WRONG = _(
    "Complete the check that shows you are not a robot, then try again."
)


class BaseForm(Form):
    class Meta:
        csrf = False


def mark_captcha_wrong(form, kind: str) -> None:
    """Say beside ``form``'s captcha that it was not solved.

    ``kind`` is the captcha service's: ``"image"`` or a hosted provider.
    """
    message = CAPTCHA_WRONG if kind == "image" else CAPTCHA_HOSTED_WRONG
    form.captcha_answer.errors = [message]


def read_email(field) -> str | None:
    """The normalised address in ``field``, or None with the error on the field."""
    if not (field.data or "").strip():
        field.errors = [REQUIRED]
        return None
    try:
        return normalise_email(field.data)
    except InvalidContact as exc:
        field.errors = [exc.message]
        return None


def read_identifier(identifier, country) -> Identifier | None:
    """Parse a number field and its passport-country field; errors go on them."""
    text = (identifier.data or "").strip()
    if not text:
        identifier.errors = [*identifier.errors, REQUIRED]
        return None
    try:
        return parse_identifier(text, country.data or None)
    except InvalidIdentifier as exc:
        field = country if exc.code == "passport.country" else identifier
        field.errors = [*field.errors, exc.message]
        return None


def has_control_characters(text: str) -> bool:
    """True if ``text`` holds a control or format character.

    Covers CR/LF and NUL (header injection, truncation) and the invisible
    bidirectional overrides that make text display differently from what it is.
    """
    return any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text)


def collapse_spaces(text: str | None) -> str:
    return " ".join((text or "").split())
