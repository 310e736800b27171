"""Pictures and sound for the self-hosted captcha.

This module only *renders* a challenge: given the answer (a string of
digits) and a per-challenge ``seed``, :func:`render_image` draws a distorted
PNG and :func:`render_audio` speaks the digits as a WAV file, in Bahasa
Melayu or English. Storing challenges and checking answers is done
elsewhere. Nothing here calls a third-party service, so it works on a server
without internet access.

Answers are :data:`LENGTH` digits from :data:`ALPHABET`: digits are easy to
hear in both languages and to type on a phone's numeric keypad.

Both renderers are deterministic: the same ``(answer, seed)`` always gives
the same bytes, because every random choice comes from a generator
(:class:`random.Random`, numpy's ``default_rng``) seeded from ``seed``. The
distortions only have to be varied, not secret (the secret is the answer,
which :func:`random_answer` draws with :mod:`secrets`). The image is cheap
and re-rendered per fetch from a seed derived from the token; the sound
costs tens of milliseconds, so the caller renders it once from a fresh seed
and stores it.

The image uses the TrueType font bundled inside Pillow (Aileron Regular, via
``ImageFont.load_default(size=...)``, Pillow >= 10.1), so the project ships
no font file. The sound is re-synthesised from per-digit clips made with eSpeak
NG in four voices per language and committed under
``idp/data/captcha-audio/`` (see the README there and
``scripts/build-captcha-audio``), by a small vocoder written with numpy
(see "Audio" below). :func:`load_voices` analyses the clips at start-up.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import io
import math
import random
import secrets
import threading
import wave
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ALPHABET = "0123456789"
LENGTH = 6
# The most digits either renderer accepts. Answers are LENGTH digits; shorter
# or slightly longer ones are allowed (tests, future changes) but the image
# has room for about ten, and the cap bounds the work one call can cause.
MAX_LENGTH = 10

LOCALES = ("ms", "en")
DEFAULT_LOCALE = "ms"

IMAGE_SIZE = (220, 80)

AUDIO_PACKAGE = "idp.data"
AUDIO_FOLDER = "captcha-audio"

# Domain-separation labels, so the picture and the sound of one challenge
# draw different random streams from the same seed.
_IMAGE_DOMAIN = b"idp.captcha.image\x00"
_AUDIO_DOMAIN = b"idp.captcha.audio\x00"

# Font sizes (pixels) and the largest rotation (degrees) of one digit.
_FONT_SIZES = range(33, 45)
_MAX_ROTATION = 20
# Rotation limits (degrees, counter-clockwise) for digits that look like
# each other when turned too far: a "1" turned clockwise lifts its flag into
# the top bar of a "7", and a "7" turned counter-clockwise stands its stem up
# like a "1". So a "1" only leans left and a "7" only leans right.
_ROTATION = {"1": (-4, _MAX_ROTATION), "7": (-_MAX_ROTATION, 4)}
# Glyph canvas side as a multiple of the font size: room to rotate in.
_GLYPH_CANVAS = 1.6

_INT16_MIN = -32768
_INT16_MAX = 32767


def random_answer(rng: random.Random | None = None) -> str:
    """Draw a new answer: :data:`LENGTH` characters from :data:`ALPHABET`.

    Uses :mod:`secrets` unless a ``rng`` (anything with ``choice``) is given,
    which tests can use to get a known answer.
    """
    choice = secrets.choice if rng is None else rng.choice
    return "".join(choice(ALPHABET) for _ in range(LENGTH))


def _check(answer: str, seed: bytes) -> None:
    if not isinstance(answer, str):
        raise TypeError("answer must be a str")
    if not isinstance(seed, bytes | bytearray):
        raise TypeError("seed must be bytes")
    if not answer:
        raise ValueError("answer is empty")
    if len(answer) > MAX_LENGTH:
        raise ValueError(f"answer is longer than {MAX_LENGTH} characters")
    if any(c not in ALPHABET for c in answer):
        raise ValueError("answer has characters outside the captcha alphabet")


def _rng(domain: bytes, seed: bytes) -> random.Random:
    # Not for secrets: the seed only decides how the answer is distorted, and
    # a seeded Mersenne Twister is what makes rendering repeatable.
    return random.Random(hashlib.sha256(domain + bytes(seed)).digest())  # noqa: S311


# --------------------------------------------------------------------------
# Image
# --------------------------------------------------------------------------

_font_lock = threading.Lock()


@functools.cache
def _glyph(char: str, size: int) -> Image.Image:
    """A white-on-black ("L") mask of one character, centred on a square.

    Cached: the mask is never modified, only rotated into new images. A
    FreeType face is not safe to use from two threads at once, so fonts are
    loaded and drawn under a lock (rendering a glyph takes microseconds).
    """
    side = math.ceil(size * _GLYPH_CANVAS)
    mask = Image.new("L", (side, side), 0)
    with _font_lock:
        font = ImageFont.load_default(size=size)
        if not isinstance(font, ImageFont.FreeTypeFont):
            # Pillow without FreeType falls back to a tiny fixed bitmap font.
            raise RuntimeError("Pillow was built without FreeType support")
        ImageDraw.Draw(mask).text(
            (side / 2, side / 2),
            char,
            font=font,
            fill=255,
            anchor="mm",
            stroke_width=1,
            stroke_fill=255,
        )
    return mask


def _light_colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randint(228, 250), rng.randint(228, 250), rng.randint(228, 250))


def _ink_colour(rng: random.Random) -> tuple[int, int, int]:
    """A dark, saturated-enough colour that contrasts with a light background."""
    channels = [rng.randint(10, 70), rng.randint(10, 70), rng.randint(40, 130)]
    rng.shuffle(channels)
    return (channels[0], channels[1], channels[2])


def _noise_colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randint(80, 200), rng.randint(80, 200), rng.randint(80, 200))


def _wave_points(
    rng: random.Random, width: int, height: int
) -> list[tuple[float, float]]:
    """Points of a random sine-like curve crossing the image left to right."""
    y0 = rng.uniform(height * 0.3, height * 0.7)
    amplitude = rng.uniform(height * 0.1, height * 0.3)
    period = rng.uniform(width * 0.5, width * 1.5)
    phase = rng.uniform(0, 2 * math.pi)
    slope = rng.uniform(-0.15, 0.15)
    x_start = rng.uniform(-10, width * 0.15)
    x_end = rng.uniform(width * 0.85, width + 10)
    points = []
    x = x_start
    while x <= x_end:
        y = (
            y0
            + slope * (x - width / 2)
            + amplitude * math.sin(2 * math.pi * x / period + phase)
        )
        points.append((x, y))
        x += 4
    return points


def _warp_mesh(
    rng: random.Random, width: int, height: int
) -> list[tuple[tuple[int, int, int, int], tuple[float, ...]]]:
    """A MESH transform that bends the image along two sine waves.

    Each output tile is filled from a quadrilateral of the input whose
    corners are shifted vertically by a wave along x and horizontally by a
    wave along y.
    """
    ay = rng.uniform(3.0, 6.0)
    ly = rng.uniform(70, 130)
    py = rng.uniform(0, 2 * math.pi)
    ax = rng.uniform(1.5, 3.5)
    lx = rng.uniform(30, 60)
    px = rng.uniform(0, 2 * math.pi)

    def source(x: int, y: int) -> tuple[float, float]:
        return (
            x + ax * math.sin(2 * math.pi * y / lx + px),
            y + ay * math.sin(2 * math.pi * x / ly + py),
        )

    step = 10
    mesh: list[tuple[tuple[int, int, int, int], tuple[float, ...]]] = []
    for x in range(0, width, step):
        for y in range(0, height, step):
            x1, y1 = min(x + step, width), min(y + step, height)
            # Quad corners: upper left, lower left, lower right, upper right.
            quad = (*source(x, y), *source(x, y1), *source(x1, y1), *source(x1, y))
            mesh.append(((x, y, x1, y1), quad))
    return mesh


def render_image(answer: str, seed: bytes) -> bytes:
    """Draw ``answer`` distorted, as the bytes of an RGB PNG of IMAGE_SIZE."""
    _check(answer, seed)
    rng = _rng(_IMAGE_DOMAIN, seed)
    width, height = IMAGE_SIZE

    background = _light_colour(rng)
    image = Image.new("RGB", IMAGE_SIZE, background)
    draw = ImageDraw.Draw(image)

    # Faint blotches and speckles behind the text.
    for _ in range(rng.randint(4, 7)):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(8, 25)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=_light_colour(rng))
    for _ in range(rng.randint(250, 400)):
        draw.point(
            (rng.randrange(width), rng.randrange(height)), fill=_noise_colour(rng)
        )

    # The digits: each with its own size, angle, height and colour, and
    # uneven spacing, so no two are aligned or evenly spaced.
    n = len(answer)
    margin = 10
    slot = (width - 2 * margin) / n
    x = margin + slot / 2 + rng.uniform(-4, 2)
    ink = _ink_colour(rng)
    for char in answer:
        size = rng.choice(_FONT_SIZES)
        glyph = _glyph(char, size).rotate(
            rng.uniform(*_ROTATION.get(char, (-_MAX_ROTATION, _MAX_ROTATION))),
            resample=Image.Resampling.BICUBIC,
            expand=True,
        )
        cy = height / 2 + rng.uniform(-9, 9)
        left = round(x - glyph.width / 2)
        top = round(cy - glyph.height / 2)
        # Mostly the shared ink, sometimes another dark colour: one colour per
        # digit would let colour segmentation pull the digits apart.
        colour = ink if rng.random() < 0.6 else _ink_colour(rng)
        image.paste(colour, (left, top, left + glyph.width, top + glyph.height), glyph)
        x += slot * rng.uniform(0.9, 1.1)

    # Curves and lines across the text, in the text's own colours but thin
    # enough to leave the digits readable.
    for _ in range(rng.randint(1, 2)):
        colour = ink if rng.random() < 0.5 else _ink_colour(rng)
        draw.line(_wave_points(rng, width, height), fill=colour, width=2)
    for _ in range(rng.randint(1, 2)):
        draw.line(
            (
                rng.uniform(0, width * 0.3),
                rng.uniform(0, height),
                rng.uniform(width * 0.7, width),
                rng.uniform(0, height),
            ),
            fill=_noise_colour(rng),
            width=1,
        )

    image = image.transform(
        IMAGE_SIZE,
        Image.Transform.MESH,
        _warp_mesh(rng, width, height),
        resample=Image.Resampling.BILINEAR,
        fillcolor=background,
    )

    # Speckles over the text, after the warp so they are not bent with it;
    # then a light blur so they do not stand out from the anti-aliased text.
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(150, 250)):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        colour = _noise_colour(rng) if rng.random() < 0.7 else _ink_colour(rng)
        if rng.random() < 0.8:
            draw.point((x0, y0), fill=colour)
        else:
            draw.rectangle((x0, y0, x0 + 1, y0 + 1), fill=colour)
    image = image.filter(ImageFilter.SMOOTH)

    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


# --------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------
#
# The clips are never played as shipped. Each digit is re-synthesised by a
# small vocoder: the clip's spectral envelope (the vocal tract: which vowel,
# which consonant) is measured frame by frame, warped in frequency (a
# formant shift: a longer or shorter vocal tract) and stretched in time, then
# imposed on a new excitation, a pulse train at a per-challenge pitch
# contour with jitter for voiced frames and noise for unvoiced ones. The
# result keeps the words but shares no waveform with any shipped clip, at
# any speed, so correlating with the clips finds nothing (AUTH-23). Over it
# runs babble: other digits in other voices, reversed so they are not words,
# at a signal-to-noise ratio a listener copes with (5-10 dB).

# Analysis and synthesis frames: 32 ms, hop 8 ms, at 16 kHz.
_FFT = 512
_HOP = 128
# Cepstral coefficients kept for the envelope: below the pitch of the
# highest voice (16 kHz / 28 = 570 Hz), so harmonics are smoothed away.
_LIFTER = 28
# Pitch search range of the voicing measure, in Hz.
_F0_RANGE = (70.0, 400.0)
# Per-challenge ranges. Pitch in Hz; a formant factor > 1 raises the
# formants (a shorter tract); a duration factor > 1 speaks slower.
_PITCH = (85.0, 230.0)
_FORMANT = (0.86, 1.16)
_DURATION = (0.9, 1.2)
_JITTER = 0.02
# Within a word: the pace varies by up to exp(+-_PACE), the formant factor
# drifts by up to +-_DRIFT from start to end.
_PACE = 0.3
_DRIFT = 0.06
# Speech over babble, dB, per challenge; and the faint noise floor under
# everything, dB below the speech.
_SNR_DB = (6.0, 9.0)
_FLOOR_DB = 32.0
_PEAK = 0.7 * _INT16_MAX


@dataclass(frozen=True)
class _Analysis:
    """One clip as the vocoder sees it, per frame."""

    envelope: np.ndarray  # log magnitude, frames x bins
    voicing: np.ndarray  # 0 (noise) .. 1 (voiced)
    energy: np.ndarray  # RMS of the frame's spectrum


_WINDOW = np.hanning(_FFT + 1)[:-1]


def _frames(x: np.ndarray) -> np.ndarray:
    pad = np.concatenate((np.zeros(_FFT // 2), x, np.zeros(_FFT)))
    count = 1 + (len(pad) - _FFT) // _HOP
    index = np.arange(_FFT)[None, :] + _HOP * np.arange(count)[:, None]
    return pad[index] * _WINDOW


def _analyse(samples: np.ndarray, rate: int) -> _Analysis:
    spectrum = np.fft.rfft(_frames(samples), axis=1)
    power = np.abs(spectrum) ** 2
    log_mag = 0.5 * np.log(power + 1e-6)
    cepstrum = np.fft.irfft(log_mag, axis=1)
    cepstrum[:, _LIFTER:-_LIFTER] = 0.0
    envelope = np.fft.rfft(cepstrum, axis=1).real
    autocorr = np.fft.irfft(power, axis=1)
    low, high = (round(rate / f) for f in reversed(_F0_RANGE))
    peak = autocorr[:, low:high].max(axis=1) / np.maximum(autocorr[:, 0], 1e-6)
    voicing = np.clip((peak - 0.3) / 0.4, 0.0, 1.0)
    energy = np.sqrt(power.mean(axis=1))
    return _Analysis(envelope, voicing, energy)


class _Voices:
    """One locale's clips, analysed: ``voices[i][digit]``."""

    def __init__(self, rate: int, voices: list[dict[str, _Analysis]]):
        self.rate = rate
        self.voices = voices


