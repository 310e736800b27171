"""How long a lock from failed sign-ins lasts (AUTH-29)."""

from __future__ import annotations

import datetime as dt

import pytest

from idp.services.ratelimit import Decision
from idp.services.signin import lock_period


@pytest.mark.parametrize(
    ("count", "limit", "minutes"),
    [(1, 3, 15), (2, 3, 60), (3, 3, 240), (4, 3, 240), (50, 3, 240), (5, 5, 3840)],
)
def test_auth_29_locks_grow_to_a_cap_and_never_become_permanent(count, limit, minutes):
    """AUTH-29: the n-th lock of a day lasts 15 min x 4^(n-1), capped at the limit's n."""
    locks = Decision(allowed=count <= limit, count=count, limit=limit, retry_after=0)
    assert lock_period(locks) == dt.timedelta(minutes=minutes)
