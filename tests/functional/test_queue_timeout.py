"""A request that waited too long for a thread gets the busy page at once.

The age is measured from the front proxy's ``X-Request-Start`` (nginx's
``t=${msec}``, see idp.queuing); the tests set it as nginx would.
"""

from __future__ import annotations

import re
import threading
import time

import pytest
from sqlalchemy import func, select

from idp.models import Role
from idp.queuing import request_start
from idp.requestlog import REFERENCE_PATTERN
from tests.app import make_app
from tests.probe import PROBE_ROLE
from tests.served import exchange, request_bytes, serve

MS_TITLE = "Perkhidmatan sedang sibuk"
EN_TITLE = "The service is busy"


def started(seconds_ago: float) -> str:
    return f"t={time.time() - seconds_ago:.3f}"


def assert_busy_page(status: int, headers, body: str) -> None:
    assert status == 503
    assert int(headers["Retry-After"]) > 0
    assert 'data-error-code="busy"' in body
    assert MS_TITLE in body and EN_TITLE in body
    assert re.search(f'class="reference">{REFERENCE_PATTERN}<', body)


def probe_roles(dbsession) -> int:
    return dbsession.scalar(
        select(func.count()).select_from(Role).where(Role.name == PROBE_ROLE)
    )


def test_a_request_older_than_the_limit_gets_the_busy_page_and_does_nothing(
    testapp, dbsession
):
    page = testapp.get(
        "/_probe/write",
        headers={"X-Request-Start": started(31)},
        status=503,
    )
    assert_busy_page(page.status_int, page.headers, page.text)
    assert probe_roles(dbsession) == 0
    assert "idp_session=" not in page.headers.get("Set-Cookie", "")
    # Control: the same request, fresh, does its work.
    testapp.get("/_probe/write", headers={"X-Request-Start": started(29)})
    assert probe_roles(dbsession) == 1


@pytest.mark.parametrize(
    "value",
    [None, "", "soon", "t=", "t=-5", started(-3600), "t=17333568001234567"],
    # Fixed ids: the one from the clock differs between xdist workers.
    ids=["none", "empty", "word", "no-time", "negative", "future", "too-long"],
)
def test_no_usable_start_time_refuses_nothing(testapp, value):
    headers = {} if value is None else {"X-Request-Start": value}
    testapp.get("/login", headers=headers, status=200)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("t=1733356800.123", 1733356800.123),
        ("1733356800.5", 1733356800.5),
        ("t=1733356800123", 1733356800.123),
        ("t=1733356800123456", 1733356800.123456),
        ("t=1733356800", 1733356800.0),
        ("t=173335680", None),
        ("x=1733356800", None),
    ],
)
def test_request_start_reads_what_proxies_send(value, expected):
    if expected is None:
        assert request_start(value) is None
    else:
        assert request_start(value) == pytest.approx(expected)


def test_the_limit_can_be_turned_off(settings, db_engine, tm, dbsession):
    import webtest

    from tests.app import environ

    app = make_app({**settings, "idp.queue_timeout_seconds": "0"}, db_engine)
    browser = webtest.TestApp(app, extra_environ=environ(tm, dbsession))
    browser.get("/login", headers={"X-Request-Start": started(3600)}, status=200)


@pytest.mark.slow
def test_waiting_in_waitress_queue_counts(settings, db_engine):
    """Behind one busy thread, the wait in waitress's queue tips a request over.

    Both requests left "nginx" 0.7 s ago; only the one that then queued
    behind a busy thread for another half second passes the 1 s limit.
    """
    app = make_app(
        {**settings, "idp.queue_timeout_seconds": "1"}, db_engine, "tests.probe"
    )
    holding, release = app.registry["probe.holding"], app.registry["probe.release"]
    answers = {}

    def fetch(name: str, raw: bytes) -> None:
        answers[name] = exchange(port, raw)

    def login(age: float) -> bytes:
        return request_bytes(
            "GET", b"/login", headers=((b"X-Request-Start", started(age).encode()),)
        )

    with serve(app, threads=1) as port:
        assert exchange(port, login(0.7)).status == 200  # control: no queue
        holder = threading.Thread(
            target=fetch, args=("hold", request_bytes("GET", b"/_probe/hold"))
        )
        holder.start()
        assert holding.wait(10)
        queued = threading.Thread(target=fetch, args=("queued", login(0.7)))
        queued.start()
        time.sleep(0.5)  # the queued request waits for the only thread
        release.set()
        holder.join(10)
        queued.join(10)
    assert answers["hold"].status == 200
    busy = answers["queued"]
    assert_busy_page(busy.status, dict(busy.headers), busy.text)