def _clip_folder(locale: str):
    return importlib.resources.files(AUDIO_PACKAGE) / AUDIO_FOLDER / locale


def _read_clip(resource) -> tuple[int, np.ndarray]:
    with resource.open("rb") as f, wave.open(f, "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise RuntimeError(f"captcha clip {resource.name} is not mono 16-bit")
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return w.getframerate(), samples.astype(np.float64)


@functools.cache
def _voices(locale: str) -> _Voices:
    """Load and analyse one locale's clips, once per process.

    functools.cache may, under a race, do this twice; both results are equal
    and never modified, so that is harmless.
    """
    rates = set()
    voices = []
    for folder in sorted(_clip_folder(locale).iterdir(), key=lambda f: f.name):
        if not folder.is_dir():
            continue
        digits = {}
        for char in ALPHABET:
            rate, samples = _read_clip(folder / f"{char}.wav")
            rates.add(rate)
            digits[char] = _analyse(samples, rate)
        voices.append(digits)
    if not voices:
        raise RuntimeError(f"no captcha voices for {locale!r}")
    if len(rates) != 1:
        raise RuntimeError(f"captcha clips for {locale!r} mix sample rates")
    return _Voices(rates.pop(), voices)


def load_voices() -> None:
    """Analyse every clip now (at start-up) instead of at the first render."""
    for locale in LOCALES:
        _voices(locale)


def _synthesise(
    clip: _Analysis,
    rng: np.random.Generator,
    rate: int,
    *,
    pitch: float,
    formant: float,
    duration: float,
) -> np.ndarray:
    """Speak ``clip`` again with a new pitch contour, formants and length."""
    count = max(2, round(len(clip.voicing) * duration))
    # Where each output frame reads the analysis: not at an even pace but
    # speeding up and slowing down within the word (by up to a third), so no
    # single time-stretch of a clip lines up with it from end to end.
    pace = np.exp(
        np.interp(
            np.linspace(0, 1, count),
            np.linspace(0, 1, 4),
            rng.uniform(-_PACE, _PACE, 4),
        )
    )
    where = np.concatenate(([0.0], np.cumsum(pace)[:-1]))
    where *= (len(clip.voicing) - 1) / where[-1]
    low = np.floor(where).astype(int)
    high = np.minimum(low + 1, len(clip.voicing) - 1)
    frac = (where - low)[:, None]
    envelope = clip.envelope[low] * (1 - frac) + clip.envelope[high] * frac
    voicing = np.interp(where, np.arange(len(clip.voicing)), clip.voicing)
    energy = np.interp(where, np.arange(len(clip.energy)), clip.energy)
    # Formant shift: the envelope read at bin / factor, the factor drifting
    # across the word as a speaker's tract moves.
    bins = np.arange(envelope.shape[1])
    drift = formant * (1 + rng.uniform(-_DRIFT, _DRIFT) * np.linspace(-1, 1, count))
    source = np.minimum(bins[None, :] / drift[:, None], bins[-1])
    left = np.floor(source).astype(int)
    right = np.minimum(left + 1, bins[-1])
    weight = source - left
    rows = np.arange(count)[:, None]
    envelope = envelope[rows, left] * (1 - weight) + envelope[rows, right] * weight

    # The excitation: a pulse train whose pitch glides (a random rise or
    # fall across the word) and jitters from period to period, plus noise.
    length = (count - 1) * _HOP + _FFT
    glide = rng.uniform(-0.12, 0.12)
    contour = pitch * (1 + glide * np.linspace(-1, 1, length))
    periods = []
    total = 0.0
    while total < length:
        period = rate / np.interp(total, (0, length - 1), contour[[0, -1]])
        period *= 1 + rng.normal(0, _JITTER)
        total += period
        periods.append(total)
    pulses = np.zeros(length)
    pulses[np.asarray(periods[:-1], dtype=int)] = 1.0
    noise = rng.normal(0, 1, length)

    def frames_of(x: np.ndarray) -> np.ndarray:
        index = np.arange(_FFT)[None, :] + _HOP * np.arange(count)[:, None]
        spectrum = np.fft.rfft(x[index] * _WINDOW, axis=1)
        level = np.sqrt((np.abs(spectrum) ** 2).mean(axis=1, keepdims=True))
        return spectrum / np.maximum(level, 1e-9)

    mix = np.sqrt(voicing)[:, None] * frames_of(pulses)
    mix += np.sqrt(1 - voicing)[:, None] * frames_of(noise)
    spectrum = mix * np.exp(envelope - envelope.max(axis=1, keepdims=True))
    level = np.sqrt((np.abs(spectrum) ** 2).mean(axis=1, keepdims=True))
    spectrum *= energy[:, None] / np.maximum(level, 1e-9)

    out = np.zeros(length)
    norm = np.zeros(length)
    pieces = np.fft.irfft(spectrum, _FFT, axis=1) * _WINDOW
    for k in range(count):
        out[k * _HOP : k * _HOP + _FFT] += pieces[k]
        norm[k * _HOP : k * _HOP + _FFT] += _WINDOW**2
    out /= np.maximum(norm, 1e-3)
    # A 5 ms fade at both ends, so words do not click on and off.
    fade = min(len(out) // 2, rate // 200)
    ramp = np.linspace(0, 1, fade)
    out[:fade] *= ramp
    out[len(out) - fade :] *= ramp[::-1]
    return out


def _rng_np(label: bytes, seed: bytes) -> np.random.Generator:
    digest = hashlib.sha256(_AUDIO_DOMAIN + label + bytes(seed)).digest()
    return np.random.default_rng(int.from_bytes(digest, "big"))


def _locale_voices(locale: str) -> _Voices:
    language = (locale or "").replace("_", "-").split("-")[0].lower()
    return _voices(language if language in LOCALES else DEFAULT_LOCALE)


def _place(track: np.ndarray, sound: np.ndarray, start: int) -> np.ndarray:
    end = start + len(sound)
    if end > len(track):
        track = np.concatenate((track, np.zeros(end - len(track))))
    track[start:end] += sound
    return track


@dataclass(frozen=True)
class AudioParts:
    """A challenge's sound before mixing: three tracks of one length.

    ``words`` holds each spoken digit's ``(start, end)`` sample indexes.
    """

    speech: np.ndarray
    babble: np.ndarray
    floor: np.ndarray
    words: tuple[tuple[int, int], ...]


def render_parts(answer: str, locale: str, seed: bytes) -> AudioParts:
    """The speech, the babble and the noise floor of a challenge, apart.

    :func:`render_audio` mixes them; tests measure them separately (the
    signal-to-noise ratio a listener gets).
    """
    _check(answer, seed)
    voices = _locale_voices(locale)
    rate = voices.rate
    # The answer's stream is drawn first and alone, so a longer answer with
    # the same seed only adds to it (tests rely on that).
    rng = _rng_np(b"speech", seed)
    pitch = rng.uniform(*_PITCH)
    formant = rng.uniform(*_FORMANT)
    duration = rng.uniform(*_DURATION)

    speech = np.zeros(0)
    words = []
    position = round(rng.uniform(0.4, 0.7) * rate)
    for char in answer:
        voice = voices.voices[rng.integers(len(voices.voices))]
        word = _synthesise(
            voice[char],
            rng,
            rate,
            pitch=pitch * rng.uniform(0.92, 1.08),
            formant=formant * rng.uniform(0.97, 1.03),
            duration=duration * rng.uniform(0.92, 1.08),
        )
        word *= rng.uniform(0.7, 1.0) / max(np.abs(word).max(), 1e-9)
        speech = _place(speech, word, position)
        words.append((position, position + len(word)))
        position += len(word) + round(rng.uniform(0.3, 0.75) * rate)
    speech = np.concatenate((speech, np.zeros(position - len(speech))))

    # Babble: reversed digits of every voice of both languages, each with
    # its own pitch and formants, two streams deep, over the whole file.
    other = _rng_np(b"babble", seed)
    pool = [v for loc in LOCALES for v in _locale_voices(loc).voices]
    babble = np.zeros(len(speech))
    for _stream in range(2):
        at = round(other.uniform(0, 0.3) * rate)
        while at < len(speech):
            clip = pool[other.integers(len(pool))][ALPHABET[other.integers(10)]]
            word = _synthesise(
                clip,
                other,
                rate,
                pitch=other.uniform(*_PITCH),
                formant=other.uniform(*_FORMANT),
                duration=other.uniform(*_DURATION),
            )[::-1]
            word *= other.uniform(0.6, 1.0) / max(np.abs(word).max(), 1e-9)
            babble = _place(babble, word, at)
            at += round(len(word) * other.uniform(0.6, 1.0))
    babble = babble[: len(speech)]

    # Levels against the speech where it is spoken (its loud frames), so the
    # ratio is what a listener hears during a word.
    active = np.abs(speech) > 0.02 * np.abs(speech).max()
    speech_rms = np.sqrt((speech[active] ** 2).mean())
    snr = other.uniform(*_SNR_DB)
    babble *= speech_rms / 10 ** (snr / 20) / np.sqrt((babble**2).mean())
    # The floor: brown noise (integrated white) minus its own 4 ms moving
    # average, which leaves a soft hiss without the rumble below ~250 Hz.
    floor = np.cumsum(other.normal(0, 1, len(speech)))
    floor -= np.convolve(floor, np.ones(64) / 64, mode="same")
    floor *= speech_rms / 10 ** (_FLOOR_DB / 20) / np.sqrt((floor**2).mean())
    return AudioParts(speech, babble, floor, tuple(words))


def render_audio(answer: str, locale: str, seed: bytes) -> bytes:
    """Speak ``answer`` digit by digit, as the bytes of a mono 16-bit WAV.

    ``locale`` is ``"ms"`` (Bahasa Melayu) or ``"en"`` (English); anything
    else falls back to ``"ms"``. A region tag such as ``"en-GB"`` or
    ``"en_MY"`` counts as its language.
    """
    parts = render_parts(answer, locale, seed)
    mixed = parts.speech + parts.babble + parts.floor
    mixed *= _PEAK / max(np.abs(mixed).max(), 1e-9)
    samples = np.clip(np.round(mixed), _INT16_MIN, _INT16_MAX).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(_locale_voices(locale).rate)
        w.writeframes(samples.tobytes())
    return out.getvalue()
