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
(no "one digit, one symbol"). Everything else is compared in the *folded*
form (NFKC, ``casefold()``, surrounding whitespace stripped), and a password
is refused, with one reason each, when:

- it repeats one character or group (``aaaaaaaaaaaa``, ``abcabcabcabc``), or
  is made wholly of runs of repeated characters, alphabet or digit
  sequences (``abcdefghijkl``, ``123456789012``) and keyboard walks
  (``qwertyuiopasdf``, ``1qaz2wsx3edc``);
- it is a common word or password with digits or symbols around it
  (``password1234``, ``malaysia1234``, ``p@ssw0rd2024``): the part left when
  they are stripped is looked up in the breached-password filter and the
  bundled Malay word list;
- it is a date or dates with little else (``010120102010``, a MyKad number);
- it is on the breached-password filter as a whole (``idp/data/README.md``
  says where the list comes from);
- it contains the user's name, identity number or email local part;
- it is built from this service's names (idMe, KPM, MOE, the configured
  names) with only something weak besides;
- it is, contains, or is part of the user's security phrase, or is the
  phrase's words with something weak besides. The phrase is shown to anyone
  who types the identity number, so it is no secret (AUTH-31).

Of the strength reasons only the first that applies is reported, in the
order above; the context reasons (name, service, phrase) are each reported.
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
# Names of this service and its ministry that a password must not be built
# from, whatever the configured display names say.
SERVICE_WORDS = frozenset({"idme", "kpm", "moe", "moeis"})
# What is left of a password once the guessable parts (service names, the
# phrase's words, dates) are taken out must be at least this long, and not
# weak itself, for the password to stand.
MIN_REMAINDER = 6
# A stripped base shorter than this says nothing: "ab" + ten digits is
# judged by the digit rules, not looked up as a word.
MIN_BASE = 3

DATA_PACKAGE = "idp.data"
COMMON_PASSWORDS_FILE = "common-passwords.txt"
MALAY_WORDS_FILE = "malay-common-words.txt"
BREACHED_FILTER_FILE = "breached-passwords.bloom"

_BCRYPT_PREFIX = b"2b"
# Version, two-digit cost, then 22 characters of salt and 31 of hash.
_BCRYPT_HASH = re.compile(r"\$2[aby]\$([0-9]{2})\$[./A-Za-z0-9]{53}")

# Digits, punctuation and spaces around a word: "password1234", "!!cinta2010".
_AFFIX = re.compile(r"^[\d\W_]+|[\d\W_]+$")
_NOT_ALNUM = re.compile(r"[\W_]+")
# Letter-for-symbol swaps people make to pass composition rules; undone
# before a base is looked up, so "p@ssw0rd" is "password".
_LEET = str.maketrans(
    {
        "@": "a",
        "4": "a",
        "0": "o",
        "1": "i",
        "!": "i",
        "3": "e",
        "$": "s",
        "5": "s",
        "7": "t",
        "+": "t",
        "8": "b",
        "9": "g",
    }
)
# US/UK QWERTY as most Malaysian keyboards have it, unshifted. Each row is
# set half a key right of the one above, so key (r, c) touches (r, c +- 1),
# (r - 1, c), (r - 1, c + 1), (r + 1, c - 1) and (r + 1, c).
_KEYBOARD_ROWS = ("1234567890-=", "qwertyuiop[]", "asdfghjkl;'", "zxcvbnm,./")
_CENTURIES = ("19", "20")


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
REPETITION = "repetition"
SEQUENCE = "sequence"
KEYBOARD = "keyboard"
DATE = "date"
COMMON_WORD = "common_word"
COMMON = "common"
CONTAINS_IDENTIFIER = "contains_identifier"
SERVICE_NAME = "service_name"
PHRASE = "phrase"
PHRASE_IS_PASSWORD = "phrase_is_password"  # noqa: S105 (a reason code)

