"""ServerCache: one pysaml2 Server per process, rebuilt when the registry changes.

Runs on SQLite and PostgreSQL. Two caches on one database stand for two
nodes: each must notice another's change through the generation counter.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from saml2.ident import IdentDB
from saml2.s_utils import UnknownSystemEntity
from saml2.sdb import SessionStorage
from saml2.server import Server
from saml2.sigver import CryptoBackendXmlSec1
from sqlalchemy.orm import Session

from idp.db import make_engine
from idp.models import ServiceProvider
from idp.saml.crypto import XmlsecBackend
from idp.saml.registry import import_sp, remove_sp, set_enabled
from idp.saml.server import (
    NameIdNotStored,
    NoIdentities,
    NoSessionStorage,
    ServerCache,
    build_server,
)
from idp.settings import parse_settings
from tests.conftest import upgrade
from tests.saml_metadata import SP_ENTITY_ID, make_sp_metadata

OTHER_SP = "https://other.example.org/sp"


def knows(server: Server, entity_id: str) -> bool:
    try:
        acs = server.metadata.service(
            entity_id, "spsso_descriptor", "assertion_consumer_service"
        )
    except UnknownSystemEntity:
        return False
    return bool(acs)


@pytest.fixture
def parsed_settings(settings):
    return parse_settings(settings)


@pytest.fixture
def cache(parsed_settings, keypair):
    return ServerCache(parsed_settings, keypair)


def test_same_server_until_the_generation_changes(dbsession, cache):
    import_sp(dbsession, make_sp_metadata())
    first = cache.get(dbsession)
    assert cache.get(dbsession) is first
    assert knows(first, SP_ENTITY_ID)
    assert not knows(first, OTHER_SP)
    import_sp(dbsession, make_sp_metadata(OTHER_SP))
    second = cache.get(dbsession)
    assert second is not first
    assert knows(second, OTHER_SP) and knows(second, SP_ENTITY_ID)
    assert cache.get(dbsession) is second
    remove_sp(dbsession, OTHER_SP)
    third = cache.get(dbsession)
    assert third is not second
    assert not knows(third, OTHER_SP)


def test_two_nodes_converge_after_an_import(dbsession, parsed_settings, keypair):
    node_a = ServerCache(parsed_settings, keypair)
    node_b = ServerCache(parsed_settings, keypair)
    a1, b1 = node_a.get(dbsession), node_b.get(dbsession)
    assert not knows(a1, SP_ENTITY_ID) and not knows(b1, SP_ENTITY_ID)
    import_sp(dbsession, make_sp_metadata())  # on "node A", or the CLI
    a2, b2 = node_a.get(dbsession), node_b.get(dbsession)
    assert a2 is not a1 and b2 is not b1
    assert knows(a2, SP_ENTITY_ID) and knows(b2, SP_ENTITY_ID)


def test_a_disabled_sp_is_not_loaded(dbsession, cache):
    import_sp(dbsession, make_sp_metadata())
    import_sp(dbsession, make_sp_metadata(OTHER_SP), enabled=False)
    server = cache.get(dbsession)
    assert knows(server, SP_ENTITY_ID)
    assert not knows(server, OTHER_SP)
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


def test_the_app_registers_one_cache(app):
    assert isinstance(app.registry["idp.saml.servers"], ServerCache)


class CountingCache(ServerCache):
    def __init__(self, *args):
        super().__init__(*args)
        self.builds = 0

    def _build(self, sps):
        self.builds += 1
        time.sleep(0.2)  # widen the race window
        return super()._build(sps)


def test_racing_threads_build_once_per_generation(tmp_path, parsed_settings, keypair):
    engine = make_engine({"sqlalchemy.url": f"sqlite:///{tmp_path / 'race.sqlite'}"})
    try:
        upgrade(engine)
        with Session(engine) as session, session.begin():
            import_sp(session, make_sp_metadata())
        cache = CountingCache(parsed_settings, keypair)
        barrier = threading.Barrier(4)
        servers = []

        def worker():
            with Session(engine) as session:
                barrier.wait()
                servers.append(cache.get(session))

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert cache.builds == 1
        assert len(servers) == 4
        assert all(server is servers[0] for server in servers)
        assert knows(servers[0], SP_ENTITY_ID)
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
