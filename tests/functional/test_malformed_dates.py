"""OPS-09: dates no calendar can hold, in SAML requests and SP metadata.

``0001-01-01T00:00:00+14:00`` is a well-formed xs:dateTime whose UTC value
falls before year 1; ``9999-12-31T23:59:59-14:00`` one after year 9999.
Python's ``datetime`` parses both and then raises ``OverflowError`` when
asked for UTC. An SP that does not sign its requests needs no key to send
one, so each of the four SAML endpoints must answer with the bilingual
``saml_bad_message`` page, and ``idp-admin sp import`` with one line. Each
attack is paired with the same message carrying an ordinary date.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from idp.models import PendingSamlRequest, SeenRequestId, ServiceProvider
from tests.cli import admin, assert_refused
from tests.saml_metadata import SP_ENTITY_ID, make_sp_metadata
from tests.saml_requests import (
    SLO_POST,
    SLO_REDIRECT,
    SSO_POST,
    SSO_REDIRECT,
    authn_request,
    logout_request,
    new_id,
    post_fields,
    redirect_query,
    sign_xml,
)
from tests.signin import sign_in

OUT_OF_RANGE = {
    "before-year-1": "0001-01-01T00:00:00+14:00",
    "after-year-9999": "9999-12-31T23:59:59-14:00",
}
# A fixed, recognisable moment the tests put into a message, then replace.
PLACEHOLDER = dt.datetime(2000, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
PLACEHOLDER_TEXT = "2000-01-02T03:04:05Z"
ENDPOINTS = ("sso-redirect", "sso-post", "slo-redirect", "slo-post")


def now_text() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def message(endpoint: str, issue_instant: str) -> str:
    """An AuthnRequest or LogoutRequest for ``endpoint``, IssueInstant as given."""
    if endpoint.startswith("sso"):
        xml = authn_request(
            request_id=new_id(),
            issue_instant=PLACEHOLDER,
            destination=SSO_REDIRECT if endpoint == "sso-redirect" else SSO_POST,
        )
    else:
        xml = logout_request(
            name_id="nobody",
            name_id_format="urn:oasis:names:tc:SAML:2.0:nameid-format:transient",
            session_index=None,
            issue_instant=PLACEHOLDER,
            destination=SLO_REDIRECT if endpoint == "slo-redirect" else SLO_POST,
        )
    assert PLACEHOLDER_TEXT in xml
    return xml.replace(PLACEHOLDER_TEXT, issue_instant)


def send(testapp, endpoint: str, issue_instant: str):
    xml = message(endpoint, issue_instant)
    # LogoutRequests must be signed; the signature covers the bad date, so
    # the date is what the IdP reaches once the signature is good.
    signed = endpoint.startswith("slo")
    if endpoint.endswith("redirect"):
        path = "/saml/" + endpoint.replace("-", "/")
        query = redirect_query(xml, relay_state="r1", sign=signed)
        return testapp.get(f"{path}?{query}", expect_errors=True)
    data = sign_xml(xml) if signed else xml
    path = "/saml/" + endpoint.replace("-", "/")
    return testapp.post(path, post_fields(data, relay_state="r1"), expect_errors=True)


def error_code(page) -> str | None:
    if page.content_type != "text/html":
        return None  # a 303 onwards
    node = page.html.select_one("[data-error-code]")
    return node["data-error-code"] if node is not None else None


def written(dbsession) -> tuple[int, int]:
    return (
        dbsession.scalar(select(func.count()).select_from(PendingSamlRequest)),
        dbsession.scalar(select(func.count()).select_from(SeenRequestId)),
    )


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("when", sorted(OUT_OF_RANGE))
def test_ops_09_issue_instant_beyond_the_calendar_is_a_bad_message_page(
    testapp, dbsession, sp, user, endpoint, when
):
    """OPS-09: an IssueInstant outside years 1..9999 in UTC: 400, not 500."""
    sign_in(testapp, user)
    page = send(testapp, endpoint, OUT_OF_RANGE[when])
    assert page.status_int == 400, page.status
    assert error_code(page) == "saml_bad_message"
    assert page.html.select_one("code.reference") is not None
    assert "Traceback" not in page.text
    assert page.headers["X-Frame-Options"] == "DENY"
    assert written(dbsession) == (0, 0)
    # The control: the same message dated now gets past the date check
    # (SSO answers; SLO answers for a subject it does not know, not a
    # bad message).
    control = send(testapp, endpoint, now_text())
    assert control.status_int < 500
    assert error_code(control) != "saml_bad_message"


@pytest.mark.parametrize(
    "value",
    [
        "2026-13-01T00:00:00Z",
        "2026-12-04",
        "20261204T000000Z",
        "2026-12-04T00:00:00+15:00",
        "2026-12-04T00:00:00 Z",
        "２０２６-12-04T00:00:00Z",
    ],
)
def test_ops_09_issue_instant_that_is_not_an_xs_datetime_is_refused(
    testapp, dbsession, sp, user, value
):
    """OPS-09: only the xs:dateTime lexical form is read (no ISO 8601 extras)."""
    sign_in(testapp, user)
    page = send(testapp, "sso-redirect", value)
    assert (page.status_int, error_code(page)) == (400, "saml_bad_message")
    for accepted in (now_text(), now_text().replace("Z", ".123456789Z")):
        control = send(testapp, "sso-redirect", accepted)
        assert control.status_int == 200, accepted
        assert error_code(control) is None


@pytest.mark.parametrize("when", sorted(OUT_OF_RANGE))
def test_ops_09_metadata_valid_until_beyond_the_calendar_is_one_cli_line(
    ini,
    database,
    tmp_path,
    when,
):
    """OPS-09: ``sp import`` of metadata with such a validUntil: exit 1, no traceback."""
    template = make_sp_metadata(valid_until=PLACEHOLDER).decode()
    bad = tmp_path / "bad.xml"
    bad.write_text(template.replace(PLACEHOLDER_TEXT, OUT_OF_RANGE[when]))
    assert_refused(admin(ini, "sp", "import", str(bad)), "validUntil")
    with database.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(ServiceProvider)) == 0
    good = tmp_path / "good.xml"
    good.write_text(template.replace(PLACEHOLDER_TEXT, "9999-12-31T23:59:59Z"))
    result = admin(ini, "sp", "import", str(good))
    assert result.returncode == 0, result.stderr
    with database.connect() as conn:
        assert conn.scalar(select(ServiceProvider.entity_id)) == SP_ENTITY_ID
