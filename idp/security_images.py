"""The security image catalogue: the pictures people choose from at registration.

The picture a person chose is shown back on every sign-in page, after the
identifier and before the password, as an anti-phishing sign: a look-alike
site does not know which picture belongs to whom. Each picture is a static
file, ``idp/static/security-images/<id>.svg``; what is stored for a person is
only its ``id``.

Ids are lowercase ASCII (``^[a-z][a-z0-9-]*$``) and are never reused for a
different picture. Names are everyday Bahasa Melayu and plain English, in
lower case (the template decides how to capitalise them).

Pure Python, no Pyramid: the catalogue and its lookups can be used and tested
anywhere. The entries of :data:`CATALOGUE` (between the GENERATED markers) and
the SVG files are written by ``scripts/build-security-images`` from its own
table; change that table and run the script, never edit the entries by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CATALOGUE", "SecurityImage", "get", "is_valid"]

STATIC_DIR = "security-images"


@dataclass(frozen=True)
class SecurityImage:
    """One picture: its stable id and its names in both languages."""

    id: str
    name_ms: str
    name_en: str

    def name(self, locale: str) -> str:
        """The name in ``locale`` (``"ms"`` or ``"en"``; anything else: Malay)."""
        return self.name_en if locale == "en" else self.name_ms

    def static_path(self) -> str:
        """The file's path relative to ``idp/static/``."""
        return f"{STATIC_DIR}/{self.id}.svg"


# The order is the order the picker shows, and it is part of the contract:
# decoy pictures are derived from indexes into this tuple, so existing entries
# must never be reordered, removed or given another picture. New pictures are
# appended at the end only (in the script's table, which writes this block).
# BEGIN GENERATED CATALOGUE (scripts/build-security-images)
CATALOGUE: tuple[SecurityImage, ...] = (
    SecurityImage("cat", "kucing", "cat"),
    SecurityImage("apple", "epal", "apple"),
    SecurityImage("umbrella", "payung", "umbrella"),
    SecurityImage("bicycle", "basikal", "bicycle"),
    SecurityImage("sun", "matahari", "sun"),
    SecurityImage("house", "rumah", "house"),
    SecurityImage("guitar", "gitar", "guitar"),
    SecurityImage("fish", "ikan", "fish"),
    SecurityImage("banana", "pisang", "banana"),
    SecurityImage("key", "kunci", "key"),
    SecurityImage("aeroplane", "kapal terbang", "aeroplane"),
    SecurityImage("flower", "bunga", "flower"),
    SecurityImage("scissors", "gunting", "scissors"),
    SecurityImage("bird", "burung", "bird"),
    SecurityImage("cherry", "ceri", "cherry"),
    SecurityImage("bell", "loceng", "bell"),
    SecurityImage("train", "kereta api", "train"),
    SecurityImage("rainbow", "pelangi", "rainbow"),
    SecurityImage("castle", "istana", "castle"),
    SecurityImage("drum", "gendang", "drum"),
    SecurityImage("rabbit", "arnab", "rabbit"),
    SecurityImage("grapes", "anggur", "grapes"),
    SecurityImage("light-bulb", "mentol", "light bulb"),
    SecurityImage("rocket", "roket", "rocket"),
    SecurityImage("snowflake", "kepingan salji", "snowflake"),
    SecurityImage("hammer", "tukul", "hammer"),
    SecurityImage("turtle", "kura-kura", "turtle"),
    SecurityImage("carrot", "lobak merah", "carrot"),
    SecurityImage("book", "buku", "book"),
    SecurityImage("sailboat", "perahu layar", "sailboat"),
    SecurityImage("star", "bintang", "star"),
    SecurityImage("lighthouse", "rumah api", "lighthouse"),
    SecurityImage("piano", "piano", "piano"),
    SecurityImage("snail", "siput", "snail"),
    SecurityImage("pizza", "piza", "pizza"),
    SecurityImage("camera", "kamera", "camera"),
    SecurityImage("helicopter", "helikopter", "helicopter"),
    SecurityImage("fire", "api", "fire"),
    SecurityImage("crown", "mahkota", "crown"),
    SecurityImage("pencil", "pensel", "pencil"),
    SecurityImage("beetle", "kumbang", "beetle"),
    SecurityImage("ice-cream", "aiskrim", "ice cream"),
    SecurityImage("glasses", "cermin mata", "glasses"),
    SecurityImage("car", "kereta", "car"),
    SecurityImage("leaf", "daun", "leaf"),
    SecurityImage("gift", "hadiah", "gift"),
    SecurityImage("tractor", "traktor", "tractor"),
    SecurityImage("prawn", "udang", "prawn"),
    SecurityImage("cake", "kek", "cake"),
    SecurityImage("diamond", "berlian", "diamond"),
    SecurityImage("hot-air-balloon", "belon udara panas", "hot air balloon"),
    SecurityImage("mountain", "gunung", "mountain"),
    SecurityImage("shirt", "baju", "shirt"),
    SecurityImage("robot", "robot", "robot"),
    SecurityImage("burger", "burger", "burger"),
    SecurityImage("anchor", "sauh", "anchor"),
    SecurityImage("palm-tree", "pokok kelapa", "palm tree"),
    SecurityImage("trophy", "piala", "trophy"),
    SecurityImage("headphones", "fon kepala", "headphones"),
    SecurityImage("fried-egg", "telur goreng", "fried egg"),
    SecurityImage("dice", "dadu", "dice"),
    SecurityImage("cloud", "awan", "cloud"),
    SecurityImage("magnet", "magnet", "magnet"),
    SecurityImage("telephone", "telefon", "telephone"),
)
# END GENERATED CATALOGUE

_BY_ID: dict[str, SecurityImage] = {image.id: image for image in CATALOGUE}


def get(image_id: str) -> SecurityImage | None:
    """The picture with this id, or ``None`` for anything not in the catalogue."""
    if not isinstance(image_id, str):
        return None
    return _BY_ID.get(image_id)


def is_valid(image_id: str) -> bool:
    """Whether ``image_id`` names a picture in the catalogue."""
    return get(image_id) is not None
