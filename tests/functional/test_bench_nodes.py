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

from bench.bench_nodes import outage_page_problem, source_address
from idp.db import make_engine
from tests.app import TEST_BASE_URL, TEST_HOST, make_app
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
    browser = webtest.TestApp(
        app,
        extra_environ={
            "HTTP_HOST": TEST_HOST,
            "HTTP_ORIGIN": TEST_BASE_URL,
            "wsgi.url_scheme": "https",
            "REMOTE_ADDR": "192.0.2.10",
        },
    )
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
