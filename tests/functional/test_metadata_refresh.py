"""Refreshing a URL source: signed aggregates from a partner's HTTPS server.

The partner is a local HTTPS server on 127.0.0.1 (throwaway CA,
allowlisted). The refresher works as it does in production: its own
transactions on the engine, a lease per source, so these tests commit and
empty the tables afterwards. Whatever a refresh meets (a bad signature, an
expired or garbled document, the partner down), the registry stays as the
last good copy left it, and the SPs it brought still sign in.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, undefer

from idp.models import AuditEvent, MetadataSource, ServiceProvider
from idp.saml.fetch import FetchPolicy
from idp.saml.refresh import Refresher, Schedule, take_lease
from tests.aggregates import federation_keys, make_aggregate, sp_entity
from tests.partner_metadata import MEDIA_TYPE, federation_anchor
from tests.partner_server import Answer, closed_port
from tests.saml_requests import authn_request, redirect_query

LOOPBACK = ("127.0.0.1/32",)
HOUR = dt.timedelta(hours=1)


@pytest.fixture
def partner(partner_server):
    partner_server.reset()
    return partner_server


@pytest.fixture
def committed(db_engine):
    """The engine, every table emptied after the test (the refresher commits)."""
    from idp.db import Base
    from idp.services.audit import audit_maintenance

    yield db_engine
    with db_engine.begin() as conn, audit_maintenance(conn):
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def refresher(committed, ca, clock, settings):
    from idp.settings import parse_settings

    parsed = parse_settings(settings, environ={})
    return Refresher(
        engine=committed,
        settings=parsed,
        policy=FetchPolicy(
            connect_timeout=2,
            timeout=5,
            allow=tuple(__import__("ipaddress").ip_network(n) for n in LOOPBACK),
            ca_bundle=str(ca.ca_file),
        ),
        schedule=Schedule(),
        owner="node-a",
        clock=clock,
    )


def add_source(engine, location: str, name: str = "federation", **values) -> int:
    with Session(engine) as session, session.begin():
        fields = {
            "kind": "url",
            "anchor_pem": federation_anchor(),
            "release": ["uid", "isMemberOf"],
            "entity_filter": [],
            "confirmed_hosts": {},
            "auto_apply": True,
            **values,
        }
        source = MetadataSource(name=name, location=location, **fields)
        session.add(source)
        session.flush()
        return source.id


def source_row(engine, source_id: int) -> MetadataSource:
    """The source's row, its deferred backing copy loaded."""
    with Session(engine, expire_on_commit=False) as session:
        return session.get_one(
            MetadataSource, source_id, options=[undefer(MetadataSource.document)]
        )


def registry(engine) -> dict[str, str]:
    """entity ID -> metadata SHA-256 of every registered SP."""
    with Session(engine) as session:
        return dict(
            session.execute(
                select(ServiceProvider.entity_id, ServiceProvider.metadata_sha256)
            ).all()
        )


def audit(engine, event: str) -> list[dict]:
    with Session(engine) as session:
        return [
            row.detail
            for row in session.scalars(
                select(AuditEvent).where(AuditEvent.event == event)
            )
        ]


def serve(partner, document: bytes, *, etag: str = '"v1"') -> None:
    def answer(seen):
        if seen.headers.get("If-None-Match") == etag:
            return Answer(304)
        return Answer(
            body=document,
            headers={
                "Content-Type": MEDIA_TYPE,
                "ETag": etag,
                "Last-Modified": "Wed, 02 Dec 2026 10:00:00 GMT",
            },
        )

    partner.routes["/federation.xml"] = answer


def good_document(count: int = 3, **options) -> bytes:
    return make_aggregate(
        count, signer=federation_keys(), cache_duration="PT6H", **options
    )


@pytest.fixture
def fetched(committed, partner, refresher):
    """A source whose first refresh took three SPs: the backing copy."""
    serve(partner, good_document())
    source_id = add_source(committed, partner.url("/federation.xml"))
    outcome = refresher.refresh("federation")
    assert outcome.result == "updated", outcome.line
    return source_id


def test_a_signed_url_source_is_fetched_applied_and_scheduled(
    committed, fetched, refresher, clock, partner
):
    source = source_row(committed, fetched)
    assert len(registry(committed)) == 3
    assert source.etag == '"v1"'
    assert source.last_modified == "Wed, 02 Dec 2026 10:00:00 GMT"
    assert source.fetched_at == clock.now
    assert source.document is not None and source.failures == 0
    # cacheDuration PT6H, well inside the 7 days of validUntil.
    assert source.next_refresh_at == clock.now + 6 * HOUR
    assert (source.lease_owner, source.lease_until) == (None, None)
    assert partner.requests[0].headers.get("If-None-Match") is None


