"""The MDQ client: an SP nobody registered, found at a partner's responder.

A local HTTPS responder on 127.0.0.1 (throwaway CA, allowlisted here as an
operator would allowlist a partner inside the network) answers
``/entities/...`` with SP metadata the federation key signed. An
AuthnRequest from an unknown issuer makes the IdP ask it, verify the answer
under the source's anchor, register the SP with the source's policy and go
on with the sign-in. The attacks: random issuers (negative cache, rate
limits, bounded time), answers signed by someone else or describing another
entity, a responder that stalls.
"""

from __future__ import annotations

import logging
import time

import pytest
from sqlalchemy import select

from idp.models import MetadataSource, ServiceProvider
from idp.saml.mdq import LOOKUP_SLOT, UNREACHABLE, entity_url, template
from tests.partner_metadata import federation_anchor, mdq_responder, signed_entity
from tests.partner_server import Answer, closed_port
from tests.saml_metadata import RELEASED, SP_ENTITY_ID
from tests.saml_pages import response_of, status_of
from tests.saml_requests import SP_ACS, authn_request, redirect_query
from tests.signin import sign_in

SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"


@pytest.fixture(autouse=True)
def responders_reachable():
    """Each test starts with no responder given up on by an earlier one."""
    UNREACHABLE.clear()
    yield
    UNREACHABLE.clear()


@pytest.fixture
def responder(partner_server):
    return partner_server


@pytest.fixture
def published(responder):
    """The entities the responder knows (entity ID -> signed metadata)."""
    responder.reset()
    entities: dict[str, bytes] = {}
    asked: list[str] = []
    responder.routes["*"] = mdq_responder(entities, asked)
    responder.asked = asked
    return entities


def fetch_settings(ca, **more) -> dict:
    return {
        "idp.metadata_fetch_allow": "127.0.0.1/32",
        "idp.metadata_fetch_ca_bundle": str(ca.ca_file),
        **more,
    }


@pytest.fixture
def client(testapp_with, ca):
    return testapp_with(fetch_settings(ca))


def add_mdq_source(dbsession, module, responder, *, sha1=True, name="federation"):
    source = MetadataSource(
        name=name,
        kind="mdq",
        location=template(responder.url("/"), sha1=sha1),
        anchor_pem=federation_anchor(),
        module_id=module.id,
        release=list(RELEASED),
        entity_filter=[],
        confirmed_hosts={},
        auto_apply=True,
    )
    dbsession.add(source)
    dbsession.flush()
    return source


@pytest.fixture
def source(dbsession, module, responder):
    return add_mdq_source(dbsession, module, responder)


def start(client, issuer: str = SP_ENTITY_ID, **expect):
    xml = authn_request(issuer=issuer)
    return client.get(
        "/saml/sso/redirect?" + redirect_query(xml, relay_state="r1"), **expect
    )


def error_code(page) -> str | None:
    section = page.html.select_one("[data-error-code]")
    return section["data-error-code"] if section else None


def registered(dbsession, entity_id: str = SP_ENTITY_ID) -> ServiceProvider | None:
    return dbsession.scalar(
        select(ServiceProvider).where(ServiceProvider.entity_id == entity_id)
    )


def test_an_sp_found_through_mdq_signs_in_end_to_end(
    client, dbsession, source, published, responder, user, module
):
    published[SP_ENTITY_ID] = signed_entity(SP_ENTITY_ID)
    page = start(client)
    assert page.status_int == 303, error_code(page)
    assert page.location.startswith("https://idp.test/login?next=")
    sp = registered(dbsession)
    assert sp is not None
    assert (sp.source_id, sp.module_id) == (source.id, module.id)
    assert sp.attributes_released == list(RELEASED)
    assert responder.asked == [SP_ENTITY_ID]
    # The sha1 form of the MDQ specification, as the source asks.
    [seen] = responder.requests
    assert (
        seen.path
        == entity_url(source.location, SP_ENTITY_ID).split(str(responder.port), 1)[1]
    )
    assert seen.path.startswith("/entities/%7Bsha1%7D")
    assert seen.headers["Accept"] == "application/samlmetadata+xml"

    done = sign_in(client, user, next_url=page.location.split("next=", 1)[1])
    answer = done.follow()
    assert answer.forms["saml-post-form"].action == SP_ACS
    assert status_of(response_of(answer)) == [SUCCESS]
    # Known now: the next request asks the responder nothing.
    start(client)
    assert len(responder.requests) == 1


def test_the_urlencoded_form(client, dbsession, module, responder, published):
    add_mdq_source(dbsession, module, responder, sha1=False)
    published[SP_ENTITY_ID] = signed_entity(SP_ENTITY_ID)
    assert start(client).status_int == 303
    assert responder.requests[0].path == "/entities/https%3A%2F%2Fsp.example.org%2Fsp"


def test_ops_04_an_unknown_entity_is_asked_once_then_negatively_cached(
    client, dbsession, source, published, responder
):
    first = start(client, expect_errors=True)
    assert (first.status_int, error_code(first)) == (400, "saml_unknown_sp")
    assert len(responder.asked) == 1
    again = start(client, expect_errors=True)
    assert error_code(again) == "saml_unknown_sp"
    assert len(responder.asked) == 1
    assert registered(dbsession) is None


def test_saml_28_an_answer_signed_by_another_key_registers_nothing(
    client, dbsession, source, published, caplog
):
    published[SP_ENTITY_ID] = signed_entity(SP_ENTITY_ID, signer="impostor")
    with caplog.at_level(logging.WARNING, logger="idp.saml.mdq"):
        page = start(client, expect_errors=True)
    assert error_code(page) == "saml_unknown_sp"
    assert registered(dbsession) is None
    assert "MDQ source federation" in caplog.text
    assert SP_ENTITY_ID in caplog.text


