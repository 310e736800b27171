"""ServerCache: one pysaml2 Server per process, its SPs loaded on first use.

Runs on SQLite and PostgreSQL. Two caches on one database stand for two
nodes: each must notice another's change through the generation counter.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
import webtest
from saml2 import BINDING_HTTP_POST as POST
from saml2.ident import IdentDB
from saml2.mdstore import InMemoryMetaData, MetadataStore
from saml2.s_utils import UnknownSystemEntity
from saml2.sdb import SessionStorage
from saml2.server import Server
from saml2.sigver import CryptoBackendXmlSec1
from sqlalchemy import event, func, inspect, select
from sqlalchemy.orm import Session

from idp.db import make_engine
from idp.models import ServiceProvider
from idp.saml import entity_store
from idp.saml import registry as saml_registry
from idp.saml.crypto import XmlsecBackend
from idp.saml.registry import import_sp, remove_sp, set_enabled
from idp.saml.server import (
    NameIdNotStored,
    NoIdentities,
    NoSessionStorage,
    ServerCache,
    build_server,
    new_server,
)
from idp.saml.sp_metadata import load_sp_source
from idp.settings import parse_settings
from tests.app import environ
from tests.conftest import upgrade
from tests.saml_metadata import SP_ENTITY_ID, make_sp_metadata
from tests.saml_pages import response_of, status_of
from tests.saml_requests import authn_request, redirect_query
from tests.signin import sign_in
from tests.sp_population import entity_id, register_many, sp_documents, sp_rows

OTHER_SP = "https://other.example.org/sp"
SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"


def knows(server: Server, entity_id: str) -> bool:
    try:
        acs = server.metadata.service(
            entity_id, "spsso_descriptor", "assertion_consumer_service"
        )
    except UnknownSystemEntity:
        return False
    return bool(acs)


def acs_of(server: Server, entity: str) -> list[str]:
    services = server.metadata.service(
        entity, "spsso_descriptor", "assertion_consumer_service", POST
    )
    return [service["location"] for service in services]


@pytest.fixture
def parsed_settings(settings):
    return parse_settings(settings)


@pytest.fixture
def cache(parsed_settings, keypair):
    return ServerCache(parsed_settings, keypair)


def test_one_server_for_every_generation_knowing_each_change(dbsession, cache):
    import_sp(dbsession, make_sp_metadata())
    first = cache.get(dbsession)
    assert cache.get(dbsession) is first
    assert knows(first, SP_ENTITY_ID)
    assert not knows(first, OTHER_SP)
    import_sp(dbsession, make_sp_metadata(OTHER_SP))
    # No rebuild: the same server learns of the new SP.
    assert cache.get(dbsession) is first
    assert knows(first, OTHER_SP) and knows(first, SP_ENTITY_ID)
    remove_sp(dbsession, OTHER_SP)
    assert cache.get(dbsession) is first
    assert not knows(first, OTHER_SP)
    assert knows(first, SP_ENTITY_ID)


def test_two_nodes_converge_after_an_import(dbsession, parsed_settings, keypair):
    node_a = ServerCache(parsed_settings, keypair)
    node_b = ServerCache(parsed_settings, keypair)
    assert not knows(node_a.get(dbsession), SP_ENTITY_ID)
    assert not knows(node_b.get(dbsession), SP_ENTITY_ID)
    import_sp(dbsession, make_sp_metadata())  # on "node A", or the CLI
    assert knows(node_a.get(dbsession), SP_ENTITY_ID)
    assert knows(node_b.get(dbsession), SP_ENTITY_ID)


def test_saml_31_disabling_or_removing_an_sp_takes_effect_on_every_node(
    dbsession, parsed_settings, keypair
):
    """SAML-31: both nodes have the SP loaded; the next request knows better."""
    import_sp(dbsession, make_sp_metadata())
    nodes = [ServerCache(parsed_settings, keypair) for _ in range(2)]
    assert all(knows(node.get(dbsession), SP_ENTITY_ID) for node in nodes)
    set_enabled(dbsession, SP_ENTITY_ID, False)
    assert not any(knows(node.get(dbsession), SP_ENTITY_ID) for node in nodes)
    set_enabled(dbsession, SP_ENTITY_ID, True)
    assert all(knows(node.get(dbsession), SP_ENTITY_ID) for node in nodes)
    remove_sp(dbsession, SP_ENTITY_ID)
    assert not any(knows(node.get(dbsession), SP_ENTITY_ID) for node in nodes)


def test_a_disabled_sp_is_not_loaded(dbsession, cache):
    import_sp(dbsession, make_sp_metadata())
    import_sp(dbsession, make_sp_metadata(OTHER_SP), enabled=False)
    server = cache.get(dbsession)
    assert knows(server, SP_ENTITY_ID)
    assert not knows(server, OTHER_SP)
    assert server.metadata.loads == 1
    set_enabled(dbsession, OTHER_SP, True)
    assert knows(cache.get(dbsession), OTHER_SP)
    set_enabled(dbsession, SP_ENTITY_ID, False)
    assert not knows(cache.get(dbsession), SP_ENTITY_ID)


def test_the_server_signs_in_process(dbsession, cache):
    import_sp(dbsession, make_sp_metadata())
    server = cache.get(dbsession)
    assert isinstance(server.sec.crypto, XmlsecBackend)
    assert not isinstance(server.sec.crypto, CryptoBackendXmlSec1)
    assert server.metadata.security is server.sec


def test_the_server_keeps_no_assertions_or_name_ids(dbsession, cache):
    server = cache.get(dbsession)
    # pysaml2's defaults keep every assertion and NameID in process memory.
    assert isinstance(server.session_db, NoSessionStorage)
    assert not isinstance(server.session_db, SessionStorage)
    assert isinstance(server.ident, NoIdentities)
    assert type(server.ident) is not IdentDB
    assert server.ident.name_qualifier == server.config.entityid
    server.session_db.store_assertion(object(), [])
    with pytest.raises(KeyError):
        server.session_db.get_assertion("_any")
    with pytest.raises(NameIdNotStored):
        server.ident.construct_nameid("user", {}, SP_ENTITY_ID)
    assert server.ident.db == {}


def test_an_sp_whose_stored_metadata_no_longer_loads_is_left_out(
    dbsession, cache, caplog
):
    import_sp(dbsession, make_sp_metadata())
    expired = make_sp_metadata(
        OTHER_SP, valid_until=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    )
    # Imported while current; the stored copy has expired since.
    dbsession.add(
        ServiceProvider(
            entity_id=OTHER_SP,
            metadata_xml=expired.decode(),
            metadata_sha256="0" * 64,
        )
    )
    import_sp(dbsession, make_sp_metadata())  # raises the generation
    server = cache.get(dbsession)
    assert knows(server, SP_ENTITY_ID)
    assert not knows(server, OTHER_SP)
    assert f"SP {OTHER_SP} left out" in caplog.text
    # Said once per process and document, not at every request.
    assert not knows(cache.get(dbsession), OTHER_SP)
    assert caplog.text.count(f"SP {OTHER_SP} left out") == 1


def test_the_app_registers_one_cache(app):
    assert isinstance(app.registry["idp.saml.servers"], ServerCache)


class CountingCache(ServerCache):
    def __init__(self, *args):
        super().__init__(*args)
        self.builds = 0

    def _build(self):
        self.builds += 1
        time.sleep(0.2)  # widen the race window
        return super()._build()


def test_racing_threads_build_once_per_generation(tmp_path, parsed_settings, keypair):
    engine = make_engine({"sqlalchemy.url": f"sqlite:///{tmp_path / 'race.sqlite'}"})
    try:
        upgrade(engine)
        with Session(engine) as session, session.begin():
            import_sp(session, make_sp_metadata())
        cache = CountingCache(parsed_settings, keypair)
        barrier = threading.Barrier(4)
        servers = []
        known = []

        def worker():
            with Session(engine) as session:
                barrier.wait()
                server = cache.get(session)
                servers.append(server)
                known.append(knows(server, SP_ENTITY_ID))

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert cache.builds == 1
        assert len(servers) == 4
        assert all(server is servers[0] for server in servers)
        assert known == [True] * 4
    finally:
        engine.dispose()


def test_build_time_for_100_sps(parsed_settings, keypair, capsys):
    """Not a timed assertion: prints the build time, checks all 100 load."""
    sps = [
        (f"https://sp{n}.example.org/sp", xml.decode())
        for n in range(100)
        for xml in [
            make_sp_metadata(f"https://sp{n}.example.org/sp", encryption=n % 2 == 0)
        ]
    ]
    started = time.perf_counter()
    server = build_server(parsed_settings, keypair, sps)
    elapsed = time.perf_counter() - started
    assert all(knows(server, entity_id) for entity_id, _ in sps)
    with capsys.disabled():
        print(f"\nServer build with 100 SPs: {elapsed * 1000:.0f} ms")


# --------------------------------------------------------------------------
# Loading on first use, and only what changed


def test_the_population_helper_stores_what_import_sp_stores(dbsession):
    [row] = sp_rows(1, start=7)
    sp = import_sp(dbsession, row["metadata_xml"].encode("utf-8"))
    for column, value in row.items():
        assert getattr(sp, column) == value, column


def test_an_sp_is_loaded_on_first_use_and_kept(dbsession, cache):
    register_many(dbsession, 3)
    server = cache.get(dbsession)
    assert server.metadata.loads == 0  # nothing parsed at start
    assert knows(server, entity_id(1))
    assert server.metadata.loads == 1
    assert knows(cache.get(dbsession), entity_id(1))
    assert server.metadata.loads == 1  # the next request finds it loaded
    assert list(server.metadata.keys()) == [entity_id(1)]


@pytest.mark.parametrize("few", [entity_store.FEW_LOADED, 1], ids=["by-id", "all"])
def test_a_change_to_one_sp_reloads_only_that_sp(dbsession, cache, monkeypatch, few):
    """Whether the node asks for its loaded SPs by ID or reads every pair."""
    monkeypatch.setattr(entity_store, "FEW_LOADED", few)
    register_many(dbsession, 3)
    server = cache.get(dbsession)
    assert all(knows(server, entity_id(n)) for n in range(3))
    assert server.metadata.loads == 3
    changed = next(sp_documents(1, start=1)).replace("/acs", "/acs2")
    import_sp(dbsession, changed.encode("utf-8"), replace=True)
    assert cache.get(dbsession) is server
    assert set(server.metadata.keys()) == {entity_id(0), entity_id(2)}
    assert all(knows(server, entity_id(n)) for n in range(3))
    assert server.metadata.loads == 4
    assert acs_of(server, entity_id(1)) == ["https://sp1.example.org/acs2"]


def test_saml_30_a_replaced_key_is_never_served_from_an_earlier_load(dbsession, cache):
    """SAML-30: what the request reads decides, even before the node forgets.

    The node loaded the SP, then the SP's keys were replaced (on another
    node). A request on this node that has not yet seen the new generation
    (the store is bound without ``get``, as when the change lands between
    the generation SELECT and the signing) gets the new keys, not the
    loaded ones.
    """
    import_sp(dbsession, make_sp_metadata())
    server = cache.get(dbsession)
    old = server.metadata.certs(SP_ENTITY_ID, "any", "encryption")
    assert old == []
    import_sp(dbsession, make_sp_metadata(encryption=True), replace=True)
    server.metadata.bind(dbsession)  # no generation check, no forgetting
    assert len(server.metadata.certs(SP_ENTITY_ID, "any", "encryption")) == 1


def test_a_thread_that_did_not_ask_for_the_server_finds_no_sp(dbsession, cache):
    """The store reads only through a session bound on its own thread."""
    import_sp(dbsession, make_sp_metadata())
    server = cache.get(dbsession)
    assert knows(server, SP_ENTITY_ID)
    found = []
    thread = threading.Thread(target=lambda: found.append(knows(server, SP_ENTITY_ID)))
    thread.start()
    thread.join()
    assert found == [False]


def test_a_lookup_among_2000_sps_loads_one_with_two_statements(dbsession, cache):
    register_many(dbsession, 2000)
    server = cache.get(dbsession)
    dbsession.expunge_all()  # as a new request: no row read yet
    statements = []
    connection = dbsession.connection()

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(connection, "before_cursor_execute", record)
    try:
        assert knows(server, entity_id(1999))
        assert server.metadata.registration_info(entity_id(1999))
        assert server.metadata.certs(entity_id(1999), "any", "signing")
    finally:
        event.remove(connection, "before_cursor_execute", record)
    assert server.metadata.loads == 1
    assert len(statements) == 2  # the SP's SHA-256, then its document


class Probe:
    """A metadata source that counts how often a store asks it anything."""

    def __init__(self, source, asked: list[int]):
        self.source, self.asked = source, asked

    def __getattr__(self, attribute):
        self.asked[0] += 1
        return getattr(self.source, attribute)

    def __getitem__(self, key):
        self.asked[0] += 1
        return self.source[key]

    def __contains__(self, key):
        self.asked[0] += 1
        return key in self.source


def _per_assertion_lookups(store, entity: str) -> None:
    # What pysaml2 asks while it makes and signs an assertion, and more.
    store.registration_info(entity)
    store.attribute_requirement(entity)
    store.entity_attributes(entity)
    store.certs(entity, "any", "encryption")
    store.service(entity, "spsso_descriptor", "assertion_consumer_service", POST)


def test_lookups_do_not_iterate_over_the_sps(parsed_settings, keypair):
    """Among 2,000 SPs a lookup asks one source; pysaml2's own store asks all."""
    server = build_server(parsed_settings, keypair, [])
    last = entity_id(1999)
    real = load_sp_source(last, next(sp_documents(1, start=1999)))
    others = InMemoryMetaData(server.metadata.attrc, "")
    ours, theirs = [0], [0]
    plain = MetadataStore(server.metadata.attrc, server.config)
    for n in range(2000):
        source = real if n == 1999 else others
        server.metadata.add(entity_id(n), Probe(source, ours))
        plain.metadata[entity_id(n)] = Probe(source, theirs)
    _per_assertion_lookups(server.metadata, last)
    _per_assertion_lookups(plain, last)
    assert ours[0] <= 10
    assert theirs[0] > 2000 * 5  # the control: a scan per lookup


