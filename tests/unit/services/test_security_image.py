"""Decoy images and phrases for numbers nobody registered."""

from types import SimpleNamespace

from idp import security_images
from idp.forms import has_control_characters
from idp.forms.register import PHRASE_MAX, PHRASE_MIN
from idp.services.security_image import decoy, shown_for, suggestion

SECRET = "k" * 48


def test_auth_02_decoys_pass_the_real_validator():
    """AUTH-02: decoys come from the real catalogue and obey the phrase rules."""
    seen_images, seen_phrases = set(), set()
    for n in range(2000):
        image, phrase = decoy(SECRET, f"9001011{n:05d}")
        assert security_images.get(image.id) is image
        assert PHRASE_MIN <= len(phrase) <= PHRASE_MAX
        assert not has_control_characters(phrase)
        assert phrase == " ".join(phrase.split())
        seen_images.add(image.id)
        seen_phrases.add(phrase)
    # Spread over the catalogue like real choices, not a tell-tale few.
    assert len(seen_images) == len(security_images.CATALOGUE)
    assert len(seen_phrases) > 500


def test_decoy_is_stable_per_number_and_key():
    assert decoy(SECRET, "900101145678") == decoy(SECRET, "900101145678")
    others = {decoy(SECRET, f"90010114567{n}") for n in range(10)}
    assert len(others) > 5
    assert decoy("another key" * 4, "900101145678") != decoy(SECRET, "900101145678")


def test_users_see_their_own_choice_or_their_decoy_when_they_have_none():
    user = SimpleNamespace(security_image="umbrella", security_phrase="Hujan lagi")
    image, phrase = shown_for(SECRET, "900101145678", user)
    assert (image.id, phrase) == ("umbrella", "Hujan lagi")
    blank = SimpleNamespace(security_image=None, security_phrase=None)
    assert shown_for(SECRET, "900101145678", blank) == decoy(SECRET, "900101145678")
    assert shown_for(SECRET, "900101145678", None) == decoy(SECRET, "900101145678")


def test_decoys_never_change_without_a_new_key():
    """AUTH-02: a decoy is pinned by key and number, not by code or Python version.

    The draws come from an HMAC stream, not :mod:`random`; a change to the
    word lists or shapes changes these values and must be a deliberate one
    (every unregistered number would show a new phrase, a tell in itself).
    """
    assert decoy(SECRET, "900101145678") == (
        security_images.get("trophy"),
        "marimau coco",
    )
    assert decoy(SECRET, "GBR:123456789") == (
        security_images.get("telephone"),
        "arnab atuk",
    )


def test_suggestions_come_from_the_decoy_generator_and_pass_the_rules():
    offered = {suggestion() for _ in range(300)}
    assert len(offered) > 250
    for phrase in offered:
        assert PHRASE_MIN <= len(phrase) <= PHRASE_MAX
        assert not has_control_characters(phrase)
        assert phrase == " ".join(phrase.split())
