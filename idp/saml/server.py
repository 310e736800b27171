"""One pysaml2 ``Server`` per process, rebuilt only when the SP registry changes.

Building a ``Server`` parses the metadata of every registered SP, far too
slow for each request. :class:`ServerCache` keeps one and asks the database
for the registry generation (one SELECT) on each use; when another node or
the CLI has changed the registry, the generation has risen and the next
request builds a new ``Server`` and swaps it in. Readers never wait for, or
see, a half-built server: they keep using the previous one until the swap.

The ``Server`` holds no per-request state. pysaml2 by default keeps every
assertion it issues (``session_db``) and every NameID it makes (``ident``)
in process memory: a leak, and state that other nodes cannot see. Here
``session_db`` keeps nothing, and ``ident`` refuses to make NameIDs: they
come from our tables and are passed to pysaml2 as ``name_id=``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
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


def build_server(
    settings, keys: KeySet | KeyPair, sps: list[tuple[str, str]]
) -> Server:
    """A ``Server`` that knows ``sps`` and signs in-process.

    An SP whose stored metadata pysaml2 refuses (typically expired since it
    was registered) is left out and logged as an error by entity ID; the
    others load. Each is loaded by :func:`idp.saml.sp_metadata.load_sp_source`,
    the same loader an import must pass.
    Each SP is its own metadata source, keyed by its entity ID.
    """
    conf = config_dict(settings, keys)
    conf["service"]["idp"]["subject_data"] = ("identdb", _NO_IDENTITIES)
    config = IdPConfig()
    config.load(conf)
    server = Server(config=config)
    server.session_db = NoSessionStorage()
    store = server.metadata
    for entity_id, xml in sps:
        try:
            store[entity_id] = load_sp_source(entity_id, xml, store.attrc)
        except MetadataError as exc:
            # Import refuses what cannot load (SAML-39), so this is metadata
            # that expired since, or was stored by an older release: loud,
            # since every sign-in to this SP now fails.
            log.error(
                "SP %s left out of the SAML server (registered and enabled: "
                "no one can sign in to it): %s",
                entity_id,
                exc,
            )
    _add_missing_attribute_names(server)
    install_security_context(server)
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


@dataclass(frozen=True)
class _Built:
    version: tuple
    server: Server


class ServerCache:
    """The process's ``Server``, rebuilt when the registry generation rises.

    A key rollover step raises the generation too, so each rebuild also
    reads idMe's key set (``keys``) afresh: every node signs with the new key
    at its next request, with no query added to the requests in between.
    """

    def __init__(self, settings, keys: KeyRing | KeyPair):
        self.settings = settings
        self.keys = keyring_of(keys)
        self._keyset: KeySet | None = None
        self._lock = threading.Lock()
        self._built: _Built | None = None

    def get(self, dbsession: Session) -> Server:
        """The current ``Server``; builds one only if the registry changed."""
        version = current_version(dbsession)
        built = self._built
        if built is not None and built.version == version:
            return built.server
        with self._lock:
            built = self._built
            # Another thread may have built this version while we waited.
            # Any other version is rebuilt, even a lower generation (a
            # database restored from a backup, or a test's rolled-back
            # change); a thread that read an older state and swaps it in
            # is corrected by the next request, which reads the newer one.
            if built is None or built.version != version:
                self._keyset = self.keys.load(dbsession)
                server = self._build(enabled_sp_metadata(dbsession))
                built = self._built = _Built(version, server)
            return built.server

    def _build(self, sps: list[tuple[str, str]]) -> Server:
        assert self._keyset is not None  # read under the lock, just before
        return build_server(self.settings, self._keyset, sps)