MESSAGES = {
    TOO_SHORT: _("Use at least ${min} characters.", mapping={"min": MIN_LENGTH}),
    TOO_LONG: _("Use at most ${max} characters.", mapping={"max": MAX_LENGTH}),
    REPETITION: _("Do not repeat a character or a group of characters."),
    SEQUENCE: _("Do not use a sequence such as abcdef or 123456."),
    KEYBOARD: _(
        "Do not use keys next to each other on the keyboard, such as qwerty or "
        "1qaz2wsx."
    ),
    DATE: _("Do not use a date or a number such as an identity number."),
    COMMON_WORD: _(
        "Do not use a common word or password with numbers or symbols added."
    ),
    COMMON: _("This password is too common and easy to guess. Choose another."),
    CONTAINS_IDENTIFIER: _(
        "Do not use your name, email address or identity number in your password."
    ),
    SERVICE_NAME: _(
        "Do not build your password from the name of this service, such as "
        "idMe, KPM or MOE."
    ),
    PHRASE: _("Do not use your security phrase, or part of it, in your password."),
    PHRASE_IS_PASSWORD: _(
        "Your security phrase must not be your password or part of it."
    ),
}
# The rules the browser can check before the form is sent (see
# idp/static/js/password-policy.js); the server checks them all again.
# The phrase is not among them: it is kept off the page.
CLIENT_RULES = (TOO_SHORT, REPETITION, SEQUENCE, KEYBOARD, SERVICE_NAME)


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _fold(text: str) -> str:
    """The form used for comparing: NFKC, then case-folded."""
    return _normalise(text).casefold()


def fold(text: str) -> str:
    """NFKC, case-folded, surrounding whitespace stripped: how every list
    entry and every password is compared. The filter builder uses it too."""
    return _fold(text).strip()


def compact(folded: str) -> str:
    """Only the letters and digits: "nasi lemak" and "nasi-lemak" are one."""
    return _NOT_ALNUM.sub("", folded)


def weak_base(folded: str) -> str:
    """``folded`` without the digits, symbols and spaces around it."""
    return _AFFIX.sub("", folded)


def filter_keys(entry: str) -> set[str]:
    """What the breached-password filter stores for one list entry.

    The entry's base (affixes stripped) and its compact form, when the base
    is a word (letters only, at least :data:`MIN_BASE` of them), so that the
    word with any digits around it is refused; and the whole folded entry
    when it is long enough to be a password here and is not already just
    such a base with an affix.
    """
    folded = fold(entry)
    keys: set[str] = set()
    base = weak_base(folded)
    word = compact(base)
    is_word = len(word) >= MIN_BASE and word.isalpha()
    if is_word:
        keys.update((base, word))
    if len(folded) >= MIN_LENGTH and not (is_word and base != folded):
        keys.add(folded)
    return keys