# --------------------------------------------------------------------------
# Through the app: SQL per SSO, and two nodes on one database


# What a request does now and then: the session's last-seen refresh (once a
# minute). Purges are not in a request at all (the next test).
OCCASIONAL = ("UPDATE idp_sessions",)


def _sso(client, entity: str):
    xml = authn_request(issuer=entity, acs_url=entity.rsplit("/", 1)[0] + "/acs")
    return client.get("/saml/sso/redirect?" + redirect_query(xml), status="*")


@pytest.mark.postgresql
def test_an_sp_new_to_the_process_costs_no_more_sql_per_sso(
    testapp, dbsession, module, user, app, monkeypatch
):
    """Signed in, the first SSO to an SP this process has not loaded yet costs
    the statements of one it has, no more than before the store loaded
    lazily.
    """
    new, loaded = entity_id(70_001), entity_id(70_002)  # no other test loads them
    # Documents this process has not parsed (the other database's run has).
    monkeypatch.setattr(saml_registry, "_BY_SHA256", {})
    register_many(dbsession, 2, start=70_001, module_id=module.id)
    sign_in(testapp, user)
    store = app.registry["idp.saml.servers"].get(dbsession).metadata
    assert loaded in store  # now loaded in this process
    connection = dbsession.connection()

    def sso(entity: str) -> tuple[list[str], int]:
        dbsession.expunge_all()  # a new request has read no row yet
        # The assertion count's flush (a minute apart, idp.saml.tally) is
        # not due in these requests.
        app.registry["idp.saml.tally"].take()
        statements: list[str] = []

        def record(conn, cursor, statement, parameters, context, executemany):
            if not statement.startswith(OCCASIONAL):
                statements.append(statement)

        loads = store.loads
        event.listen(connection, "before_cursor_execute", record)
        try:
            page = _sso(testapp, entity)
        finally:
            event.remove(connection, "before_cursor_execute", record)
        assert page.status_int == 200
        assert status_of(response_of(page)) == [SUCCESS]
        return statements, store.loads - loads

    # Each is this user's first SSO to the SP (a NameID is made): same cost.
    # The Response is built from idMe's own template (issue 16) and asks
    # pysaml2's store nothing, so not even a new SP's metadata is parsed.
    first_new, loads = sso(new)
    assert loads == 0
    first_loaded, loads = sso(loaded)
    assert loads == 0
    assert len(first_new) == len(first_loaded)
    # The request's SP row, without its document; the document once, the
    # first time this process parses it (known by its hash afterwards).
    reads = [s for s in first_new if "service_providers" in s]
    assert len(reads) == 2
    assert "metadata_xml" not in reads[0]
    assert reads[1].split()[:2] == ["SELECT", "service_providers.metadata_xml"]
    steady, loads = sso(new)
    assert loads == 0
    # Every later SSO: the SP's row without its document (kilobytes).
    assert not [s for s in steady if "metadata_xml" in s]
    # A repeat SSO is 4 statements on SQLite (5 with its driver's BEGIN,
    # which this test's open transaction does not send; COMMIT is no cursor
    # statement): the session with its user, the request's SP, one SELECT
    # for the role gate, the roles, the persistent NameID, the session's
    # record of the SP and the registry's version, and, after signing, the
    # replay record: the only write. On PostgreSQL, where each statement is
    # a round trip, the gate's statement writes the replay record itself
    # (a WITH ... INSERT): 3. A second SSO to the same SP in a session
    # writes no participant row. (It was 8 before issue 16.)
    if dbsession.get_bind().dialect.name == "postgresql":
        gate = ["WITH seen AS"]
    else:
        gate = [
            "SELECT (SELECT group_concat(roles.name,",
            "INSERT INTO seen_request_ids",
        ]
    assert [" ".join(s.split()[:3]) for s in steady] == [
        "SELECT idp_sessions.id, idp_sessions.token_hash,",
        "SELECT service_providers.id, service_providers.entity_id,",
        *gate,
    ]
    assert not [s for s in steady if "UPDATE " in s or "DELETE FROM" in s]