def test_an_answer_describing_another_entity_registers_nothing(
    client, dbsession, source, published
):
    other = "https://other.example.org/sp"
    published[SP_ENTITY_ID] = signed_entity(other)
    assert error_code(start(client, expect_errors=True)) == "saml_unknown_sp"
    assert registered(dbsession) is None
    assert registered(dbsession, other) is None


def test_an_expired_answer_registers_nothing(client, dbsession, source, published):
    import datetime as dt

    published[SP_ENTITY_ID] = signed_entity(
        SP_ENTITY_ID, valid_for=dt.timedelta(seconds=-60)
    )
    assert error_code(start(client, expect_errors=True)) == "saml_unknown_sp"
    assert registered(dbsession) is None


@pytest.mark.parametrize(
    "issuer",
    [
        "not a uri",
        "relative/path",
        "javascript:alert(1)",
        "x" * 1025,
        "https://sp.example.org/\u202egpj.exe",  # a bidi override
    ],
)
def test_ops_04_an_issuer_that_is_no_entity_id_is_never_looked_up(
    client, source, published, responder, issuer
):
    assert error_code(start(client, issuer, expect_errors=True)) == "saml_unknown_sp"
    assert responder.connections == 0


def test_ops_04_random_issuers_stop_at_the_global_limit(
    testapp_with, ca, source, published, responder
):
    client = testapp_with(fetch_settings(ca, **{"ratelimit.mdq.global": "3/60"}))
    for number in range(6):
        start(client, f"https://random{number}.example.org/sp", expect_errors=True)
    assert len(responder.asked) == 3


def test_ops_04_one_address_stops_at_its_own_limit(
    testapp_with, ca, source, published, responder
):
    client = testapp_with(fetch_settings(ca, **{"ratelimit.mdq.address": "2/600"}))
    for number in range(4):
        start(client, f"https://random{number}.example.org/sp", expect_errors=True)
    assert len(responder.asked) == 2
    # Another address still gets its lookups.
    start(
        client,
        "https://elsewhere.example.org/sp",
        expect_errors=True,
        extra_environ={"REMOTE_ADDR": "198.51.100.7"},
    )
    assert len(responder.asked) == 3


@pytest.mark.slow
def test_ops_04_a_stalling_responder_costs_at_most_the_mdq_timeout_once(
    testapp_with, ca, source, responder
):
    """Then it is left alone for a while: each wait holds a transaction."""
    responder.reset()
    responder.routes["*"] = Answer(stall=True)
    client = testapp_with(fetch_settings(ca, **{"idp.mdq_timeout": "1"}))
    started = time.monotonic()
    assert error_code(start(client, expect_errors=True)) == "saml_unknown_sp"
    assert time.monotonic() - started < 3
    started = time.monotonic()
    for number in range(3):
        other = f"https://other{number}.example.org/sp"
        assert error_code(start(client, other, expect_errors=True)) == (
            "saml_unknown_sp"
        )
    assert time.monotonic() - started < 1
    assert responder.connections == 1


def test_a_responder_answering_5xx_is_left_alone_for_a_while(client, source, responder):
    responder.reset()
    responder.routes["*"] = Answer(503, b"down for maintenance")
    start(client, expect_errors=True)
    start(client, "https://other.example.org/sp", expect_errors=True)
    assert len(responder.requests) == 1
    UNREACHABLE.clear()  # a minute later
    start(client, "https://third.example.org/sp", expect_errors=True)
    assert len(responder.requests) == 2


def test_a_responder_that_is_down_gets_the_unknown_service_page(
    client, dbsession, module, caplog
):
    source = MetadataSource(
        name="down",
        kind="mdq",
        location=f"https://127.0.0.1:{closed_port()}/entities/{{sha1}}",
        anchor_pem=federation_anchor(),
        release=[],
        entity_filter=[],
        confirmed_hosts={},
    )
    dbsession.add(source)
    dbsession.flush()
    with caplog.at_level(logging.WARNING, logger="idp.saml.mdq"):
        assert error_code(start(client, expect_errors=True)) == "saml_unknown_sp"
    assert "Connection refused" in caplog.text


def test_ops_04_an_mdq_source_never_reaches_an_internal_address(
    testapp_with, ca, source, published, responder
):
    """Without the allowlist, the responder on 127.0.0.1 is refused unasked."""
    client = testapp_with({"idp.metadata_fetch_ca_bundle": str(ca.ca_file)})
    published[SP_ENTITY_ID] = signed_entity(SP_ENTITY_ID)
    assert error_code(start(client, expect_errors=True)) == "saml_unknown_sp"
    assert responder.connections == 0


def test_a_registered_sp_is_never_looked_up(client, sp, source, published, responder):
    assert start(client).status_int == 303
    assert responder.connections == 0


def test_ops_04_one_lookup_at_a_time_per_process(
    client, dbsession, source, published, responder
):
    """While one request waits for a responder, the next does not queue behind it."""
    published[SP_ENTITY_ID] = signed_entity(SP_ENTITY_ID)
    assert LOOKUP_SLOT.acquire(blocking=False)
    try:
        assert error_code(start(client, expect_errors=True)) == "saml_unknown_sp"
    finally:
        LOOKUP_SLOT.release()
    assert responder.connections == 0
    # Not counted against the entity either: the next request finds it.
    assert start(client).status_int == 303
    assert registered(dbsession) is not None
