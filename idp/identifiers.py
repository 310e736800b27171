"""Personal identifiers people sign in with: MyKad/MyKid numbers and passports.

Everything here is a pure function of its arguments: no I/O, no database, no
request. The login form calls :func:`parse_identifier`; what it returns (an
:class:`Identifier`) carries the *normalised* value that is stored and compared,
plus the forms meant for people (:attr:`Identifier.display`) and for logs and
mail (:attr:`Identifier.masked`).

Normalised values
    * MyKad/MyKid: the 12 ASCII digits, e.g. ``"900101145678"``.
    * Passport: ``"CCC:NUMBER"``, the ISO 3166-1 alpha-3 code of the issuing
      country and the number, both upper case, e.g. ``"GBR:123456789"``.

Errors
    Every refusal raises :class:`InvalidIdentifier` (a :class:`ValueError`)
    with a stable machine ``code`` (see :data:`ERROR_CODES`) and a translatable
    ``message``.

Only ASCII digits and letters are accepted anywhere: ``str.isdigit()`` and
friends are true for Arabic-Indic or fullwidth digits, which must never slip
into a stored identifier, so every check here compares against explicit ASCII
sets.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Literal

from idp.i18n import _

__all__ = [
    "COUNTRIES",
    "ERROR_CODES",
    "MYKAD_PLACES",
    "Identifier",
    "InvalidIdentifier",
    "mykad_birth_date",
    "parse_identifier",
    "parse_mykad",
    "parse_passport",
]

IdentifierKind = Literal["mykad", "passport"]

_ASCII_DIGITS = frozenset("0123456789")
_ASCII_UPPER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ASCII_LETTERS = _ASCII_UPPER | frozenset("abcdefghijklmnopqrstuvwxyz")
_ASCII_ALNUM = _ASCII_DIGITS | _ASCII_LETTERS

MYKAD_LENGTH = 12
#: Where the two optional dashes sit in ``YYMMDD-PB-####`` (string indexes).
_MYKAD_DASHES = (6, 9)
_MYKAD_DASHED_LENGTH = MYKAD_LENGTH + len(_MYKAD_DASHES)

PASSPORT_MIN_LENGTH = 5
PASSPORT_MAX_LENGTH = 20

# Place-of-birth codes ("PB", digits 7 and 8) of the 12-digit identity card
# number, as allocated by Jabatan Pendaftaran Negara (JPN, the National
# Registration Department of Malaysia) in its two published tables "Kod Negeri"
# (states) and "Kod Negara" (countries), jpn.gov.my/informasi/kod-negeri/ and
# jpn.gov.my/en/informasi/kod-negara/; cross-checked against the copy of those
# tables in python-stdnum (stdnum/my/bp.dat). JPN groups most foreign countries
# into regional codes; the names below are English summaries of those groups.
# Codes never allocated (00, 17-20, 69, 70, 73, 80, 81, 94-97) are absent on
# purpose and are refused. 71 and 72 ("luar negara", born abroad) are in JPN's
# table though no longer issued, and people still hold them.
MYKAD_PLACES: dict[str, str] = {
    # States and federal territories of Malaysia.
    "01": "Johor",
    "02": "Kedah",
    "03": "Kelantan",
    "04": "Malacca",
    "05": "Negeri Sembilan",
    "06": "Pahang",
    "07": "Penang",
    "08": "Perak",
    "09": "Perlis",
    "10": "Selangor",
    "11": "Terengganu",
    "12": "Sabah",
    "13": "Sarawak",
    "14": "Federal Territory of Kuala Lumpur",
    "15": "Federal Territory of Labuan",
    "16": "Federal Territory of Putrajaya",
    "21": "Johor",
    "22": "Johor",
    "23": "Johor",
    "24": "Johor",
    "25": "Kedah",
    "26": "Kedah",
    "27": "Kedah",
    "28": "Kelantan",
    "29": "Kelantan",
    "30": "Malacca",
    "31": "Negeri Sembilan",
    "32": "Pahang",
    "33": "Pahang",
    "34": "Penang",
    "35": "Penang",
    "36": "Perak",
    "37": "Perak",
    "38": "Perak",
    "39": "Perak",
    "40": "Perlis",
    "41": "Selangor",
    "42": "Selangor",
    "43": "Selangor",
    "44": "Selangor",
    "45": "Terengganu",
    "46": "Terengganu",
    "47": "Sabah",
    "48": "Sabah",
    "49": "Sabah",
    "50": "Sarawak",
    "51": "Sarawak",
    "52": "Sarawak",
    "53": "Sarawak",
    "54": "Federal Territory of Kuala Lumpur",
    "55": "Federal Territory of Kuala Lumpur",
    "56": "Federal Territory of Kuala Lumpur",
    "57": "Federal Territory of Kuala Lumpur",
    "58": "Federal Territory of Labuan",
    "59": "Negeri Sembilan",
    # Countries and regions outside Malaysia, and the special codes.
    "60": "Brunei",
    "61": "Indonesia",
    "62": "Cambodia",
    "63": "Laos",
    "64": "Myanmar",
    "65": "Philippines",
    "66": "Singapore",
    "67": "Thailand",
    "68": "Vietnam",
    "71": "Outside Malaysia (country not recorded)",
    "72": "Outside Malaysia (country not recorded)",
    "74": "China",
    "75": "India",
    "76": "Pakistan",
    "77": "Saudi Arabia",
    "78": "Sri Lanka",
    "79": "Bangladesh",
    "82": "Malaysia (state unknown)",
    "83": "Asia-Pacific (Australia, New Zealand, Pacific islands)",
    "84": "South America",
    "85": "Africa",
    "86": "Europe",
    "87": "Britain and Ireland",
    "88": "Middle East",
    "89": "Far East (Japan, Korea, Taiwan)",
    "90": "Caribbean and Central America",
    "91": "North America",
    "92": "Eastern Europe and the former USSR",
    "93": "Other countries",
    "98": "Stateless",
    "99": "Refugee, United Nations or unspecified nationality",
}

# ISO 3166-1 alpha-3: the 249 officially assigned codes in current use, as in
# the iso-codes database (iso_3166-1.json, version 4.15.0) that mirrors the ISO
# 3166 Maintenance Agency's list. Withdrawn codes (ISO 3166-3, e.g. ANT, SCG,
# YUG) and ICAO-only machine-readable passport codes (e.g. D for Germany, GBD,
# UNO, XXA, RKS/XKX for Kosovo) are not in it.
_COUNTRY_CODES = """
    ABW AFG AGO AIA ALA ALB AND ARE ARG ARM ASM ATA ATF ATG AUS AUT AZE BDI
    BEL BEN BES BFA BGD BGR BHR BHS BIH BLM BLR BLZ BMU BOL BRA BRB BRN BTN
    BVT BWA CAF CAN CCK CHE CHL CHN CIV CMR COD COG COK COL COM CPV CRI CUB
    CUW CXR CYM CYP CZE DEU DJI DMA DNK DOM DZA ECU EGY ERI ESH ESP EST ETH
    FIN FJI FLK FRA FRO FSM GAB GBR GEO GGY GHA GIB GIN GLP GMB GNB GNQ GRC
    GRD GRL GTM GUF GUM GUY HKG HMD HND HRV HTI HUN IDN IMN IND IOT IRL IRN
    IRQ ISL ISR ITA JAM JEY JOR JPN KAZ KEN KGZ KHM KIR KNA KOR KWT LAO LBN
    LBR LBY LCA LIE LKA LSO LTU LUX LVA MAC MAF MAR MCO MDA MDG MDV MEX MHL
    MKD MLI MLT MMR MNE MNG MNP MOZ MRT MSR MTQ MUS MWI MYS MYT NAM NCL NER
    NFK NGA NIC NIU NLD NOR NPL NRU NZL OMN PAK PAN PCN PER PHL PLW PNG POL
    PRI PRK PRT PRY PSE PYF QAT REU ROU RUS RWA SAU SDN SEN SGP SGS SHN SJM
    SLB SLE SLV SMR SOM SPM SRB SSD STP SUR SVK SVN SWE SWZ SXM SYC SYR TCA
    TCD TGO THA TJK TKL TKM TLS TON TTO TUN TUR TUV TWN TZA UGA UKR UMI URY
    USA UZB VAT VCT VEN VGB VIR VNM VUT WLF WSM YEM ZAF ZMB ZWE