@pytest.mark.postgresql
def test_an_sso_deletes_nothing_however_many_expired_records_wait(
    testapp, dbsession, module, user
):
    """Purges run in the background (idp.services.purge), never in an SSO.

    Expired replay records and parked requests wait; 48 SSOs, signed in
    and not (a parked request), send no DELETE and no purge SELECT. (The
    purge used to run in one SSO in 16 and hold a user for up to a second
    after a burst.)
    """
    from idp.models import PendingSamlRequest, SeenRequestId

    register_many(dbsession, 1, start=70_101, module_id=module.id)
    entity = entity_id(70_101)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    dbsession.add_all(
        [
            SeenRequestId(issuer=entity, request_id=f"_old{n}", expires_at=past)
            for n in range(50)
        ]
        + [
            PendingSamlRequest(
                token_hash=f"{n:064d}",
                sp_id=dbsession.scalar(
                    select(ServiceProvider.id).where(
                        ServiceProvider.entity_id == entity
                    )
                ),
                binding=POST,
                request_xml="<x/>",
                created_at=past,
                expires_at=past,
            )
            for n in range(50)
        ]
    )
    dbsession.flush()
    connection = dbsession.connection()
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    def sso(signed_in: bool):
        event.listen(connection, "before_cursor_execute", record)
        try:
            page = _sso(testapp, entity)
        finally:
            event.remove(connection, "before_cursor_execute", record)
        if signed_in:
            assert status_of(response_of(page)) == [SUCCESS]
        else:  # the request is parked, the sign-in form is next
            assert page.status_int in (302, 303)

    sso(signed_in=False)
    sign_in(testapp, user)  # (a sign-in clears its throttle counter)
    for _ in range(47):
        sso(signed_in=True)
    assert len(statements) > 48 * 3  # the listener saw the SSOs
    assert any(s.startswith("INSERT INTO pending_saml_requests") for s in statements)
    assert [s for s in statements if "DELETE FROM" in s] == []
    assert not [s for s in statements if "expires_at <" in s]
    assert dbsession.scalar(select(func.count()).select_from(SeenRequestId)) >= 50 + 47


