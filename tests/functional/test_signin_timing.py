"""AUTH-06: a wrong password costs the same whether the number is registered."""

from __future__ import annotations

import statistics
import time

import pytest

from idp.services.audit import AuditLog
from idp.services.passwords import BcryptPasswordService
from idp.services.ratelimit import DatabaseRateLimiter, parse_limits
from idp.services.signin import Outcome, SignInService
from idp.services.users import UserService
from tests.factories import make_user

# About 60 ms a check (production's cost 12 is about 245 ms). Much lower and
# a tenth of a check drops to the size of the database's own jitter inside
# the test transaction (about 1-2 ms), which says nothing about bcrypt.
ROUNDS = 10
SAMPLES = 100


def service(dbsession, passwords) -> SignInService:
    # Limits high enough that no attempt is throttled or locks the account:
    # this measures the work of checking, not the refusal of a blocked request.
    limits = parse_limits(
        {
            f"ratelimit.{name}": "1000000/60"
            for name in (
                "login.identifier",
                "login.address",
                "login.prefix",
                "login.global",
            )
        }
    )
    return SignInService(
        dbsession,
        users=UserService(dbsession, passwords, None, temporary_hours=72),
        passwords=passwords,
        limiter=DatabaseRateLimiter(dbsession, "k" * 48, limits),
        audit=AuditLog(dbsession),
        outbox=None,
    )


def timed_ms(action) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def medians_ms(*actions) -> list[float]:
    """The median time of each action, sampled in turn so drift hits all alike."""
    samples = [[] for _ in actions]
    for _ in range(SAMPLES):
        for times, action in zip(samples, actions, strict=True):
            times.append(timed_ms(action))
    return [statistics.median(times) for times in samples]


@pytest.mark.slow
def test_auth_06_wrong_and_unknown_cost_the_same(dbsession):
    """AUTH-06: medians of 100 attempts differ by under 10 % of one bcrypt check."""
    passwords = BcryptPasswordService(rounds=ROUNDS)
    signin = service(dbsession, passwords)
    user = make_user(dbsession, password_hash=passwords.hash("the real password 1"))
    hashed = user.password_hash

    def known():
        result = signin.attempt(
            user.identifier, "mykad", "a wrong password", "192.0.2.1"
        )
        assert result.outcome is Outcome.FAILED

    def unknown():
        result = signin.attempt(
            "900101145678", "mykad", "a wrong password", "192.0.2.1"
        )
        assert result.outcome is Outcome.FAILED

    def check():
        passwords.verify("a wrong password", hashed)

    known(), unknown()  # warm both paths
    known_ms, unknown_ms, one_check = medians_ms(known, unknown, check)
    print(
        f"known {known_ms:.2f} ms, unknown {unknown_ms:.2f} ms, check {one_check:.2f} ms"
    )
    assert abs(known_ms - unknown_ms) < 0.10 * one_check, (known_ms, unknown_ms)
    # What makes them equal: the unknown number pays for a full check too.
    assert unknown_ms > one_check
