"""AUTH-26: a classifier built from the public source cannot tell decoys.

Decoys come from the pool once a deployment has enough users (real users'
pairs, ``idp/services/security_image.py``), from the phrase generator
before. The pool is what meets the bound; the generator's measurements
stay below as its history, and as the guarantee of deployments whose pool
is not ready.

The pool, measured when written (SQLite, three keys, min-max):

- Halves: a random half of each corpus registers through the real services
  (registration, then the first sign-in's own password) and is the pool;
  the other half are the real phrases; the decoys are the first different
  phrases the pool shows for unregistered numbers. Every attack scores
  42-54 %: phrases 44-53 %, held-out 43-54 %, blind dev 42-51 %, blind final
  42-52 %.
- Repeats are no tell in a deployment. Drawing as many decoys as the pool
  has users, with the repeats that brings, the same attacks scored 57-73 %
  for the first key (logistic regression 63-71 %), because in that split
  the real phrases' owners are not in the pool, so only decoys ever repeat.
  In a deployment every registered user is in the pool: with the whole
  corpus registered and half of its numbers looked up, the attacks scored
  29-52 %, the same phrases carrying both labels. A pool is also far larger
  than any attacker's sample, so their decoys rarely repeat at all.
- A harvest (``test_auth_26_a_harvest_of_the_pool_tells_nothing``): pairs
  gathered from as many unregistered numbers as the pool has users mark
  nothing, 51.7 % on 400 users; the plain next user after the number's
  position, which favours users after wide gaps in the ids, gives 62.1 %.

The generator. The attacker holds the source, so they can draw as many
decoys as they like (any key gives the same distribution) and they know
every word list and character model the generator ships. Against them stand hand-written
corpora of phrases as Malaysian pupils, parents and teachers type them:

- ``security_phrases.txt``: written before the generator; its everyday
  words were later copied into the lists, so its words are unusually known.
- ``security_phrases_heldout.txt``: written after the first generator.
- ``security_phrases_blind_dev.txt``: the first 220 lines of a blind corpus
  by a colleague who saw neither code nor corpora.
- ``security_phrases_blind_final.txt`` (placed by the lead after this
  generator was final; never seen while tuning): the unbiased test.

All three visible corpora were used to tune the generator's rates (new
words, case styles, shapes), so their scores are optimistic.

Attacks, each cross-validated over five folds for three deployment keys:
producibility (a phrase holding a word the generator could never write is
real), naive Bayes and logistic regression on character 1-3-grams, case,
length, word count, digits, punctuation and shipped-word membership, and a
likelihood ratio of order-4 character models (3,000 decoys drawn with the
attacker's own key, adapted to the training fold's real phrases and
decoys). Measured when written, min-max over the three keys:

=============  =============  ===========  ===========  ===========
corpus         producibility  naive Bayes  logistic     likelihood
=============  =============  ===========  ===========  ===========
phrases        50 %           57-59 %      57-60.1 %    49-51 %
held-out       50 %           60-68 %      64-65 %      57-61 %
blind dev      50.5 %         60-64 %      58-65 %      54-59 %
=============  =============  ===========  ===========  ===========

One decoy sample to the next moves a score a lot: over five further keys
(thirteen for the held-out set), naive Bayes and logistic regression
average 57 % on the phrases, 64 % on the held-out set (standard deviation
3.6 points) and 61 % on the blind dev.

Before (word lists only, and made-up names from syllables), first key:
held-out naive Bayes 75 %, logistic regression 77 %, producibility 77 %,
likelihood ratio 52 %; blind dev 68 %, 65 %, 70 %, 53 %; phrases 51 %,
52 %, 55 %, 49 %.
Decoys now hold words no list has (47 % of decoys, against 15 %, 75 % and
47 % of the three corpora's phrases), so producibility is at chance. Every
visible corpus still exceeds 60 % for some key: the corpora disagree with
each other (new words in 15 % against 75 % of phrases; the blind dev mostly
lower case and often four words or more, the held-out almost never lower
case and two or three words), and one generator sits between them. Those
three are strict xfails: open, stated, not hidden.

The blind final corpus, placed once the generator was final, measured with
the first key: producibility 51 %, naive Bayes 66 %, logistic regression
64 %, likelihood ratio 60 %. The generator alone does not meet AUTH-26's
bound; it is a strict xfail too, so a generator that meets the bound turns
it into a failure that asks for the mark to go. What is left is the long
tail of words no shipped list holds, which is why the pool exists;
suggestions (registration and first sign-in offer one from the
same generator, kept if untouched) make real phrases overlap decoys in a
deployment, which no hand-written corpus can show.
"""

