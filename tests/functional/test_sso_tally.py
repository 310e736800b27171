"""Assertions per SP and hour (idp.saml.tally): what the console's charts read.

Session rows, which the dashboard used to count, are purged within hours;
these counts last. Each node counts in memory and adds its counts about
once a minute in one SSO's transaction.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import delete, func, select

from idp.models import SessionParticipant, SsoHourlyCount
from idp.saml.tally import SsoTally
from idp.services.reports import Reports
from tests.factories import make_module, make_role, make_user
from tests.saml_metadata import make_sp_metadata
from tests.saml_pages import response_of, status_of
from tests.saml_requests import authn_request, redirect_query
from tests.signin import sign_in

SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"


class Clock:
    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds


def test_counts_wait_in_memory_until_the_minute_is_over():
    clock = Clock()
    hour = dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.UTC)
    tally = SsoTally(60, monotonic=clock, now=lambda: hour + dt.timedelta(minutes=7))
    for sp in (1, 1, 2):
        tally.count(sp)
    assert not tally.due()
    clock.seconds += 60
    assert tally.due()
    assert tally.take() == {(1, hour): 2, (2, hour): 1}
    assert not tally.due()  # the next minute starts at the take
    assert tally.take() == {}


@pytest.mark.postgresql
def test_a_flush_adds_to_the_hour_and_skips_an_sp_removed_meanwhile(dbsession):
    from idp.saml.registry import import_sp

    make_module(dbsession, "emis")
    sp = import_sp(dbsession, make_sp_metadata(), module_code="emis")
    dbsession.flush()
    hour = dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.UTC)
    tally = SsoTally(0, now=lambda: hour)
    for _ in range(3):
        tally.count(sp.id)
    tally.flush(dbsession)
    for _ in range(2):
        tally.count(sp.id)
    tally.count(987_654)  # no such SP any more
    tally.flush(dbsession)
    rows = dbsession.execute(select(SsoHourlyCount.sp_id, SsoHourlyCount.count)).all()
    assert rows == [(sp.id, 5)]


@pytest.mark.postgresql
def test_the_dashboard_counts_sso_per_module_after_sessions_are_purged(
    testapp, dbsession, app
):
    """An SSO through the app is counted (the flush made due at once), and
    the 30-day chart still shows it once the session rows are gone."""
    from idp.saml.registry import import_sp

    module = make_module(dbsession, "emis")
    import_sp(dbsession, make_sp_metadata(), module_code="emis")
    user = make_user(dbsession)
    user.roles.append(make_role(dbsession, "guru", module))
    dbsession.flush()
    sign_in(
        testapp, f"{user.identifier[:6]}-{user.identifier[6:8]}-{user.identifier[8:]}"
    )
    tally = app.registry["idp.saml.tally"]
    tally.take()
    for _ in range(3):
        page = testapp.get("/saml/sso/redirect?" + redirect_query(authn_request()))
        assert status_of(response_of(page)) == [SUCCESS]
    assert dbsession.scalar(select(func.sum(SsoHourlyCount.count))) in (None, 0)
    tally.interval, tally._due = 0, 0  # the minute is over
    page = testapp.get("/saml/sso/redirect?" + redirect_query(authn_request()))
    assert status_of(response_of(page)) == [SUCCESS]
    tally.interval = 60.0
    assert dbsession.scalar(select(func.sum(SsoHourlyCount.count))) == 4
    dbsession.execute(delete(SessionParticipant))
    for window in ("24h", "30d"):
        assert Reports(dbsession).dashboard(window).sso_per_module == [("emis", 4)]
