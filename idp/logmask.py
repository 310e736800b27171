"""Personal data out of the logs (DATA-08).

:class:`MaskingFilter` renders each record's message once and masks it,
together with any traceback and stack text, before a handler formats it:

* MyKad/MyKid numbers, 12 digits with or without the two dashes, become
  ``XXXXXX-XX-5678``;
* passports in the forms :mod:`idp.identifiers` writes (``GBR:123456789``,
  ``GBR 123456789``) become ``GBR ****6789``;
* email addresses keep their first character and domain: ``a***@example.com``;
* Malaysian phone numbers (``012-345 6789``, ``03-1234 5678``,
  ``+60 12-345 6789``) and E.164 numbers keep their last 4 digits;
* whatever follows a key naming a password, token or secret (``password=``,
  ``csrf_token=``, ``"client_secret": ``) becomes ``***``.

Patterns are for numbers that look like identifiers; a passport number in
free text cannot be told from any other word, so code logs
``Identifier.masked``, never the value, and this filter is the safety net.
UUIDs and long hex digests are left whole. Masking is idempotent.

Call :func:`install` once logging is configured: it adds the filter to the
handlers of the root logger, where every propagating record ends up.
"""

from __future__ import annotations

import logging
import re
import traceback

from idp.identifiers import COUNTRIES, Identifier

_CREDENTIAL_KEY = r"(?i:[\w.-]*?(?:password|passwd|passphrase|token|secret)[\w.-]*+)"
# Each pattern starts only where its kind of token starts and uses possessive
# quantifiers, so a long run of characters (a base64 blob) costs linear time.
_PATTERN = re.compile(
    "|".join(
        [
            # Left whole, and matched first so nothing below bites into them.
            r"(?P<uuid>\b[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}\b)",
            r"(?P<hex>(?<![0-9A-Za-z])[0-9a-fA-F]{32,}+(?![0-9A-Za-z]))",
            # password=x, token: x, 'secret': 'x', "api_token"="x y"
            rf"(?P<secret>(?P<key>(?<![\w.-])['\"]?{_CREDENTIAL_KEY}['\"]?\s*[=:]\s*)"
            r"(?:\"[^\"]*+\"|'[^']*+'|[^\s&,;'\"}\])]*+))",
            r"(?P<email>(?<![A-Za-z0-9._%+-])(?P<first>[A-Za-z0-9_%+-])"
            r"[A-Za-z0-9._%+-]*+@(?P<domain>[A-Za-z0-9-]++(?:\.[A-Za-z0-9-]++)++))",
            r"(?P<mykad>(?<!\d)\d{6}-?\d{2}-?\d{4}(?!\d))",
            r"(?P<passport>\b(?P<country>[A-Z]{3})[: ]"
            r"(?P<number>(?=[A-Z]*\d)[A-Z0-9]{5,20})\b)",
            # Malaysian: +60, 60 or 0, a mobile (1x) or area code, then the
            # subscriber number, with optional spaces or dashes.
            r"(?P<phone>(?<![\w.+])(?:(?:\+?60|0)[ -]?(?:1\d|[3-9]\d?)"
            r"[ -]?\d{3,4}[ -]?\d{3,4}"
            # E.164: + and 8 to 15 digits.
            r"|\+[1-9](?:[ -]?\d){7,14})(?!\d))",
        ]
    )
)


def _replace(match: re.Match) -> str:
    kind = match.lastgroup
    if kind == "secret":
        return match["key"] + "***"
    if kind == "email":
        return f"{match['first']}***@{match['domain']}"
    if kind == "mykad":
        return "XXXXXX-XX-" + match[0][-4:]
    if kind == "passport":
        country, number = match["country"], match["number"]
        if country in COUNTRIES:
            return Identifier("passport", f"{country}:{number}").masked
        # Not a passport after all; the number may still be something else.
        return match[0][:4] + mask(number)
    if kind == "phone":
        return _keep_last_digits(match[0], 4)
    return match[0]


def _keep_last_digits(text: str, keep: int) -> str:
    digits = sum(ch.isdigit() for ch in text)
    out = []
    for ch in text:
        if ch.isdigit():
            out.append(ch if digits <= keep else "X")
            digits -= 1
        else:
            out.append(ch)
    return "".join(out)


def mask(text: str) -> str:
    """``text`` with the personal data listed in the module docstring masked."""
    return _PATTERN.sub(_replace, text)


def _render(record: logging.LogRecord) -> str:
    """The message as a handler would format it, or the best we can do."""
    try:
        return record.getMessage()
    except Exception:
        # Bad % arguments, or a str() that raises: still log something.
        try:
            return f"{record.msg!s} {record.args!r}"
        except Exception:
            return "<log message that cannot be rendered>"


class MaskingFilter(logging.Filter):
    """Masks each record's message, traceback and stack text in place.

    Never drops a record and never raises: a message that cannot be
    formatted with its arguments is logged as the message and the
    arguments' repr, masked.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            record.msg = mask(_render(record))
            record.args = ()
            if record.exc_info and not record.exc_text:
                record.exc_text = "".join(
                    traceback.format_exception(*record.exc_info)
                ).rstrip("\n")
            if record.exc_text:
                record.exc_text = mask(record.exc_text)
            if record.stack_info:
                record.stack_info = mask(record.stack_info)
        except Exception:
            record.msg = "<log message that cannot be masked>"
            record.args = ()
            record.exc_info = record.exc_text = record.stack_info = None
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Add a :class:`MaskingFilter` to every handler of ``logger`` (the root
    logger by default), once; call it after logging is configured, since
    handlers added later are not covered.
    """
    logger = logging.getLogger() if logger is None else logger
    for handler in logger.handlers:
        if not any(isinstance(f, MaskingFilter) for f in handler.filters):
            handler.addFilter(MaskingFilter())
