"""WTForms forms, one module per flow (``idp/forms/<flow>.py``).

Forms take the request's POST data and nothing else: only declared fields
are read, so extra fields a client adds (``role``, ``is_admin``...) are
ignored. Error messages are lazy ``TranslationString``s, translated when the
page is rendered. Pyramid checks the CSRF token before any view runs, so
WTForms' own CSRF is off.
"""

import unicodedata

from wtforms import Form


class BaseForm(Form):
    class Meta:
        csrf = False


def has_control_characters(text: str) -> bool:
    """True if ``text`` holds a control or format character.

    Covers CR/LF and NUL (header injection, truncation) and the invisible
    bidirectional overrides that make text display differently from what it is.
    """
    return any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text)


def collapse_spaces(text: str | None) -> str:
    return " ".join((text or "").split())
