"""The SSO's plain DB-API statements (``idp.db.PlainSql``) keep SQLAlchemy's contract.

The role gate's SELECT and the replay record's INSERT bypass SQLAlchemy's
execution for speed (issue 16). What an attacker or an outage could use if
they bypassed more than that: a replay record stored in a format the
purge and the ORM misread (a replay window that never closes, or closes
at once), a write on SQLite outside the writer's turn, a database fault
turned from the 503 page into a 500, a dropped connection handed back to
the pool. Each is checked here, on both databases.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

import idp.db
from idp.db import PlainSql, plain_value, utc_from_row
from idp.dbfaults import is_database_fault
from idp.models import (
    IdpSession,
    PersistentNameId,
    SeenRequestId,
    SessionParticipant,
    SpRegistryState,
)
from idp.saml.errors import SamlRefused
from idp.saml.registry import REGISTRY_STATE_ID
from idp.saml.requests import AuthnRequest, record_seen
from idp.saml.sp_metadata import Endpoint
from idp.saml.sso import may_reach, recorded_request
from tests.dbfaults import failing_statements

ISSUER = "https://sp.example.edu.my/plain-sql"
# Microseconds, and a value with none: SQLite's text must still compare.
LATER = dt.datetime(2031, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
WHOLE_SECOND = dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
BINDING_HTTP_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"


@pytest.fixture
def sso_session(dbsession, user) -> IdpSession:
    now = dt.datetime.now(dt.UTC)
    row = IdpSession(
        token_hash=uuid.uuid4().hex * 2,
        user_id=user.id,
        data={},
        created_at=now,
        expires_at=now + dt.timedelta(hours=8),
        last_seen_at=now,
    )
    dbsession.add(row)
    dbsession.flush()
    return row


@pytest.mark.postgresql
def test_saml_17_a_replay_record_reads_back_as_the_orm_wrote_it(dbsession):
    """SAML-17: the record's expiry is the instant given, to the microsecond,
    as SQLAlchemy's own types read it; a second INSERT is refused."""
    record_seen(dbsession, ISSUER, "_a", LATER)
    record_seen(dbsession, ISSUER, "_b", WHOLE_SECOND)
    with pytest.raises(SamlRefused) as refused:
        record_seen(dbsession, ISSUER, "_a", LATER + dt.timedelta(hours=1))
    assert refused.value.code == "saml_replay"
    dbsession.expire_all()
    stored = dict(
        dbsession.execute(
            select(SeenRequestId.request_id, SeenRequestId.expires_at).where(
                SeenRequestId.issuer == ISSUER
            )
        ).all()
    )
    assert stored == {"_a": LATER, "_b": WHOLE_SECOND}
    assert all(value.tzinfo is not None for value in stored.values())


@pytest.mark.postgresql
def test_saml_17_the_purge_compares_plain_records_with_orm_instants(dbsession):
    """SAML-17: the purge's ``expires_at < now`` (an ORM comparison) finds the
    expired record and only it: on SQLite both sides are the same text
    format, or records would live forever or die at once."""
    now = dt.datetime.now(dt.UTC)
    record_seen(dbsession, ISSUER, "_gone", now - dt.timedelta(microseconds=1))
    record_seen(dbsession, ISSUER, "_kept", now + dt.timedelta(microseconds=1))
    record_seen(
        dbsession,
        ISSUER,
        "_kept2",
        now.replace(microsecond=0) + dt.timedelta(seconds=1),
    )
    expired = dbsession.scalars(
        select(SeenRequestId.request_id).where(
            SeenRequestId.issuer == ISSUER, SeenRequestId.expires_at < now
        )
    ).all()
    assert expired == ["_gone"]


@pytest.mark.postgresql
def test_a_naive_expiry_is_refused_as_the_orm_refuses_it(dbsession):
    with pytest.raises(ValueError, match="naive"):
        record_seen(dbsession, ISSUER, "_n", LATER.replace(tzinfo=None))
    with pytest.raises(ValueError, match="naive"):
        plain_value(LATER.replace(tzinfo=None), "postgresql")


