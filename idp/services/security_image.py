"""What the identifier step shows: the user's image and phrase, or a decoy.

For an identifier nobody registered, the page shows a decoy derived from an
HMAC of the normalised identifier with a key derived from ``idp.hmac_key``:
the same number always shows the same decoy, on every node, and nothing on
the page says whether the number is registered. Decoys come from the same
catalogue as real choices, and their phrases are the kind people choose and
pass the same validation (3-40 characters, no control characters); they
change only when ``idp.hmac_key`` does.
"""

from __future__ import annotations

import hashlib
import hmac

from idp import security_images
from idp.security_images import SecurityImage
from idp.services.ratelimit import address_prefix

# The limiters every identifier lookup counts in, and the key each one uses
# for a client address (AUTH-27).
LOOKUP_LIMITS = (
    ("login.lookup.address", lambda address: address),
    ("login.lookup.prefix", address_prefix),
    ("login.lookup.global", lambda address: "site"),
)

_FOODS = (
    "Nasi lemak",
    "Roti canai",
    "Mee goreng",
    "Laksa",
    "Satay",
    "Cendol",
    "Rendang",
    "Teh tarik",
    "Kuih lapis",
    "Durian",
    "Nasi kerabu",
    "Char kuey teow",
    "Ais kacang",
    "Pisang goreng",
    "Mee rebus",
    "Nasi dagang",
    "Kopi O",
    "Milo ais",
)
_PETS = (
    "Comel",
    "Oyen",
    "Tompok",
    "Putih",
    "Bulat",
    "Si Manja",
    "Belang",
    "Gebu",
    "Tiger",
    "Lucky",
    "Coco",
    "Bobby",
    "Snowy",
    "Max",
)
_PLACES = (
    "Pulau Pinang",
    "Melaka",
    "Langkawi",
    "Kota Bharu",
    "Ipoh",
    "Kuching",
    "Kota Kinabalu",
    "Johor Bahru",
    "Kuantan",
    "Seremban",
    "Alor Setar",
    "Cameron Highlands",
    "Terengganu",
    "Sabah",
    "Putrajaya",
    "Shah Alam",
)
_HOBBIES = (
    "bola sepak",
    "badminton",
    "membaca",
    "memasak",
    "melukis",
    "berenang",
    "memancing",
    "berkebun",
    "main gitar",
    "bersepeda",
    "takraw",
    "catur",
)
_NAMES = (
    "Ahmad",
    "Siti",
    "Aisyah",
    "Hafiz",
    "Kumar",
    "Priya",
    "Mei Ling",
    "Wei Jie",
    "Nurul",
    "Farah",
    "Amir",
    "Daniel",
    "Aina",
    "Irfan",
    "Kavitha",
    "Jun Hao",
    "Zara",
    "Adam",
    "Hana",
    "Rizal",
    "Lakshmi",
    "Ah Kow",
    "Sofia",
    "Haziq",
)
_DAYS = ("Isnin", "Selasa", "Rabu", "Khamis", "Jumaat", "Sabtu", "Ahad")
_TEMPLATES = (
    "{pet} suka {food}",
    "{food} di {place}",
    "{hobby} setiap {day}",
    "Anak saya {name}",
    "{name} {year}",
    "{name} dan {pet}",
    "Rumah kami di {place}",
    "{name} suka {hobby}",
    "{food} kegemaran saya",
    "Saya suka {food}",
    "Kucing saya {pet}",
    "{pet} si kucing",
    "Cuti di {place}",
    "{place} {year}",
    "Saya suka {hobby}",
    "Hobi saya {hobby}",
    "My favourite is {food}",
    "My cat {pet}",
    "Holiday in {place}",
    "I love {hobby}",
)


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"idp decoy v1", hashlib.sha256).digest()


def decoy(secret: str, identifier: str) -> tuple[SecurityImage, str]:
    """The decoy image and phrase for ``identifier`` (its normalised value)."""
    digest = hmac.new(_key(secret), identifier.encode(), hashlib.sha256).digest()
    numbers = [int.from_bytes(digest[i : i + 4], "big") for i in range(0, 32, 4)]
    image = security_images.CATALOGUE[numbers[0] % len(security_images.CATALOGUE)]
    template = _TEMPLATES[numbers[1] % len(_TEMPLATES)]
    phrase = template.format(
        food=_FOODS[numbers[2] % len(_FOODS)],
        pet=_PETS[numbers[3] % len(_PETS)],
        place=_PLACES[numbers[4] % len(_PLACES)],
        hobby=_HOBBIES[numbers[5] % len(_HOBBIES)],
        year=1985 + numbers[6] % 35,
        name=_NAMES[numbers[7] % len(_NAMES)],
        day=_DAYS[(numbers[7] >> 8) % len(_DAYS)],
    )
    return image, phrase


def shown_for(secret: str, identifier: str, user) -> tuple[SecurityImage, str]:
    """What the identifier step shows for ``identifier``: real or decoy.

    A user without a chosen image or phrase (created by an operator) sees
    their decoy until they choose one, so the page never looks different.
    """
    fake_image, fake_phrase = decoy(secret, identifier)
    if user is None:
        return fake_image, fake_phrase
    image = security_images.get(user.security_image or "") or fake_image
    return image, user.security_phrase or fake_phrase


def count_lookup(limiter, address: str | None) -> bool:
    """Count one identifier lookup from ``address``; True if every limit allows it.

    Every limiter is hit, allowed or not, so a harvest that keeps going past a
    limit keeps its counts high instead of letting them drain. The answer
    does not depend on the number looked up, so it cannot tell registered
    numbers apart.
    """
    decisions = [limiter.hit(name, key(address or "")) for name, key in LOOKUP_LIMITS]
    return all(decision.allowed for decision in decisions)


def lookups_exhausted(limiter, address: str | None) -> bool:
    """True if the next lookup from ``address`` would be past a limit (no count)."""
    return any(
        not limiter.check(name, key(address or "")).allowed
        for name, key in LOOKUP_LIMITS
    )
