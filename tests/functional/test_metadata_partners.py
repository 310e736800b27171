"""idMe's metadata as partners fetch it: per-partner URLs, MDQ, fetch records.

``keys rollover status`` tells the operator which SPs have fetched the next
key; these tests hold that what it reads cannot be forged by an outsider
(who knows every entity ID, but not the HMAC key) and cannot be grown
without bound by one client.
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from idp.models import MetadataFetch
from idp.saml.partners import find_partner, mdq_names, partner_token
from tests.saml_metadata import SP_ENTITY_ID

IDP_ENTITY_ID = "https://idp.test/saml/metadata"


@pytest.fixture
def committed(committing_testapp, db_engine):
    """A session on the real engine; every table is emptied after the test."""
    with Session(db_engine) as session:
        yield session


@pytest.fixture
def token(sp, settings):
    return partner_token(settings["idp.hmac_key"], sp)


def fetches(dbsession) -> list[tuple[str, str, int]]:
    rows = dbsession.scalars(select(MetadataFetch).order_by(MetadataFetch.id))
    return [(row.sp_entity_id, row.endpoint, row.count) for row in rows]


def test_a_fetch_through_the_per_partner_url_is_attributed(testapp, dbsession, token):
    body = testapp.get(f"/saml/metadata?sp={token}").body
    assert body == testapp.get("/saml/metadata").body
    assert fetches(dbsession) == [
        (SP_ENTITY_ID, "metadata", 1),
        ("", "metadata", 1),
    ]
    row = dbsession.scalars(select(MetadataFetch)).first()
    assert row.client_address == "192.0.2.10"


@pytest.mark.parametrize(
    "forged",
    [
        "entity",  # the entity ID itself, as ?for= would take it
        "wrong-tag",  # the SP's id with a made-up tag
        "other-sp",  # a tag made for another SP's id
        "truncated",  # a prefix of the real tag
        "guess",  # a well-formed guess
    ],
)
def test_a_forged_partner_token_is_refused_and_attributes_nothing(
    testapp, dbsession, sp, token, settings, forged
):
    """Nobody can make their fetches count as a partner's (status would lie)."""
    number, tag = token.split("-")
    candidate = {
        "entity": quote(SP_ENTITY_ID, safe=""),
        "wrong-tag": f"{number}-{'0' * len(tag)}",
        "other-sp": f"{int(number) + 1}-{tag}",
        "truncated": f"{number}-{tag[:-1]}",
        "guess": f"{number}-{hashlib.sha256(b'x').hexdigest()[: len(tag)]}",
    }[forged]
    page = testapp.get(f"/saml/metadata?sp={candidate}", status=404)
    assert 'data-error-code="not_found"' in page.text
    testapp.get(
        f"/saml/mdq/sp/{candidate}/entities/{quote(IDP_ENTITY_ID, safe='')}", status=404
    )
    assert fetches(dbsession) == []
    # Control: the real token is attributed.
    testapp.get(f"/saml/metadata?sp={token}")
    assert fetches(dbsession) == [(SP_ENTITY_ID, "metadata", 1)]


def test_a_disabled_sp_token_stops_working(testapp, dbsession, sp, token, settings):
    from idp.saml.registry import set_enabled

    assert find_partner(dbsession, settings["idp.hmac_key"], token) == SP_ENTITY_ID
    set_enabled(dbsession, SP_ENTITY_ID, False)
    testapp.get(f"/saml/metadata?sp={token}", status=404)


