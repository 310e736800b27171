"""``/metrics``: Prometheus text for the configured networks, a 404 for the rest.

The counters are process-wide (prometheus_client's registry), so every test
reads them before and after what it does and checks the difference.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from idp import metrics
from idp.models import OutboxMessage, SigningKey
from idp.settings import SettingsError, parse_settings
from tests.metadata_sources import make_source
from tests.saml_pages import response_of
from tests.saml_requests import (
    SP_ENTITY_ID,
    authn_request,
    logout_request,
    logout_response,
    redirect_query,
)
from tests.signin import sign_in
from tests.unit.test_settings import raw

SCRAPER = {"REMOTE_ADDR": "127.0.0.1"}  # development.ini allows 127.0.0.1/32
CRAFTED = "900101145678"  # a MyKad-shaped number nobody registered
SP_ENTITY = SP_ENTITY_ID


def scrape(client, **extra) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` from one scrape."""
    page = client.get("/metrics", extra_environ={**SCRAPER, **extra})
    assert page.status_int == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(page.text)
        for sample in family.samples
    }


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_from_an_allowed_address_are_prometheus_text(testapp):
    page = testapp.get("/metrics", extra_environ=SCRAPER)
    assert page.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "idp_session=" not in page.headers.get("Set-Cookie", "")
    families = {f.name for f in text_string_to_metric_families(page.text)}
    assert {
        "idme_requests",
        "idme_request_seconds",
        "idme_outbox_depth",
        "idme_outbox_oldest_age_seconds",
        "idme_scrape_error",
    } <= families
    samples = scrape(testapp)
    assert value(samples, "idme_scrape_error") == 0


@pytest.mark.parametrize("address", ["192.0.2.10", "127.0.0.2", "::1", "10.0.0.1"])
def test_metrics_refused_address_gets_the_404_page(testapp, address):
    """An outsider learns nothing: the same bilingual 404 page as a missing path."""
    page = testapp.get("/metrics", extra_environ={"REMOTE_ADDR": address}, status=404)
    assert 'data-error-code="not_found"' in page.text
    assert "idme_" not in page.text
    missing = testapp.get("/no-such-page", status=404)
    assert page.html.title.string == missing.html.title.string


def test_metrics_forwarded_header_from_outside_is_not_an_allowed_address(testapp):
    """The attack: an outsider sends ``X-Forwarded-For: 127.0.0.1``. WebOb's
    ``client_addr`` believed it (the first attempt let this in); only the
    peer address waitress sets, after its trusted_proxy rules, counts."""
    testapp.get(
        "/metrics",
        headers={"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1"},
        status=404,
    )


def test_metrics_empty_allow_list_is_404_for_everyone(testapp_with):
    client = testapp_with({"idp.metrics_allow": ""})
    client.get("/metrics", extra_environ=SCRAPER, status=404)


def test_metrics_allow_setting_is_checked_at_start():
    assert parse_settings(raw(), environ={})["idp.metrics_allow"] == ()
    networks = parse_settings(
        raw(**{"idp.metrics_allow": "10.0.5.20/32, 2001:db8::/64"}), environ={}
    )["idp.metrics_allow"]
    assert [str(n) for n in networks] == ["10.0.5.20/32", "2001:db8::/64"]
    for bad in ("0.0.0.0/0", "monitoring", "10.0.5.20/16"):
        with pytest.raises(SettingsError, match=r"^idp\.metrics_allow: "):
            parse_settings(raw(**{"idp.metrics_allow": bad}), environ={})
    with pytest.raises(SettingsError, match=r"did you mean idp\.metrics_allow"):
        parse_settings(raw(**{"idp.metric_allow": "10.0.0.1/32"}), environ={})