@pytest.mark.postgresql
def test_saml_32_the_plain_role_gate_reads_what_the_orm_holds(
    dbsession, user, sp, sso_session
):
    """SAML-32: roles, the persistent NameID, the session's record of the SP
    and the registry's version, typed as the ORM types them."""
    state = dbsession.get(SpRegistryState, REGISTRY_STATE_ID)
    assert state is not None
    state.generation = 41
    state.changed_at = LATER
    dbsession.add(PersistentNameId(user_id=user.id, sp_id=sp.id, name_id="p-1"))
    dbsession.add_all(
        [
            SessionParticipant(
                session_id=sso_session.id,
                sp_id=sp.id,
                name_id=f"n-{n}",
                name_id_format="urn:f",
                session_index=f"_i{n}",
                created_at=LATER,
            )
            for n in (1, 2)
        ]
    )
    dbsession.flush()
    facts = may_reach(dbsession, user, sp, sso_session)
    assert facts.allowed and facts.roles == ("guru",)
    assert facts.persistent == "p-1"
    assert facts.participant is not None
    assert facts.participant[1:] == ("n-2", "urn:f", "_i2")  # the latest
    assert facts.registry == (41, LATER)
    # Another session has not been to the SP; without one, nothing is read.
    assert may_reach(dbsession, user, sp, None).participant is None


@pytest.mark.postgresql
def test_saml_32_no_role_for_the_module_is_refused_by_the_plain_gate(
    dbsession, user, sp
):
    user.roles.clear()
    dbsession.flush()
    facts = may_reach(dbsession, user, sp)
    assert not facts.allowed and facts.roles == ()


def test_data_10_the_replay_insert_takes_the_sqlite_writers_turn(db_engine, dbsession):
    """On SQLite a write outside the writer's turn fails with "database is
    locked" under concurrency (idp.db): the plain INSERT takes it first."""
    if db_engine.dialect.name != "sqlite":
        pytest.skip("the writer's turn is SQLite's")
    with Session(db_engine) as session:
        connection = session.connection()
        turns = idp.db._turns(connection)
        assert idp.db._READING in turns
        record_seen(session, ISSUER, "_turn", LATER)
        assert idp.db._WRITING in turns
        session.rollback()
        assert not turns


@pytest.mark.postgresql
def test_data_10_a_fault_in_a_plain_statement_is_a_database_fault(db_engine):
    """DATA-10: the driver's error comes out as SQLAlchemy's, so the request
    gets the 503 page (idp.dbfaults), not a 500; fault injection and
    statement listeners see the statement."""
    with (
        Session(db_engine) as session,
        failing_statements(db_engine, r"INSERT INTO seen_request_ids") as hit,
        pytest.raises(OperationalError) as raised,
    ):
        record_seen(session, ISSUER, "_fault", LATER)
    assert hit
    assert is_database_fault(raised.value)


@pytest.mark.postgresql
def test_data_10_a_dropped_connection_is_not_handed_back(db_engine, monkeypatch):
    """A disconnect seen by a plain statement invalidates the connection, as
    SQLAlchemy does for its own, so the pool does not lend it again."""
    monkeypatch.setattr(db_engine.dialect, "is_disconnect", lambda *_: True)
    with (
        Session(db_engine) as session,
        failing_statements(db_engine, r"INSERT INTO seen_request_ids"),
    ):
        connection = session.connection()
        with pytest.raises(OperationalError) as raised:
            record_seen(session, ISSUER, "_gone", LATER)
        assert raised.value.connection_invalidated
        assert connection.invalidated


def test_plain_sql_parameters_become_psycopg_style():
    plain = PlainSql("\n  SELECT a FROM t WHERE b = :b AND c = :c_2 AND d = 'x::y'")
    assert plain.text["postgresql"] == (
        "SELECT a FROM t WHERE b = %(b)s AND c = %(c_2)s AND d = 'x::y'"
    )
    assert plain.text["sqlite"].startswith("SELECT a FROM t")
    assert plain.text["sqlite"].endswith("c = :c_2 AND d = 'x::y'")


def test_values_cross_as_sqlalchemy_stores_them():
    value = uuid.uuid4()
    assert plain_value(value, "sqlite") == value.hex
    assert plain_value(value, "postgresql") is value
    eastern = LATER.astimezone(dt.timezone(dt.timedelta(hours=8)))
    assert plain_value(eastern, "sqlite") == "2031-01-02 03:04:05.678901"
    assert plain_value(WHOLE_SECOND, "sqlite") == "2031-01-02 03:04:05.000000"
    assert utc_from_row("2031-01-02 03:04:05.678901") == LATER
    assert utc_from_row("2031-01-02 03:04:05") == WHOLE_SECOND
    assert utc_from_row(eastern) == LATER and utc_from_row(eastern).tzinfo is dt.UTC
    assert utc_from_row(None) is None