class BloomFilter:
    """A Bloom filter over folded strings: built by
    ``scripts/build-password-filter``, read by the policy.

    The file is one ASCII header line, ``IDME-BLOOM-1 m=<bits> k=<hashes>
    n=<entries>``, then ``m / 8`` bytes of bits. The ``k`` positions of a
    key come from one BLAKE2b-128 digest of its UTF-8 bytes by double
    hashing (Kirsch and Mitzenmacher): position ``i`` is
    ``(h1 + i * h2) mod m``. A key that was added is always found; one that
    was not is found with the false-positive rate ``idp/data/README.md``
    gives.
    """

    MAGIC = b"IDME-BLOOM-1"

    def __init__(self, bits: bytes | bytearray, hashes: int, entries: int = 0):
        if not bits or hashes < 1:
            raise ValueError("a Bloom filter needs bits and at least one hash")
        self.bits = bits
        self.size = len(bits) * 8
        self.hashes = hashes
        self.entries = entries

    @classmethod
    def empty(cls, size: int, hashes: int) -> BloomFilter:
        return cls(bytearray((size + 7) // 8), hashes)

    @classmethod
    def from_bytes(cls, data: bytes) -> BloomFilter:
        header, _newline, bits = data.partition(b"\n")
        magic, *fields = header.split(b" ")
        values = dict(field.partition(b"=")[::2] for field in fields)
        if magic != cls.MAGIC or len(bits) * 8 != int(values.get(b"m", -1)):
            raise ValueError("not an idMe Bloom filter, or a truncated one")
        return cls(bits, int(values.get(b"k", 0)), int(values.get(b"n", 0)))

    def to_bytes(self) -> bytes:
        header = b"%s m=%d k=%d n=%d\n" % (
            self.MAGIC,
            self.size,
            self.hashes,
            self.entries,
        )
        return header + bytes(self.bits)

    def _positions(self, key: str):
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16)
        value = digest.digest()
        first = int.from_bytes(value[:8], "little")
        step = int.from_bytes(value[8:], "little") | 1
        for i in range(self.hashes):
            yield (first + i * step) % self.size

    def add(self, key: str) -> None:
        bits = self.bits
        if not isinstance(bits, bytearray):
            raise TypeError("a filter read from bytes is read-only; start from empty()")
        for position in self._positions(key):
            bits[position >> 3] |= 1 << (position & 7)
        self.entries += 1

    def __contains__(self, key: str) -> bool:
        bits = self.bits
        return all(
            bits[position >> 3] >> (position & 7) & 1
            for position in self._positions(key)
        )


def _read_data(name: str) -> bytes:
    return importlib.resources.files(DATA_PACKAGE).joinpath(name).read_bytes()


def _read_words(name: str) -> frozenset[str]:
    """A bundled one-a-line list, folded, blank lines and ``#`` comments skipped."""
    entries = (fold(line) for line in _read_data(name).decode("utf-8").splitlines())
    return frozenset(entry for entry in entries if entry and not entry.startswith("#"))


@functools.cache
def load_common_passwords() -> frozenset[str]:
    """Return the bundled common-password list, folded as :func:`fold` does.

    Read once through :mod:`importlib.resources`, so it also works when the
    package is installed as a zip or wheel. Blank lines are skipped.
    """
    entries = (
        fold(line)
        for line in _read_data(COMMON_PASSWORDS_FILE).decode("utf-8").splitlines()
    )
    return frozenset(entry for entry in entries if entry)


@functools.cache
def load_malay_words() -> frozenset[str]:
    """Common Malay words, names and places people build passwords from."""
    return _read_words(MALAY_WORDS_FILE)


@functools.cache
def load_breached_filter() -> BloomFilter:
    """The breached-password Bloom filter, read once per process (4 MiB)."""
    return BloomFilter.from_bytes(_read_data(BREACHED_FILTER_FILE))


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


# Patterns. Each works on the compact form (letters and digits only), so
# "qwerty-uiop" and "qwertyuiop" are the same walk.


def _period(text: str) -> int | None:
    """The shortest unit that ``text`` repeats at least twice, if any.

    The unit may be cut short at the end ("abcabcab" repeats "abc"). Found
    in linear time from the prefix function (Knuth, Morris and Pratt): the
    shortest period of a string is its length less its longest proper
    prefix that is also a suffix.
    """
    border = [0] * len(text)
    for i in range(1, len(text)):
        k = border[i - 1]
        while k and text[i] != text[k]:
            k = border[k - 1]
        border[i] = k + (text[i] == text[k])
    size = len(text) - border[-1] if text else 0
    return size if text and size <= len(text) // 2 else None


@functools.cache
def _keyboard_neighbours() -> dict[str, frozenset[str]]:
    where = {
        key: (row, column)
        for row, keys in enumerate(_KEYBOARD_ROWS)
        for column, key in enumerate(keys)
    }
    offsets = ((0, -1), (0, 1), (-1, 0), (-1, 1), (1, -1), (1, 0))
    by_place = {place: key for key, place in where.items()}
    return {
        key: frozenset(
            by_place[(row + dr, column + dc)]
            for dr, dc in offsets
            if (row + dr, column + dc) in by_place
        )
        for key, (row, column) in where.items()
    }


def _sequence_step(a: str, b: str) -> int:
    """+1 or -1 if ``b`` follows or precedes ``a`` (9 and 0 wrap), else 0."""
    if a.isdigit() and b.isdigit():
        difference = (int(b) - int(a)) % 10
        return {1: 1, 9: -1}.get(difference, 0)
    if a.isalpha() and b.isalpha() and a.isascii() and b.isascii():
        return {1: 1, -1: -1}.get(ord(b) - ord(a), 0)
    return 0


def _runs(text: str, linked) -> list[bool]:
    """Which characters sit in a run of three or more linked neighbours.

    ``linked(previous_link, a, b)`` returns the link between ``a`` and ``b``
    (anything true) or a false value; a run continues while each link is
    compatible with the one before, as ``linked`` decides.
    """
    covered = [False] * len(text)
    start = 0
    link = None
    for i in range(1, len(text) + 1):
        step = linked(link, text[i - 1], text[i]) if i < len(text) else None
        if step:
            link = step
            continue
        if i - start >= 3:
            covered[start:i] = [True] * (i - start)
        start = i
        link = None
        if i < len(text):
            # The pair that broke the run may start the next one.
            first = linked(None, text[i - 1], text[i])
            if first:
                start, link = i - 1, first
    return covered


def _same(link, a, b):
    return a == b


def _sequence(link, a, b):
    step = _sequence_step(a, b)
    return step if step and (link is None or link == step) else 0


def _walk(link, a, b):
    return b in _keyboard_neighbours().get(a, ())


def _pattern(text: str) -> str | None:
    """REPETITION, SEQUENCE or KEYBOARD if ``text`` is nothing but those."""
    if not text:
        return None
    if _period(text) is not None:
        return REPETITION
    masks = {
        REPETITION: _runs(text, _same),
        SEQUENCE: _runs(text, _sequence),
        KEYBOARD: _runs(text, _walk),
    }
    if not all(any(column) for column in zip(*masks.values(), strict=True)):
        return None
    # The kind that explains most of it names the reason.
    return max(masks, key=lambda code: sum(masks[code]))


_DATE_8 = re.compile(r"(?=(\d{8}))")
_DATE_6 = re.compile(r"(?=(\d{6}))")


def _is_day_month(day: str, month: str) -> bool:
    return 1 <= int(day) <= 31 and 1 <= int(month) <= 12


def _date_spans(text: str) -> list[tuple[int, int]]:
    """Where dates are in ``text``: DDMMYYYY, YYYYMMDD, MMDDYYYY, DDMMYY,
    YYMMDD (a MyKad number starts with one) and years 1900 to 2099."""
    spans = []
    for match in _DATE_8.finditer(text):
        d = match.group(1)
        if (
            (d[4:6] in _CENTURIES and _is_day_month(d[:2], d[2:4]))
            or (d[4:6] in _CENTURIES and _is_day_month(d[2:4], d[:2]))
            or (d[:2] in _CENTURIES and _is_day_month(d[6:], d[4:6]))
        ):
            spans.append((match.start(), match.start() + 8))
    for match in _DATE_6.finditer(text):
        d = match.group(1)
        if _is_day_month(d[:2], d[2:4]) or _is_day_month(d[4:], d[2:4]):
            spans.append((match.start(), match.start() + 6))
    for match in re.finditer(r"(?:19|20)\d\d", text):
        spans.append(match.span())
    return spans


def _without_dates(text: str) -> str | None:
    """``text`` with its dates taken out, or None if it has none."""
    spans = _date_spans(text)
    if not spans:
        return None
    keep = [True] * len(text)
    for start, end in spans:
        keep[start:end] = [False] * (end - start)
    return "".join(ch for ch, kept in zip(text, keep, strict=True) if kept)


def _without(text: str, words: Iterable[str]) -> str | None:
    """``text`` with every occurrence of ``words`` removed, or None if none
    occurred. Longer words go first, so "moeis" is not left as "is"."""
    found = False
    for word in sorted(words, key=len, reverse=True):
        if word and word in text:
            text = text.replace(word, "")
            found = True
    return text if found else None


@implementer(IPasswordService)
class BcryptPasswordService:
    """bcrypt over SHA-256, and the NIST SP 800-63B password policy."""

    def __init__(
        self,
        rounds: int = 12,
        common_passwords: frozenset[str] | None = None,
        *,
        service_words: Iterable[str] = (),
        breached: BloomFilter | None = None,
        words: frozenset[str] | None = None,
    ) -> None:
        if not 4 <= rounds <= 31:
            raise ValueError(f"bcrypt rounds must be between 4 and 31, not {rounds}")
        self.rounds = rounds
        if common_passwords is None:
            self.common_passwords = load_common_passwords()
        else:
            self.common_passwords = frozenset(fold(entry) for entry in common_passwords)
        self.breached = load_breached_filter() if breached is None else breached
        self.words = load_malay_words() if words is None else words
        self.service_words = frozenset(
            SERVICE_WORDS | {compact(fold(word)) for word in service_words} - {""}
        )

    @classmethod
    def create_service(cls, context, request) -> BcryptPasswordService:
        """pyramid_services factory: cost from ``idp.bcrypt_rounds``, the
        service's own names from ``idp.name.*`` and ``idp.organization.*``."""
        settings = request.registry.settings
        return cls(
            rounds=settings["idp.bcrypt_rounds"],
            service_words=service_words(settings),
        )

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
        self,
        password: str,
        *,
        identifiers: Iterable[str] = (),
        phrase: str | None = None,
    ) -> list[PolicyViolation]:
        normalised = _normalise(password)
        codes = []
        if len(normalised) < MIN_LENGTH:
            codes.append(TOO_SHORT)
        elif len(normalised) > MAX_LENGTH:
            # Refused whatever else is true; and the other rules need not
            # run over a megabyte of posted text.
            return [PolicyViolation(TOO_LONG, MESSAGES[TOO_LONG])]
        folded = normalised.casefold().strip()
        strength = self._weakness(folded)
        if strength:
            codes.append(strength)
        if any(fragment in folded for fragment in _identifier_fragments(identifiers)):
            codes.append(CONTAINS_IDENTIFIER)
        remainder = _without(compact(folded), self.service_words)
        if remainder is not None and self._weak_remainder(remainder):
            codes.append(SERVICE_NAME)
        if phrase and uses_phrase(folded, phrase, self._weak_remainder):
            codes.append(PHRASE)
        return [PolicyViolation(code, MESSAGES[code]) for code in codes]

    def check_phrase(self, phrase: str, *, password: str) -> list[PolicyViolation]:
        if len(password or "") > MAX_LENGTH:
            return []
        if phrase and password and uses_phrase(password, phrase, self._weak_remainder):
            return [PolicyViolation(PHRASE_IS_PASSWORD, MESSAGES[PHRASE_IS_PASSWORD])]
        return []

    def _is_common(self, key: str) -> bool:
        return key in self.common_passwords or key in self.breached

    def _common_base(self, folded: str) -> bool:
        """Is what is left without digits and symbols around it a known word?"""
        base = weak_base(folded)
        for candidate in {base, compact(base), compact(base.translate(_LEET))}:
            if len(candidate) >= MIN_BASE and (
                candidate in self.words or self._is_common(candidate)
            ):
                return True
        return False

    def _weakness(self, folded: str) -> str | None:
        """The first strength rule ``folded`` breaks, or None."""
        text = compact(folded)
        pattern = _pattern(text)
        base = compact(weak_base(folded))
        if not pattern and len(base) >= MIN_IDENTIFIER_LENGTH:
            # "qwertyuiop12": the walk with digits after it.
            pattern = _pattern(base)
        if pattern:
            return pattern
        # A word with a date after it ("cikgu2024!!!") is named for the word.
        if weak_base(folded) != folded and self._common_base(folded):
            return COMMON_WORD
        rest = _without_dates(text)
        if rest is not None and (len(rest) < MIN_REMAINDER or rest.isdigit()):
            return DATE
        if self._is_common(folded) or self._is_common(text):
            return COMMON
        return None

    def _weak_remainder(self, rest: str) -> bool:
        """Would ``rest``, all that is left of a password, be guessable?"""
        return (
            len(rest) < MIN_REMAINDER
            or rest.isdigit()
            or self._weakness(rest) is not None
            or self._common_base(rest)
        )


