"""Email addresses and mobile numbers: checked and normalised, pure functions.

Both are normalised before they are stored or compared, so ``Ali@Example.my``
and ``ali@example.my``, or ``012-345 6789`` and ``+60123456789``, are the same
value to the database's unique constraints.
"""

from __future__ import annotations

import re

from idp.i18n import _

EMAIL_MAX_LENGTH = 254
# Deliberately plain: one @, a dot-atom local part, a domain of labels with a
# letter TLD. Quoted local parts and IP-literal domains are legal but are not
# what a person registering for a school system types, and they are where
# header-injection and parser tricks live.
_EMAIL = re.compile(
    r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
)

_PHONE_SEPARATORS = re.compile(r"[\s\-().]")
# Malaysian mobile numbers: 01X then 7 or 8 digits (011 numbers have 8).
_MALAYSIAN_MOBILE = re.compile(r"^\+601[0-9]{8,9}$")
# E.164: a country code that does not start with 0, at most 15 digits.
_E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")


_EMAIL_MESSAGE = _("Enter an email address such as nama@contoh.com.my.")
_PHONE_MESSAGE = _(
    "Enter a mobile number such as 012-345 6789, or a foreign number with its "
    "country code such as +65 8123 4567."
)


class InvalidContact(ValueError):
    """A refused email or phone number; ``message`` is translatable."""

    def __init__(self, code: str, message) -> None:
        super().__init__(code)
        self.code = code
        self.message = message


def normalise_email(text: str) -> str:
    """Return the address lower-cased and stripped; raise :class:`InvalidContact`."""
    value = text.strip().lower()
    if (
        len(value) > EMAIL_MAX_LENGTH
        or len(value.partition("@")[0]) > 64
        or not _EMAIL.fullmatch(value)
    ):
        raise InvalidContact("email.format", _EMAIL_MESSAGE)
    return value


def normalise_phone(text: str) -> str:
    """Return a mobile number in E.164 form (``+60123456789``).

    Malaysian numbers may be typed as ``012-345 6789``, ``60123456789`` or
    ``+60 12-345 6789``; foreign numbers need their country code (``+65...``
    or ``0065...``). Raises :class:`InvalidContact`.
    """
    value = _PHONE_SEPARATORS.sub("", text.strip())
    if value.startswith("00"):
        value = "+" + value[2:]
    elif value.startswith("0"):
        value = "+6" + value
    elif value.startswith("60"):
        value = "+" + value
    if not value.startswith("+") or not value[1:].isascii() or not value[1:].isdigit():
        raise InvalidContact("phone.format", _PHONE_MESSAGE)
    if value.startswith("+60"):
        if not _MALAYSIAN_MOBILE.fullmatch(value):
            raise InvalidContact(
                "phone.malaysian",
                _("A Malaysian mobile number starts with 01 and has 10 or 11 digits."),
            )
    elif not _E164.fullmatch(value):
        raise InvalidContact("phone.format", _PHONE_MESSAGE)
    return value


def mask_email(address: str) -> str:
    """An address as a list shows it: its first character and its domain
    (``a***@example.com``), enough to tell two accounts apart, not to write."""
    local, at, domain = address.partition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask_phone(number: str) -> str:
    """A number as a list shows it: its first three and last three
    characters (``+60*****789``)."""
    if len(number) <= 6:
        return "*" * len(number)
    return number[:3] + "*" * (len(number) - 6) + number[-3:]