def test_metrics_count_requests_by_route_name_and_status_class(testapp):
    before = scrape(testapp)
    testapp.get("/login")
    testapp.get(f"/x/{CRAFTED}", status=404)
    after = scrape(testapp)
    for route, status_class in (("login.identifier", "2xx"), ("none", "4xx")):
        assert (
            value(after, "idme_requests_total", route=route, status_class=status_class)
            == value(
                before, "idme_requests_total", route=route, status_class=status_class
            )
            + 1
        )
    assert (
        value(after, "idme_request_seconds_count", route="login.identifier")
        == value(before, "idme_request_seconds_count", route="login.identifier") + 1
    )


def test_metrics_sso_and_failed_sign_in_are_counted(testapp, sp, user):
    before = scrape(testapp)
    sign_in(testapp, user, password="not the password", status=None)
    sign_in(testapp, user)
    testapp.get("/saml/sso/redirect?" + redirect_query(authn_request()))
    after = scrape(testapp)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("idme_sign_ins_total", outcome="failed") == 1
    assert grew("idme_sign_ins_total", outcome="success") == 1
    assert grew("idme_sso_total", sp=SP_ENTITY, outcome="assertion") == 1


def test_metrics_lock_and_throttle_are_counted(testapp, user):
    """Ten wrong passwords lock the account (AUTH limits); the next try is
    throttled."""
    before = scrape(testapp)
    for _ in range(10):
        sign_in(testapp, user, password="not the password", status=None)
    sign_in(testapp, user, status=None)
    after = scrape(testapp)

    def grew(outcome):
        return value(after, "idme_sign_ins_total", outcome=outcome) - value(
            before, "idme_sign_ins_total", outcome=outcome
        )

    assert (grew("failed"), grew("locked"), grew("throttled")) == (10, 1, 1)
    assert grew("success") == 0


def test_metrics_rate_limit_hits_past_the_limit_by_name_not_key(testapp, service):
    """reset.email allows 3 an hour: the 4th and 5th hits are counted under
    the limit's name; the key (an email) is in no label."""
    from idp.services.interfaces import IRateLimiter

    limiter = service(IRateLimiter)
    before = scrape(testapp)
    for _ in range(5):
        limiter.hit("reset.email", f"{CRAFTED}@example.com.my")
    after = scrape(testapp)
    assert value(after, "idme_rate_limit_exceeded_total", limit="reset.email") == (
        value(before, "idme_rate_limit_exceeded_total", limit="reset.email") + 2
    )
    text = testapp.get("/metrics", extra_environ=SCRAPER).text
    assert CRAFTED not in text


def test_metrics_sso_by_sp_off_folds_every_sp_into_all(testapp_with, sp, user):
    client = testapp_with({"idp.metrics_sso_by_sp": "false"})
    before = scrape(client)
    sign_in(client, user)
    client.get("/saml/sso/redirect?" + redirect_query(authn_request()))
    after = scrape(client)
    assert value(after, "idme_sso_total", sp="all", outcome="assertion") == (
        value(before, "idme_sso_total", sp="all", outcome="assertion") + 1
    )
    assert value(after, "idme_sso_total", sp=SP_ENTITY, outcome="assertion") == (
        value(before, "idme_sso_total", sp=SP_ENTITY, outcome="assertion")
    )


def test_metrics_no_label_holds_an_identity_number_email_or_issuer(testapp, sp, user):
    """The attack: mint series from outside with what a client may type (a
    crafted identity number, a path, an unregistered issuer, a user's own
    number and email) and look for any of it in the scrape."""
    before = scrape(testapp)
    sign_in(testapp, CRAFTED, password="guess", status=None)
    sign_in(testapp, user, password="wrong", status=None)
    testapp.get(f"/{CRAFTED}/{user.email}", status=404)
    testapp.get(f"/password/reset/{CRAFTED}", expect_errors=True)
    rogue = authn_request(issuer=f"https://evil.example/{CRAFTED}")
    testapp.get("/saml/sso/redirect?" + redirect_query(rogue), expect_errors=True)
    text = testapp.get("/metrics", extra_environ=SCRAPER).text
    digits = re.sub(r"\D", "", user.identifier)
    for secret in (CRAFTED, digits, user.identifier, user.email, "evil.example"):
        assert secret not in text
    # The rogue issuer is counted, under "unknown".
    after = scrape(testapp)
    refused = {"sp": "unknown", "outcome": "refused"}
    assert value(after, "idme_sso_total", **refused) == (
        value(before, "idme_sso_total", **refused) + 1
    )
    assert value(after, "idme_sign_ins_total", outcome="failed") == (
        value(before, "idme_sign_ins_total", outcome="failed") + 2
    )


