"""Unit tests for idp.services.captcha_media: the captcha's picture and sound.

Nobody can look or listen here, so the tests check what can be measured:
formats, sizes, durations, levels, determinism per seed, and that different
inputs give different output.
"""

from __future__ import annotations

import array
import importlib.resources
import io
import math
import random
import sys
import wave
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from idp.services import captcha_media
from idp.services.captcha_media import (
    ALPHABET,
    IMAGE_SIZE,
    LENGTH,
    random_answer,
    render_audio,
    render_image,
)

ANSWER = "471963"
SEED = b"\x01" * 16
OTHER_SEED = b"\x02" * 16
BAD_ANSWERS = [
    "",  # empty
    "47196a",  # a letter
    "4719 3",  # a space
    "-47196",
    "４７１９６３",  # fullwidth digits: str.isdigit() says yes
    "٤٧١٩٦٣",  # Arabic-Indic digits: str.isdigit() says yes
    "1" * (captcha_media.MAX_LENGTH + 1),  # too long
]


VOICES = ("f2", "f4", "m3", "m7")


def clip_resource(locale: str, digit: str, voice: str = "m3"):
    return (
        importlib.resources.files("idp.data")
        / "captcha-audio"
        / locale
        / voice
        / f"{digit}.wav"
    )


def read_wav(data: bytes) -> tuple[wave._wave_params, array.array]:
    with wave.open(io.BytesIO(data), "rb") as w:
        params = w.getparams()
        samples = array.array("h", w.readframes(w.getnframes()))
    if sys.byteorder == "big":
        samples.byteswap()
    return params, samples


def duration(data: bytes) -> float:
    params, _ = read_wav(data)
    return params.nframes / params.framerate


def rms(samples) -> float:
    return math.sqrt(sum(s * s for s in samples) / len(samples))


# -- random_answer ---------------------------------------------------------


def test_alphabet_and_length():
    assert ALPHABET == "0123456789"
    assert LENGTH == 6


def test_random_answer_has_the_right_length_and_alphabet():
    for _ in range(200):
        answer = random_answer()
        assert len(answer) == LENGTH
        assert set(answer) <= set(ALPHABET)


def test_random_answer_uses_all_ten_digits():
    seen = set()
    for _ in range(200):
        seen.update(random_answer())
    assert seen == set(ALPHABET)


def test_random_answer_uses_secrets_by_default(monkeypatch):
    monkeypatch.setattr(captcha_media.secrets, "choice", lambda seq: seq[7])
    assert random_answer() == "777777"


def test_random_answer_takes_an_rng():
    assert random_answer(random.Random(5)) == random_answer(random.Random(5))
    assert random_answer(random.Random(5)) != random_answer(random.Random(6))


# -- validation -------------------------------------------------------------


@pytest.mark.parametrize("answer", BAD_ANSWERS)
def test_image_refuses_a_bad_answer(answer):
    with pytest.raises(ValueError):
        render_image(answer, SEED)


@pytest.mark.parametrize("answer", BAD_ANSWERS)
def test_audio_refuses_a_bad_answer(answer):
    with pytest.raises(ValueError):
        render_audio(answer, "ms", SEED)


def test_wrong_types_are_refused():
    with pytest.raises(TypeError):
        render_image(b"471963", SEED)
    with pytest.raises(TypeError):
        render_audio(471963, "ms", SEED)
    with pytest.raises(TypeError):
        render_image(ANSWER, "seed")


def test_the_longest_answer_is_accepted():
    longest = "0123456789"[: captcha_media.MAX_LENGTH]
    render_image(longest, SEED)
    render_audio(longest, "en", SEED)


# -- image ------------------------------------------------------------------


def test_image_is_an_rgb_png_of_the_right_size():
    data = render_image(ANSWER, SEED)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        assert image.mode == "RGB"
        assert image.size == IMAGE_SIZE == (220, 80)
        image.load()


