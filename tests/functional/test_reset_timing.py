"""AUTH-28: "Forgot password" costs the same whether the email is registered."""

from __future__ import annotations

import statistics

import pytest
import webtest

from tests.app import environ, make_app
from tests.factories import make_user
from tests.timing import median_gap, paired_samples, same_cost

SAMPLES = 200
UNKNOWN = "tiada.sesiapa@example.com.my"


@pytest.fixture(scope="module")
def unlimited_app(settings, db_engine):
    """Limits high enough that no request is throttled: this measures the work
    of a request that sends a link, not the refusal of a throttled one."""
    return make_app(
        {
            **settings,
            "ratelimit.reset.address": "1000000/60",
            "ratelimit.reset.email": "1000000/60",
        },
        db_engine,
    )


@pytest.mark.slow
def test_auth_28_registered_and_unknown_emails_cost_the_same(
    unlimited_app, tm, dbsession, mailbox
):
    """AUTH-28: over 200 paired requests, the median difference is under 10 % of
    the step's median."""
    user = make_user(dbsession)
    browser = webtest.TestApp(unlimited_app, extra_environ=environ(tm, dbsession))
    form = browser.get("/password/forgot?lang=en").forms["reset-request-form"]

    def ask(email):
        form["email"] = email
        assert form.submit(status=303).location.endswith("/password/forgot/sent")

    ask(user.email), ask(UNKNOWN)  # warm both paths

    def trial():
        known, unknown = paired_samples(
            SAMPLES, lambda: ask(user.email), lambda: ask(UNKNOWN)
        )
        gap = median_gap(known, unknown)
        known_ms, unknown_ms = statistics.median(known), statistics.median(unknown)
        return (
            gap,
            0.10 * max(known_ms, unknown_ms),
            f"registered {known_ms:.2f} ms, unknown {unknown_ms:.2f} ms, "
            f"gap {gap:.2f} ms",
        )

    trials = same_cost(trial)
    # The control: the registered email really got its links, the unknown none.
    assert len(mailbox(user.email)) == SAMPLES * trials + 1
    assert mailbox(UNKNOWN) == []