def test_metrics_scrape_survives_a_database_error(testapp, app, monkeypatch, tmp_path):
    """The gauges' database is gone: the scrape still answers 200, the
    counters are there and ``idme_scrape_error`` says the gauges are not."""
    broken = create_engine(f"sqlite:///{tmp_path}/missing/dir/idp.sqlite")
    monkeypatch.setitem(app.registry, "dbengine", broken)
    samples = scrape(testapp)
    assert value(samples, "idme_scrape_error") == 1
    assert not any(name == "idme_outbox_depth" for name, _ in samples)
    assert any(name == "idme_requests_total" for name, _ in samples)


@pytest.mark.postgresql
def test_metrics_gauges_read_the_outbox_sources_and_pool(committing_testapp, db_engine):
    """The scrape's own connection and statement timeout (SET LOCAL on
    PostgreSQL), and timestamps as each driver returns them."""
    now = dt.datetime.now(dt.UTC)
    with Session(db_engine) as session, session.begin():
        session.add(
            OutboxMessage(
                template="welcome",
                recipient="a@example.com.my",
                message="sealed",
                created_at=now - dt.timedelta(seconds=600),
            )
        )
        session.add(
            SigningKey(
                kid="feedfacecafebeef",
                fingerprint="ab" * 32,
                certificate_pem="-----BEGIN CERTIFICATE-----",
                state="previous",
                not_after=now + dt.timedelta(days=30),
            )
        )
        make_source(
            session,
            "federation",
            fetched_at=now - dt.timedelta(seconds=300),
            valid_until=now + dt.timedelta(days=2),
        )
    samples = scrape(committing_testapp)
    assert value(samples, "idme_outbox_depth") == 1
    assert 590 < value(samples, "idme_outbox_oldest_age_seconds") < 900
    age = value(samples, "idme_metadata_source_age_seconds", source="federation")
    assert 290 < age < 600
    expiry = value(samples, "idme_metadata_source_expiry_seconds", source="federation")
    assert 2 * 86400 - 300 < expiry <= 2 * 86400
    days = value(
        samples,
        "idme_signing_key_expiry_days",
        kid="feedfacecafebeef",
        state="previous",
    )
    assert 29.9 < days <= 30
    assert value(samples, "idme_scrape_error") == 0
    assert value(samples, "idme_db_pool_size") >= 1


def test_metrics_slo_outcomes_are_counted(testapp, sp, user):
    """One SLO started by the SP, one naming a session nobody has, one
    answer for no pending leg (refused)."""
    saml = "urn:oasis:names:tc:SAML:2.0:assertion"
    before = scrape(testapp)
    sign_in(testapp, user)
    root = response_of(
        testapp.get("/saml/sso/redirect?" + redirect_query(authn_request()))
    )
    name_id = next(root.iter(f"{{{saml}}}NameID"))
    index = next(root.iter(f"{{{saml}}}AuthnStatement")).get("SessionIndex")
    for session_index in ("_no_such_session", index):
        xml = logout_request(
            name_id=name_id.text,
            name_id_format=name_id.get("Format"),
            session_index=session_index,
        )
        testapp.get("/saml/slo/redirect?" + redirect_query(xml, sign=True))
    stray = logout_response(in_response_to="_nothing")
    testapp.get(
        "/saml/slo/redirect?" + redirect_query(stray, sign=True, field="SAMLResponse"),
        status=400,
    )
    after = scrape(testapp)
    for outcome in ("unknown_principal", "started", "refused"):
        assert value(after, "idme_slo_total", outcome=outcome) == (
            value(before, "idme_slo_total", outcome=outcome) + 1
        ), outcome


