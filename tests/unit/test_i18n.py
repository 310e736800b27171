"""The message catalogs: complete in Malay and never stale."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
LOCALE = ROOT / "idp" / "locale"


def _ids(catalog) -> set[str]:
    return {m.id for m in catalog if m.id}


def _po(locale: str):
    with open(LOCALE / locale / "LC_MESSAGES" / "idp.po", "rb") as handle:
        return read_po(handle, locale=locale)


def test_every_message_has_a_malay_translation():
    catalog = _po("ms")
    missing = sorted(m.id for m in catalog if m.id and not m.string)
    fuzzy = sorted(m.id for m in catalog if m.id and m.fuzzy)
    assert not missing, f"messages without a Malay translation: {missing}"
    assert not fuzzy, f"fuzzy Malay translations to review: {fuzzy}"


def test_no_malay_translation_carries_another_messages_english():
    """A merge that glues two entries leaves English inside a Malay msgstr.

    It happened: the security policy's last sentence in Malay ran on into
    the English of the email-change flash, so the Malay page showed it.
    """
    catalog = _po("ms")
    english = [m.id for m in catalog if m.id and m.string != m.id and len(m.id) > 25]
    glued = sorted(
        (m.id, other)
        for m in catalog
        if m.id and m.string
        for other in english
        if other != m.id and other in m.string
    )
    assert not glued, f"Malay translations holding other messages' English: {glued}"


def _extract() -> set[str]:
    """What ``pybabel extract -F babel.cfg`` finds in the code and templates now."""
    with open(ROOT / "babel.cfg") as handle:
        method_map, options_map = parse_mapping_cfg(handle)
    found = set()
    for folder in ("idp", "templates"):
        for _file, _line, message, _comments, _context in extract_from_dir(
            str(ROOT / folder), method_map, options_map
        ):
            found.add(message[0] if isinstance(message, tuple) else message)
    return found


def test_catalogs_hold_every_message_in_the_code():
    """A message added to code or templates must be in both catalogs, and no stale one."""
    fresh = _extract()
    for locale in ("ms", "en"):
        catalog = _ids(_po(locale))
        assert fresh - catalog == set(), f"{locale} catalog lacks new messages"
        assert catalog - fresh == set(), f"{locale} catalog keeps removed messages"


def test_compiled_catalogs_match_their_sources():
    for locale in ("ms", "en"):
        with open(LOCALE / locale / "LC_MESSAGES" / "idp.mo", "rb") as handle:
            compiled = {m.id: m.string for m in read_mo(handle) if m.id}
        source = {m.id: m.string for m in _po(locale) if m.id and m.string}
        assert compiled == source, f"run pybabel compile for {locale}"