def test_image_has_dark_digits_on_a_light_background():
    with Image.open(io.BytesIO(render_image(ANSWER, SEED))) as image:
        grey = sorted(image.convert("L").tobytes())
    median = grey[len(grey) // 2]
    dark = sum(1 for value in grey if value < 110)
    assert median > 200, "the background should be light"
    # Six digits about 40 px high cover well over a thousand pixels.
    assert dark > 800, "the digits should be drawn in a dark ink"
    assert dark < len(grey) / 3, "the picture should not be mostly dark"


def test_image_is_deterministic_for_the_same_answer_and_seed():
    assert render_image(ANSWER, SEED) == render_image(ANSWER, bytes(SEED))
    assert render_image(ANSWER, SEED) == render_image(ANSWER, bytearray(SEED))


def test_image_changes_with_the_seed_and_the_answer():
    base = render_image(ANSWER, SEED)
    assert render_image(ANSWER, OTHER_SEED) != base
    assert render_image("471964", SEED) != base


def test_image_distortion_changes_with_the_seed():
    # Not only the bytes: the pixels differ a lot, so the digits move.
    def pixels(seed):
        with Image.open(io.BytesIO(render_image(ANSWER, seed))) as image:
            return image.convert("L").tobytes()

    a, b = pixels(SEED), pixels(OTHER_SEED)
    differing = sum(1 for x, y in zip(a, b, strict=True) if abs(x - y) > 60)
    assert differing > 500


def test_images_rendered_in_threads_match_serial_ones():
    seeds = [bytes([i]) * 8 for i in range(8)]
    serial = [render_image(ANSWER, seed) for seed in seeds]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = list(pool.map(lambda seed: render_image(ANSWER, seed), seeds))
    assert threaded == serial


# -- audio clips ------------------------------------------------------------


@pytest.mark.parametrize("locale", ["ms", "en"])
@pytest.mark.parametrize("voice", VOICES)
@pytest.mark.parametrize("digit", list(ALPHABET))
def test_every_clip_exists_and_is_plausible(locale, voice, digit):
    resource = clip_resource(locale, digit, voice)
    assert resource.is_file(), f"missing {locale}/{voice}/{digit}.wav"
    params, samples = read_wav(resource.read_bytes())
    assert params.nchannels == 1
    assert params.sampwidth == 2
    assert params.framerate == 16_000
    assert 0.2 <= params.nframes / params.framerate <= 1.2
    assert rms(samples) > 1_000, "the clip is (nearly) silent"


def test_clips_of_a_locale_differ_from_each_other():
    for locale in ("ms", "en"):
        for voice in VOICES:
            clips = {clip_resource(locale, d, voice).read_bytes() for d in ALPHABET}
            assert len(clips) == len(ALPHABET)


# -- audio ------------------------------------------------------------------


@pytest.mark.parametrize("locale", ["ms", "en"])
def test_audio_is_a_mono_16_bit_wav(locale):
    data = render_audio(ANSWER, locale, SEED)
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    params, samples = read_wav(data)
    assert params.nchannels == 1
    assert params.sampwidth == 2
    assert params.comptype == "NONE"
    assert params.framerate == 16_000
    assert len(samples) == params.nframes > 0


@pytest.mark.parametrize("locale", ["ms", "en"])
@pytest.mark.parametrize("seed", [SEED, OTHER_SEED, b"", b"x" * 64])
def test_six_digits_last_a_sane_time(locale, seed):
    assert 3.0 <= duration(render_audio(ANSWER, locale, seed)) <= 12.0


@pytest.mark.parametrize("locale", ["ms", "en"])
def test_duration_grows_with_the_number_of_digits(locale):
    durations = [
        duration(render_audio(ANSWER[:n], locale, SEED))
        for n in range(1, len(ANSWER) + 1)
    ]
    assert durations == sorted(durations)
    assert len(set(durations)) == len(durations)
    # Each digit adds at least a short word and a pause.
    assert durations[-1] - durations[0] > 0.5 * (len(ANSWER) - 1)


def test_audio_is_deterministic_per_seed():
    assert render_audio(ANSWER, "ms", SEED) == render_audio(ANSWER, "ms", SEED)
    assert render_audio(ANSWER, "ms", SEED) != render_audio(ANSWER, "ms", OTHER_SEED)
    assert render_audio(ANSWER, "ms", SEED) != render_audio("471964", "ms", SEED)


def test_english_and_malay_differ():
    assert render_audio(ANSWER, "en", SEED) != render_audio(ANSWER, "ms", SEED)


@pytest.mark.parametrize("locale", ["fr", "", "zz-ZZ", "MS"])
def test_unknown_locales_fall_back_to_malay(locale):
    assert render_audio(ANSWER, locale, SEED) == render_audio(ANSWER, "ms", SEED)


@pytest.mark.parametrize("locale", ["en-GB", "en_MY", "EN"])
def test_english_with_a_region_is_english(locale):
    assert render_audio(ANSWER, locale, SEED) == render_audio(ANSWER, "en", SEED)


def test_audio_starts_quietly_but_not_in_digital_silence():
    parts = captcha_media.render_parts(ANSWER, "ms", SEED)
    first = parts.words[0][0]
    assert first >= int(0.4 * 16_000), "players that start late would miss a digit"
    assert not parts.speech[:first].any(), "the lead-in holds no speech"
    _, samples = read_wav(render_audio(ANSWER, "ms", SEED))
    lead_in = samples[:first]
    assert sum(1 for s in lead_in if s != 0) > len(lead_in) / 2


@pytest.mark.parametrize("locale", ["ms", "en"])
@pytest.mark.parametrize("seed", [SEED, OTHER_SEED, b"x" * 64])
def test_digits_stand_5_to_10_db_above_the_babble(locale, seed):
    """A listener hears each word 5-10 dB above the babble, 30 dB above the floor."""
    parts = captcha_media.render_parts(ANSWER, locale, seed)
    for start, end in parts.words:
        word = parts.speech[start:end]
        loud = np.abs(word) > 0.02 * np.abs(parts.speech).max()
        speech = np.sqrt((word[loud] ** 2).mean())
        babble = np.sqrt((parts.babble**2).mean())
        floor = np.sqrt((parts.floor**2).mean())
        assert 3.0 <= 20 * math.log10(speech / babble) <= 13.0
        assert 20 * math.log10(speech / floor) >= 25.0


def test_clips_do_not_appear_byte_for_byte():
    data = render_audio("444444", "ms", SEED)
    for voice in VOICES:
        clip = clip_resource("ms", "4", voice).read_bytes()
        # A 64-byte run (32 samples) from the loud middle of the clip.
        middle = len(clip) // 2 & ~1
        assert clip[middle : middle + 64] not in data


def test_each_challenge_gets_its_own_pitch_and_formants():
    """The same digits with two seeds are two different speakers."""
    one = captcha_media.render_parts("555555", "en", SEED)
    two = captcha_media.render_parts("555555", "en", OTHER_SEED)
    a, b = (p.speech[p.words[0][0] : p.words[0][1]] for p in (one, two))
    n = min(len(a), len(b))
    corr = np.abs(np.correlate(a[:n], b[:n], mode="full")).max()
    assert corr / np.sqrt((a[:n] ** 2).sum() * (b[:n] ** 2).sum()) < 0.5