"""
COUNTRIES: frozenset[str] = frozenset(_COUNTRY_CODES.split())


def alpha2(code: str) -> str:
    """The ISO 3166-1 alpha-2 code of an alpha-3 code (CLDR's aliases)."""
    from babel.core import get_global

    return get_global("territory_aliases").get(code, [code])[0]


# The messages, one per stable code. Translators see the English msgids.
_MESSAGES = {
    "mykad.length": _("The identity card number must have 12 digits."),
    "mykad.digits": _(
        "The identity card number may contain only the digits 0-9 and dashes."
    ),
    "mykad.format": _(
        "Write the identity card number as 12 digits, either without dashes or "
        "as YYMMDD-PB-####."
    ),
    "mykad.date": _(
        "The first six digits of the identity card number must be a date of "
        "birth (YYMMDD)."
    ),
    "mykad.place": _(
        "The 7th and 8th digits of the identity card number are not a "
        "place-of-birth code in use."
    ),
    "passport.country": _("Choose the country that issued the passport."),
    "passport.number": _(
        "The passport number must have 5 to 20 letters (A-Z) or digits, "
        "without spaces or dashes."
    ),
}

#: Every ``InvalidIdentifier.code`` this module can raise.
ERROR_CODES: frozenset[str] = frozenset(_MESSAGES)


class InvalidIdentifier(ValueError):
    """An identifier was refused.

    ``code`` is stable and meant for programs (tests, metrics, audit records);
    ``message`` is a :class:`pyramid.i18n.TranslationString` in the ``idp``
    domain, meant for people. ``str(exc)`` is the English message. Neither
    contains the refused input, so the exception is safe to log.
    """

    def __init__(self, code: str) -> None:
        if code not in _MESSAGES:
            raise ValueError(f"unknown identifier error code {code!r}")
        self.code = code
        self.message = _MESSAGES[code]
        super().__init__(self.message)

    def __reduce__(self):
        return (type(self), (self.code,))

    def __repr__(self) -> str:
        return f"InvalidIdentifier({self.code!r})"


def _is_ascii_digits(text: str) -> bool:
    return bool(text) and all(ch in _ASCII_DIGITS for ch in text)


def _valid_in_either_century(yy: int, mm: int, dd: int) -> bool:
    # In practice only 29 February differs between the centuries, and every
    # 19YY leap year is also a 20YY one (2000 was leap); checking both keeps
    # the rule as stated rather than as derived.
    for century in (1900, 2000):
        try:
            datetime.date(century + yy, mm, dd)
        except ValueError:
            continue
        return True
    return False


def parse_mykad(text: str) -> str:
    """Check a MyKad/MyKid number and return its normalised form.

    Accepts ``YYMMDD-PB-####`` either as 12 ASCII digits or with exactly two
    dashes, after the 6th and the 8th digit. Surrounding whitespace is
    stripped; any other character (internal spaces, letters, non-ASCII digits
    such as Arabic-Indic or fullwidth ones, a lone or misplaced dash) is
    refused.

    ``YYMMDD`` must be a real date in 19YY or in 20YY (so ``000229`` is
    accepted because 2000 was a leap year, ``010229`` is not); ``PB`` must be
    in :data:`MYKAD_PLACES`.

    Returns the 12 ASCII digits. Raises :class:`InvalidIdentifier` with code
    ``mykad.digits``, ``mykad.length``, ``mykad.format``, ``mykad.date`` or
    ``mykad.place``, checked in that order.
    """
    stripped = text.strip()
    if any(ch not in _ASCII_DIGITS and ch != "-" for ch in stripped):
        raise InvalidIdentifier("mykad.digits")
    digits = stripped.replace("-", "")
    if len(digits) != MYKAD_LENGTH:
        raise InvalidIdentifier("mykad.length")
    if digits != stripped and not (
        len(stripped) == _MYKAD_DASHED_LENGTH
        and all(stripped[i] == "-" for i in _MYKAD_DASHES)
    ):
        raise InvalidIdentifier("mykad.format")
    yy, mm, dd = int(digits[0:2]), int(digits[2:4]), int(digits[4:6])
    if not _valid_in_either_century(yy, mm, dd):
        raise InvalidIdentifier("mykad.date")
    if digits[6:8] not in MYKAD_PLACES:
        raise InvalidIdentifier("mykad.place")
    return digits


def mykad_birth_date(
    normalised: str, today: datetime.date | None = None
) -> datetime.date:
    """Return the date of birth that a MyKad/MyKid number encodes.

    ``normalised`` is anything :func:`parse_mykad` accepts (it is checked
    again, and :class:`InvalidIdentifier` raised as there). The number holds
    only two digits of the year: the date is taken in 20YY when that is not
    after ``today`` (default: :meth:`datetime.date.today`, the server's local
    date), otherwise in 19YY. Should 19YY not exist (29 February of a year
    such as 1900) the 20YY date is returned even though it is after ``today``.
    """
    digits = parse_mykad(normalised)
    if today is None:
        today = datetime.date.today()
    yy, mm, dd = int(digits[0:2]), int(digits[2:4]), int(digits[4:6])
    try:
        recent = datetime.date(2000 + yy, mm, dd)
    except ValueError:
        recent = None
    if recent is not None and recent <= today:
        return recent
    try:
        return datetime.date(1900 + yy, mm, dd)
    except ValueError:
        # parse_mykad guarantees one of the two centuries is a real date.
        assert recent is not None
        return recent


def _parse_country(country: str | None) -> str:
    code = (country or "").strip()
    if len(code) != 3 or any(ch not in _ASCII_LETTERS for ch in code):
        raise InvalidIdentifier("passport.country")
    code = code.upper()
    if code not in COUNTRIES:
        raise InvalidIdentifier("passport.country")
    return code


def parse_passport(country: str | None, number: str) -> str:
    """Check a passport's issuing country and number; return ``"CCC:NUMBER"``.

    ``country`` is an ISO 3166-1 alpha-3 code from :data:`COUNTRIES`, in any
    letter case, surrounding whitespace ignored. ``number``, after stripping
    surrounding whitespace, must be 5 to 20 ASCII letters or digits; it is
    upper-cased. Spaces, dashes and any non-ASCII character inside it are
    refused (the ASCII check comes before upper-casing, so ``"ß"`` cannot turn
    into ``"SS"``).

    Raises :class:`InvalidIdentifier` with code ``passport.country`` (checked
    first) or ``passport.number``.
    """
    code = _parse_country(country)
    stripped = number.strip()
    if not (PASSPORT_MIN_LENGTH <= len(stripped) <= PASSPORT_MAX_LENGTH) or any(
        ch not in _ASCII_ALNUM for ch in stripped
    ):
        raise InvalidIdentifier("passport.number")
    return f"{code}:{stripped.upper()}"


@dataclass(frozen=True, repr=False)
class Identifier:
    """A checked identifier: ``kind`` and normalised ``value``.

    Build it with :func:`parse_identifier`; the constructor only checks the
    shape of ``value`` (so values read back from storage stay loadable should
    the place-of-birth table change). ``repr()`` shows the masked form only,
    so an Identifier that ends up in a log does not leak the number.
    """

    kind: IdentifierKind
    value: str

    def __post_init__(self) -> None:
        if self.kind == "mykad":
            ok = len(self.value) == MYKAD_LENGTH and _is_ascii_digits(self.value)
        elif self.kind == "passport":
            country, sep, number = self.value.partition(":")
            ok = (
                sep == ":"
                and country in COUNTRIES
                and PASSPORT_MIN_LENGTH <= len(number) <= PASSPORT_MAX_LENGTH
                and all(ch in _ASCII_UPPER or ch in _ASCII_DIGITS for ch in number)
            )
        else:
            raise ValueError(f"unknown identifier kind {self.kind!r}")
        if not ok:
            raise ValueError(f"not a normalised {self.kind} value")

    @property
    def country(self) -> str | None:
        """The passport's alpha-3 country code; ``None`` for a MyKad."""
        if self.kind == "passport":
            return self.value.partition(":")[0]
        return None

    @property
    def number(self) -> str:
        """The number alone: 12 digits, or the passport number."""
        if self.kind == "passport":
            return self.value.partition(":")[2]
        return self.value

    @property
    def display(self) -> str:
        """The form for people to read.

        MyKad: ``YYMMDD-PB-####`` (e.g. ``900101-14-5678``). Passport: country
        code, a space, the number (e.g. ``GBR 123456789``).
        """
        if self.kind == "mykad":
            v = self.value
            return f"{v[0:6]}-{v[6:8]}-{v[8:12]}"
        return f"{self.country} {self.number}"

    @property
    def masked(self) -> str:
        """The form for logs and mail, hiding all but the tail of the number.

        MyKad: ``XXXXXX-XX-`` and the last 4 digits (e.g. ``XXXXXX-XX-5678``);
        the birth date and place are hidden. Passport: country code, a space,
        ``****`` (always four, whatever the length) and the last
        ``min(4, len // 2)`` characters, so a short number is never mostly
        shown (e.g. ``GBR ****6789``, ``FRA ****45`` for ``12345``).
        """
        if self.kind == "mykad":
            return f"XXXXXX-XX-{self.value[-4:]}"
        number = self.number
        shown = min(4, len(number) // 2)
        return f"{self.country} ****{number[-shown:]}"

    def __repr__(self) -> str:
        return f"Identifier(kind={self.kind!r}, masked={self.masked!r})"


def parse_identifier(text: str, country: str | None = None) -> Identifier:
    """Parse what a person typed into the login form.

    With no ``country`` (``None``, empty or only whitespace) ``text`` must be
    a MyKad/MyKid number (see :func:`parse_mykad`); with a country it is a
    passport number issued by that country (see :func:`parse_passport`),
    Malaysian passports (``MYS``) included.

    Returns an :class:`Identifier`; raises :class:`InvalidIdentifier`.
    """
    if country is None or not country.strip():
        return Identifier("mykad", parse_mykad(text))
    return Identifier("passport", parse_passport(country, text))
