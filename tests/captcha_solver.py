"""An outsider's solver for the audio captcha (AUTH-23), used by the tests.

It is the attack of issue 11, written the way someone holding the source and
every clip the repository ships would write it: cut the WAV into words by
their energy, then name each word after the shipped clip that correlates
best with it, trying each clip at several speeds. It knows the answer's
length and the alphabet, as anyone reading the source does.

Nothing here is specific to one version of the renderer: the clips are
whatever ``idp/data/captcha-audio`` holds (every ``.wav`` under it, in any
sub-folder), so the same attack is run against the old and the new audio.
"""

from __future__ import annotations

import functools
import importlib.resources
import io
import itertools
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
# Then the best few templates again, at finer speeds around theirs.
REFINE = 6
FINE_STEPS = (-0.015, -0.0075, 0.0075, 0.015)
FRAME = 160  # 10 ms
# Word bumps: smoothed over 150 ms, at least 0.45 s apart (a word plus the
# shortest pause), each cut to at most 1.1 s.
SMOOTH = 15
MIN_GAP_S = 0.45
MAX_WORD_S = 1.1
TRIM_DB = 25
MARGIN = 3  # frames
# Threshold cuts: a word lasts at least MIN_WORD_S; quieter gaps shorter
# than MIN_PAUSE_S are inside a word.
MIN_WORD_S = 0.12
MIN_PAUSE_S = 0.12
LENGTH = 6  # captcha_media.LENGTH, as the source says


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
def clips() -> tuple[tuple[str, np.ndarray], ...]:
    """Every clip the repository ships: ``(digit, samples)``.

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
    return tuple((digit, read_wav(data)[1]) for digit, data in sorted(found))


def _template(clip: np.ndarray, factor: float) -> np.ndarray:
    template = _decimate(_resample(clip, factor))
    return template - template.mean()


@functools.cache
def templates() -> tuple[tuple[str, np.ndarray], ...]:
    """Every shipped clip at every stretch: ``(digit, samples)`` pairs."""
    return tuple(
        (digit, _template(clip, factor))
        for digit, clip in clips()
        for factor in STRETCHES
    )


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
    gap = round(MIN_PAUSE_S * RATE / FRAME)
    for run in runs:
        if merged and run[0] - merged[-1][1] < gap:
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    shortest = round(MIN_WORD_S * RATE / FRAME)
    return [(a, b) for a, b in merged if b - a >= shortest]


def _by_threshold(x: np.ndarray) -> list[np.ndarray]:
    """Cut ``x`` into words where the energy crosses a threshold.

    The threshold is swept up from the noise floor, in dB; the first that
    gives LENGTH words, none longer than a word can be, wins; [] if none
    does.
    """
    env = _envelope(x)
    floor = np.percentile(env, 10)
    peak = env.max()
    for db in np.linspace(3, 40, 38):
        threshold = floor * 10 ** (db / 20)
        if threshold >= peak:
            break
        segs = _segments(env, threshold)
        longest = round(MAX_WORD_S * RATE / FRAME)
        if len(segs) == LENGTH and all(b - a <= longest for a, b in segs):
            pad = FRAME * 3
            return [x[max(0, a * FRAME - pad) : b * FRAME + pad] for a, b in segs]
    return []


def _by_peaks(x: np.ndarray, count: int = LENGTH) -> list[np.ndarray]:
    """Cut ``x`` into ``count`` words by energy.

    The attacker knows from the source how many digits an answer has, so
    instead of a threshold (which babble between the words defeats) it
    takes the ``count`` loudest bumps of the smoothed energy at least
    MIN_GAP_S apart, and cuts between neighbours at the quietest point,
    keeping at most MAX_WORD_S around each bump and trimming off what is
    more than TRIM_DB quieter than the bump.
    """
    raw = _envelope(x) ** 2
    level = 10 * np.log10(np.convolve(raw, np.ones(SMOOTH) / SMOOTH, "same") + 1e-9)
    raw = 10 * np.log10(raw + 1e-9)
    order = np.argsort(level)[::-1]
    apart = round(MIN_GAP_S * RATE / FRAME)
    peaks: list[int] = []
    for i in order:
        if all(abs(i - p) >= apart for p in peaks):
            peaks.append(int(i))
            if len(peaks) == count:
                break
    peaks.sort()
    cuts = [0]
    for left, right in itertools.pairwise(peaks):
        cuts.append(left + int(np.argmin(level[left:right])))
    cuts.append(len(level))
    half = round(MAX_WORD_S * RATE / FRAME / 2)
    words = []
    for n, peak in enumerate(peaks):
        start = max(cuts[n], peak - half)
        end = min(cuts[n + 1], peak + half)
        # Trimmed to where it is within TRIM_DB of its loudest frame.
        region = raw[start:end]
        loud = np.flatnonzero(region >= region.max() - TRIM_DB)
        first = max(0, (start + loud[0] - MARGIN) * FRAME)
        last = (start + loud[-1] + 1 + MARGIN) * FRAME
        words.append(x[first:last])
    return words


def segment(x: np.ndarray) -> list[np.ndarray]:
    """Cut ``x`` into LENGTH words: by threshold if one gives that, else by peaks.

    A threshold cuts clean words where pauses are quiet; babble between the
    words defeats it, and then the LENGTH loudest bumps are taken.
    """
    return _by_threshold(x) or _by_peaks(x)


class _Bank:
    """Every template, zero-padded to one length, with its spectrum per FFT size.

    Correlating a word with all of them is then one batched FFT.
    """

    def __init__(self, pairs) -> None:
        self.digits = np.array([d for d, _ in pairs])
        self.lengths = np.array([len(t) for _, t in pairs])
        # Single precision: twice as fast, and ample for a correlation peak.
        self.padded = np.zeros((len(pairs), self.lengths.max()), dtype=np.float32)
        for i, (_, t) in enumerate(pairs):
            self.padded[i, : len(t)] = t
        self.energy = (self.padded**2).sum(axis=1)
        self._spectra: dict[int, np.ndarray] = {}

    def spectrum(self, size: int) -> np.ndarray:
        if size not in self._spectra:
            self._spectra[size] = np.conj(np.fft.rfft(self.padded, size, axis=1))
        return self._spectra[size]


@functools.cache
def _bank() -> _Bank:
    return _Bank(templates())


def scores(word: np.ndarray) -> dict[str, float]:
    """Each digit's best score: normalised cross-correlation with its clips.

    For each template, the correlation at each lag is normalised by the
    energy of the word under the template there, and weighted by how much
    of the word the template covers, so a short clip matching part of a
    longer word scores below that word's own clip.
    """
    bank = _bank()
    longest = bank.padded.shape[1]
    # Zeros after the word let longer templates slide past its end; the
    # correlation is circular but the padding keeps it from wrapping.
    word = np.concatenate((word, np.zeros(longest))).astype(np.float32)
    size = 1 << (len(word) - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(word, size)[None, :] * bank.spectrum(size), size)
    lags = len(word) - longest + 1
    corr = np.abs(corr[:, :lags])
    energy = np.concatenate(([0.0], np.cumsum(word.astype(np.float64) ** 2)))
    starts = np.arange(lags)[None, :]
    window = energy[starts + bank.lengths[:, None]] - energy[starts]
    spoken = len(word) - longest
    # Where a template lies mostly over the padding, its window is (near)
    # silent; a floor keeps rounding noise there from scoring.
    floor = 0.01 * energy[-1] / spoken * bank.lengths[:, None]
    local = corr / np.sqrt(np.maximum(window, floor) * bank.energy[:, None])
    cover = np.minimum(bank.lengths, spoken) / np.maximum(bank.lengths, spoken)
    best = local.max(axis=1) * cover
    found = {d: float(best[bank.digits == d].max()) for d in np.unique(bank.digits)}
    # Waveform correlation is sharp in speed: 2 % off over half a second
    # loses the peak. So the REFINE best templates are tried again at finer
    # speeds around theirs.
    spoken_word = word[:spoken].astype(np.float64)
    for index in np.argsort(best)[::-1][:REFINE]:
        digit, clip = clips()[index // len(STRETCHES)]
        factor = STRETCHES[index % len(STRETCHES)]
        for step in FINE_STEPS:
            score = _ncc(spoken_word, _template(clip, factor + step))
            found[digit] = max(found[digit], score)
    return found


def _ncc(word: np.ndarray, template: np.ndarray) -> float:
    """One template's score, as :func:`scores` computes it for all."""
    short, long_ = sorted((word, template), key=len)
    size = 1 << (len(long_) + len(short) - 1).bit_length()
    corr = np.fft.irfft(
        np.fft.rfft(long_, size) * np.conj(np.fft.rfft(short, size)), size
    )[: len(long_) - len(short) + 1]
    energy = np.concatenate(([0.0], np.cumsum(long_**2)))
    window = energy[len(short) :] - energy[: -len(short)]
    floor = 0.01 * energy[-1] / len(long_) * len(short)
    local = np.abs(corr) / np.sqrt(np.maximum(window, floor) * (short**2).sum())
    return float(local.max() * len(short) / len(long_))


def classify(word: np.ndarray) -> str:
    found = scores(word)
    return max(found, key=found.get)


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


def _words(wav: bytes) -> list[np.ndarray]:
    rate, x = read_wav(wav)
    if rate != RATE:
        x = _resample(x, rate / RATE)
    return segment(x)


def solve(wav: bytes) -> str:
    """The attacker's reading of a captcha WAV."""
    return "".join(classify(_decimate(word)) for word in _words(wav))


def solves(wav: bytes, answer: str) -> bool:
    """``solve(wav) == answer``, stopping at the first word read wrongly.

    The same attacker and the same verdict: each word is classified on its
    own (no word's reading depends on another's), so once one is wrong the
    answer cannot be read whole. Against audio that defeats the attack the
    first or second word is usually wrong, so this costs a fraction of
    :func:`solve`; against audio it reads, it costs the same.
    """
    words = _words(wav)
    if len(words) != len(answer):
        return False
    return all(
        classify(_decimate(word)) == digit
        for word, digit in zip(words, answer, strict=True)
    )