def _gate_and_record_watched(dbsession, user, sp, before, after) -> None:
    """The role gate's SELECT and a replay record's INSERT (both plain
    statements), with ``before`` and ``after`` listening on the connection."""
    from sqlalchemy import event

    connection = dbsession.connection()
    event.listen(connection, "before_cursor_execute", before)
    event.listen(connection, "after_cursor_execute", after)
    try:
        may_reach(dbsession, user, sp)
        record_seen(dbsession, ISSUER, "_" + uuid.uuid4().hex, LATER)
    finally:
        event.remove(connection, "before_cursor_execute", before)
        event.remove(connection, "after_cursor_execute", after)


@pytest.mark.postgresql
def test_statement_listeners_see_a_plain_statement_before_and_after(
    dbsession, user, sp
):
    """Timers and counters (bench_sso's breakdown, the statement-count
    tests) see a plain statement start and end, as they see SQLAlchemy's."""
    seen: list[tuple[str, str]] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        seen.append(("before", statement.split()[0]))

    def after(conn, cursor, statement, parameters, context, executemany):
        seen.append(("after", statement.split()[0]))

    _gate_and_record_watched(dbsession, user, sp, before, after)
    assert seen == [
        ("before", "SELECT"),
        ("after", "SELECT"),
        ("before", "INSERT"),
        ("after", "INSERT"),
    ]


@pytest.mark.postgresql
def test_a_tracing_listener_can_tag_a_plain_statements_context(dbsession, user, sp):
    """Tracing instrumentations (OpenTelemetry's for SQLAlchemy, for one)
    keep their span on the execution context between ``before`` and
    ``after``, and read the engine's URL from the connection. A plain
    statement gives them a context of its own to tag, with the execution
    options and the dialect, so turning tracing on cannot make every SSO
    fail."""
    spans: list[tuple[str, object, str]] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        context._span = statement.split()[0]
        assert conn.engine.url is not None
        assert context.execution_options is not None

    def after(conn, cursor, statement, parameters, context, executemany):
        spans.append((context._span, context.compiled, context.dialect.name))

    _gate_and_record_watched(dbsession, user, sp, before, after)
    dialect = dbsession.get_bind().dialect.name
    assert spans == [("SELECT", None, dialect), ("INSERT", None, dialect)]


def _unrecorded(sp, request_id: str) -> AuthnRequest:
    """A checked AuthnRequest whose replay record is still to be written."""
    return AuthnRequest(
        id=request_id,
        sp_id=sp.id,
        issuer=sp.entity_id,
        acs=Endpoint(BINDING_HTTP_POST, "https://sp.example.edu.my/acs"),
        force_authn=False,
        is_passive=False,
        name_id_format=None,
        sp_name_qualifier=None,
        allow_create=True,
        requested_context=None,
        relay_state=None,
        signed=False,
        unrecorded_until=LATER,
    )


@pytest.mark.postgresql
def test_saml_17_the_role_gate_records_a_request_once_on_postgresql(
    db_engine, dbsession, user, sp, sso_session
):
    """SAML-17: on PostgreSQL the role gate's statement writes the replay
    record (one round trip fewer per SSO); a second request with the same ID
    is refused, whether the gate let the first through or not, and nothing
    writes the record twice. SQLite keeps its own INSERT (after signing)."""
    request = _unrecorded(sp, "_gated")
    facts = may_reach(dbsession, user, sp, sso_session, request)
    postgresql = db_engine.dialect.name == "postgresql"
    assert facts.allowed and facts.roles == ("guru",)
    assert facts.recorded is (True if postgresql else None)
    marked = recorded_request(dbsession, request, facts)
    assert marked is not None and marked.unrecorded_until is None
    assert recorded_request(dbsession, marked, facts) is marked  # nothing again
    rows = dbsession.scalars(
        select(SeenRequestId.request_id).where(SeenRequestId.issuer == sp.entity_id)
    ).all()
    assert rows == ["_gated"]

    # The same ID again, for a user the gate now refuses: still a replay.
    user.roles.clear()
    dbsession.flush()
    again = may_reach(dbsession, user, sp, sso_session, request)
    assert not again.allowed
    assert again.recorded is (False if postgresql else None)
    with pytest.raises(SamlRefused) as refused:
        recorded_request(dbsession, request, again)
    assert refused.value.code == "saml_replay"
    assert refused.value.reply == request.reply()
    # A request recorded before (a parked one read back) is not written again.
    assert may_reach(dbsession, user, sp, sso_session, marked).recorded is None