def test_saml_31_two_nodes_refuse_a_disabled_or_removed_sp_at_once(
    app, app_with, tm, dbsession, module, user
):
    """SAML-31: two apps on one database, each with the SP loaded."""
    register_many(dbsession, 2, module_id=module.id)
    # A second app: app_with builds one per distinct setting.
    other = app_with(**{"idp.metadata_cache_seconds": "3601"})
    nodes = [
        webtest.TestApp(node, extra_environ=environ(tm, dbsession))
        for node in (app, other)
    ]
    for node in nodes:
        sign_in(node, user)
        assert status_of(response_of(_sso(node, entity_id(1)))) == [SUCCESS]
    set_enabled(dbsession, entity_id(1), False)
    for node in nodes:
        assert _sso(node, entity_id(1)).status_int == 403
        assert status_of(response_of(_sso(node, entity_id(0)))) == [SUCCESS]
    remove_sp(dbsession, entity_id(0))
    for node in nodes:
        assert _sso(node, entity_id(0)).status_int == 400


def test_the_row_the_request_holds_decides_and_is_never_reloaded(dbsession, cache):
    """An expired row is read again by the store's SELECT; a deleted one is gone."""
    sp = import_sp(dbsession, make_sp_metadata())
    server = cache.get(dbsession)
    dbsession.expire(sp)  # as after a commit: the session holds no values
    assert knows(server, SP_ENTITY_ID)
    assert inspect(sp).expired  # the store did not load the row's attributes
    dbsession.delete(sp)  # deleted in this request, not yet flushed
    server = cache.get(dbsession)
    assert not knows(server, SP_ENTITY_ID)