def test_metrics_slo_outcome_is_an_allow_list():
    with pytest.raises(ValueError):
        metrics.slo_outcome("user 900101145678")


def test_metrics_processes_sharing_a_multiproc_dir_are_summed(
    monkeypatch, tmp_path, db_engine
):
    """Two nodes on one host with one PROMETHEUS_MULTIPROC_DIR: either
    node's scrape gives both processes' counts, not only its own."""
    import os
    import subprocess
    import sys

    count = (
        "from idp import metrics; metrics.audited('login.failure');"
        " metrics.request_done('login.identifier', 200, 0.01)"
    )
    root = os.path.dirname(os.path.dirname(metrics.__file__))
    env = {**os.environ, metrics.MULTIPROC_ENV: str(tmp_path), "PYTHONPATH": root}
    for _ in range(2):
        subprocess.run(
            [sys.executable, "-c", count],
            env=env,
            check=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    text = metrics.exposition(db_engine).decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert value(samples, "idme_sign_ins_total", outcome="failed") == 2
    assert value(samples, "idme_request_seconds_count", route="login.identifier") == 2
    assert value(samples, "idme_scrape_error") == 0


def test_metrics_scraper_may_name_the_node_by_address(testapp):
    """Like /healthz, each node is scraped by its own address, whatever
    idp.allowed_hosts says; every other page still checks the host."""
    page = testapp.get(
        "/metrics", extra_environ={**SCRAPER, "HTTP_HOST": "10.0.0.5:6543"}
    )
    assert page.status_int == 200
    testapp.get("/login", extra_environ={"HTTP_HOST": "10.0.0.5:6543"}, status=400)
    post = testapp.post("/metrics", extra_environ=SCRAPER, expect_errors=True)
    assert post.status_int in (400, 403, 405)
    assert "idme_" not in post.text


@pytest.mark.postgresql
def test_metrics_gauges_do_not_wait_for_an_exhausted_pool(db_url, db_engine):
    """Every pooled connection is taken (a stuck node): the scrape reads the
    gauges on its own connection at once, and reports the pool as full."""
    import time

    engine = create_engine(db_url, pool_size=1, max_overflow=0, pool_timeout=30)
    try:
        with engine.connect():
            start = time.perf_counter()
            text = metrics.exposition(engine).decode()
            elapsed = time.perf_counter() - start
    finally:
        engine.dispose()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert elapsed < 5
    assert value(samples, "idme_scrape_error") == 0
    assert value(samples, "idme_db_pool_checked_out") == 1
    assert value(samples, "idme_db_pool_size") == 1


def test_a_retried_attempt_counts_nothing_and_logs_no_line(testapp, caplog):
    """pyramid_retry runs a request again after a serialization failure: the
    thrown-away attempt's SSO answer, request count and log line must not
    make the request count twice (one request, one answer, one line)."""
    import logging

    caplog.set_level(logging.INFO, logger="idp.requests")
    before = scrape(testapp)
    page = testapp.get("/_probe/retry")
    assert page.text == "attempt 1"  # the second attempt answered
    after = scrape(testapp)
    sso = ("idme_sso_total", {"sp": "all", "outcome": "probe"})
    assert value(after, sso[0], **sso[1]) - value(before, sso[0], **sso[1]) == 1
    requests = {"route": "probe.retry", "status_class": "2xx"}
    assert (
        value(after, "idme_requests_total", **requests)
        - value(before, "idme_requests_total", **requests)
        == 1
    )
    assert (
        value(after, "idme_request_seconds_count", route="probe.retry")
        - value(before, "idme_request_seconds_count", route="probe.retry")
        == 1
    )
    lines = [
        record.getMessage()
        for record in caplog.records
        if record.name == "idp.requests" and "/_probe/retry" in record.getMessage()
    ]
    assert len(lines) == 1 and " 200 " in lines[0], lines
