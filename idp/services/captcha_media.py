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
the same bytes, because every random choice comes from a
:class:`random.Random` seeded from ``seed``. That is the right tool here:
the distortions only have to be varied, not secret (the secret is the answer,
which :func:`random_answer` draws with :mod:`secrets`), and repeatable
output lets the caller re-render a challenge instead of storing the media.

The image uses the TrueType font bundled inside Pillow (Aileron Regular, via
``ImageFont.load_default(size=...)``, Pillow >= 10.1), so the project ships
no font file. The sound is assembled from per-digit clips synthesised with
eSpeak NG and committed under ``idp/data/captcha-audio/`` (see the README
there and ``scripts/build-captcha-audio``); it is built with the standard
library only (``wave``, ``array``), not ``audioop`` (deprecated) or numpy.
"""

from __future__ import annotations

import array
import functools
import hashlib
import importlib.resources
import io
import math
import random
import secrets
import sys
import threading
import wave

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
    mesh = []
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
        x, y = rng.randrange(width), rng.randrange(height)
        draw.point((x, y), fill=_noise_colour(rng))

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


class _Clips:
    """The per-digit clips of one locale, as native-endian int16 arrays."""

    def __init__(self, rate: int, digits: dict[str, array.array]):
        self.rate = rate
        self.digits = digits


def _read_clip(locale: str, char: str) -> tuple[int, array.array]:
    resource = (
        importlib.resources.files(AUDIO_PACKAGE) / AUDIO_FOLDER / locale / f"{char}.wav"
    )
    with resource.open("rb") as f, wave.open(f, "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise RuntimeError(f"captcha clip {locale}/{char}.wav is not mono 16-bit")
        samples = array.array("h", w.readframes(w.getnframes()))
        rate = w.getframerate()
    if sys.byteorder == "big":  # WAV is little-endian
        samples.byteswap()
    return rate, samples


@functools.cache
def _clips(locale: str) -> _Clips:
    """Load one locale's clips, once per process.

    functools.cache may, under a race, load the same files twice; both
    results are equal and the clips are never modified, so that is harmless.
    """
    rates = set()
    digits = {}
    for char in ALPHABET:
        rate, samples = _read_clip(locale, char)
        rates.add(rate)
        digits[char] = samples
    if len(rates) != 1:
        raise RuntimeError(f"captcha clips for {locale!r} mix sample rates")
    return _Clips(rates.pop(), digits)


def _stretch(samples: array.array, factor: float, gain: float) -> list[float]:
    """Resample by linear interpolation (speed and pitch change) and scale.

    ``factor`` > 1 makes the clip shorter and higher. The change is a few
    per cent, small enough that the aliasing of plain linear interpolation
    is inaudible under the background noise.
    """
    n_out = max(1, int((len(samples) - 1) / factor))
    last = len(samples) - 1
    out = []
    for i in range(n_out):
        t = i * factor
        k = int(t)
        frac = t - k
        a = samples[k]
        b = samples[k + 1] if k < last else a
        out.append((a + (b - a) * frac) * gain)
    return out


def render_audio(answer: str, locale: str, seed: bytes) -> bytes:
    """Speak ``answer`` digit by digit, as the bytes of a mono 16-bit WAV.

    ``locale`` is ``"ms"`` (Bahasa Melayu) or ``"en"`` (English); anything
    else falls back to ``"ms"``. A region tag such as ``"en-GB"`` or
    ``"en_MY"`` counts as its language.
    """
    _check(answer, seed)
    language = (locale or "").replace("_", "-").split("-")[0].lower()
    clips = _clips(language if language in LOCALES else DEFAULT_LOCALE)
    rng = _rng(_AUDIO_DOMAIN, seed)
    rate = clips.rate

    def silence(low: float, high: float) -> list[float]:
        return [0.0] * round(rng.uniform(low, high) * rate)

    # A lead-in so players that fade in or start late miss nothing, then each
    # digit at its own volume and speed with an uneven pause after it.
    signal = silence(0.4, 0.7)
    for char in answer:
        signal += _stretch(
            clips.digits[char],
            factor=rng.uniform(0.94, 1.06),
            gain=rng.uniform(0.55, 1.0),
        )
        signal += silence(0.35, 0.8)
    signal += silence(0.1, 0.25)

    # Low-level background noise over the whole file, so no clip appears in
    # it byte for byte: uniform random bytes as int8, smoothed by averaging
    # neighbours (softer than white noise), at roughly -40 dBFS.
    noise = array.array("b", rng.randbytes(len(signal) + 1))
    level = rng.uniform(2.0, 3.5)
    samples = array.array(
        "h",
        (
            max(_INT16_MIN, min(_INT16_MAX, round(s + (a + b) * level)))
            for s, a, b in zip(signal, noise, noise[1:], strict=False)
        ),
    )
    if sys.byteorder == "big":
        samples.byteswap()

    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return out.getvalue()