def test_a_server_rebuilt_on_the_same_store_parses_nothing_again(
    dbsession, cache, parsed_settings, keypair
):
    """A rebuild for another reason (idMe's own keys) keeps the loaded SPs."""
    register_many(dbsession, 2)
    server = cache.get(dbsession)
    assert knows(server, entity_id(0)) and knows(server, entity_id(1))
    rebuilt = new_server(parsed_settings, keypair, store=server.metadata)
    assert rebuilt is not server and rebuilt.metadata is server.metadata
    assert rebuilt.sec is not server.sec
    assert rebuilt.metadata.security is rebuilt.sec
    assert knows(rebuilt, entity_id(0)) and knows(rebuilt, entity_id(1))
    assert rebuilt.metadata.loads == 2


def test_the_store_keeps_at_most_its_capacity_least_recently_used_out(dbsession, cache):
    register_many(dbsession, 6)
    server = cache.get(dbsession)
    server.metadata.capacity = 4
    for n in range(4):
        assert knows(server, entity_id(n))
    assert knows(cache.get(dbsession), entity_id(0))  # used again: recent
    for n in (4, 5):
        assert knows(server, entity_id(n))
    assert set(server.metadata.keys()) == {entity_id(n) for n in (0, 3, 4, 5)}
    assert server.metadata.loads == 6
    assert knows(cache.get(dbsession), entity_id(1))  # evicted: loaded again
    assert server.metadata.loads == 7


