"""One pysaml2 ``Server`` per process; SPs' metadata loaded one by one, on use.

The ``Server`` is built once, at the first request, with an empty
:class:`idp.saml.entity_store.SpMetadataStore`: building it costs the same
with 10 SPs or 10,000. Each request's :meth:`ServerCache.get` binds the store
to the request's database session (see that module: pysaml2 asks the store
for an entity ID only, so the store reads the database through the session
bound to the current thread), and the store loads an SP's metadata the first
time a request needs it, keyed by its entity ID and SHA-256. A change to the
registry raises its generation (one SELECT per request reads it, as before);
the first request to see it drops what was replaced, disabled or removed,
and nothing else: no rebuild, no re-parsing of the SPs that did not change.
Readers never wait for, or see, a half-built state: the server does not
change, and the store swaps whole tables.

The ``Server`` holds no per-request state. pysaml2 by default keeps every
assertion it issues (``session_db``) and every NameID it makes (``ident``)
in process memory: a leak, and state that other nodes cannot see. Here
``session_db`` keeps nothing, and ``ident`` refuses to make NameIDs: they
come from our tables and are passed to pysaml2 as ``name_id=``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from saml2.config import IdPConfig
from saml2.ident import IdentDB
from saml2.saml import NAME_FORMAT_URI
from saml2.server import Server
from sqlalchemy import select
from sqlalchemy.orm import Session

from idp.models import ServiceProvider
from idp.saml.config import config_dict
from idp.saml.crypto import install_security_context
from idp.saml.entity_store import SpMetadataStore, log_left_out
from idp.saml.keyring import KeyRing, KeySet, keyring_of
from idp.saml.keys import KeyPair
from idp.saml.registry import RELEASABLE, current_version
from idp.saml.sp_metadata import MetadataError, load_sp_source

log = logging.getLogger(__name__)


class NoSessionStorage:
    """pysaml2's ``session_db`` interface, keeping nothing.

    pysaml2 stores each issued assertion for AssertionIDRequest and
    AuthnQuery, which this IdP does not serve; SLO uses our session tables.
    """

    def store_assertion(self, assertion: Any, to_sign: Any) -> None:
        return None

    def get_assertion(self, cid: str) -> Any:
        raise KeyError(cid)

    def get_authn_statements(
        self, name_id: Any, session_index: Any = None, requested_context: Any = None
    ) -> list:
        return []

    def remove_authn_statements(self, name_id: Any) -> None:
        return None


class NameIdNotStored(RuntimeError):
    """pysaml2 was asked to make a NameID: pass ``name_id=`` from our tables."""


class NoIdentities(IdentDB):
    """pysaml2's NameID store, holding nothing and refusing to make NameIDs.

    pysaml2's default (a dict in ``Server.ident``) would keep every NameID it
    made; persistent NameIDs must instead come from ``persistent_name_ids``.
    Lookups find nothing; making or storing one raises, so a caller that
    forgets ``name_id=`` fails instead of issuing an untracked NameID.
    """

    def __init__(self) -> None:
        super().__init__(db={})

    def store(self, ident: Any, name_id: Any) -> None:
        raise NameIdNotStored("NameIDs come from the database; pass name_id=")

    def construct_nameid(self, *args: Any, **kwargs: Any) -> Any:
        raise NameIdNotStored("NameIDs come from the database; pass name_id=")


_NO_IDENTITIES = f"{NoIdentities.__module__}.{NoIdentities.__qualname__}"


def enabled_sp_metadata(dbsession: Session) -> list[tuple[str, str]]:
    """(entity ID, metadata XML) of every enabled SP, by entity ID."""
    rows = dbsession.execute(
        select(ServiceProvider.entity_id, ServiceProvider.metadata_xml)
        .where(ServiceProvider.enabled.is_(True))
        .order_by(ServiceProvider.entity_id)
    )
    return [(entity_id, xml) for entity_id, xml in rows]


class _IdPConfig(IdPConfig):
    """pysaml2's IdP configuration, with our metadata store instead of its own."""

    def __init__(self, *, lazy: bool, store: SpMetadataStore | None) -> None:
        super().__init__()
        self._lazy = lazy
        self._store = store

    def load_metadata(self, metadata_conf):
        # Called by Config.load for the (empty) "metadata" section; the store
        # becomes config.metadata, which Server, its policy and its security
        # context all use.
        if self._store is not None:
            return self._store
        return SpMetadataStore(self.attribute_converters, self, lazy=self._lazy)