def test_polling_from_one_network_keeps_one_row(testapp, dbsession, token):
    """A partner polling, or a client hopping addresses and agents, adds no rows.

    Within a minute the row is only read: hammering the URL writes nothing.
    """
    import datetime as dt

    from idp.saml.partners import record_fetch

    for n in range(12):
        testapp.get(
            f"/saml/metadata?sp={token}",
            extra_environ={"REMOTE_ADDR": f"198.51.100.{n}"},
        )
    [row] = dbsession.scalars(select(MetadataFetch)).all()
    assert (row.count, row.client_address) == (1, "198.51.100.0")
    first = row.last_at
    record_fetch(
        dbsession,
        endpoint="mdq",
        client_address="198.51.100.200",
        user_agent="agent/2\x07",
        sp_entity_id=SP_ENTITY_ID,
        now=first + dt.timedelta(seconds=61),
    )
    dbsession.refresh(row)
    assert (row.count, row.client_address, row.user_agent, row.endpoint) == (
        2,
        "198.51.100.200",
        "agent/2?",
        "mdq",
    )
    assert row.first_at == first
    testapp.get("/saml/metadata", extra_environ={"REMOTE_ADDR": "203.0.113.5"})
    assert dbsession.scalar(select(func.count()).select_from(MetadataFetch)) == 2


def test_a_long_user_agent_is_cut(testapp, dbsession):
    testapp.get("/saml/metadata", extra_environ={"HTTP_USER_AGENT": "x" * 5000})
    assert len(dbsession.scalars(select(MetadataFetch)).one().user_agent) == 256


@pytest.mark.parametrize(
    "name",
    [
        quote(IDP_ENTITY_ID, safe=""),
        mdq_names(IDP_ENTITY_ID)[1],
        mdq_names(IDP_ENTITY_ID)[1].upper().replace("{SHA1}", "{sha1}"),
    ],
)
def test_mdq_serves_idme_by_entity_id_or_sha1(testapp, dbsession, name):
    response = testapp.get(f"/saml/mdq/entities/{name}")
    assert fetches(dbsession) == [("", "mdq", 1)]
    plain = testapp.get("/saml/metadata")
    assert response.body == plain.body
    assert response.content_type == "application/samlmetadata+xml"
    assert response.headers["Cache-Control"] == plain.headers["Cache-Control"]


@pytest.mark.parametrize(
    "name",
    [
        quote(SP_ENTITY_ID, safe=""),
        "{sha1}" + hashlib.sha1(SP_ENTITY_ID.encode()).hexdigest(),  # noqa: S324
        "{sha1}",
        "https%3A%2F%2Fidp.test%2Fsaml%2Fmetadata%2F",
        "{md5}" + hashlib.md5(IDP_ENTITY_ID.encode()).hexdigest(),  # noqa: S324
    ],
)
def test_mdq_answers_404_for_any_other_entity(testapp, dbsession, sp, name):
    page = testapp.get(f"/saml/mdq/entities/{name}", status=404)
    assert 'data-error-code="not_found"' in page.text
    assert fetches(dbsession) == []


def test_mdq_through_the_per_partner_base_is_attributed(testapp, dbsession, token):
    name = mdq_names(IDP_ENTITY_ID)[1]
    testapp.get(f"/saml/mdq/sp/{token}/entities/{name}")
    assert fetches(dbsession) == [(SP_ENTITY_ID, "mdq", 1)]


def test_mdq_refuses_post(testapp):
    testapp.post(f"/saml/mdq/entities/{mdq_names(IDP_ENTITY_ID)[1]}", status=405)


def test_purge_forgets_fetches_older_than_ninety_days(app, db_engine, committed):
    """The fetch records stay bounded: a partner silent for 90 days is forgotten."""
    import datetime as dt

    from idp.services.purge import Purger

    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    for n, age in enumerate((91, 89)):
        at = now - dt.timedelta(days=age)
        committed.add(
            MetadataFetch(
                digest=f"{n:064d}",
                sp_entity_id="",
                client_address=f"192.0.2.{n}",
                user_agent="",
                endpoint="metadata",
                first_at=at,
                last_at=at,
            )
        )
    committed.commit()
    purger = Purger.from_settings(app.registry.settings, db_engine)
    assert purger.run(now=now)["metadata_fetches"] == 1
    assert committed.scalars(select(MetadataFetch.client_address)).all() == [
        "192.0.2.1"
    ]