from __future__ import annotations

import ast
import functools
import math
import random
import re
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from idp import security_images
from idp.forms import has_control_characters
from idp.forms.register import PHRASE_MAX, PHRASE_MIN
from idp.identifiers import Identifier
from idp.models import User
from idp.services import security_image
from idp.services.mail import Outbox
from idp.services.security_image import POOL_WINDOW, DecoyPool, decoy, shown_for
from idp.services.users import PasswordChange, Registration, UserService
from tests.factories import HASHER, make_user

DATA = Path(__file__).resolve().parents[2] / "data"
CORPUS = DATA / "security_phrases.txt"
HELD_OUT = DATA / "security_phrases_heldout.txt"
BLIND_DEV = DATA / "security_phrases_blind_dev.txt"
# Placed by the lead after the generator was final; never seen while tuning.
BLIND_FINAL = DATA / "security_phrases_blind_final.txt"
# Open defects, measured (max over KEYS): see the module docstring.
_OPEN = {
    CORPUS: "open: logistic regression 60.1 % for one key of three (its words "
    "were copied into the lists, so new words are rarer in it than in decoys)",
    HELD_OUT: "open: naive Bayes 60-68 %, logistic regression 64-65 %, "
    "likelihood ratio 57-61 % (three in four of its phrases hold a word in no "
    "list, the most of any corpus)",
    BLIND_DEV: "open: naive Bayes 60-64 %, logistic regression 58-65 % (mostly "
    "lower case and longer than the other corpora)",
    BLIND_FINAL: "open: naive Bayes 66 %, logistic regression 64 %, likelihood "
    "ratio 60 %, producibility 51 % (measured once, when placed; the old "
    "20-template generator was told 93-95 % of the time)",
}
CORPUS_PATHS = [
    path for path in (CORPUS, HELD_OUT, BLIND_DEV, BLIND_FINAL) if path.exists()
]
CORPORA = [
    pytest.param(
        path,
        id=path.stem,
        marks=[pytest.mark.xfail(strict=True, reason=_OPEN[path])]
        if path in _OPEN
        else [],
    )
    for path in CORPUS_PATHS
]
# The deployment's key is secret; the attacker's model uses keys of its own.
KEYS = ("deployment-key-one-" * 3, "deployment-key-two-" * 3, "key-three-" * 5)
SECRET = KEYS[0]
ATTACKER_KEY = "attacker-chosen-key-" * 3
ATTACKER_DECOYS = 3000
FOLDS = 5
MAX_ACCURACY = 0.60
PUNCTUATION = re.compile(r"[^\w\s]")


def corpus(path: Path = CORPUS) -> list[str]:
    """The hand-written phrases that the real validator would accept."""
    phrases = []
    for line in path.read_text(encoding="utf-8").splitlines():
        phrase = " ".join(line.split())
        if not phrase or phrase.startswith("#"):
            continue
        if PHRASE_MIN <= len(phrase) <= PHRASE_MAX:
            assert not has_control_characters(phrase)
            phrases.append(phrase)
    return sorted(set(phrases))