def new_server(
    settings,
    keys: KeySet | KeyPair,
    *,
    lazy: bool = True,
    store: SpMetadataStore | None = None,
) -> Server:
    """A ``Server`` that signs in-process, with an :class:`SpMetadataStore`.

    ``lazy``: a new store loads SPs from the database on use
    (:class:`ServerCache`); otherwise it knows what is ``add``-ed to it.
    ``store``: the store of an earlier server, whose loaded SPs the new one
    keeps (a server rebuilt for another reason than the SPs, such as its
    own keys, parses none of them again).
    """
    conf = config_dict(settings, keys)
    conf["service"]["idp"]["subject_data"] = ("identdb", _NO_IDENTITIES)
    config = _IdPConfig(lazy=lazy, store=store)
    config.load(conf)
    server = Server(config=config)
    server.session_db = NoSessionStorage()
    _add_missing_attribute_names(server)
    install_security_context(server)
    return server


def build_server(
    settings, keys: KeySet | KeyPair, sps: list[tuple[str, str]]
) -> Server:
    """A ``Server`` that knows exactly ``sps``, all loaded now (tools and tests).

    An SP whose stored metadata pysaml2 refuses (typically expired since it
    was registered) is left out and logged as an error by entity ID; the
    others load. Each is loaded by :func:`idp.saml.sp_metadata.load_sp_source`,
    the same loader an import must pass. The IdP itself uses
    :class:`ServerCache`, which loads each SP on first use instead.
    """
    server = new_server(settings, keys, lazy=False)
    store = server.metadata
    for entity_id, xml in sps:
        try:
            store.add(entity_id, load_sp_source(entity_id, xml, store.attrc))
        except MetadataError as exc:
            log_left_out(entity_id, exc)
    return server


# Attributes we release that pysaml2's URI attribute map does not name;
# without an entry pysaml2 would send the bare FriendlyName as the Name.
EXTRA_URI_NAMES = {"mobile": "urn:oid:0.9.2342.19200300.100.1.41"}


def attribute_uri_names() -> dict[str, str]:
    """FriendlyName -> the URI Name each releasable attribute carries.

    The same map the server sends by (pysaml2's URI map plus
    :data:`EXTRA_URI_NAMES`), for pages that tell integrators what to expect.
    """
    from saml2.attributemaps import saml_uri

    names = {**saml_uri.MAP["to"], **EXTRA_URI_NAMES}
    return {friendly: names[friendly] for friendly in RELEASABLE}


def _add_missing_attribute_names(server: Server) -> None:
    for converter in server.config.attribute_converters:
        if converter.name_format != NAME_FORMAT_URI:
            continue
        for friendly, uri in EXTRA_URI_NAMES.items():
            converter._to.setdefault(friendly.lower(), uri)
            converter._fro.setdefault(uri.lower(), friendly)


class ServerCache:
    """The process's ``Server``, its metadata store bound to each request.

    The store keeps what it loaded across registry generations; see the
    module docstring. A key rollover step raises the generation too, so the
    first request to see a new generation also reads idMe's key set
    (``keys``) afresh, and the server is rebuilt (keeping its store) only if
    the keys changed: every node signs with the new key at its next request,
    with no query added to the requests in between.
    """

    def __init__(self, settings, keys: KeyRing | KeyPair):
        self.settings = settings
        self.keys = keyring_of(keys)
        self._keyset: KeySet | None = None
        self._lock = threading.Lock()
        self._server: Server | None = None
        self._version: tuple | None = None

    def get(self, dbsession: Session, version: tuple | None = None) -> Server:
        """The ``Server``, its store reading the database through ``dbsession``.

        Use it on this thread, for this request: the store resolves SPs
        through the session given to the latest ``get`` on the thread.
        ``version`` is the registry's, if this request has just read it
        (:func:`idp.saml.registry.current_version`'s shape): no query then.
        """
        if version is None:
            version = current_version(dbsession)
        server = self._server
        if server is None:
            with self._lock:
                if self._server is None:
                    self._keyset = self.keys.load(dbsession)
                    self._server = self._build()
                    self._version = version
                server = self._server
        if version != self._version and self._lock.acquire(blocking=False):
            # One thread takes in the new generation; the others go on with
            # the server as it is: what they resolve is checked against the
            # database anyway. Any other version counts, even a lower one (a
            # database restored from a backup, or a test's rolled-back change).
            try:
                if version != self._version:
                    server = self._server = self._new_generation(dbsession, server)
                    self._version = version
            finally:
                self._lock.release()
        server.metadata.bind(dbsession)
        return server

    def _new_generation(self, dbsession: Session, server: Server) -> Server:
        """The server for a new registry generation: the same, minus what changed.

        Returns the server to use from now on: the same one, unless idMe's
        keys changed (a rollover step), when :meth:`_build` makes one with the
        new keys that keeps the store, and so every SP still loaded.
        """
        server.metadata.forget_changed(dbsession)
        keyset = self.keys.load(dbsession)
        if keyset != self._keyset:
            self._keyset = keyset
            server = self._build()
        return server

    def _build(self) -> Server:
        assert self._keyset is not None  # read under the lock, just before
        previous = self._server
        store = previous.metadata if previous is not None else None
        return new_server(self.settings, self._keyset, store=store)
