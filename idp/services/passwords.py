"""Password hashing and the password policy (NIST SP 800-63B, section 5.1.1).

Hashing: the password is normalised to NFKC, hashed with SHA-256, the digest
base64-encoded (standard alphabet, 44 ASCII bytes), and *that* is hashed with
bcrypt at the configured cost. bcrypt only reads 72 bytes and the ``bcrypt``
package (5.x) refuses anything longer, so hashing the SHA-256 first lets a
password have any length, and two passwords that share their first 72 bytes
still get different hashes. The base64 step keeps NUL bytes out of bcrypt's
input, because bcrypt stops at a NUL. The stored value is the ordinary
``$2b$<cost>$...`` bcrypt string.

Policy: length is counted in Unicode code points after NFKC, from
:data:`MIN_LENGTH` to :data:`MAX_LENGTH`. There are no composition rules
(no "one digit, one symbol"). A password on the bundled common-password list
(``idp/data/common-passwords.txt``) is refused, and so is one that contains
any of the user's own identifiers.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.resources
import re
import secrets
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import bcrypt
from pyramid.i18n import TranslationString
from zope.interface import implementer

from idp.i18n import _
from idp.services.interfaces import IPasswordService

MIN_LENGTH = 12
MAX_LENGTH = 256
# Identifier fragments shorter than this are not looked for in passwords:
# otherwise a user named "Ali" could use no password containing "ali".
MIN_IDENTIFIER_LENGTH = 4
# Words in Malaysian names that say whose child someone is rather than who
# they are. Every Malay woman's name has "binti", and many Sarawak names have
# "anak", so refusing them would reject passwords for no gain.
NAME_PARTICLES = frozenset(
    {"bin", "binti", "bte", "bt", "anak", "a/l", "a/p", "s/o", "d/o"}
)

COMMON_PASSWORDS_PACKAGE = "idp.data"
COMMON_PASSWORDS_FILE = "common-passwords.txt"

_BCRYPT_PREFIX = b"2b"
# Version, two-digit cost, then 22 characters of salt and 31 of hash.
_BCRYPT_HASH = re.compile(r"\$2[aby]\$([0-9]{2})\$[./A-Za-z0-9]{53}")


@dataclass(frozen=True)
class PolicyViolation:
    """One reason a new password is refused.

    ``code`` is stable: templates, tests and audit logs can rely on it.
    ``message`` is a TranslationString to pass through
    ``request.localizer.translate``.
    """

    code: str
    message: TranslationString


TOO_SHORT = "too_short"
TOO_LONG = "too_long"
COMMON = "common"
CONTAINS_IDENTIFIER = "contains_identifier"

MESSAGES = {
    TOO_SHORT: _("Use at least ${min} characters.", mapping={"min": MIN_LENGTH}),
    TOO_LONG: _("Use at most ${max} characters.", mapping={"max": MAX_LENGTH}),
    COMMON: _("This password is too common and easy to guess. Choose another."),
    CONTAINS_IDENTIFIER: _(
        "Do not use your name, email address or identity number in your password."
    ),
}


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _fold(text: str) -> str:
    """The form used for comparing: NFKC, then case-folded."""
    return _normalise(text).casefold()


@functools.cache
def load_common_passwords() -> frozenset[str]:
    """Return the bundled common-password list, folded as :func:`_fold` does.

    Read once through :mod:`importlib.resources`, so it also works when the
    package is installed as a zip or wheel. Blank lines are skipped.
    """
    text = (
        importlib.resources.files(COMMON_PASSWORDS_PACKAGE)
        .joinpath(COMMON_PASSWORDS_FILE)
        .read_text(encoding="utf-8")
    )
    entries = (_fold(line).strip() for line in text.splitlines())
    return frozenset(entry for entry in entries if entry)


@functools.cache
def _dummy_hash(rounds: int) -> bytes:
    # A hash of a random secret nobody knows, made once per process and cost.
    # A new service instance is made for every request, so making this per
    # instance would cost an unknown user a second bcrypt run and make the
    # timing differ again.
    secret = secrets.token_bytes(32)
    return bcrypt.hashpw(_prehash(secret.hex()), bcrypt.gensalt(rounds=rounds))


def _prehash(password: str) -> bytes:
    """NFKC, SHA-256, base64: 44 bytes with no NUL, whatever the length."""
    data = _normalise(password).encode("utf-8", "surrogatepass")
    return base64.b64encode(hashlib.sha256(data).digest())


def _identifier_fragments(identifiers: Iterable[str]) -> set[str]:
    """The folded strings a password must not contain.

    Each identifier counts as a whole, and so does each of its
    whitespace-separated words, so "Siti Nurhaliza binti Tarudin" forbids
    "siti nurhaliza binti tarudin", "siti", "nurhaliza" and "tarudin".
    Fragments shorter than :data:`MIN_IDENTIFIER_LENGTH` and name particles
    ("bin", "binti", "anak", ...) are ignored. The caller passes every form
    it has: the identity number with and without dashes, the email local
    part, the name.
    """
    fragments = set()
    for identifier in identifiers:
        if not identifier:
            continue
        folded = _fold(identifier).strip()
        for fragment in (folded, *folded.split()):
            if len(fragment) >= MIN_IDENTIFIER_LENGTH and (
                fragment not in NAME_PARTICLES
            ):
                fragments.add(fragment)
    return fragments


@implementer(IPasswordService)
class BcryptPasswordService:
    """bcrypt over SHA-256, and the NIST SP 800-63B password policy."""

    def __init__(
        self, rounds: int = 12, common_passwords: frozenset[str] | None = None
    ) -> None:
        if not 4 <= rounds <= 31:
            raise ValueError(f"bcrypt rounds must be between 4 and 31, not {rounds}")
        self.rounds = rounds
        if common_passwords is None:
            self.common_passwords = load_common_passwords()
        else:
            self.common_passwords = frozenset(
                _fold(entry).strip() for entry in common_passwords
            )

    @classmethod
    def create_service(cls, context, request) -> BcryptPasswordService:
        """pyramid_services factory: cost from ``idp.bcrypt_rounds``."""
        return cls(rounds=request.registry.settings["idp.bcrypt_rounds"])

    # Hashing

    def hash(self, password: str) -> str:
        salt = bcrypt.gensalt(rounds=self.rounds, prefix=_BCRYPT_PREFIX)
        return bcrypt.hashpw(_prehash(password), salt).decode("ascii")

    def verify(self, password: str, hashed: str) -> bool:
        try:
            return bcrypt.checkpw(_prehash(password), hashed.encode("ascii"))
        except (ValueError, TypeError, AttributeError):
            # Not a bcrypt hash, not ASCII, wrong length or not a str at all.
            return False

    def dummy_verify(self, password: str) -> None:
        self.verify(password, _dummy_hash(self.rounds).decode("ascii"))

    def needs_rehash(self, hashed: str) -> bool:
        cost = _bcrypt_cost(hashed)
        return cost is None or cost != self.rounds

    # Policy

    def check_policy(
        self, password: str, *, identifiers: Iterable[str] = ()
    ) -> list[PolicyViolation]:
        normalised = _normalise(password)
        codes = []
        if len(normalised) < MIN_LENGTH:
            codes.append(TOO_SHORT)
        elif len(normalised) > MAX_LENGTH:
            codes.append(TOO_LONG)
        folded = normalised.casefold()
        if folded in self.common_passwords or folded.strip() in self.common_passwords:
            codes.append(COMMON)
        if any(fragment in folded for fragment in _identifier_fragments(identifiers)):
            codes.append(CONTAINS_IDENTIFIER)
        return [PolicyViolation(code, MESSAGES[code]) for code in codes]


def _bcrypt_cost(hashed: str) -> int | None:
    """The cost in a ``$2b$12$...`` hash, or None if it is not one."""
    if not isinstance(hashed, str):
        return None
    match = _BCRYPT_HASH.fullmatch(hashed)
    return int(match.group(1)) if match else None


def includeme(config):
    config.register_service_factory(
        BcryptPasswordService.create_service, IPasswordService
    )
