"""The node benchmark tells the real database page from any other answer.

``bench/bench_nodes.py`` restarts PostgreSQL mid-soak and counts an answer
during the outage as clean only if it is the bilingual 503 page with
``Retry-After`` and a reference; anything else is an error. That check is
only worth its name if it accepts the page the app really renders and
refuses the near misses a regression would produce.
"""

from __future__ import annotations

import pytest
import webtest
from sqlalchemy import text

from bench.bench_nodes import (
    Bench,
    Tally,
    outage_page_problem,
    parse_args,
    source_address,
)
from idp.db import make_engine
from tests.app import committing_browser, make_app
from tests.dbfaults import failing_statements

SESSION_COOKIE = "idp_session=" + "A" * 43


@pytest.fixture
def fault_engine(db_url, db_engine):
    engine = make_engine({"sqlalchemy.url": db_url})
    yield engine
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM idp_sessions"))
    engine.dispose()


def page(app, engine, error: str = "OperationalError") -> webtest.TestResponse:
    browser = committing_browser(app)
    with failing_statements(engine, r"FROM idp_sessions", error=error):
        return browser.get(
            "/login", headers={"Cookie": SESSION_COOKIE}, expect_errors=True
        )


def test_data_10_the_bench_accepts_the_database_page_and_nothing_else(
    settings, fault_engine
):
    """DATA-10: the soak's outage check, against the app's own pages."""
    app = make_app(settings, fault_engine)
    unavailable = page(app, fault_engine)
    assert unavailable.status_int == 503
    assert outage_page_problem(unavailable.headers, unavailable.body) is None

    # Without Retry-After, a client is not told when to come back.
    headers = {k: v for k, v in unavailable.headers.items() if k != "Retry-After"}
    assert "Retry-After" in outage_page_problem(headers, unavailable.body)
    # A plain-text answer (waitress's own, or a proxy's) is not the page.
    plain = {"Retry-After": "5", "Content-Type": "text/plain"}
    assert outage_page_problem(plain, b"Service Unavailable") is not None
    # The 500 page (a bug, not the database) with a Retry-After added.
    bug = page(app, fault_engine, error="IntegrityError")
    assert bug.status_int == 500
    headers = {**bug.headers, "Retry-After": "5"}
    assert "error code" in outage_page_problem(headers, bug.body)
    # The page with only one language.
    one_language = unavailable.body.replace(
        b"The service is temporarily unavailable", b""
    )
    assert outage_page_problem(unavailable.headers, one_language) is not None
    # The page with the fault's insides in it.
    leaking = unavailable.body + b"<pre>Traceback (most recent call last)</pre>"
    assert "Traceback" in outage_page_problem(unavailable.headers, leaking)


def test_auth_27_each_bench_visitor_has_a_24_of_its_own():
    """AUTH-27: sign-ins in the benchmark are not throttled as one address."""
    prefixes = {source_address(n).rsplit(".", 1)[0] for n in range(62_500)}
    assert len(prefixes) == 62_500
    assert all(p.startswith("127.") and p != "127.0.0" for p in prefixes)


def test_data_10_the_bench_counts_a_database_page_outside_the_outage_as_an_error(
    tmp_path, capsys
):
    """DATA-10: the 503 page is clean only while PostgreSQL is away.

    On the soak's clock: stopped at 20 s, accepting again at 25 s, node 1
    serving at 25.1 s and node 2 at 25.2 s. A page that began before both
    served is the outage's; one that began after is a node still failing
    with the database back, and a node that never served again is one that
    did not recover by itself.
    """
    bench = Bench(parse_args(["--soak-seconds", "60"]), tmp_path)
    restart = {"begun": 0.0, "stop": 20.0, "stopped": 20.3, "start": 24.9, "up": 25.0}
    tally = Tally()
    tally.unavailable += [
        (19.9, 20.1, 200.0),
        (22.0, 22.01, 10.0),
        (25.15, 25.16, 10.0),
    ]
    tally.ok += [(19.0, 5.0), (25.12, 5.0)]
    assert bench.outage_report(tally, restart, {0: 25.1, 1: 25.2}) == []
    assert "3 answers were the bilingual 503 page" in capsys.readouterr().out

    tally.unavailable.append((25.3, 25.31, 10.0))
    assert bench.outage_report(tally, restart, {0: 25.1, 1: 25.2}) == [
        "1 database pages with PostgreSQL serving"
    ]
    errors = bench.outage_report(tally, restart, {0: 25.1, 1: None})
    assert any("node 2 gave no 200" in error for error in errors)
    assert bench.outage_report(Tally(), {"begun": 0.0}, {}) == [
        "PostgreSQL was not restarted"
    ]
