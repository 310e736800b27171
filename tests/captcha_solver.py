"""An outsider's solver for the audio captcha (AUTH-23), used by the tests.

It is the attack of issue 11, written the way someone holding the source and
every clip the repository ships would write it: cut the WAV into words by
their energy, then name each word after the shipped clip that correlates
best with it, trying each clip at several speeds. It knows the answer's
length range and the alphabet, as anyone reading the source does.

Nothing here is specific to one version of the renderer: the clips are
whatever ``idp/data/captcha-audio`` holds (every ``.wav`` under it, in any
sub-folder), so the same attack is run against the old and the new audio.
"""

from __future__ import annotations

import functools
import importlib.resources
import io
import wave

import numpy as np

RATE = 16_000
# Correlation runs at a quarter of the rate: speech's first formants, which
# carry the words, lie below 2 kHz, and a coarser signal tolerates a speed
# mismatch better and is 4 x cheaper to correlate.
DECIMATE = 4
# Speed factors the attacker tries on each clip: the old renderer resampled
# by up to +-6 %. Finer steps (2 %) read a few per cent more of the old
# renderer's challenges at twice the cost.
STRETCHES = (0.88, 0.92, 0.96, 1.0, 1.04, 1.08, 1.12)
FRAME = 160  # 10 ms
MIN_WORD_S = 0.12
MIN_GAP_S = 0.12
LENGTHS = range(4, 9)


def read_wav(data: bytes) -> tuple[int, np.ndarray]:
    with wave.open(io.BytesIO(data), "rb") as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return rate, samples.astype(np.float64)


def _decimate(x: np.ndarray) -> np.ndarray:
    """Band-limit to the lower rate's Nyquist frequency and resample."""
    n = len(x) // DECIMATE
    if n < 2:
        return x[::DECIMATE]
    spectrum = np.fft.rfft(x)[: n // 2 + 1]
    return np.fft.irfft(spectrum, n) / DECIMATE


def _resample(x: np.ndarray, factor: float) -> np.ndarray:
    """``x`` played ``factor`` times faster (linear interpolation)."""
    n = max(2, int((len(x) - 1) / factor))
    return np.interp(np.arange(n) * factor, np.arange(len(x)), x)


@functools.cache
def templates() -> tuple[tuple[str, np.ndarray], ...]:
    """Every shipped clip at every stretch: ``(digit, samples)`` pairs.

    A clip's digit is its file name (``<digit>.wav``), wherever it sits.
    """
    root = importlib.resources.files("idp.data") / "captcha-audio"
    found = []

    def walk(folder):
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry)
            elif entry.name.endswith(".wav"):
                found.append((entry.name[0], entry.read_bytes()))

    walk(root)
    out = []
    for digit, data in sorted(found):
        _, clip = read_wav(data)
        for factor in STRETCHES:
            template = _decimate(_resample(clip, factor))
            out.append((digit, template - template.mean()))
    return tuple(out)


def _envelope(x: np.ndarray) -> np.ndarray:
    n = len(x) // FRAME
    frames = x[: n * FRAME].reshape(n, FRAME)
    return np.sqrt((frames**2).mean(axis=1) + 1e-9)


def _segments(env: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    loud = env > threshold
    runs = []
    start = None
    for i, on in enumerate(loud):
        if on and start is None:
            start = i
        elif not on and start is not None:
            runs.append([start, i])
            start = None
    if start is not None:
        runs.append([start, len(loud)])
    merged: list[list[int]] = []
    gap = round(MIN_GAP_S * RATE / FRAME)
    for run in runs:
        if merged and run[0] - merged[-1][1] < gap:
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    shortest = round(MIN_WORD_S * RATE / FRAME)
    return [(a, b) for a, b in merged if b - a >= shortest]


def segment(x: np.ndarray) -> list[np.ndarray]:
    """Cut ``x`` into words by energy.

    The threshold is swept from the noise floor up, in dB, and the first
    that gives a plausible number of words wins (the attacker knows the
    answer has 4 to 8 digits); failing that, the count closest to 6.
    """
    env = _envelope(x)
    floor = np.percentile(env, 10)
    peak = env.max()
    best = []
    for db in np.linspace(3, 40, 38):
        threshold = floor * 10 ** (db / 20)
        if threshold >= peak:
            break
        segs = _segments(env, threshold)
        if len(segs) in LENGTHS:
            best = segs
            break
        if not best or abs(len(segs) - 6) < abs(len(best) - 6):
            best = segs
    pad = FRAME * 3
    return [x[max(0, a * FRAME - pad) : b * FRAME + pad] for a, b in best]


def _ncc_max(segment: np.ndarray, template: np.ndarray) -> float:
    """Best normalised cross-correlation of ``template`` sliding over ``segment``."""
    if len(template) > len(segment):
        segment, template = template, segment
    n = len(segment) + len(template)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(
        np.fft.rfft(segment, size) * np.conj(np.fft.rfft(template, size)), size
    )[: len(segment) - len(template) + 1]
    # Normalised by the energy under the template at each lag, then weighted
    # by how much of the longer signal the shorter one covers, so a short
    # clip matching part of a longer word scores below that word's clip.
    energy = np.concatenate(([0.0], np.cumsum(segment**2)))
    window = energy[len(template) :] - energy[: -len(template)]
    local = np.abs(corr) / np.sqrt(np.maximum(window, 1e-9) * (template**2).sum())
    return float(local.max() * len(template) / len(segment))


def classify(word: np.ndarray) -> str:
    scores: dict[str, float] = {}
    for digit, template in templates():
        score = _ncc_max(word, template)
        if score > scores.get(digit, 0.0):
            scores[digit] = score
    return max(scores, key=scores.get)


def assemble(answer: str, rng, folder: str = "ms/m3") -> bytes:
    """The naive renderer the attack was written against, as a control.

    Shipped clips, resampled by up to +-6 %, scaled, spaced, over faint
    noise: what ``render_audio`` did before issue 11.
    """
    root = importlib.resources.files("idp.data") / "captcha-audio" / folder
    parts = [np.zeros(round(rng.uniform(0.4, 0.7) * RATE))]
    for char in answer:
        _, clip = read_wav((root / f"{char}.wav").read_bytes())
        parts.append(_resample(clip, rng.uniform(0.94, 1.06)) * rng.uniform(0.55, 1))
        parts.append(np.zeros(round(rng.uniform(0.35, 0.8) * RATE)))
    signal = np.concatenate(parts)
    signal += np.convolve(rng.normal(0, 150, len(signal)), [0.5, 0.5], "same")
    samples = np.clip(np.round(signal), -32768, 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples.tobytes())
    return out.getvalue()


def solve(wav: bytes) -> str:
    """The attacker's reading of a captcha WAV."""
    rate, x = read_wav(wav)
    if rate != RATE:
        x = _resample(x, rate / RATE)
    return "".join(classify(_decimate(word)) for word in segment(x))