def test_an_unchanged_document_answers_304_and_moves_only_the_schedule(
    committed, fetched, refresher, clock, partner
):
    before = registry(committed)
    clock.now += 6 * HOUR
    outcome = refresher.refresh("federation")
    assert (outcome.result, outcome.line) == (
        "not modified",
        "federation: not modified (HTTP 304)",
    )
    assert partner.requests[-1].headers["If-None-Match"] == '"v1"'
    assert partner.requests[-1].headers["If-Modified-Since"] == (
        "Wed, 02 Dec 2026 10:00:00 GMT"
    )
    source = source_row(committed, fetched)
    assert registry(committed) == before
    assert source.last_attempt_at == clock.now
    assert source.next_refresh_at == clock.now + 6 * HOUR
    assert source.fetched_at == clock.now - 6 * HOUR


def test_a_copy_near_its_end_is_asked_for_unconditionally(
    committed, fetched, refresher, clock, partner
):
    """A 304 cannot renew a copy about to expire: the document is asked for."""
    clock.now += dt.timedelta(days=7) - dt.timedelta(minutes=5)
    refresher.refresh("federation")
    assert "If-None-Match" not in partner.requests[-1].headers


def test_a_changed_document_is_applied(committed, fetched, refresher, partner, clock):
    serve(partner, good_document(4), etag='"v2"')
    clock.now += 6 * HOUR
    outcome = refresher.refresh("federation")
    assert outcome.result == "updated"
    assert "1 added" in outcome.line
    assert len(registry(committed)) == 4
    assert source_row(committed, fetched).etag == '"v2"'


def _bad_signature() -> bytes:
    return make_aggregate(3, signer=federation_keys("impostor"))


def _altered() -> bytes:
    return good_document().replace(b"Example System 1", b"Evil System 1")


def _expired() -> bytes:
    # Signed long ago, valid until an hour ago.
    return good_document(valid_until=dt.datetime.now(dt.UTC) - HOUR)


@pytest.mark.parametrize(
    ("make", "cause"),
    [
        (_bad_signature, "signed by another key"),
        (_altered, "signature"),
        (_expired, "expired"),
        (
            lambda: b"<html><body>Site under maintenance</body></html>",
            "document element is html, not md:EntitiesDescriptor",
        ),
        (lambda: b"\x00\xff garbage", "UTF-8"),
    ],
    ids=["bad-signature", "altered", "expired", "html", "garbage"],
)
def test_a_bad_document_leaves_the_backing_copy_in_force(
    committed,
    fetched,
    refresher,
    partner,
    clock,
    caplog,
    committing_testapp,
    make,
    cause,
):
    before = registry(committed)
    document = source_row(committed, fetched).document
    serve(partner, make(), etag='"v2"')
    clock.now += 6 * HOUR
    with caplog.at_level(logging.WARNING, logger="idp.saml.refresh"):
        outcome = refresher.refresh("federation")
    assert outcome.result == "failed"
    assert cause in outcome.error
    assert registry(committed) == before
    source = source_row(committed, fetched)
    assert source.document == document
    assert source.etag == '"v1"'
    assert (source.failures, source.last_attempt_at) == (1, clock.now)
    assert cause in source.last_error
    assert source.next_refresh_at == clock.now + Schedule().retry
    [record] = [r for r in caplog.records if r.name == "idp.saml.refresh"]
    assert record.levelno == logging.WARNING
    assert "metadata source federation: refresh failed" in record.getMessage()
    assert "stays in force until" in record.getMessage()
    [event] = audit(committed, "source.refresh_failed")
    assert (event["source"], event["failures"]) == ("federation", 1)
    # Its SPs still sign in.
    sp = sp_entity(0)
    xml = authn_request(issuer=sp.entity_id, acs_url=sp.acs)
    page = committing_testapp.get("/saml/sso/redirect?" + redirect_query(xml))
    assert page.status_int == 303
    assert "/login?next=" in page.location


def test_partner_down_leaves_the_backing_copy_and_retries_with_backoff(
    committed, fetched, refresher, clock, committing_testapp
):
    before = registry(committed)
    with Session(committed) as session, session.begin():
        session.execute(
            update(MetadataSource)
            .where(MetadataSource.id == fetched)
            .values(location=f"https://127.0.0.1:{closed_port()}/federation.xml")
        )
    retry = Schedule().retry
    for attempt, wait in ((1, retry), (2, 2 * retry), (3, 4 * retry)):
        clock.now += 6 * HOUR
        outcome = refresher.refresh("federation")
        assert "Connection refused" in outcome.error
        source = source_row(committed, fetched)
        assert (source.failures, source.next_refresh_at) == (attempt, clock.now + wait)
    assert registry(committed) == before
    sp = sp_entity(1)
    xml = authn_request(issuer=sp.entity_id, acs_url=sp.acs)
    page = committing_testapp.get("/saml/sso/redirect?" + redirect_query(xml))
    assert "/login?next=" in page.location