def source_strings() -> list[str]:
    """Every string literal in the decoy module's source, docstrings aside."""
    tree = ast.parse(Path(security_image.__file__).read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


@functools.cache
def shipped_words() -> frozenset[str]:
    """Every word in the decoy module's strings: the attacker's word lists."""
    return frozenset(
        word.lower() for text in source_strings() for word in re.findall(r"\w+", text)
    )


def case_pattern(phrase: str) -> str:
    letters = [w for w in phrase.split() if w[:1].isalpha()]
    if not letters:
        return "none"
    if phrase == phrase.lower():
        return "lower"
    if phrase == phrase.upper():
        return "upper"
    if all(w[0].isupper() for w in letters):
        return "title"
    if letters[0][0].isupper() and all(w == w.lower() for w in letters[1:]):
        return "sentence"
    return "mixed"


@functools.cache
def features(phrase: str, vocabulary: frozenset[str]) -> Counter:
    """The classifiers' features of ``phrase``; cached, so never to be changed."""
    found = Counter()
    text = f"^{phrase.lower()}$"
    for n in (1, 2, 3):
        for i in range(len(text) - n + 1):
            found[f"c{n}:{text[i : i + n]}"] += 1
    words = re.findall(r"\w+", phrase.lower())
    known = sum(w in vocabulary for w in words)
    share = known / len(words) if words else 0.0
    found[f"case:{case_pattern(phrase)}"] = 1
    found[f"len:{min(len(phrase) // 4, 10)}"] = 1
    found[f"words:{min(len(words), 7)}"] = 1
    found[f"known:{round(share * 4)}"] = 1
    found[f"unknown:{min(len(words) - known, 3)}"] = 1
    found[f"digits:{min(sum(c.isdigit() for c in phrase), 5)}"] = 1
    found[f"punct:{bool(PUNCTUATION.search(phrase))}"] = 1
    return found


class NaiveBayes:
    def fit(self, rows, labels):
        self.counts = {0: Counter(), 1: Counter()}
        self.prior = Counter(labels)
        for row, label in zip(rows, labels, strict=True):
            self.counts[label].update(row)
        self.totals = {k: sum(c.values()) for k, c in self.counts.items()}
        self.size = len(set(self.counts[0]) | set(self.counts[1])) + 1
        return self

    def predict(self, row) -> int:
        scores = {}
        for label in (0, 1):
            score = math.log(self.prior[label])
            for feature, times in row.items():
                p = (self.counts[label][feature] + 1) / (self.totals[label] + self.size)
                score += times * math.log(p)
            scores[label] = score
        return max(scores, key=scores.get)


class LogisticRegression:
    """L2-regularised, trained by AdaGrad over a few epochs."""

    def fit(self, rows, labels, epochs=25, rate=0.5, l2=1e-3, seed=1):
        # The same arithmetic in the same order as _probability and a plain
        # update loop, with each row's items (bias last) listed once rather
        # than copied into a new dict at every step of every epoch.
        self.weights = weights = defaultdict(float)
        squares = defaultdict(lambda: 1e-8)
        items = [[*row.items(), ("bias", 1)] for row in rows]
        order = list(range(len(rows)))
        rng = random.Random(seed)
        get, sqrt, exp = weights.get, math.sqrt, math.exp
        for _ in range(epochs):
            rng.shuffle(order)
            for i in order:
                row = items[i]
                z = sum(get(f, 0.0) * v for f, v in row)
                z = max(-30.0, min(30.0, z))
                error = 1 / (1 + exp(-z)) - labels[i]
                for feature, value in row:
                    weight = weights[feature]
                    gradient = error * value + l2 * weight
                    square = squares[feature] + gradient * gradient
                    squares[feature] = square
                    weights[feature] = weight - rate * gradient / sqrt(square)
        return self

    def _probability(self, row) -> float:
        z = sum(self.weights.get(f, 0.0) * v for f, v in row.items())
        z = max(-30.0, min(30.0, z))
        return 1 / (1 + math.exp(-z))

    def predict(self, row) -> int:
        return int(self._probability({**row, "bias": 1}) >= 0.5)


def cross_validated_accuracy(model, real: list[str], decoys: list[str]) -> float:
    vocabulary = shipped_words()
    samples = [(p, 0) for p in real] + [(p, 1) for p in decoys]
    random.Random(7).shuffle(samples)
    rows = [features(p, vocabulary) for p, _ in samples]
    labels = [label for _, label in samples]
    right = 0
    for fold in range(FOLDS):
        train = [i for i in range(len(rows)) if i % FOLDS != fold]
        test = [i for i in range(len(rows)) if i % FOLDS == fold]
        fitted = model().fit([rows[i] for i in train], [labels[i] for i in train])
        right += sum(fitted.predict(rows[i]) == labels[i] for i in test)
    return right / len(rows)


def decoys(count: int, key: str = SECRET) -> list[str]:
    return [decoy(key, f"{n:012d}")[1] for n in range(count)]


def producible(vocabulary: set[str]):
    """The attacker's exact test: could the generator have written this word?

    A word is producible if a word list holds it, it is a number, the
    character models could write it (2-14 characters of their alphabet; a
    model falls back to any of them), or it is two producible words joined;
    a phrase with an unproducible word cannot be a decoy.
    """
    alphabet = set(security_image.WORD_ALPHABET)
    low, high = security_image.WORD_LENGTHS

    def single(word: str) -> bool:
        return (
            word in vocabulary
            or word.isdigit()
            or (low <= len(word) <= high and set(word) <= alphabet)
        )

    def word_ok(word: str) -> bool:
        return single(word) or any(
            single(word[:i]) and single(word[i:]) for i in range(1, len(word))
        )

    def check(phrase: str) -> bool:
        return all(word_ok(w) for w in re.findall(r"\w+", phrase.lower()))

    return check


class CharacterModel:
    """An interpolated order-4 character model of phrases (lower-cased)."""

    ORDER = 4

    def __init__(self, phrases, prior=None, weight=20.0):
        # ``prior`` (another model) is what this one falls back on where its
        # own counts are thin: a small corpus then only moves the prior
        # where it has evidence.
        self.prior, self.weight = prior, weight
        self.counts = defaultdict(Counter)
        for phrase in phrases:
            text = "^" * self.ORDER + phrase.lower() + "$"
            for i in range(self.ORDER, len(text)):
                for order in range(self.ORDER + 1):
                    self.counts[text[i - order : i]][text[i]] += 1
        self.totals = {context: sum(c.values()) for context, c in self.counts.items()}
        self.letters = len(self.counts[""]) + 1

    def probability(self, context: str, letter: str) -> float:
        if self.prior is not None:
            p = self.prior.probability(context, letter)
            seen = self.counts.get(context[-self.ORDER :])
            total = self.totals.get(context[-self.ORDER :], 0)
            return ((seen[letter] if seen else 0) + self.weight * p) / (
                total + self.weight
            )
        p = 1 / (self.letters + 50)  # any letter at all, however rare
        for order in range(self.ORDER + 1):
            tail = context[len(context) - order :] if order else ""
            seen = self.counts.get(tail)
            if seen is None:
                break
            total = self.totals[tail]
            # Witten-Bell interpolation with the shorter context.
            kinds = len(seen)
            p = (seen[letter] + kinds * p) / (total + kinds)
        return p

    def log_likelihood(self, phrase: str) -> float:
        text = "^" * self.ORDER + phrase.lower() + "$"
        return sum(
            math.log(self.probability(text[i - self.ORDER : i], text[i]))
            for i in range(self.ORDER, len(text))
        )


_DECOY_MODEL = []


def decoy_model() -> CharacterModel:
    """The attacker's model of decoys: many drawn with a key of their own."""
    if not _DECOY_MODEL:
        _DECOY_MODEL.append(CharacterModel(decoys(ATTACKER_DECOYS, key=ATTACKER_KEY)))
    return _DECOY_MODEL[0]


def likelihood_ratio_accuracy(real: list[str], fake: list[str]) -> float:
    """Cross-validated: is log P(phrase | decoy) above log P(phrase | real)?

    Both models start from the attacker's model of decoys (many drawn with
    their own key) and are adapted to the training fold's real phrases and
    decoys respectively: where the small real sample has evidence the real
    model moves, elsewhere the two agree. Equal priors, so no threshold.
    """
    generated = decoy_model()
    samples = [(p, 0) for p in real] + [(p, 1) for p in fake]
    random.Random(7).shuffle(samples)
    right = 0
    for fold in range(FOLDS):
        train = [s for i, s in enumerate(samples) if i % FOLDS != fold]
        test = [s for i, s in enumerate(samples) if i % FOLDS == fold]
        as_real = CharacterModel([p for p, label in train if label == 0], generated)
        as_fake = CharacterModel([p for p, label in train if label == 1], generated)
        right += sum(
            (as_fake.log_likelihood(p) > as_real.log_likelihood(p)) == bool(label)
            for p, label in test
        )
    return right / len(samples)


def attack_scores(real: list[str], fake: list[str]) -> dict[str, float]:
    """Every attack's accuracy on real phrases against decoys."""
    check = producible(shipped_words())
    return {
        # A phrase the generator could not have written is called real.
        "producibility": (sum(not check(p) for p in real) + sum(map(check, fake)))
        / (len(real) + len(fake)),
        "naive Bayes": cross_validated_accuracy(NaiveBayes, real, fake),
        "logistic regression": cross_validated_accuracy(LogisticRegression, real, fake),
        "likelihood ratio": likelihood_ratio_accuracy(real, fake),
    }


@pytest.mark.parametrize("path", CORPORA)
def test_auth_26_the_generator_alone_is_told_from_real_phrases(path):
    """AUTH-26's history: the generator's phrases against every corpus, several keys.

    Strict xfails while no generator meets the bound: the generator stays
    the decoy source of deployments whose pool is not ready yet.
    """
    for key in KEYS:
        real = corpus(path)
        fake = decoys(len(real), key)
        check = producible(shipped_words())
        assert all(check(p) for p in fake), [p for p in fake if not check(p)]
        scores = attack_scores(real, fake)
        print(path.name, {name: round(value, 3) for name, value in scores.items()})
        assert max(scores.values()) <= MAX_ACCURACY, (path.name, scores)


def register_pool(app, dbsession, phrases: list[str], seed: int) -> list[User]:
    """Users with these phrases, registered and signed in as people would be.

    Through the real services: registration (the pair chosen on its form),
    then the first sign-in's own password. Images are chosen at random.
    """
    registry = app.registry
    outbox = Outbox(
        dbsession, registry["idp.mail.composer"], registry["idp.mail.codec"]
    )
    users = UserService(dbsession, HASHER, outbox, temporary_hours=72)
    rng = random.Random(seed)
    registered = []
    for n, phrase in enumerate(phrases):
        user = users.register(
            Registration(
                category="student",
                identifier=Identifier("mykad", f"080512{n:06d}"),
                full_name=f"Murid Nombor {n}",
                email=f"murid{n}@example.com.my",
                phone="+60123456789",
                institution=None,
                security_image=rng.choice(security_images.CATALOGUE).id,
                security_phrase=phrase,
                locale="ms",
            )
        )
        users.set_password(
            user, f"kata laluan sendiri nombor {n}", how=PasswordChange.FIRST_SIGN_IN
        )
        registered.append(user)
    dbsession.flush()
    return registered


def unregistered(count: int) -> list[str]:
    """Numbers nobody in these tests registers (born 1 January 1990)."""
    return [f"900101{n:06d}" for n in range(count)]


def distinct_decoys(key: str, pool: DecoyPool, count: int) -> list[str]:
    """The first ``count`` different phrases the pool shows for unregistered numbers.

    A deployment's pool holds far more users than an attacker looks numbers
    up, so the decoys they see are different users' phrases; a test pool as
    small as a corpus would repeat them (see the module docstring).
    """
    seen: dict[str, None] = {}
    for number in unregistered(40 * count):
        seen.setdefault(shown_for(key, number, None, pool)[1])
        if len(seen) == count:
            return list(seen)
    raise AssertionError(f"the pool showed only {len(seen)} of its {count} users")


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in CORPUS_PATHS])
def test_auth_26_no_attack_tells_decoys_from_real_phrases(path, app, dbsession):
    """AUTH-26: once the pool is ready, every attack scores <= 60 %, for several keys.

    A random half of the corpus registers, through the real services (the
    pool); the other half are the real phrases the attacker sees, and the
    decoys are what the pool shows for unregistered numbers, as many
    different ones.
    """
    phrases = corpus(path)
    random.Random(26).shuffle(phrases)
    pool_phrases, real = phrases[: len(phrases) // 2], phrases[len(phrases) // 2 :]
    register_pool(app, dbsession, pool_phrases, seed=len(phrases))
    for key in KEYS:
        pool = DecoyPool(dbsession, key, ready_at=len(pool_phrases))
        fake = distinct_decoys(key, pool, min(len(real), len(pool_phrases)))
        assert set(fake) <= set(pool_phrases)
        scores = attack_scores(real, fake)
        print(path.name, {name: round(value, 3) for name, value in scores.items()})
        assert max(scores.values()) <= MAX_ACCURACY, (path.name, scores)


def harvest_accuracy(dbsession, users: list[User], window: int) -> float:
    """The harvest attack's balanced accuracy against a pool read ``window`` wide.

    The attacker looks up as many numbers nobody holds as the pool has
    users and keeps every pair shown; then a pair among those is called a
    decoy, any other pair a registered number's.
    """
    pool = DecoyPool(dbsession, SECRET, ready_at=len(users), window=window)
    numbers = unregistered(len(users) + 2000)
    harvest = {pool.pick(n) for n in numbers[: len(users)]}
    own = [(u.security_image, u.security_phrase) for u in users]
    decoyed = [pool.pick(n) for n in numbers[len(users) :]]
    registered_right = sum(pair not in harvest for pair in own) / len(own)
    decoys_right = sum(pair in harvest for pair in decoyed) / len(decoyed)
    return (registered_right + decoys_right) / 2


def test_auth_26_a_harvest_of_the_pool_tells_nothing(dbsession):
    """AUTH-26: pairs gathered from numbers nobody holds do not mark decoys.

    Every registered number's pair is in the pool, so having seen a pair
    before proves nothing. Control: read one candidate wide (the plain next
    user after the number's position), the pool favours users after wide
    gaps in the random ids, and the same harvest tells numbers apart.
    """
    rng = random.Random(2026)
    phrases = corpus()[:400]
    users = [
        make_user(
            dbsession,
            id=uuid.UUID(int=rng.getrandbits(128)),
            security_image=rng.choice(security_images.CATALOGUE).id,
            security_phrase=phrase,
            password=None,
        )
        for phrase in phrases
    ]
    accuracy = harvest_accuracy(dbsession, users, POOL_WINDOW)
    control = harvest_accuracy(dbsession, users, window=1)
    print({"harvest": round(accuracy, 3), "next user only": round(control, 3)})
    assert accuracy <= MAX_ACCURACY
    assert control >= 0.57


def test_corpus_is_large_and_varied_enough_to_mean_something():
    real = corpus()
    assert len(real) >= 400
    assert {case_pattern(p) for p in real} >= {"lower", "title", "sentence", "mixed"}
    assert sum(any(c.isdigit() for c in p) for p in real) >= 30
    assert len(corpus(HELD_OUT)) >= 150
    assert len(corpus(BLIND_DEV)) >= 200


def test_the_classifiers_find_a_real_difference_when_there_is_one():
    """Control: the same attacks tell real phrases from a visibly different set."""
    real = corpus()
    shouted = [p.upper() + " 2000" for p in real]
    for model in (NaiveBayes, LogisticRegression):
        assert cross_validated_accuracy(model, real, shouted) >= 0.9
    # The likelihood ratio models text, not case; and its fake model must
    # not see the real phrases' own words, so its marked set is decoys.
    marked = [p + " 2000" for p in decoys(len(real), KEYS[1])]
    assert likelihood_ratio_accuracy(real, marked) >= 0.7


def test_a_new_word_never_offends():
    """Decoys show new words; none of them may be profanity or a slur."""
    words = set()
    for n in range(20000):
        words.update(re.findall(r"\w+", decoy(SECRET, f"{n:012d}")[1].lower()))
    # The lists are written by hand ("Semporna" holds a blocked part); the
    # filter is for the words the character models make up.
    blocked = [w for w in words - shipped_words() if security_image._offends(w)]
    assert not blocked
    # Control: the filter itself catches what it must, whole and inside.
    assert security_image._offends("Babi")
    assert security_image._offends("kafuckan")
    assert not security_image._offends("kelass")
