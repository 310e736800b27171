"""AUTH-23: the audio captcha against a machine that holds the clips.

The attack (``tests/captcha_solver.py``) segments each WAV by energy and
names each word after the shipped clip, of every voice and language, that
correlates best with it at seven speeds, refined around the best. Against
the renderer before issue 11 (and its 20 clips) it read 95 % of the
challenges; the vocoded digits over babble must defeat it, while a naive
assembly of today's clips (the control) still falls to it.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from idp.services import captcha_media
from tests import captcha_solver

CHALLENGES = 200
# The most the attack may solve: 5 % of CHALLENGES.
MAX_SOLVED = CHALLENGES // 20


def _challenges(count: int, label: int):
    rng = random.Random(label)
    for i in range(count):
        answer = captcha_media.random_answer(rng)
        yield answer, ("ms", "en")[i % 2], rng.randbytes(16)


@pytest.mark.slow
def test_auth_23_shipped_clip_attack_solves_at_most_5_percent():
    """AUTH-23: segment + correlate with every shipped clip solves <= 5 %."""
    solved = sum(
        captcha_solver.solves(captcha_media.render_audio(answer, locale, seed), answer)
        for answer, locale, seed in _challenges(CHALLENGES, 23)
    )
    assert solved <= MAX_SOLVED, f"the attack solved {solved} of {CHALLENGES}"


def test_auth_23_control_the_attack_reads_shipped_clips_played_as_they_are():
    """AUTH-23 control: the same attack reads the clips when they are not vocoded.

    Also the control of the early stop the 200-challenge test uses:
    ``solves`` gives ``solve``'s verdict on every trial, read or not, here
    and on a few challenges of the real renderer.
    """
    rng = np.random.default_rng(23)
    trials = list(_challenges(20, 24))
    solved = 0
    for i, (answer, locale, _) in enumerate(trials):
        wav = captcha_solver.assemble(answer, rng, f"{locale}/{('m3', 'f2')[i % 2]}")
        read = captcha_solver.solve(wav) == answer
        if i < 4:
            assert captcha_solver.solves(wav, answer) is read, answer
            # Wrong in the last digit only: not read, though five words are.
            wrong = answer[:-1] + str((int(answer[-1]) + 1) % 10)
            assert captcha_solver.solves(wav, wrong) is False, answer
        solved += read
    # It reads about 95 % of them; 70 % is far above the 5 % the real audio
    # must stay under.
    assert solved >= 14, f"the attack only solved {solved} of {len(trials)}"
    for answer, locale, seed in _challenges(3, 23):
        wav = captcha_media.render_audio(answer, locale, seed)
        read = captcha_solver.solve(wav) == answer
        assert captcha_solver.solves(wav, answer) is read, answer


def test_auth_23_words_cut_exactly_still_do_not_match_a_clip():
    """AUTH-23: even cut where the words really are, correlation reads few digits.

    A stronger attacker than any segmenter: the word boundaries come from
    the speech track alone, which no attacker has. Per digit, correlation
    must stay near chance (10 %; at most 40 %), and at most one answer in
    20 be read whole.
    """
    right = total = whole = 0
    for answer, locale, seed in _challenges(20, 25):
        spans = captcha_media.render_parts(answer, locale, seed).words
        _, x = captcha_solver.read_wav(captcha_media.render_audio(answer, locale, seed))
        margin = 3 * captcha_solver.FRAME
        read = "".join(
            captcha_solver.classify(
                captcha_solver._decimate(x[max(0, a - margin) : b + margin])
            )
            for a, b in spans
        )
        right += sum(r == c for r, c in zip(read, answer, strict=True))
        total += len(answer)
        whole += read == answer
    assert right <= 0.4 * total, f"{right} of {total} digits read"
    assert whole <= 1