def test_a_partner_answering_5xx_is_recorded(committed, fetched, refresher, partner):
    partner.routes["/federation.xml"] = Answer(503, b"busy")
    outcome = refresher.refresh("federation")
    assert outcome.error.endswith("HTTP 503 Service Unavailable")
    assert source_row(committed, fetched).last_error == outcome.error


def test_an_expired_backing_copy_is_an_error_in_the_log(
    committed, fetched, refresher, partner, clock, caplog
):
    partner.routes["/federation.xml"] = Answer(503, b"busy")
    clock.now += dt.timedelta(days=8)
    with caplog.at_level(logging.WARNING, logger="idp.saml.refresh"):
        refresher.refresh("federation")
    [record] = [r for r in caplog.records if r.name == "idp.saml.refresh"]
    assert record.levelno == logging.ERROR
    assert "the last good copy expired" in record.getMessage()
    assert "its 3 SPs are refused" in record.getMessage()


def test_a_recovery_is_logged_and_clears_the_failures(
    committed, fetched, refresher, partner, clock, caplog
):
    partner.routes["/federation.xml"] = Answer(503, b"busy")
    refresher.refresh("federation")
    serve(partner, good_document(), etag='"v1"')
    clock.now += HOUR
    with caplog.at_level(logging.WARNING, logger="idp.saml.refresh"):
        outcome = refresher.refresh("federation")
    assert outcome.result == "not modified"
    source = source_row(committed, fetched)
    assert (source.failures, source.last_error) == (0, None)
    assert "refreshed again after 1 failed attempts" in caplog.text


# --------------------------------------------------------------------------
# When


@pytest.mark.parametrize(
    ("cache_duration", "valid_for", "expected"),
    [
        (6 * 3600, dt.timedelta(days=7), 6 * HOUR),
        (60, dt.timedelta(days=7), dt.timedelta(minutes=10)),  # the minimum
        (30 * 86400, dt.timedelta(days=28), 24 * HOUR),  # the maximum
        (None, dt.timedelta(days=28), 24 * HOUR),
        (6 * 3600, 4 * HOUR, 2 * HOUR),  # halfway to validUntil
        (6 * 3600, dt.timedelta(minutes=12), dt.timedelta(minutes=10)),
    ],
)
def test_the_next_refresh_follows_cache_duration_within_bounds(
    cache_duration, valid_for, expected
):
    now = dt.datetime(2026, 12, 4, 12, tzinfo=dt.UTC)
    due = Schedule().after_success(now, cache_duration, now + valid_for)
    assert due - now == expected


def test_retries_double_up_to_the_maximum():
    now = dt.datetime(2026, 12, 4, 12, tzinfo=dt.UTC)
    schedule = Schedule()
    waits = [schedule.after_failure(now, n) - now for n in (1, 2, 3, 7, 8, 50)]
    minute = dt.timedelta(minutes=1)
    assert waits == [minute, 2 * minute, 4 * minute, HOUR, HOUR, HOUR]


def test_due_lists_the_fetched_sources_whose_time_has_come(
    committed, fetched, refresher, clock
):
    add_source(committed, "/nonexistent.xml", name="local", kind="file")
    assert refresher.due() == []
    clock.now += 6 * HOUR
    assert refresher.due() == ["federation"]
    assert refresher.seconds_until_due() == 1
    assert refresher.run(stop=lambda: True) == []


def test_a_source_under_another_nodes_lease_is_not_due_until_it_ends(
    committed, fetched, refresher, clock
):
    """The loop neither refreshes it nor spins on it."""
    clock.now += 6 * HOUR
    take_lease(committed, fetched, "node-b", now=clock.now, until=clock.now + HOUR)
    assert refresher.due() == []
    assert refresher.seconds_until_due() == 60
    clock.now += HOUR + dt.timedelta(seconds=1)
    assert refresher.due() == ["federation"]


# --------------------------------------------------------------------------
# One node at a time