def test_readers_on_threads_never_see_a_half_changed_store(
    tmp_path, parsed_settings, keypair
):
    """Four threads look SPs up while another node replaces them, 20 times."""
    engine = make_engine({"sqlalchemy.url": f"sqlite:///{tmp_path / 'race.sqlite'}"})
    try:
        upgrade(engine)
        with Session(engine) as session, session.begin():
            register_many(session, 8)
        cache = ServerCache(parsed_settings, keypair)
        done = threading.Event()
        failures: list[str] = []
        lookups = [0]

        def reader(offset: int) -> None:
            n = offset
            while not done.is_set():
                with Session(engine) as session:
                    server = cache.get(session)
                    entity = entity_id(n % 8)
                    acs = acs_of(server, entity)
                    if not acs or not all(a.startswith(entity[:-3]) for a in acs):
                        failures.append(f"{entity}: {acs}")
                    lookups[0] += 1
                n += 1

        threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        try:
            for change in range(20):
                entity = entity_id(change % 8)
                with Session(engine) as session, session.begin():
                    xml = session.scalar(
                        select(ServiceProvider.metadata_xml).where(
                            ServiceProvider.entity_id == entity
                        )
                    )
                    import_sp(
                        session,
                        xml.replace("/acs", "/acs-x", 1).encode("utf-8"),
                        replace=True,
                    )
        finally:
            done.set()
            for thread in threads:
                thread.join()
        assert failures == []
        assert lookups[0] >= 20
        # Changed SPs were loaded again while the readers ran.
        with Session(engine) as session:
            assert cache.get(session).metadata.loads > 8
    finally:
        engine.dispose()