def uses_phrase(password: str, phrase: str, weak) -> bool:
    """Is ``password`` the security ``phrase``, a variant, or built from it?

    Compared compact and folded, so case, spaces and punctuation do not
    matter. True when either contains the other (the phrase is at least
    four characters), or when the password is the phrase's words with only
    something ``weak`` besides ("kegemaran saya 2024").
    """
    typed = compact(fold(password))
    shown = compact(fold(phrase))
    if len(shown) < 4 or not typed:
        return False
    if shown in typed or typed in shown:
        return True
    words = {compact(word) for word in fold(phrase).split()}
    rest = _without(typed, {word for word in words if len(word) >= MIN_BASE})
    return rest is not None and weak(rest)


def service_words(settings) -> set[str]:
    """The words of the service's and its organisation's configured names.

    "idMe Kementerian Pendidikan Malaysia" gives "idme", "kementerian",
    "pendidikan" and "malaysia"; words shorter than four letters ("of") are
    left out, as :data:`SERVICE_WORDS` already has the short names.
    """
    names = (
        settings.get(key) or ""
        for key in (
            "idp.name.ms",
            "idp.name.en",
            "idp.organization.name",
            "idp.organization.display_name.ms",
            "idp.organization.display_name.en",
        )
    )
    return {
        word
        for name in names
        for word in (compact(part) for part in fold(name).split())
        if len(word) >= MIN_IDENTIFIER_LENGTH
    }


def _bcrypt_cost(hashed: str) -> int | None:
    """The cost in a ``$2b$12$...`` hash, or None if it is not one."""
    if not isinstance(hashed, str):
        return None
    match = _BCRYPT_HASH.fullmatch(hashed)
    return int(match.group(1)) if match else None


def password_hints(request) -> dict[str, str]:
    """The ``data-policy-*`` attributes of a new-password field.

    They give ``idp/static/js/password-policy.js`` the minimum length, this
    service's names, and the message of each rule it checks in the page's
    language, so the reason shows before the form is sent. The server
    checks every rule again; the breached list never leaves it.
    """
    words = sorted(SERVICE_WORDS | service_words(request.registry.settings))
    hints = {"data-policy-min": str(MIN_LENGTH), "data-policy-words": " ".join(words)}
    for code in CLIENT_RULES:
        name = "data-policy-" + code.replace("_", "-")
        hints[name] = request.localizer.translate(MESSAGES[code])
    return hints


def includeme(config):
    config.add_request_method(password_hints, "password_hints", reify=True)
    config.register_service_factory(
        BcryptPasswordService.create_service, IPasswordService
    )