def test_a_source_another_node_refreshes_is_left_alone(
    committed, fetched, refresher, clock, partner
):
    partner.reset()
    assert take_lease(
        committed, fetched, "node-b", now=clock.now, until=clock.now + HOUR
    )
    outcome = refresher.refresh("federation")
    assert outcome.result == "busy"
    assert partner.connections == 0
    # An expired lease is taken over.
    serve(partner, good_document())
    clock.now += 2 * HOUR
    assert refresher.refresh("federation").result == "not modified"


def test_a_node_that_lost_its_lease_writes_nothing(
    committed, fetched, refresher, clock, partner
):
    serve(partner, good_document(4), etag='"v2"')
    from idp.saml.fetch import fetch

    assert take_lease(committed, fetched, "node-a", now=clock.now, until=clock.now)
    got = fetch(partner.url("/federation.xml"), policy=refresher.policy)
    # Meanwhile the lease ran out and node-b took the source.
    with Session(committed) as session, session.begin():
        session.execute(
            update(MetadataSource)
            .where(MetadataSource.id == fetched)
            .values(lease_owner="node-b")
        )
    outcome = refresher.apply(fetched, "federation", got)
    assert outcome.line == "federation: the lease ran out; nothing written"
    assert len(registry(committed)) == 3


@pytest.mark.postgresql
def test_only_one_of_several_nodes_takes_the_lease(committed, clock):
    """Eight nodes race for one source: the database lets exactly one win."""
    source_id = add_source(committed, "https://partner.example/federation.xml")
    barrier = threading.Barrier(8)
    won = []

    def node(name: str) -> None:
        barrier.wait()
        if take_lease(
            committed, source_id, name, now=clock.now, until=clock.now + HOUR
        ):
            won.append(name)

    threads = [threading.Thread(target=node, args=(f"node-{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(won) == 1
    assert source_row(committed, source_id).lease_owner == won[0]


def test_unknown_and_local_sources_are_refused_by_name(committed, refresher):
    from idp.saml.sources import SourceError

    add_source(committed, "/srv/partner.xml", name="local", kind="file")
    with pytest.raises(SourceError, match="no metadata source named 'nope'"):
        refresher.refresh("nope")
    with pytest.raises(SourceError, match="source local is a file source, not fetched"):
        refresher.refresh("local")


# --------------------------------------------------------------------------
# MDQ sources: the entities they brought, looked up again


def test_an_mdq_source_looks_its_entities_up_again(
    committed, refresher, partner, clock
):
    from idp.saml.mdq import template
    from idp.saml.sources import apply_document
    from tests.partner_metadata import mdq_responder, signed_entity

    first, second = "https://a.example.org/sp", "https://b.example.org/sp"
    entities = {first: signed_entity(first), second: signed_entity(second)}
    partner.routes["*"] = mdq_responder(entities)
    location = template(partner.url("/"), sha1=True)
    source_id = add_source(committed, location, name="mdq", kind="mdq")
    with Session(committed) as session, session.begin():
        source = session.get_one(MetadataSource, source_id)
        for data in entities.values():
            apply_document(
                session,
                source,
                data,
                now=clock.now,
                max_valid_until=dt.timedelta(days=28),
                partial=True,
            )
    before = registry(committed)
    assert set(before) == {first, second}

    # The partner changed one entity (signed again: a new digest).
    entities[first] = signed_entity(first, cache_duration="PT2H")
    outcome = refresher.refresh("mdq")
    assert outcome.result == "updated", outcome.line
    assert outcome.line == "mdq: 2 entities looked up again, 1 changed"
    after = registry(committed)
    assert after[first] != before[first] and after[second] == before[second]
    row = source_row(committed, source_id)
    assert row.next_refresh_at == clock.now + 1 * HOUR  # the shortest: PT1H

    # One entity gone from the responder: kept (its copy), the refresh failed.
    del entities[second]
    clock.now += HOUR
    outcome = refresher.refresh("mdq")
    assert outcome.result == "failed"
    assert "1 of 2 entities not refreshed" in outcome.error
    assert "b.example.org/sp: not found (HTTP 404)" in outcome.error
    assert set(registry(committed)) == {first, second}


def test_a_fault_of_ours_marks_the_source_failing_and_the_loop_goes_on(
    committed, fetched, refresher, clock, monkeypatch, caplog
):
    import idp.saml.refresh

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(idp.saml.refresh, "fetch", broken)
    clock.now += 6 * HOUR
    with caplog.at_level(logging.ERROR, logger="idp.saml.refresh"):
        [outcome] = refresher.run()
    assert outcome.error == "unexpected KeyError; see the log"
    assert "refresh failed unexpectedly" in caplog.text
    source = source_row(committed, fetched)
    assert (source.failures, source.lease_owner) == (1, None)
