"""Decoy images and phrases for numbers nobody registered."""

from collections import Counter
from types import SimpleNamespace

from idp import security_images
from idp.forms import has_control_characters
from idp.forms.register import PHRASE_MAX, PHRASE_MIN
from idp.services.security_image import (
    IMAGE_MATCH_PERCENT,
    _named_images,
    decoy,
    shown_for,
    suggestion,
)

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
        security_images.get("crown"),
        "Lahir 19 may",
    )
    assert decoy(SECRET, "GBR:123456789") == (
        security_images.get("grapes"),
        "silver",
    )


def test_suggestions_come_from_the_decoy_generator_and_pass_the_rules():
    offered = {suggestion() for _ in range(300)}
    assert len(offered) > 250
    for phrase in offered:
        assert PHRASE_MIN <= len(phrase) <= PHRASE_MAX
        assert not has_control_characters(phrase)
        assert phrase == " ".join(phrase.split())


def test_auth_26_a_decoy_that_names_a_picture_shows_it_as_people_do():
    """AUTH-26: "the phrase names the picture, so it is real" is no sure sign.

    People who write about their cat often choose the cat; decoys whose
    phrase names a pictured thing show it at IMAGE_MATCH_PERCENT, against 1
    in 66 for a uniform draw. Control: the other decoys' pictures stay
    spread over the whole catalogue.
    """
    named = matched = 0
    others = Counter()
    for n in range(20000):
        image, phrase = decoy(SECRET, f"{n:012d}")
        pictured = _named_images(phrase)
        if pictured:
            named += 1
            matched += image in pictured
        else:
            others[image.id] += 1
    assert named >= 600
    assert abs(matched / named - IMAGE_MATCH_PERCENT / 100) < 0.05
    expected = sum(others.values()) / len(security_images.CATALOGUE)
    assert len(others) == len(security_images.CATALOGUE)
    assert all(0.75 * expected < count < 1.25 * expected for count in others.values())
    assert [image.id for image in _named_images("Kucing saya Oyen")] == ["cat"]
    assert _named_images("Kapal terbangan") == []
