"""The two-factor service's rules, below the pages (frozen clock)."""

from __future__ import annotations

import pytest

from idp.models import RecoveryCode, TotpCredential
from idp.services.two_factor import (
    PENDING_LIFETIME,
    AlreadyOn,
    Verdict,
    has_second_factor,
)
from tests.factories import count, events, make_user
from tests.two_step import STEP, Clock, code_for, enable, service


@pytest.fixture
def clock():
    return Clock()


def test_a_pending_secret_is_shown_again_within_the_hour_then_replaced(
    app, dbsession, clock
):
    user = make_user(dbsession)
    two_factor = service(app, dbsession, clock)
    first = two_factor.begin(user)
    assert two_factor.begin(user) == first == two_factor.pending(user)
    # Pending is not on: nothing asks for a code yet.
    assert not has_second_factor(dbsession, user.id)
    assert two_factor.verify(user, code_for(first.secret, clock())) is Verdict.WRONG
    clock.advance(PENDING_LIFETIME)
    assert two_factor.pending(user) is None
    second = two_factor.begin(user)
    assert second.secret != first.secret
    assert count(dbsession, TotpCredential) == 1


def test_confirming_needs_a_code_of_the_pending_secret(app, dbsession, clock):
    user = make_user(dbsession)
    two_factor = service(app, dbsession, clock)
    assert two_factor.confirm(user, "123456") is None  # nothing pending
    secret = two_factor.begin(user).secret
    assert two_factor.confirm(user, code_for(secret, clock(), 2)) is None
    assert two_factor.confirm(user, "12345") is None
    codes = two_factor.confirm(user, code_for(secret, clock()))
    assert codes is not None and len(codes) == 10
    assert has_second_factor(dbsession, user.id)
    with pytest.raises(AlreadyOn):
        two_factor.begin(user)
    # The confirming code's step is used up: sign-in needs a later one.
    assert two_factor.verify(user, code_for(secret, clock())) is Verdict.WRONG
    clock.advance(STEP)
    assert two_factor.verify(user, code_for(secret, clock())) is Verdict.TOTP


def test_off_removes_everything_and_says_whether_it_was_on(app, dbsession, clock):
    user = make_user(dbsession)
    two_factor = service(app, dbsession, clock)
    assert two_factor.disable(user) is False
    assert events(dbsession, "two_step.disabled") == []
    with pytest.raises(ValueError, match="off"):
        two_factor.regenerate(user)
    _secret, codes = enable(app, dbsession, user, clock)
    assert two_factor.disable(user) is True
    assert count(dbsession, RecoveryCode) == 0
    assert two_factor.verify(user, codes[0]) is Verdict.WRONG
    (event,) = events(dbsession, "two_step.disabled")
    assert event.actor_user_id == user.id and event.detail == {"how": "account"}


def test_codes_are_per_user(app, dbsession, clock):
    """One user's recovery code or secret is worth nothing for another."""
    alice, bob = make_user(dbsession), make_user(dbsession)
    alice_secret, alice_codes = enable(app, dbsession, alice, clock)
    enable(app, dbsession, bob, clock)
    two_factor = service(app, dbsession, clock)
    assert two_factor.verify(bob, alice_codes[0]) is Verdict.WRONG
    assert two_factor.verify(bob, code_for(alice_secret, clock())) is Verdict.WRONG
    # A sealed secret copied onto another user's row does not open there.
    bob_row = dbsession.get(TotpCredential, bob.id)
    bob_row.secret = dbsession.get(TotpCredential, alice.id).secret
    dbsession.flush()
    assert two_factor.verify(bob, code_for(alice_secret, clock())) is Verdict.WRONG
    assert two_factor.verify(alice, alice_codes[0]) is Verdict.RECOVERY
    assert two_factor.recovery_codes_left(alice) == 9
